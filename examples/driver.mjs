// Drive `stepline serve` from Node.js (no packages): submit jobs, tie every event to its submit.
//
//   node examples/driver.mjs                                  # uses `stepline` from PATH
//   STEPLINE="python3 -m stepline" node examples/driver.mjs   # or any command that runs it
//
// The one rule that makes a driver correct: handle every line in ONE synchronous handler, in
// order. `accepted` (which echoes the submit's `id` and names the job) always comes before that
// job's other events, so a map filled by the `accepted` handler knows the job by the time its
// `started` or `finished` line is handled. A driver that instead awaits a promise for `accepted`
// and maps the job afterwards loses the race: readline may already have delivered the job's
// `finished` (a fast job finishes within a millisecond) to a handler that did not know it yet.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

const [command, ...prefix] = (process.env.STEPLINE ?? "stepline").split(" ");
const child = spawn(command, [...prefix, "serve", "--workers", "2", "--heartbeat", "0"], {
  stdio: ["pipe", "pipe", "inherit"],
});

const submits = new Map(); // request id -> what we asked for, and its outcome once finished
const byJob = new Map(); // job id -> request id, filled when `accepted` arrives

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
    case "accepted":
      byJob.set(ev.job, ev.id); // before any later line of this job can be handled
      break;
    case "finished": {
      const id = byJob.get(ev.job);
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
