// The dashboard: plain DOM, no framework and nothing from a CDN. Records come from the REST
// endpoints; changes come from GET /events (Server-Sent Events): one stream for the job table,
// and one per open job page (?job=ID&after=0: that job's kept history, then its live events).
"use strict";

const token = new URLSearchParams(location.search).get("access_token");
const FINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, cancelled: 2, timed_out: 2 };
const MAX_ROWS = 300; // the table shows the most recent jobs; older rows leave the page
const jobs = new Map(); // id -> status record (+ local fields)
const dirty = new Set(); // ids whose row needs drawing at the next frame
let filter = "all";
let page = null; // the open job page: {id, source, events, lines, next, spans, graph}

const EXAMPLES = {
  "hello: three lines, three seconds": {
    name: "hello",
    steps: [
      { log: "saying hello" },
      { run: ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 1; done"], stream: true },
    ],
  },
  "pipeline: build, tests in parallel, package": {
    name: "pipeline",
    stream: true,
    tasks: {
      build: { steps: [{ run: "echo compiling; sleep 1; echo linked app.whl" }] },
      unit: { needs: "build", steps: [{ run: "for t in a b c d; do echo test_$t ok; sleep 0.5; done" }] },
      lint: { needs: "build", steps: [{ run: "echo ruff: all checks passed; sleep 1.5" }] },
      package: { needs: ["unit", "lint"], steps: [{ run: "echo packaged; sleep 0.5" }] },
    },
  },
  "failing: exits 3 with an error": {
    name: "migrate",
    steps: [{ run: "echo applying 0042; echo 'error: column exists' >&2; exit 3", stream: true }],
  },
  "alerting: fails and opens an alert": {
    name: "nightly-backup",
    steps: [{ fail: "backup target unreachable" }],
    on_finish: [{ alert: "nightly backup failed", when: "failure" }],
  },
  "slow: one minute (cancel it)": { name: "slow", steps: [{ run: "sleep 60" }] },
};

// -- talking to the server -----------------------------------------------------------------

function url(path) {
  if (!token) return path;
  return path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
}

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const response = await fetch(url(path), init);
  const data = await response.json();
  if (!response.ok) throw new Error(`${data.code}: ${data.message}`);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  node.append(...children.filter((c) => c !== undefined && c !== null));
  return node;
}

const $ = (id) => document.getElementById(id);

function toast(message) {
  const note = el("div", { class: "toast", role: "alert" }, message);
  document.body.append(note);
  setTimeout(() => note.remove(), 5000);
}

// -- the job table -------------------------------------------------------------------------

// Merge what is known of a job; a state never moves back (a late record of a job that events
// already showed finished does not make it running again).
function remember(fields) {
  const known = jobs.get(fields.job);
  if (!known) {
    const job = { state: "queued", name: null, created: null, started: null, ended: null, elapsed: 0, ...fields };
    jobs.set(job.job, job);
    return job;
  }
  const state = known.state && RANK[known.state] > RANK[fields.state] ? known.state : fields.state;
  Object.assign(known, fields, { state: state ?? known.state });
  return known;
}

let refreshing = null;
// Names and times come with the records, not with events: load the recent records again, at
// most once a second, when events name jobs the table has not seen.
function refreshSoon() {
  if (refreshing) return;
  refreshing = setTimeout(async () => {
    try {
      const { jobs: records } = await call("GET", "/jobs?limit=" + MAX_ROWS);
      for (const record of records.reverse()) touch(remember(record));
    } catch (err) { /* the next event tries again */ }
    refreshing = null;
  }, 300);
}

function applyLive(ev) {
  if (ev.event === "alert") loadAlerts();
  if (!ev.job || !["accepted", "started", "finished", "progress", "cancelling"].includes(ev.event)) return;
  const now = ev.ts;
  if (!jobs.has(ev.job)) refreshSoon();
  if (ev.event === "accepted") touch(remember({ job: ev.job, state: "queued", created: now }));
  if (ev.event === "started") touch(remember({ job: ev.job, state: "running", started: now }));
  if (ev.event === "cancelling") touch(remember({ job: ev.job, stopping: true }));
  if (ev.event === "progress") remember({ job: ev.job, elapsed: ev.elapsed });
  if (ev.event === "finished") {
    const { state, elapsed, output, error, partial } = ev;
    touch(remember({ job: ev.job, state, elapsed, output, error, partial, ended: now, stopping: false }));
    countsSoon();
  }
}

function touch(job) {
  dirty.add(job.job);
  if (dirty.size === 1) requestAnimationFrame(drawDirty);
}

function drawDirty() {
  for (const id of dirty) drawRow(jobs.get(id));
  dirty.clear();
  const body = document.querySelector("#jobs tbody");
  while (body.rows.length > MAX_ROWS) {
    const last = body.rows[body.rows.length - 1];
    jobs.delete(last.dataset.job);
    last.remove();
  }
  $("no-jobs").hidden = body.rows.length > 0;
}

function visible(job) {
  if (filter === "active") return !FINAL.has(job.state);
  if (filter === "failed") return job.state === "failed" || job.state === "timed_out";
  return true;
}

function drawRow(job) {
  if (!job) return;
  let row = $("row-" + job.job);
  if (!row) {
    row = newRow(job);
    insertRow(row, job);
  }
  // The cells are updated in place, never rebuilt: a click whose press and release straddle a
  // rebuilt link would be lost (the link under the pointer is another element by the release).
  row.hidden = !visible(job);
  row.dataset.state = job.state;
  const [, name, state, when, time, actions] = row.cells;
  name.textContent = job.name ?? "";
  state.replaceChildren(badge(job));
  when.dataset.ts = job.created ?? "";
  when.textContent = ago(job.created);
  time.textContent = elapsed(job);
  actions.firstChild.hidden = FINAL.has(job.state);
}

function newRow(job) {
  const cancel = el("button", { type: "button", class: "cancel small", "data-job": job.job }, "Cancel");
  cancel.addEventListener("click", () => cancelJob(job.job));
  return el("tr", { id: "row-" + job.job, "data-job": job.job },
    el("td", {}, el("a", { href: "#job=" + encodeURIComponent(job.job) }, job.job)),
    el("td", { class: "name" }),
    el("td", {}),
    el("td", { class: "muted when" }),
    el("td", { class: "num elapsed" }),
    el("td", { class: "actions" }, cancel),
  );
}

// Rows stay ordered by job number, newest first (j10 after j9: compare the numbers).
function insertRow(row, job) {
  const body = document.querySelector("#jobs tbody");
  const n = jobNumber(job.job);
  for (const other of body.rows) {
    if (jobNumber(other.dataset.job) < n) { body.insertBefore(row, other); return; }
  }
  body.append(row);
}

function jobNumber(id) {
  const match = /(\d+)$/.exec(id);
  return match ? Number(match[1]) : 0;
}

function badge(job) {
  const text = job.stopping && !FINAL.has(job.state) ? "stopping" : job.state.replace("_", " ");
  return el("span", { class: "badge " + job.state, "data-state": job.state }, text);
}

function elapsed(job) {
  if (job.state === "running" && job.started) return seconds(Date.now() / 1000 - job.started);
  return FINAL.has(job.state) ? seconds(job.elapsed ?? 0) : "–";
}

function seconds(s) {
  if (s < 10) return s.toFixed(2) + " s";
  if (s < 120) return s.toFixed(1) + " s";
  return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
}

function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 5) return "just now";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return new Date(ts * 1000).toLocaleString();
}

async function cancelJob(id) {
  try { await call("POST", `/jobs/${encodeURIComponent(id)}/cancel`); } catch (e) { toast(e.message); }
}

let countsTimer = null;
function countsSoon() {
  if (!countsTimer) countsTimer = setTimeout(() => { countsTimer = null; loadCounts(); }, 250);
}

async function loadCounts() {
  const s = await call("GET", "/stats");
  const f = s.finished;
  const pills = [
    ["queued", s.queued], ["running", s.running], ["succeeded", f.succeeded ?? 0],
    ["failed", (f.failed ?? 0) + (f.timed_out ?? 0)], ["cancelled", f.cancelled ?? 0],
  ];
  $("counts").replaceChildren(...pills.map(([state, n]) =>
    el("span", { class: "pill " + state, id: "count-" + state }, el("b", {}, String(n)), " " + state)));
}

// -- submitting ----------------------------------------------------------------------------

function setupSubmit() {
  const select = $("example");
  for (const title of Object.keys(EXAMPLES)) select.append(el("option", { value: title }, title));
  const fill = () => { $("job-spec").value = JSON.stringify(EXAMPLES[select.value], null, 2); };
  select.addEventListener("change", fill);
  fill();
  $("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("submit-result");
    result.className = "";
    try {
      const spec = JSON.parse($("job-spec").value);
      const accepted = await call("POST", "/jobs", { job: spec });
      result.textContent = "accepted ";
      result.append(el("a", { href: "#job=" + accepted.job }, accepted.job));
      touch(remember({ job: accepted.job, state: "queued", name: spec.name ?? null }));
    } catch (err) {
      result.className = "err";
      result.textContent = err.message;
    }
  });
}

// -- alerts --------------------------------------------------------------------------------

async function loadAlerts() {
  const { alerts } = await call("GET", "/alerts");
  $("alert-count").textContent = alerts.length ? String(alerts.length) : "";
  $("alerts-box").classList.toggle("firing", alerts.length > 0);
  const list = $("alerts");
  list.replaceChildren(...alerts.map((a) => {
    const ack = el("button", { type: "button", class: "ack small", "data-alert": a.alert }, "Ack");
    ack.addEventListener("click", async () => {
      ack.disabled = true;
      try { await call("POST", `/alerts/${a.alert}/ack`); } catch (e) { toast(e.message); }
      loadAlerts();
    });
    return el("li", { id: "alert-" + a.alert, class: "alert" },
      el("div", {}, el("b", {}, a.text), " ", el("span", { class: "muted" }, a.alert)),
      el("div", { class: "muted" }, "job ", el("a", { href: "#job=" + a.job }, a.job), " " + (a.state ?? "")),
      ack);
  }));
  if (!alerts.length) list.append(el("li", { class: "empty" }, "none"));
}

// -- one job's page ------------------------------------------------------------------------

async function openJob(id) {
  closeJob();
  $("home").hidden = true;
  $("job-page").hidden = false;
  for (const part of ["job-lines", "job-events", "job-result", "job-graph", "job-timeline"]) $(part).replaceChildren();
  $("job-id").textContent = id;
  $("job-error").hidden = true;
  $("line-count").textContent = "";
  page = { id, source: null, events: [], lines: 0, next: 0, spans: new Map(), graph: null, loading: false };
  const mine = page;
  let record;
  try {
    record = remember(await call("GET", `/jobs/${encodeURIComponent(id)}`));
    mine.graph = await call("GET", `/jobs/${encodeURIComponent(id)}/graph`);
  } catch (err) {
    $("job-state").textContent = "";
    $("job-error").hidden = false;
    $("job-error").replaceChildren(el("b", {}, err.message));
    return;
  }
  if (page !== mine) return;
  showJob(record);
  await loadLines();
  const source = new EventSource(url(`/events?job=${encodeURIComponent(id)}&after=0`));
  source.onmessage = (message) => pageEvent(mine, JSON.parse(message.data));
  mine.source = source;
  $("job-cancel").onclick = () => cancelJob(id);
}

function closeJob() {
  if (page && page.source) page.source.close();
  page = null;
}

function pageEvent(mine, ev) {
  if (page !== mine) return;
  mine.events.push(ev);
  if (mine.events.length > 2000) mine.events.shift();
  const job = jobs.get(mine.id);
  if (ev.event === "started") remember({ job: mine.id, state: "running", started: ev.ts });
  if (ev.event === "finished") {
    const { state, elapsed, output, error, partial } = ev;
    remember({ job: mine.id, state, elapsed, output, error, partial, ended: ev.ts, stopping: false });
  }
  if (ev.event === "task") span(mine, ev.task, ev.status, ev.ts);
  if (ev.event === "step") span(mine, ev.step, ev.status, ev.ts);
  if (ev.event === "output" || ev.event === "finished") loadLines();
  addEventItem(mine, ev);
  showJob(job);
}

function span(mine, name, status, ts) {
  const known = mine.spans.get(name) || { name, start: ts, end: null, status };
  if (status === "started") known.start = ts;
  else known.end = ts;
  known.status = status;
  mine.spans.set(name, known);
}

function addEventItem(mine, ev) {
  const first = mine.events[0].ts;
  const what = [ev.event, ev.task, ev.step, ev.status, ev.state, ev.message && `“${ev.message}”`]
    .filter(Boolean).join(" ");
  if (ev.event === "output") return; // lines have their own panel
  const list = $("job-events");
  list.append(el("li", { class: "ev-" + ev.event }, el("span", { class: "at" }, "+" + (ev.ts - first).toFixed(3) + "s"), " " + what));
  while (list.children.length > 500) list.firstChild.remove();
}

async function loadLines() {
  const mine = page;
  if (!mine || mine.loading) { if (mine) mine.again = true; return; }
  mine.loading = true;
  try {
    do {
      mine.again = false;
      const logs = await call("GET", `/jobs/${encodeURIComponent(mine.id)}/logs?after=${mine.next}`);
      if (page !== mine) return;
      const pre = $("job-lines");
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      for (const line of logs.lines) {
        pre.append(el("div", { class: "line " + line.stream, "data-n": line.n }, el("span", { class: "n" }, String(line.n)), line.line));
      }
      mine.lines += logs.lines.length;
      mine.next = logs.next;
      $("line-count").textContent = mine.lines ? `${mine.lines} lines` + (logs.trimmed ? `, ${logs.trimmed} trimmed` : "") : "";
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      if (logs.lines.length) mine.again = mine.again || !logs.done;
    } while (mine.again);
  } finally {
    mine.loading = false;
  }
}

function showJob(job) {
  if (!job || !page || page.id !== job.job) return;
  $("job-state").replaceWith(Object.assign(badge(job), { id: "job-state" }));
  $("job-name").textContent = job.name ? `(${job.name})` : "";
  $("job-elapsed").textContent = elapsed(job);
  $("job-cancel").hidden = FINAL.has(job.state);
  showOutcome(job);
  drawGraph(page.graph, nodeStates(page, job));
  drawTimeline(page, job);
}

function showOutcome(job) {
  const result = $("job-result");
  const box = $("job-error");
  if (!FINAL.has(job.state)) { result.textContent = "(running)"; box.hidden = true; return; }
  const shown = job.state === "succeeded" ? job.output : job.partial;
  result.textContent = shown === undefined ? "—" : JSON.stringify(shown, null, 2);
  const error = job.error;
  box.hidden = !error;
  if (!error) return;
  const where = error.step ? ` at ${error.step}${error.name ? " (" + error.name + ")" : ""}` : "";
  const parts = [
    el("div", { class: "error-title" }, el("b", { class: "error-type" }, error.type), where),
    el("div", { class: "error-message" }, error.message),
  ];
  if (error.exit !== undefined) parts.push(el("div", { class: "muted" }, "exit status " + error.exit));
  if (error.stderr) parts.push(el("pre", { class: "stderr" }, error.stderr));
  box.replaceChildren(...parts);
}

// A node's state: from task events (graphs) or step events (--trace); without them, the
// job's own outcome (every step before a failing one succeeded).
function nodeStates(mine, job) {
  const states = new Map();
  if (!mine.graph) return states;
  for (const node of mine.graph.nodes) {
    const key = mine.graph.kind === "tasks" ? node.name : node.name.split(" ")[0];
    const known = mine.spans.get(key);
    if (known) states.set(node.name, known.status === "started" ? "running" : known.status);
  }
  if (mine.graph.kind === "steps" && states.size === 0) {
    const failedAt = job.error && job.error.step;
    let past = false;
    for (const node of mine.graph.nodes) {
      const path = node.name.split(" ")[0];
      if (job.state === "succeeded") states.set(node.name, "succeeded");
      else if (failedAt && !past && failedAt.startsWith(path)) { states.set(node.name, job.state); past = true; }
      else if (failedAt && !past) states.set(node.name, "succeeded");
      else if (job.state === "running" && !past) { states.set(node.name, "running"); past = true; }
    }
  }
  return states;
}

function drawGraph(graph, states) {
  if (!graph) return;
  const W = 150, H = 34, GX = 40, GY = 14;
  const depth = new Map();
  for (const node of graph.nodes) depth.set(node.name, Math.max(-1, ...node.needs.map((n) => depth.get(n) ?? 0)) + 1);
  const rows = new Map();
  const place = new Map();
  for (const node of graph.nodes) {
    const d = depth.get(node.name);
    const r = rows.get(d) ?? 0;
    rows.set(d, r + 1);
    place.set(node.name, { x: 8 + d * (W + GX), y: 8 + r * (H + GY) });
  }
  const width = 16 + (Math.max(0, ...depth.values()) + 1) * (W + GX) - GX;
  const height = 16 + Math.max(1, ...rows.values()) * (H + GY) - GY;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const add = (parent, tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    parent.append(n);
    return n;
  };
  for (const node of graph.nodes) for (const need of node.needs) {
    const a = place.get(need), b = place.get(node.name);
    const mid = (a.x + W + b.x) / 2;
    add(svg, "path", { d: `M${a.x + W},${a.y + H / 2} C${mid},${a.y + H / 2} ${mid},${b.y + H / 2} ${b.x},${b.y + H / 2}`, class: "edge" });
  }
  for (const node of graph.nodes) {
    const p = place.get(node.name);
    const state = states.get(node.name) ?? "pending";
    const g = add(svg, "g", { class: "node " + state, "data-node": node.name, "data-state": state });
    add(g, "rect", { x: p.x, y: p.y, width: W, height: H, rx: 8 });
    add(g, "circle", { cx: p.x + 14, cy: p.y + H / 2, r: 5 });
    add(g, "text", { x: p.x + 26, y: p.y + H / 2 + 4 }, node.name.length > 19 ? node.name.slice(0, 18) + "…" : node.name);
    add(g, "title", {}, `${node.name}: ${state}`);
  }
  $("job-graph").replaceChildren(svg);
}

// The job's bar, and one per task (or traced step) that started, on one time axis.
function drawTimeline(mine, job) {
  const t0 = job.created ?? job.started ?? mine.events[0]?.ts;
  if (!t0) return;
  const now = Date.now() / 1000;
  const end = job.ended ?? (FINAL.has(job.state) ? (job.started ?? t0) + (job.elapsed ?? 0) : now);
  const total = Math.max(end - t0, 0.001);
  const bars = [{ name: "job " + job.job, start: job.started ?? t0, end: FINAL.has(job.state) ? end : now, status: job.state, queued: t0 }];
  for (const s of mine.spans.values()) bars.push({ name: s.name, start: s.start, end: s.end ?? now, status: s.status === "started" ? "running" : s.status });
  const rows = bars.map((b) => {
    const left = ((b.start - t0) / total) * 100;
    const width = Math.max(((b.end - b.start) / total) * 100, 0.6);
    const track = el("div", { class: "track" });
    if (b.queued !== undefined && b.start > b.queued) {
      track.append(el("div", { class: "bar queued", style: `left:0%;width:${((b.start - b.queued) / total) * 100}%` }));
    }
    track.append(el("div", { class: "bar " + b.status, style: `left:${left}%;width:${Math.min(width, 100 - left)}%`, title: `${b.name}: ${b.status}, ${seconds(b.end - b.start)}` }));
    return el("div", { class: "gantt-row" }, el("span", { class: "label" }, b.name), track, el("span", { class: "num muted" }, seconds(b.end - b.start)));
  });
  $("job-timeline").replaceChildren(...rows, el("div", { class: "axis muted" }, el("span", {}, "0"), el("span", {}, seconds(total))));
}

// -- routing and the live stream -----------------------------------------------------------

function route() {
  const match = location.hash.match(/^#job=(.+)$/);
  if (match) { openJob(decodeURIComponent(match[1])); return; }
  closeJob();
  $("home").hidden = false;
  $("job-page").hidden = true;
}

function connect() {
  const link = $("link");
  const source = new EventSource(url("/events"));
  const state = (s, text) => { link.dataset.state = s; $("link-text").textContent = text; };
  source.onopen = () => { state("live", "live"); refreshSoon(); };
  source.onerror = () => state("down", source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
  source.onmessage = (message) => applyLive(JSON.parse(message.data));
}

function tick() {
  for (const row of document.querySelectorAll("#jobs tbody tr[data-state=running]")) {
    const job = jobs.get(row.dataset.job);
    if (job) row.querySelector(".elapsed").textContent = elapsed(job);
  }
  for (const cell of document.querySelectorAll("td.when")) cell.textContent = ago(Number(cell.dataset.ts) || null);
  if (page && jobs.get(page.id)?.state === "running") { showJob(jobs.get(page.id)); loadLines(); }
}

function setupFilters() {
  for (const button of document.querySelectorAll(".filter")) {
    button.addEventListener("click", () => {
      filter = button.dataset.filter;
      for (const other of document.querySelectorAll(".filter")) other.classList.toggle("on", other === button);
      for (const job of jobs.values()) touch(job);
    });
  }
}

// Older jobs, a page at a time, below the live table (GET /jobs?before=ID: the first page
// starts at the oldest row the table shows, each next one at the answer's cursor). They are the
// records as they were when loaded, not live; each opens its job's page.
const OLDER_PAGE = 100;
let olderCursor; // undefined: no page loaded yet; null: no older job left

async function loadOlder() {
  const rows = document.querySelector("#jobs tbody").rows;
  const from = olderCursor === undefined ? rows[rows.length - 1]?.dataset.job : olderCursor;
  if (!from) return;
  const query = `/jobs?limit=${OLDER_PAGE}&before=${encodeURIComponent(from)}`;
  const { jobs: records, next } = await call("GET", query);
  const body = document.querySelector("#older-jobs tbody");
  for (const record of records) {
    body.append(el("tr", { "data-job": record.job },
      el("td", {}, el("a", { href: "#job=" + encodeURIComponent(record.job) }, record.job)),
      el("td", { class: "name" }, record.name ?? ""),
      el("td", {}, badge(record)),
      el("td", { class: "muted when", "data-ts": record.created ?? "" }, ago(record.created)),
    ));
  }
  olderCursor = next;
  $("older").hidden = body.rows.length === 0;
  $("older-more").hidden = next === null;
}

// The table keeps MAX_ROWS rows; an older job is opened by its id (its page needs no row), or
// found in the older pages.
function setupFind() {
  $("rows-note").textContent = `The newest ${MAX_ROWS} jobs are listed live.`;
  $("older-more").addEventListener("click", () => loadOlder().catch((err) => toast(err.message)));
  $("find-job").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("find-job-id").value.trim();
    if (id) location.hash = "job=" + encodeURIComponent(id);
  });
}

async function start() {
  setupSubmit();
  setupFind();
  setupFilters();
  connect(); // live first, then the records: nothing falls between the two
  const { jobs: records } = await call("GET", "/jobs?limit=" + MAX_ROWS);
  for (const record of records.reverse()) touch(remember(record));
  $("no-jobs").hidden = records.length > 0;
  loadAlerts();
  loadCounts();
  setInterval(tick, 500);
  setInterval(loadCounts, 2000);
  window.addEventListener("hashchange", route);
  route();
}

start().catch((err) => toast(err.message));
