// The operations page: workers, queues, Redis and the engine from /health, throughput from /stats, refreshed every
// few seconds; says plainly when Redis or the workers are down.
"use strict";
const REFRESH_MS = 5000;
const DOWN_REFRESH_MS = 2000; // while something is down, look again sooner: the banner clears soon after it is back
const SVG = "http://www.w3.org/2000/svg";
const QUEUE_ROLES = { interactive: "synthesis requests", bulk: "audiobook chunks and other long work" };


function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function ago(s) {
  if (s == null) return "";
  return s < 60 ? `${Number(s).toFixed(1)} s ago` : `${Math.round(s / 60)} min ago`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// /health answers 503 with a JSON body while Redis is down: read it rather than throw like api() does.
async function getHealth() {
  const response = await fetch("/health", { headers: { Accept: "application/json" } });
  if (response.status === 401) location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
  const body = (response.headers.get("Content-Type") || "").includes("json") ? await response.json() : null;
  if (!body) throw new Error(`${response.status} ${response.statusText}`);
  return { code: response.status, body };
}

function banner(state, text) {
  const b = $("banner");
  // Rewritten only when it changes, so the live region does not repeat itself every refresh.
  if (b.textContent === text && b.dataset.state === state) return;
  b.dataset.state = state;
  b.textContent = text;
}

// -- /health ------------------------------------------------------------------------------------------------------
async function refreshHealth() {
  let health;
  try {
    health = await getHealth();
  } catch (e) {
    banner("down", `The web app is not answering (${e.message}). Retrying every few seconds.`);
    return false;
  }
  const { code, body } = health;
  if (code === 503 || body.redis?.ok === false) {
    const why = body.redis?.error || body.error?.message || "unreachable";
    banner("down", `Redis is down: ${why}. Jobs cannot be queued or followed until it is back; the web app ` +
                   "reconnects by itself.");
    $("redis").textContent = `down: ${why}`;
    if ($("engine").textContent === "…") $("engine").textContent = $("engine-reason").textContent = "unknown while Redis is down";
    renderWorkers(null);
    renderQueues(null);
    return true;
  }
  const workers = body.workers || [];
  const busy = workers.filter((w) => w.state === "busy").length;
  const waiting = Object.values(body.queues || {}).reduce((n, v) => n + v, 0);
  if (!workers.length) {
    banner("down", "No worker is running: jobs wait in their queues until one starts (chatterbox worker)." +
                   (waiting ? ` ${plural(waiting, "message")} waiting.` : ""));
  } else if (busy === workers.length && waiting) {
    banner("warn", `Running, all busy: Redis up, ${plural(workers.length, "worker")} busy, ` +
                   `${plural(waiting, "message")} waiting in the queues.`);
  } else {
    banner("ok", `Running: Redis up, ${plural(workers.length, "worker")} (${busy} busy).`);
  }
  const r = body.redis || {};
  $("redis").textContent = ["up", r.version && `version ${r.version}`, r.aof != null && `AOF ${r.aof ? "on" : "off"}`,
                            r.used_memory && `${r.used_memory} used`].filter(Boolean).join(" · ");
  if (body.engine) {
    $("engine").textContent = body.engine.name;
    $("engine-reason").textContent = body.engine.reason || "—";
  }
  renderWorkers(workers);
  renderQueues(body.queues || {});
  return true;
}

function cell(label, ...children) {
  const td = el("td", {}, el("div", { className: "v" }, ...children));
  td.dataset.label = label;
  return td;
}

// What a worker runs at once: Chatterbox requests decoded together (of max_batch), or Piper jobs (of its threads).
function batchText(b) {
  if (!b) return "—";
  if (b.max_batch) {
    return `${b.active ?? 0} of ${b.max_batch}` + (b.interactive ? ` (${b.interactive} interactive)` : "") +
      (b.waiting ? `, ${b.waiting} waiting` : "");
  }
  return `${b.jobs ?? 0} of ${b.capacity ?? 1} jobs`;
}

function renderWorkers(workers) {
  const none = $("no-workers");
  if (workers === null) {
    $("workers").replaceChildren();
    none.textContent = "Unknown while Redis is down.";
    none.hidden = false;
    return;
  }
  none.textContent = "No live worker.";
  none.hidden = workers.length > 0;
  const sorted = [...workers].sort((a, b) => (a.hostname || "").localeCompare(b.hostname || "") || a.pid - b.pid);
  $("workers").replaceChildren(...sorted.map((w) => {
    const name = el("span", { className: "mono", textContent: w.hostname || w.instance || "?" });
    const pid = w.pid ? el("div", { className: "muted", textContent: `pid ${w.pid}` }) : null;
    const state = el("span", { className: "state", textContent: w.state });
    state.dataset.state = w.state;
    let job = "—";
    if (w.current_job) {
      // The Speak page shows a job (its text, progress and audio) given ?job=.
      job = el("a", { href: `/?job=${encodeURIComponent(w.current_job)}`, textContent: w.current_job,
                      className: "mono" });
      job.setAttribute("aria-label", `Current job ${w.current_job}, open it on the Speak page`);
    }
    const tr = el("tr", {},
      cell("Worker", name, pid), cell("Device", w.device || "?"), cell("Engine", w.engine ? w.engine + (w.models?.length ? ` (${w.models.join(", ")})` : "") : "?"),
      cell("Model", w.model_loaded ? "loaded" : "loading"), cell("State", state), cell("Batch", batchText(w.batch)),
      cell("Current job", job), cell("Jobs done", String(w.jobs_done ?? 0)), cell("Last seen", ago(w.seen_s_ago)));
    tr.children[7].className = tr.children[8].className = "num";
    tr.dataset.device = w.device || "";
    return tr;
  }));
}

function renderQueues(queues) {
  if (queues === null) {
    $("queues").replaceChildren(el("tr", {}, el("td", { colSpan: 3, textContent: "Unknown while Redis is down." })));
    return;
  }
  // interactive and bulk first, then the per-device queues in name order.
  const rank = (name) => { const i = Object.keys(QUEUE_ROLES).indexOf(name); return i < 0 ? 99 : i; };
  const names = Object.keys(queues).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  $("queues").replaceChildren(...names.map((name) => {
    const tr = el("tr", {}, el("th", { scope: "row", textContent: name }),
                  el("td", { className: "muted", textContent: QUEUE_ROLES[name] || `work for device ${name} only` }),
                  el("td", { className: "num", textContent: String(queues[name]) }));
    tr.dataset.queue = name;
    return tr;
  }));
}

// -- /stats -------------------------------------------------------------------------------------------------------
async function refreshStats() {
  let stats;
  try {
    stats = await api("/stats");
  } catch (e) {
    $("stats-error").textContent = `Could not read the throughput: ${e.message}`;
    $("stats-error").hidden = false;
    return false;
  }
  $("stats-error").hidden = true;
  const minutes = stats.audio_s / 60;
  const failed = stats.buckets.reduce((n, b) => n + b.failed, 0);
  const totals = $("totals");
  totals.dataset.jobs = stats.jobs;
  totals.dataset.audioS = stats.audio_s;
  const text = `${plural(stats.jobs, "job")} finished${failed ? ` (${failed} failed)` : ""}, ` +
               `${minutes.toFixed(1)} min of audio in the last hour`;
  if (totals.textContent !== text) {
    totals.replaceChildren(el("strong", { textContent: String(stats.jobs) }), ` ${stats.jobs === 1 ? "job" : "jobs"} finished` +
      `${failed ? ` (${failed} failed)` : ""}, `, el("strong", { textContent: minutes.toFixed(1) }),
      " min of audio in the last hour");
  }
  const buckets = stats.buckets;
  chart($("jobs-chart"), buckets, {
    value: (b) => b.jobs, part: (b) => b.failed, className: "bar-jobs", format: (v) => String(v),
    unit: (v) => (v === 1 ? "job" : "jobs"), title: "Jobs finished per 5 minutes"});
  chart($("audio-chart"), buckets, {
    value: (b) => b.audio_s / 60, className: "bar-audio", format: (v) => v.toFixed(1), unit: () => "min of audio",
    title: "Minutes of audio made per 5 minutes"});
  $("stats-rows").replaceChildren(...buckets.map((b) => el("tr", {},
    el("th", { scope: "row", textContent: `${clock(b.start)}–${clock(b.start + 300)}` }),
    el("td", { className: "num", textContent: String(b.jobs) }),
    el("td", { className: "num", textContent: String(b.failed) }),
    el("td", { className: "num", textContent: (b.audio_s / 60).toFixed(2) }))));
  $("total-jobs").textContent = String(stats.jobs);
  $("total-failed").textContent = String(failed);
  $("total-audio").textContent = minutes.toFixed(2);
  return true;
}

// A bar per bucket in an inline SVG that scales with its box; the aria-label says what a sighted reader sees.
function chart(box, buckets, { value, part, className, format, unit, title }) {
  const W = 360, H = 130, left = 30, bottom = 18, top = 8;
  const values = buckets.map(value);
  const peak = Math.max(...values);
  const max = peak > 0 ? niceCeiling(peak) : 1;
  const slot = (W - left) / buckets.length;
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const g = svg("g");
  buckets.forEach((b, i) => {
    const v = values[i];
    const x = left + i * slot + slot * 0.15;
    const w = slot * 0.7;
    const span = `${clock(b.start)}–${clock(b.start + 300)}`;
    const bar = svg("rect", { x, y: y(v), width: w, height: Math.max(0, y(0) - y(v)), class: className },
                    svg("title", {}, `${span}: ${format(v)} ${unit(v)}`));
    g.append(bar);
    if (part && part(b) > 0) {
      g.append(svg("rect", { x, y: y(part(b)), width: w, height: y(0) - y(part(b)), class: "bar-failed" },
                   svg("title", {}, `${span}: ${part(b)} failed`)));
    }
  });
  const axis = svg("g", {},
    svg("line", { x1: left, y1: y(0), x2: W, y2: y(0), class: "axis" }),
    svg("line", { x1: left, y1: top, x2: left, y2: y(0), class: "axis" }),
    svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, format(max)),
    svg("text", { x: left - 4, y: y(0), "text-anchor": "end" }, "0"),
    svg("text", { x: left, y: H - 4 }, clock(buckets[0].start)),
    svg("text", { x: left + (W - left) / 2, y: H - 4, "text-anchor": "middle" }, clock(buckets[6].start)),
    svg("text", { x: W, y: H - 4, "text-anchor": "end" }, "now"));
  const total = values.reduce((a, b) => a + b, 0);
  const busiest = values.indexOf(peak);
  const described = peak > 0
    ? `${title}, last hour: ${format(total)} ${unit(total)} in all; busiest ${clock(buckets[busiest].start)}–` +
      `${clock(buckets[busiest].start + 300)} with ${format(peak)}.`
    : `${title}, last hour: none.`;
  const picture = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": described },
                      axis, g);
  box.replaceChildren(picture);
}

function niceCeiling(v) {
  // 1, 2, 5 steps, so the axis' top label is a round number.
  const power = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= v);
}

// -- /storage (admin keys) ----------------------------------------------------------------------------------------
const FOLDER_ROLES = { outputs: "finished jobs' audio", books: "audiobooks: plans, chapters, M4Bs",
                       chunks: "the chunk cache books share", uploads: "clips waiting for their job",
                       voices: "saved voices (never swept)" };
let storageAt = 0;

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

async function refreshStorage() {
  if (Date.now() - storageAt < 60000) return; // measured at most once a minute by the server anyway
  const response = await fetch("/storage", { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    $("storage-error").textContent = response.status === 403
      ? "Storage figures are shown to admin keys." : `Could not read the storage figures: ${body?.error?.message || response.status}`;
    $("storage-error").hidden = false;
    return;
  }
  storageAt = Date.now();
  $("storage-error").hidden = true;
  const r = body.redis || {};
  const sweep = body.last_sweep;
  $("storage-summary").textContent = [
    body.retention_days > 0 ? `Finished work is kept ${body.retention_days} days` : "Retention is off: everything is kept",
    `${plural(body.jobs, "job")} on record (${body.books_unfinished} books unfinished)`,
    `Redis ${bytes(r.used_memory || 0)} of ${r.maxmemory ? bytes(r.maxmemory) : "no cap"}` +
      (r.maxmemory_policy ? ` (${r.maxmemory_policy})` : "") + `, AOF ${bytes(r.aof_size || 0)}`,
    sweep ? `last sweep ${clock(sweep.at)}: ${plural(sweep.jobs, "job")} and ${plural(sweep.chunks, "chunk")} deleted`
          : "not swept yet",
  ].join(" · ") + ".";
  const rows = Object.entries(body.disk || {}).map(([name, d]) => {
    const tr = el("tr", {}, el("th", { scope: "row", textContent: name }),
                  el("td", { className: "muted", textContent: FOLDER_ROLES[name] || "" }),
                  el("td", { className: "num", textContent: String(d.files) }),
                  el("td", { className: "num", textContent: bytes(d.bytes) }));
    tr.dataset.folder = name;
    return tr;
  });
  rows.push(el("tr", {}, el("th", { scope: "row", textContent: "total" }), el("td"),
                el("td", { className: "num", textContent: String(body.disk_total.files) }),
                el("td", { className: "num", textContent: bytes(body.disk_total.bytes) })));
  $("storage").replaceChildren(...rows);
}

// -- refresh loop -------------------------------------------------------------------------------------------------
let timer = null;
async function refresh() {
  clearTimeout(timer);
  timer = null;
  if (document.hidden) return; // a background tab asks nothing; visibilitychange restarts it
  try {
    const [health] = await Promise.all([refreshHealth(), refreshStats(), refreshStorage().catch(() => {})]);
    showError("");
    $("updated").textContent = `${health ? "Updated" : "Last tried"} at ${new Date().toLocaleTimeString()}.`;
  } catch (e) {
    showError(e.message); // a bug in drawing, say: shown, and the next refresh still comes
  } finally {
    clearTimeout(timer); // a refresh started meanwhile (the network came back, say) set one too: keep one loop
    timer = setTimeout(refresh, $("banner").dataset.state === "down" ? DOWN_REFRESH_MS : REFRESH_MS);
  }
}

document.addEventListener("visibilitychange", () => { if (!document.hidden && !timer) refresh(); });
// The browser knows when its own network goes and comes back: say so at once, not at the next tick.
window.addEventListener("offline", () => refresh());
window.addEventListener("online", () => refresh());
refresh();
