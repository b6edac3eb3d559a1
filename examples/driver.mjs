// Drive `stepline serve` from Node.js (no packages): submit jobs, tie every event to its submit.
//
//   node examples/driver.mjs                                  # uses `stepline` from PATH
//   STEPLINE="python3 -m stepline" node examples/driver.mjs   # or any command that runs it
//
// Every event of a job carries the `id` its submit was sent with, so each line is tied to its
// submit by `ev.id` alone: no map from job ids to fill first. (A driver that awaited a promise
// for `accepted` before mapping the job lost a race: readline may already have delivered the
// job's `finished`, as a fast job finishes within a millisecond.) Still handle every line in one
// synchronous handler, in order: the lines of one job arrive in the order they happened.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

const [command, ...prefix] = (process.env.STEPLINE ?? "stepline").split(" ");
const child = spawn(command, [...prefix, "serve", "--workers", "2", "--heartbeat", "0"], {
  stdio: ["pipe", "pipe", "inherit"],
});

const submits = new Map(); // request id -> what we asked for, and its outcome once finished

function send(command) {
  child.stdin.write(JSON.stringify(command) + "\n");
}

function submit(id, job) {
  submits.set(id, { job, state: null, result: null });
  send({ op: "submit", id, job });
}

createInterface({ input: child.stdout }).on("line", (line) => {
  const ev = JSON.parse(line);
  switch (ev.event) {
    case "finished": {
      const id = ev.id; // the submit's id, on every event of its job
      const entry = submits.get(id);
      entry.state = ev.state;
      entry.result = ev.state === "succeeded" ? ev.output : ev.error.message;
      console.log(`${id}: ${ev.job} ${ev.state}: ${JSON.stringify(entry.result)}`);
      break;
    }
    case "error":
      console.log(`${ev.id ?? "?"}: refused: ${ev.code}: ${ev.message}`);
      break;
    case "bye":
      console.log("bye");
      break;
  }
});

child.on("exit", (code) => {
  const lost = [...submits].filter(([, entry]) => entry.state === null).map(([id]) => id);
  if (lost.length) console.log(`never finished: ${lost.join(", ")}`);
  process.exit(code === 0 && lost.length === 0 ? 0 : 1);
});

// Many fast jobs at once: the case a racy driver gets wrong.
for (let i = 1; i <= 50; i++) submit(`value-${i}`, { value: i });
submit("echo", { run: ["echo", "hello from node"] });
submit("oops", { fail: "failing on purpose" });
send({ op: "frobnicate", id: "nonsense" });
child.stdin.end(); // drain: every accepted job finishes, then `bye`
