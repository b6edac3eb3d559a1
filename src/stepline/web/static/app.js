// The dashboard: plain DOM, no framework and nothing from a CDN. State comes from the REST
// endpoints once, then from GET /events (Server-Sent Events) as it changes.
"use strict";

const token = new URLSearchParams(location.search).get("access_token");
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, cancelled: 2, timed_out: 2 };
const jobs = new Map(); // id -> {job, name, state, elapsed, started, events: []}
let shownJob = null;

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
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

// -- the job table -------------------------------------------------------------------------

function remember(record) {
  const known = jobs.get(record.job);
  if (known && RANK[known.state] > RANK[record.state]) return known; // never move back
  const job = Object.assign(known || { events: [] }, record);
  jobs.set(job.job, job);
  return job;
}

function apply(ev) {
  if (ev.event === "alert") loadAlerts();
  if (!ev.job || !["accepted", "started", "progress", "finished", "log", "output", "retry", "cancelling", "step"].includes(ev.event)) return;
  let job = jobs.get(ev.job) || remember({ job: ev.job, state: "queued", name: ev.name ?? null, elapsed: 0 });
  if (ev.event === "accepted") job = remember({ job: ev.job, state: "queued" });
  if (ev.event === "started") { job = remember({ job: ev.job, state: "running" }); job.started = ev.ts; }
  if (ev.event === "progress") job.elapsed = ev.elapsed;
  if (ev.event === "finished") {
    job = remember({ job: ev.job, state: ev.state, elapsed: ev.elapsed });
    job.output = ev.output; job.error = ev.error;
  }
  if (!job.events.some((seen) => seen.ts === ev.ts && seen.event === ev.event)) job.events.push(ev);
  renderRow(job);
  if (shownJob === ev.job) showEvent(job, ev);
}

function renderRow(job) {
  const body = document.querySelector("#jobs tbody");
  let row = document.getElementById("row-" + job.job);
  if (!row) {
    row = el("tr", { id: "row-" + job.job, "data-job": job.job });
    body.prepend(row);
  }
  const cancel = el("button", { type: "button", class: "cancel", "data-job": job.job }, "Cancel");
  cancel.hidden = RANK[job.state] === 2;
  cancel.addEventListener("click", () => cancelJob(job.job));
  row.replaceChildren(
    el("td", {}, el("a", { href: "#job=" + job.job }, job.job)),
    el("td", {}, job.name ?? ""),
    el("td", { class: "state " + job.state }, job.state),
    el("td", {}, elapsed(job)),
    el("td", {}, cancel),
  );
}

function elapsed(job) {
  if (job.state === "running" && job.started) return (Date.now() / 1000 - job.started).toFixed(1) + "s";
  return (job.elapsed ?? 0).toFixed(3) + "s";
}

async function cancelJob(id) {
  try { await call("POST", `/jobs/${id}/cancel`); } catch (e) { alert(e.message); }
}

// -- submitting ----------------------------------------------------------------------------

document.getElementById("submit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const result = document.getElementById("submit-result");
  result.className = "";
  try {
    const spec = JSON.parse(document.getElementById("job-spec").value);
    const name = spec.name;
    const accepted = await call("POST", "/jobs", name ? { job: spec, name } : { job: spec });
    result.textContent = "accepted " + accepted.job;
    remember({ job: accepted.job, state: "queued", name: name ?? null, elapsed: 0 });
    renderRow(jobs.get(accepted.job));
  } catch (err) {
    result.className = "err";
    result.textContent = err.message;
  }
});

// -- alerts --------------------------------------------------------------------------------

async function loadAlerts() {
  const { alerts } = await call("GET", "/alerts");
  const list = document.getElementById("alerts");
  list.replaceChildren(...alerts.map((a) => {
    const ack = el("button", { type: "button", class: "ack", "data-alert": a.alert }, "Ack");
    ack.addEventListener("click", async () => {
      try { await call("POST", `/alerts/${a.alert}/ack`); } catch (e) { alert(e.message); }
      loadAlerts();
    });
    return el("li", { id: "alert-" + a.alert }, `${a.alert} (${a.job}): ${a.text} `, ack);
  }));
  if (!alerts.length) list.append(el("li", { class: "empty" }, "none"));
}

// -- one job's page ------------------------------------------------------------------------

async function showJob(id) {
  shownJob = id;
  document.getElementById("home").hidden = true;
  document.getElementById("job-page").hidden = false;
  for (const part of ["job-lines", "job-timeline", "job-result", "job-graph"]) document.getElementById(part).replaceChildren();
  document.getElementById("job-id").textContent = id;
  const job = remember(await call("GET", `/jobs/${id}`));
  const logs = await call("GET", `/jobs/${id}/logs`);
  for (const line of logs.lines) addLine(line.stream, line.line, line.n);
  drawGraph(await call("GET", `/jobs/${id}/graph`));
  for (const ev of job.events) showEvent(job, ev, true);
  showState(job);
  document.getElementById("job-cancel").onclick = () => cancelJob(id);
}

function showHome() {
  shownJob = null;
  document.getElementById("home").hidden = false;
  document.getElementById("job-page").hidden = true;
}

function addLine(stream, text, n) {
  const pre = document.getElementById("job-lines");
  if (n !== undefined && pre.querySelector(`[data-n="${n}"]`)) return;
  pre.append(el("div", { class: "line " + stream, "data-n": n ?? "" }, text));
}

function showEvent(job, ev, replay = false) {
  const first = job.events[0]?.ts ?? ev.ts;
  const at = "+" + (ev.ts - first).toFixed(3) + "s ";
  const what = ev.event + (ev.step ? " " + ev.step : "") + (ev.state ? " " + ev.state : "");
  document.getElementById("job-timeline").append(el("li", {}, at + what));
  if (!replay && ev.event === "log") addLine("log", ev.message);
  if (!replay && ev.event === "output") addLine(ev.stream, ev.line);
  showState(job);
}

function showState(job) {
  const state = document.getElementById("job-state");
  state.textContent = job.state;
  state.className = job.state;
  document.getElementById("job-name").textContent = job.name ? `(${job.name})` : "";
  document.getElementById("job-elapsed").textContent = elapsed(job);
  document.getElementById("job-cancel").hidden = RANK[job.state] === 2;
  const result = job.state === "succeeded" ? job.output : job.error;
  document.getElementById("job-result").textContent = RANK[job.state] === 2 ? JSON.stringify(result, null, 2) : "";
}

function drawGraph(graph) {
  // Layered drawing: a node's column is one more than its deepest need.
  const depth = new Map();
  for (const node of graph.nodes) depth.set(node.name, Math.max(-1, ...node.needs.map((n) => depth.get(n) ?? 0)) + 1);
  const rows = new Map();
  const place = new Map();
  for (const node of graph.nodes) {
    const d = depth.get(node.name);
    const r = rows.get(d) ?? 0;
    rows.set(d, r + 1);
    place.set(node.name, { x: 10 + d * 170, y: 10 + r * 50 });
  }
  const width = 10 + (Math.max(0, ...depth.values()) + 1) * 170;
  const height = 10 + Math.max(1, ...rows.values()) * 50;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    svg.append(n);
  };
  for (const node of graph.nodes) for (const need of node.needs) {
    const a = place.get(need), b = place.get(node.name);
    add("line", { x1: a.x + 140, y1: a.y + 16, x2: b.x, y2: b.y + 16, stroke: "#8a94a6" });
  }
  for (const node of graph.nodes) {
    const p = place.get(node.name);
    add("rect", { x: p.x, y: p.y, width: 140, height: 32, rx: 6, fill: "#fff", stroke: "#1d2433", class: "node" });
    add("text", { x: p.x + 8, y: p.y + 20 }, node.name.slice(0, 22));
  }
  document.getElementById("job-graph").replaceChildren(svg);
}

function route() {
  const match = location.hash.match(/^#job=(.+)$/);
  if (match) showJob(decodeURIComponent(match[1])).catch((e) => alert(e.message));
  else showHome();
}

// -- live ----------------------------------------------------------------------------------

async function start() {
  const { jobs: records } = await call("GET", "/jobs?limit=200");
  for (const record of records.reverse()) renderRow(remember(record));
  loadAlerts();
  const link = document.getElementById("link");
  const source = new EventSource(url("/events?after=0"));
  source.onopen = () => { link.textContent = "live"; };
  source.onerror = () => { link.textContent = "reconnecting…"; };
  source.onmessage = (message) => apply(JSON.parse(message.data));
  setInterval(async () => {
    const s = await call("GET", "/stats");
    const f = s.finished;
    document.getElementById("counts").textContent =
      `queued ${s.queued} · running ${s.running} · succeeded ${f.succeeded ?? 0} · failed ${f.failed ?? 0} · cancelled ${f.cancelled ?? 0}`;
    for (const job of jobs.values()) if (job.state === "running") renderRow(job);
  }, 1000);
  window.addEventListener("hashchange", route);
  route();
}

start();
