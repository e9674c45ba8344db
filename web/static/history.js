// The history page: the signed-in key's jobs, a page at a time from the server, with search and filters kept in
// the page's URL (so a reload or a shared link shows the same list); replay, downloads, run again (as is, or changed
// on the Speak page), cancel and delete. Jobs still queued or running are followed live; when the connection drops,
// the page says so and catches up once the server answers again.
"use strict";
const FINISHED = ["succeeded", "failed", "cancelled"];
const FORMATS = ["wav", "mp3", "ogg", "flac"];
const DEFAULT_LIMIT = 25;
const POLL_MS = 2500; // jobs still running on this page
const REFRESH_MS = 20000; // the whole page, for jobs made elsewhere
const HIDDEN_PARAMS = ["upload", "keep_upload", "name", "description"]; // clone internals, or shown elsewhere

const view = { q: "", status: "", kind: "", voice: "", limit: DEFAULT_LIMIT, offset: 0, total: 0 };
const rows = new Map(); // job id -> {tr, job, signature}
const voiceNames = new Map(); // voice id -> name, from GET /voices
let loadSeq = 0; // answers to superseded requests (fast typing) are dropped
let lastLoad = 0;
let timer = null;
let failures = 0; // requests in a row that could not reach the server

// -- the URL is the page's state ----------------------------------------------------------------------------------
function readUrl() {
  const p = new URLSearchParams(location.search);
  view.q = p.get("q") || "";
  view.status = p.get("status") || "";
  view.kind = p.get("kind") || "";
  view.voice = p.get("voice") || "";
  const limit = parseInt(p.get("limit"), 10);
  view.limit = limit >= 1 && limit <= 500 ? limit : DEFAULT_LIMIT;
  const offset = parseInt(p.get("offset"), 10);
  view.offset = offset > 0 ? offset : 0;
  $("q").value = view.q;
  setSelect($("status"), view.status);
  setSelect($("kind"), view.kind);
  setSelect($("voice"), view.voice);
  setSelect($("limit"), String(view.limit));
}

function setSelect(select, value, text = value) {
  // A value the menu does not offer (?limit=2, or a voice since deleted) is added, so the control tells the truth.
  if (value && ![...select.options].some((o) => o.value === value)) select.add(new Option(text, value));
  select.value = value;
}

function query() {
  const p = new URLSearchParams();
  if (view.q) p.set("q", view.q);
  if (view.status) p.set("status", view.status);
  if (view.kind) p.set("kind", view.kind);
  if (view.voice) p.set("voice", view.voice);
  if (view.limit !== DEFAULT_LIMIT) p.set("limit", view.limit);
  if (view.offset) p.set("offset", view.offset);
  return p;
}

function writeUrl(push) {
  const qs = query().toString();
  const url = location.pathname + (qs ? `?${qs}` : "");
  if (url === location.pathname + location.search) return;
  history[push ? "pushState" : "replaceState"](null, "", url);
}

// -- formatting ---------------------------------------------------------------------------------------------------
function seconds(value) {
  if (value == null || value === "") return "";
  const s = Number(value);
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.round((s % 3600) / 60)).padStart(2, "0")} min`;
}

function created(ts) {
  const date = new Date(ts * 1000);
  const today = new Date().toDateString() === date.toDateString();
  const text = today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const node = el("time", { dateTime: date.toISOString(), textContent: text });
  node.title = date.toLocaleString();
  return node;
}

function voiceName(id) {
  return voiceNames.get(id) || id;
}

// What a screen reader user hears to tell one row's buttons from another's.
function label(job) {
  if (job.kind === "clone") return `voice clone ${job.params?.name || job.text_preview || job.id}`;
  if (job.kind === "audiobook") return `audiobook ${job.title || job.id}`;
  const text = (job.text_preview || "").trim();
  return `“${text.length > 40 ? text.slice(0, 40) + "…" : text || job.id}”`;
}


function definitions(className, pairs) {
  const dl = el("dl", { className });
  for (const [name, value] of pairs) {
    if (value == null || value === "") continue;
    dl.append(el("div", {}, el("dt", { textContent: name }), el("dd", { textContent: value })));
  }
  return dl.childElementCount ? dl : null;
}

function link(href, text, ariaLabel, className) {
  const a = el("a", { href, textContent: text, className });
  if (ariaLabel) a.setAttribute("aria-label", ariaLabel);
  return a;
}

function button(text, ariaLabel, className, onclick) {
  const b = el("button", { type: "button", textContent: text, className, onclick });
  b.setAttribute("aria-label", ariaLabel);
  return b;
}

// -- one row ------------------------------------------------------------------------------------------------------
// A cell's content is in one box, so that on a phone (where each row is a card) the label and the box sit side by side.
function cell(className, labelText, ...children) {
  const td = el("td", { className }, el("div", { className: "v" }, ...children));
  td.dataset.label = labelText;
  return td;
}

function fill(tr, name, ...children) {
  const box = tr.querySelector(`td.${name} > .v`);
  box.replaceChildren(...children.filter((c) => c != null && c !== ""));
  box.parentElement.classList.toggle("blank", box.childNodes.length === 0);
}

function createRow(job) {
  const tr = el("tr");
  tr.dataset.id = job.id;
  const kind = job.kind || "synthesize";
  const preview = kind === "audiobook" && job.title ? job.title : job.text_preview || "";
  const text = el("span", { className: "preview", textContent: preview });
  text.title = preview;
  const tag = kind === "synthesize" ? null : el("span", { className: "kind-tag",
                                                         textContent: kind === "clone" ? "voice clone" : kind });
  const more = (job.text_chars || 0) > (job.text_preview || "").length
    ? el("span", { className: "muted", textContent: ` (${job.text_chars} characters)` }) : null;
  tr.append(
    cell("created", "Created", created(job.created_at)),
    cell("text wide-on-phone", "Text", tag, text, more),
    cell("voice", "Voice", job.voice ? voiceName(job.voice) : "—"),
    cell("settings", "Settings"),
    cell("status", "Status"),
    cell("duration", "Audio"),
    cell("timings", "Timings"),
    cell("job-actions wide-on-phone", "Actions", el("div", { className: "actions" }), el("div", { className: "player" }),
         el("p", { className: "row-note muted", hidden: true }), el("p", { className: "row-error error", hidden: true })),
  );
  tr.querySelector(".row-note").setAttribute("role", "status");
  tr.querySelector(".row-error").setAttribute("role", "alert");
  const entry = { tr, job, signature: "" };
  rows.set(job.id, entry);
  updateRow(entry, job);
  return tr;
}

// Everything that changes while a job runs is patched in place, so that a player or a focused button survives.
function updateRow(entry, job) {
  const previous = entry.job.status;
  entry.job = { ...entry.job, ...job };
  job = entry.job;
  const { tr } = entry;
  const params = Object.entries(job.params || {}).filter(([k]) => !HIDDEN_PARAMS.includes(k))
    .map(([k, v]) => [k.replaceAll("_", " "), Array.isArray(v) ? v.join(", ") : String(v)]);
  fill(tr, "settings", definitions("params", [["format", job.format], ...params]));
  fill(tr, "voice", job.voice ? voiceName(job.voice) : "—");
  const badge = el("span", { className: "status-badge", textContent: job.status });
  badge.dataset.status = job.status;
  const parts = [badge];
  if (!FINISHED.includes(job.status) && job.status !== "queued") {
    const percent = Math.round((job.progress || 0) * 100);
    const bar = el("progress", { max: 1, value: job.progress || 0, textContent: `${percent}%` });
    bar.setAttribute("aria-label", `${label(job)}: ${percent} percent`);
    parts.push(bar);
    if (job.chunks_total) parts.push(el("div", { className: "muted small", textContent:
      `${job.chunks_done || 0} of ${job.chunks_total} chunks` }));
  }
  if (job.attempt > 1) parts.push(el("div", { className: "muted small", textContent: `attempt ${job.attempt}` }));
  if (job.error && job.status === "failed") parts.push(el("p", { className: "job-error error", textContent: job.error }));
  fill(tr, "status", ...parts);
  fill(tr, "duration", seconds(job.duration_s ?? job.audio_s));
  fill(tr, "timings", definitions("timings", [
    ["queued", seconds(job.queued_s)], ["first audio", seconds(job.first_chunk_s)],
    ["total", seconds(job.total_s)], ["RTF", job.rtf != null ? Number(job.rtf).toFixed(3) : ""]]));
  const signature = `${job.status}|${job.voice_id || ""}`;
  if (signature !== entry.signature) {
    entry.signature = signature;
    renderActions(entry);
  }
  if (previous && previous !== job.status) announce(`${label(job)} is now ${job.status}.`);
}

function audioUrl(job) {
  if (job.status !== "succeeded") return null;
  if (job.kind === "audiobook") return `/audiobooks/${job.id}/m4b`;
  if (job.kind === "clone") return job.voice_id ? `/voices/${job.voice_id}/sample` : null;
  return `/jobs/${job.id}/audio`;
}

function renderActions(entry) {
  const { job, tr } = entry;
  const box = tr.querySelector("div.actions");
  const focused = box.contains(document.activeElement) ? document.activeElement.className : null;
  const name = label(job);
  const kind = job.kind || "synthesize";
  const items = [];
  const src = audioUrl(job);
  const player = tr.querySelector(".player");
  if (src && !player.querySelector("audio")) {
    items.push(button(kind === "clone" ? "▶ Sample" : "▶ Play", `Play ${name}`, "replay", () => replay(entry, src)));
  }
  if (!src) player.replaceChildren(); // a deleted voice or a job run again: no stale player
  if (job.status === "succeeded") {
    if (kind === "audiobook") {
      items.push(link(`/audiobooks/${job.id}/m4b?download=1`, "Download M4B", `Download ${name} as M4B`, "download m4b"));
    } else if (kind === "synthesize") {
      const downloads = el("span", { className: "downloads" }, el("span", { className: "muted", textContent: "Download" }));
      for (const fmt of FORMATS) {
        downloads.append(link(`/jobs/${job.id}/audio?format=${fmt}&download=1`, fmt.toUpperCase(),
                              `Download ${name} as ${fmt.toUpperCase()}`, `download ${fmt}`));
      }
      items.push(downloads);
    }
  }
  if (kind === "audiobook") items.push(link("/books", "Audiobooks page", `Open ${name} on the Audiobooks page`, "open"));
  if (kind === "clone" && job.voice_id) {
    items.push(link("/voice-library", "Voices page", `Open the voice of ${name} on the Voices page`, "open"));
  }
  if (kind === "synthesize" && FINISHED.includes(job.status)) {
    items.push(button("Run again", `Run ${name} again with the same settings`, "rerun", (e) => rerun(entry, e.target)));
    const edit = link(`/?from=${encodeURIComponent(job.id)}`, "Change and run…",
                      `Change the settings of ${name} on the Speak page, then run it`, "edit");
    edit.title = "Opens the Speak page with this job's text and settings filled in";
    items.push(edit);
  }
  if (!FINISHED.includes(job.status)) {
    items.push(button("Cancel", `Cancel ${name}`, "cancel danger", () => cancel(entry)));
  } else {
    items.push(button("Delete", `Delete ${name}`, "delete danger", () => remove(entry)));
  }
  box.replaceChildren(...items);
  if (focused !== null) {
    // The button that had focus was replaced: focus its successor (Cancel becomes Delete), else the first control.
    const same = [...box.querySelectorAll("a, button")].find((c) => c.className === focused);
    (same || box.querySelector("button.delete") || box.querySelector("a, button"))?.focus();
  }
}

function rowError(entry, message) {
  const p = entry.tr.querySelector(".row-error");
  p.textContent = message;
  p.hidden = !message;
}

function rowNote(entry, ...content) {
  const p = entry.tr.querySelector(".row-note");
  p.replaceChildren(...content);
  p.hidden = content.length === 0;
}

// The audio is fetched only when asked for: a page of players would otherwise load every file.
function replay(entry, src) {
  rowError(entry, "");
  const player = entry.tr.querySelector(".player");
  const audio = el("audio", { controls: true, preload: "auto", src });
  audio.setAttribute("aria-label", `Audio of ${label(entry.job)}`);
  audio.onerror = () => rowError(entry, "The audio could not be loaded (it may have expired or been deleted).");
  player.replaceChildren(audio);
  entry.tr.querySelector(".replay")?.remove();
  audio.focus();
  audio.play().catch(() => {}); // autoplay refused: the controls are there
}

// The same text, voice, format and parameters, as a new job.
async function rerun(entry, control) {
  rowError(entry, "");
  rowNote(entry);
  control.disabled = true;
  try {
    const job = await api(`/jobs/${entry.job.id}?text=1`);
    const body = { text: job.text, format: job.format, params: job.params || {} };
    if (job.voice) body.voice = job.voice;
    const sent = await api("/synthesize", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(body) });
    rowNote(entry, "Running again as a new job: ", link(`/?job=${encodeURIComponent(sent.job_id)}`,
                                                         "follow it on the Speak page", null, "new-job"), ".");
    entry.tr.querySelector(".row-note").dataset.jobId = sent.job_id;
    await refresh();
  } catch (e) {
    rowError(entry, `Could not run it again: ${e.message}`);
  } finally {
    control.disabled = false;
  }
}

async function cancel(entry) {
  rowError(entry, "");
  const { job } = entry;
  try {
    if (job.kind === "audiobook") await api(`/audiobooks/${job.id}/cancel`, { method: "POST" });
    else await api(`/jobs/${job.id}`, { method: "DELETE" });
    updateRow(entry, await api(`/jobs/${job.id}`));
    schedule(POLL_MS);
  } catch (e) { rowError(entry, `Could not cancel: ${e.message}`); }
}

async function remove(entry) {
  rowError(entry, "");
  const name = label(entry.job);
  if (!confirm(`Delete ${name} and its audio? This cannot be undone.`)) return;
  try {
    await api(`/jobs/${entry.job.id}?purge=1`, { method: "DELETE" });
  } catch (e) { rowError(entry, `Could not delete: ${e.message}`); return; }
  rows.delete(entry.job.id);
  entry.tr.remove();
  announce(`Deleted ${name}.`);
  $("summary").focus(); // the button that had focus is gone: land on the list's summary
  await refresh();
}


// -- errors: next to the filter that caused them, or about the connection ----------------------------------------
function fieldError(param, message) {
  const p = $(`${param}-error`);
  if (!p) return false;
  p.textContent = message;
  p.hidden = false;
  $(param).setAttribute("aria-invalid", "true");
  return true;
}

function clearErrors() {
  showError("");
  for (const id of ["status", "voice", "limit"]) {
    $(`${id}-error`).hidden = true;
    $(id).removeAttribute("aria-invalid");
  }
}

// No answer, or the server (or Redis behind it) is not well: worth trying again. A 4xx will not change by itself.
function transient(e) {
  return e.status == null || e.status >= 500 || e.status === 429;
}

function connectionLost(e) {
  failures += 1;
  const wait = Math.round(retryDelay() / 1000);
  const what = e.status ? `The server answered ${e.message}` : "The server cannot be reached";
  $("connection").textContent = `${what}. The list may be out of date; trying again in ${wait} s…`;
  $("connection").hidden = false;
}

function connectionBack() {
  if (!failures) return;
  failures = 0;
  $("connection").hidden = true;
  announce("Connected again; the list is up to date.");
}

function retryDelay() {
  return Math.min(15000, 1000 * 2 ** Math.min(failures, 4));
}

// -- the list -----------------------------------------------------------------------------------------------------
async function load() {
  const seq = ++loadSeq;
  const p = query();
  p.set("limit", view.limit);
  const page = await api(`/jobs?${p}`);
  if (seq !== loadSeq) return;
  lastLoad = Date.now();
  clearErrors();
  view.total = page.total;
  if (page.jobs.length === 0 && page.total > 0 && view.offset > 0) {
    // Past the end (jobs were deleted, or an old link): show the last page instead.
    view.offset = Math.max(0, Math.floor((page.total - 1) / view.limit) * view.limit);
    writeUrl(false);
    return load();
  }
  const trs = page.jobs.map((job) => {
    const existing = rows.get(job.id);
    if (existing) { updateRow(existing, job); return existing.tr; }
    return createRow(job);
  });
  const shown = new Set(page.jobs.map((j) => j.id));
  for (const id of [...rows.keys()]) if (!shown.has(id)) rows.delete(id);
  // Rows already in place stay (moving a focused row would lose its focus); only what changed is moved.
  const tbody = $("rows");
  trs.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
  while (tbody.children.length > trs.length) tbody.lastElementChild.remove();
  renderSummary(page);
}

// A load the person asked for (or a retry): its errors shown where they belong.
async function refresh() {
  try {
    await load();
    connectionBack();
  } catch (e) {
    if (transient(e)) connectionLost(e);
    else listRefused(e);
  }
  schedule(failures ? retryDelay() : nextDelay());
}

function listRefused(e) {
  if (!(e.param && fieldError(e.param, e.message))) showError(`Could not load the jobs: ${e.message}`);
  rows.clear();
  $("rows").replaceChildren();
  $("table-box").hidden = true;
  $("pager").hidden = true;
  $("empty").hidden = true;
  $("summary").textContent = "Nothing listed: a filter was refused.";
}

function filtered() {
  return Boolean(view.q || view.status || view.kind || view.voice);
}

function renderSummary(page) {
  const pages = Math.max(1, Math.ceil(page.total / view.limit));
  const current = Math.floor(view.offset / view.limit) + 1;
  const first = page.total ? view.offset + 1 : 0;
  const last = view.offset + page.jobs.length;
  const what = filtered() ? "Matching jobs" : "Jobs";
  const summary = page.total ? `${what} ${first}–${last} of ${page.total}, newest first`
    : filtered() ? "No matching jobs" : "No jobs yet";
  if ($("summary").textContent !== summary) $("summary").textContent = summary;
  $("caption").textContent = `Jobs ${first}–${last} of ${page.total}, newest first`;
  $("page-of").textContent = `Page ${current} of ${pages}`;
  $("prev").disabled = view.offset === 0;
  $("next").disabled = last >= page.total;
  $("pager").hidden = page.total <= view.limit && view.offset === 0;
  $("table-box").hidden = page.jobs.length === 0;
  $("clear").hidden = !filtered();
  const empty = $("empty");
  empty.hidden = page.total > 0;
  if (!page.total) {
    if (filtered()) {
      empty.replaceChildren("No job matches these filters. ",
                            el("button", { type: "button", textContent: "Clear filters", onclick: clearFilters }));
    } else {
      empty.replaceChildren("No jobs yet. ", el("a", { href: "/", textContent: "Make one on the Speak page" }), ".");
    }
  }
}

// -- live updates: jobs still queued or running on this page every few seconds, the whole page now and then -------
function activeRows() {
  return [...rows.values()].filter((r) => !FINISHED.includes(r.job.status) && !r.gone);
}

function nextDelay() {
  return activeRows().length ? POLL_MS : REFRESH_MS;
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(tick, ms);
}

async function tick() {
  timer = null;
  if (document.hidden) return; // a background tab asks nothing; visibilitychange catches up
  if (failures || Date.now() - lastLoad >= REFRESH_MS) return refresh();
  try {
    await Promise.all(activeRows().map(async (entry) => {
      try {
        updateRow(entry, await api(`/jobs/${entry.job.id}`));
      } catch (e) {
        if (transient(e)) throw e;
        if (e.status === 404) {
          entry.gone = true; // deleted elsewhere: said so, and not asked about again
          rowError(entry, "This job no longer exists (deleted elsewhere).");
        } else {
          rowError(entry, e.message);
        }
      }
    }));
    connectionBack();
  } catch (e) {
    connectionLost(e);
  }
  schedule(failures ? retryDelay() : nextDelay());
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
window.addEventListener("online", () => { if (failures) refresh(); });

// -- controls -----------------------------------------------------------------------------------------------------
let typing = null;
function onSearch() {
  clearTimeout(typing);
  typing = setTimeout(() => {
    const q = $("q").value.trim();
    if (q === view.q) return;
    view.q = q;
    view.offset = 0;
    writeUrl(false); // every keystroke is not a history entry
    refresh();
  }, 300);
}

function onFilter() {
  view.status = $("status").value;
  view.kind = $("kind").value;
  view.voice = $("voice").value;
  view.limit = parseInt($("limit").value, 10) || DEFAULT_LIMIT;
  view.offset = 0;
  writeUrl(true);
  refresh();
}

function clearFilters() {
  $("q").value = "";
  for (const id of ["status", "kind", "voice"]) $(id).value = "";
  view.q = "";
  onFilter();
  $("q").focus();
}

function go(delta) {
  view.offset = Math.max(0, view.offset + delta * view.limit);
  writeUrl(true);
  refresh().then(() => {
    // A button that became disabled loses focus: hand it to the other one.
    if (document.activeElement?.disabled || document.activeElement === document.body) {
      ($("next").disabled ? $("prev") : $("next")).focus();
    }
  });
}

async function loadVoices() {
  const { voices } = await api("/voices");
  const select = $("voice");
  for (const v of voices) {
    voiceNames.set(v.id, v.name);
    const existing = [...select.options].find((o) => o.value === v.id);
    if (existing) existing.textContent = v.name;
    else select.add(new Option(v.name + (v.builtin ? "" : " (saved)"), v.id));
  }
  select.value = view.voice;
  for (const entry of rows.values()) {
    if (entry.job.voice) fill(entry.tr, "voice", voiceName(entry.job.voice));
  }
}

$("q").addEventListener("input", onSearch);
$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(typing);
  view.q = $("q").value.trim();
  view.offset = 0;
  writeUrl(true);
  refresh();
});
for (const id of ["status", "kind", "voice", "limit"]) $(id).addEventListener("change", onFilter);
$("clear").onclick = clearFilters;
$("prev").onclick = () => go(-1);
$("next").onclick = () => go(1);
window.addEventListener("popstate", () => { readUrl(); refresh(); });

readUrl();
refresh();
loadVoices().catch(() => {}); // names only: without them the ids are shown
