// The Speak page: type a text, see how it will be chunked, tune the engine, speak, and hear the first chunk while
// the rest is still being made. A job's page survives a reload (?job=<id> in the address) and a dropped websocket.
"use strict";

const FORMAT_LABELS = { wav: "WAV", mp3: "MP3", ogg: "OGG/Opus", flac: "FLAC" };
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const PRESETS_KEY = "chatterbox.speak.presets";
const PLAN_DELAY_MS = 250;      // the chunk plan follows the text this long after the last key stroke
const LEAD_S = 0.02;            // a chunk is scheduled this far ahead of the audio clock, so its start is never late
const RECONNECT_MAX_MS = 10000;

let engine = null;   // GET /engine
let paramRows = {};  // name -> {spec, number, range, error, reset}
let current = null;  // the job on screen: see newJob()
let audioCtx = null; // one AudioContext for the page, made in the first Speak click (a user gesture)

// performance.now() marks of the last Speak, for bench/page.py and the tests:
// click, sending (checks done, POST sent), posted (POST answered), socket (websocket open), firstChunkEvent,
// firstChunkFetched, firstChunkDecoded, firstScheduled, done.
window.speakTimings = {};
function mark(name) {
  if (!(name in window.speakTimings)) window.speakTimings[name] = performance.now();
}

// -- errors shown beside what caused them ------------------------------------------------------------------------
function slotFor(param) {
  if (!param) return null;
  if (["text", "voice", "format", "model", "language"].includes(param)) {
    return { field: $(param), error: $(`${param}-error`) };
  }
  if (param === "params") return { field: null, error: $("params-error") };
  if (param.startsWith("params.")) {
    const row = paramRows[param.slice("params.".length)];
    return row ? { field: row.number, error: row.error } : { field: null, error: $("params-error") };
  }
  return null;
}

// Shows message beside the field that param names; false when no field of this page fits.
function setFieldError(param, message) {
  const slot = slotFor(param);
  if (!slot) return false;
  markField(slot.error, slot.field, message);
  slot.field?.closest(".field, .param")?.classList.toggle("invalid", !!message);
  return true;
}

function clearErrors() {
  for (const param of ["text", "voice", "format", "model", "language", "params",
                       ...Object.keys(paramRows).map((n) => `params.${n}`)]) {
    setFieldError(param, "");
  }
  showError("");
}

// An error from the server or the page: beside its field where it has one, else in #error.
function showProblem(error, { focus = true } = {}) {
  if (setFieldError(error.param, error.message)) {
    const field = slotFor(error.param).field;
    if (focus && field) field.focus();
  } else {
    showError(error.message);
  }
}

// -- the engine: voices, formats, parameters ---------------------------------------------------------------------
async function loadEngine() {
  engine = await api("/engine");
  $("engine").textContent = `engine: ${engine.name}` + (engine.reason ? ` (${engine.reason})` : "");
  const voice = $("voice").value;
  $("voice").replaceChildren(...engine.voices.map((v) => {
    const option = new Option(v.builtin === false ? `${v.name} (saved)` : v.name, v.id);
    if (v.description) option.title = v.description;
    return option;
  }));
  if (voice) $("voice").value = voice;
  const format = $("format").value;
  $("format").replaceChildren(...engine.formats.map((f) => new Option(FORMAT_LABELS[f] || f.toUpperCase(), f)));
  $("format").value = engine.formats.includes(format) ? format : engine.formats[0];
  // a download link per format the server makes
  $("downloads").querySelectorAll("a[data-format]").forEach((a) => a.remove());
  $("downloads").append(...engine.formats.map((f) => {
    const link = el("a", { textContent: (FORMAT_LABELS[f] || f.toUpperCase()).split("/")[0] });
    link.dataset.format = f;
    return link;
  }));
  buildModels();
  updateCount();
}

// -- Chatterbox's models: which one, in which language, and Turbo's tags ----------------------------------------
function modelSpec() {
  return (engine?.models || []).find((m) => m.name === $("model").value) || null;
}

function buildModels() {
  const models = (engine.models || []).filter((m) => m.available);
  $("model-choices").hidden = models.length === 0;
  if (!models.length) { buildParams(engine.params); $("tags").hidden = true; return; }
  const chosen = $("model").value;
  $("model").replaceChildren(...models.map((m) => {
    const option = new Option(m.title, m.name);
    option.title = m.description;
    return option;
  }));
  $("model").value = models.some((m) => m.name === chosen) ? chosen : engine.default_model;
  modelChanged();
}

function modelChanged() {
  const spec = modelSpec();
  if (!spec) return;
  const language = $("language").value;
  $("language").replaceChildren(...spec.languages.map((l) => new Option(`${l.name} (${l.code})`, l.code)));
  $("language").value = spec.languages.some((l) => l.code === language) ? language : spec.languages[0].code;
  $("language").disabled = spec.languages.length === 1;
  $("model-hint").textContent = spec.description;
  buildParams(spec.params);
  $("tags").querySelectorAll("button").forEach((b) => b.remove());
  $("tags").append(...spec.tags.map((tag) => {
    const button = el("button", { type: "button", className: "tag", textContent: tag });
    button.addEventListener("click", () => insertTag(tag));
    return button;
  }));
  $("tags").hidden = spec.tags.length === 0;
  setFieldError("model", "");
  onTextInput();
}

function insertTag(tag) {
  const text = $("text");
  const start = text.selectionStart ?? text.value.length, end = text.selectionEnd ?? start;
  const before = text.value.slice(0, start), after = text.value.slice(end);
  const padded = (before && !/\s$/.test(before) ? " " : "") + tag + (after && !/^\s/.test(after) ? " " : "");
  text.value = before + padded + after;
  text.focus();
  text.selectionStart = text.selectionEnd = start + padded.length;
  onTextInput();
}

function modelChoice() {
  return $("model-choices").hidden ? {} : { model: $("model").value, language: $("language").value };
}

const LABELS = { cfg_weight: "CFG weight", min_p: "Min-p", top_p: "Top-p", noise_w: "Noise width" };
function labelOf(name) {
  return LABELS[name] || (name.charAt(0).toUpperCase() + name.slice(1)).replaceAll("_", " ");
}

function stepOf(spec) {
  if (spec.type === "int") return 1;
  const span = spec.max - spec.min;
  return span > 0 ? 10 ** Math.floor(Math.log10(span / 100)) : 0.01;
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
}


function buildParams(specs) {
  paramRows = {};
  const rows = specs.map((spec) => {
    const id = `param-${spec.name}`;
    const label = labelOf(spec.name);
    const hasDefault = spec.default !== null && spec.default !== undefined;
    const number = el("input", { type: "number", id, name: spec.name, min: spec.min, max: spec.max,
                                 step: spec.type === "int" ? 1 : "any", inputMode: spec.type === "int" ? "numeric" : "decimal",
                                 value: hasDefault ? spec.default : "", placeholder: hasDefault ? "" : "none" });
    number.dataset.kind = spec.type;
    number.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
    const range = el("input", { type: "range", id: `${id}-range`, min: spec.min, max: spec.max, step: stepOf(spec),
                                value: hasDefault ? spec.default : spec.min, tabIndex: 0 });
    range.setAttribute("aria-label", `${label}, slider`);
    range.setAttribute("aria-describedby", `${id}-hint`);
    const reset = el("button", { type: "button", className: "reset", textContent: "Reset",
                                 title: `Back to the default (${hasDefault ? formatNumber(spec.default) : "none"})` });
    reset.setAttribute("aria-label", `Reset ${label} to ${hasDefault ? formatNumber(spec.default) : "no value"}`);
    const error = el("p", { id: `${id}-error`, className: "field-error", hidden: true });
    const hint = el("p", { id: `${id}-hint`, className: "hint" },
                    `${spec.help ? spec.help + ". " : ""}Range ${formatNumber(spec.min)}–${formatNumber(spec.max)}, default `
                    + (hasDefault ? formatNumber(spec.default) : "none") + ".");
    const row = el("div", { className: "param" },
                   el("div", { className: "field-head" }, el("label", { htmlFor: id, textContent: label }),
                      el("code", { className: "param-name muted", textContent: spec.name }), reset),
                   el("div", { className: "param-inputs" }, range, number), hint, error);
    row.dataset.param = spec.name;
    paramRows[spec.name] = { spec, number, range, error, reset, row };
    range.addEventListener("input", () => { number.value = range.value; checkParam(spec.name); });
    number.addEventListener("input", () => {
      const value = Number(number.value);
      if (number.value.trim() !== "" && Number.isFinite(value)) range.value = value;
      checkParam(spec.name);
    });
    reset.addEventListener("click", () => { setParam(spec.name, spec.default); number.focus(); });
    return row;
  });
  $("param-list").replaceChildren(...rows);
  $("params-reset").hidden = rows.length === 0;
}

function setParam(name, value) {
  const row = paramRows[name];
  if (!row) return;
  const empty = value === null || value === undefined || value === "";
  row.number.value = empty ? "" : value;
  row.range.value = empty ? row.spec.min : value;
  checkParam(name);
}

// The page's own check of one parameter, against the limits its number field carries; the message, or "".
function paramProblem(name) {
  const { number, spec } = paramRows[name];
  const raw = number.value.trim();
  if (raw === "") return number.validity.badInput ? `${labelOf(name)} must be a number` : "";
  const value = Number(raw);
  if (!Number.isFinite(value)) return `${labelOf(name)} must be a number`;
  if (spec.type === "int" && !Number.isInteger(value)) return `${labelOf(name)} must be a whole number`;
  const low = number.min === "" ? -Infinity : Number(number.min);
  const high = number.max === "" ? Infinity : Number(number.max);
  if (value < low || value > high) return `${labelOf(name)} must be between ${number.min} and ${number.max}`;
  return "";
}

function checkParam(name) {
  const problem = paramProblem(name);
  setFieldError(`params.${name}`, problem);
  return problem;
}

// The parameters to send: set ones only (the server fills in the defaults).
function paramValues() {
  const out = {};
  for (const [name, { number }] of Object.entries(paramRows)) {
    if (number.value.trim() !== "") out[name] = Number(number.value);
  }
  return out;
}

// -- the text: character count and the live chunk plan ----------------------------------------------------------
function textProblem() {
  const length = $("text").value.length;
  if (engine && length > engine.max_text_chars) {
    return `text is ${length} characters long; the limit is ${engine.max_text_chars}`;
  }
  return "";
}

function updateCount() {
  const length = $("text").value.length;
  const limit = engine?.max_text_chars;
  $("chars").textContent = limit ? `${length.toLocaleString()} / ${limit.toLocaleString()} characters`
                                 : `${length.toLocaleString()} characters`;
  $("chars").classList.toggle("over", !!limit && length > limit);
}

let planTimer = null;
let planSeq = 0;

function onTextInput() {
  updateCount();
  const problem = textProblem();
  if (problem || !$("text-error").hidden) setFieldError("text", problem);
  clearTimeout(planTimer);
  $("plan-state").textContent = $("text").value.trim() ? "updating…" : "";
  planTimer = setTimeout(updatePlan, PLAN_DELAY_MS);
}

async function updatePlan() {
  const seq = ++planSeq;
  const text = $("text").value;
  if (!text.trim()) { renderPlan(null); return; }
  try {
    const plan = await api("/synthesize/plan", { method: "POST", headers: { "Content-Type": "application/json" },
                                                 body: JSON.stringify({ text, ...modelChoice() }) });
    if (seq === planSeq) renderPlan(plan);
  } catch (error) {
    if (seq === planSeq) renderPlan(null, error.message);
  }
}

function renderPlan(plan, problem = "") {
  const chunks = plan?.chunks || [];
  $("plan-list").replaceChildren(...chunks.map((chunk) => {
    const item = el("li", {}, el("span", { className: "chunk-text", textContent: chunk }),
                    el("span", { className: "chunk-size muted", textContent: ` ${chunk.length} ch` }));
    return item;
  }));
  $("plan-count").textContent = chunks.length === 0 ? "No chunks yet"
                                                     : `${chunks.length} chunk${chunks.length === 1 ? "" : "s"}`;
  $("plan-state").textContent = problem || (plan ? `of up to ${plan.chunk_chars} characters` : "");
  $("plan").classList.toggle("problem", !!problem);
}

// -- presets: voice, format and parameters, in this browser ------------------------------------------------------
function readPresets() {
  try { return JSON.parse(localStorage.getItem(PRESETS_KEY)) || {}; } catch { return {}; }
}

function writePresets(presets) {
  localStorage.setItem(PRESETS_KEY, JSON.stringify(presets));
}

function renderPresets(selected = "") {
  const names = Object.keys(readPresets()).sort((a, b) => a.localeCompare(b));
  $("preset").replaceChildren(new Option(names.length ? "— choose to apply —" : "— none saved yet —", ""),
                              ...names.map((n) => new Option(n, n)));
  $("preset").value = names.includes(selected) ? selected : "";
  $("preset-delete").disabled = !$("preset").value;
}

function presetStatus(message) { $("preset-status").textContent = message; }

function savePreset() {
  const name = $("preset-name").value.trim();
  if (!name) { presetStatus("Give the preset a name first."); $("preset-name").focus(); return; }
  const bad = Object.keys(paramRows).find((n) => checkParam(n));
  if (bad) { presetStatus("Fix the parameters marked below first."); paramRows[bad].number.focus(); return; }
  const presets = readPresets();
  const replaced = name in presets;
  const params = {};
  for (const [n, { number }] of Object.entries(paramRows)) params[n] = number.value.trim() === "" ? null : Number(number.value);
  presets[name] = { voice: $("voice").value, format: $("format").value, params, ...modelChoice() };
  try { writePresets(presets); } catch (error) { presetStatus(`Could not save: ${error.message}`); return; }
  renderPresets(name);
  $("preset-name").value = "";
  presetStatus(`${replaced ? "Updated" : "Saved"} preset “${name}”.`);
}

function applyPreset(name) {
  const preset = readPresets()[name];
  $("preset-delete").disabled = !preset;
  if (!preset) return;
  const notes = [];
  if (preset.model && !$("model-choices").hidden) {  // the model first: it decides which parameters there are
    if ([...$("model").options].some((o) => o.value === preset.model)) { $("model").value = preset.model; modelChanged(); }
    else notes.push(`its model ${preset.model} is not available here`);
    if (preset.language && [...$("language").options].some((o) => o.value === preset.language)) {
      $("language").value = preset.language;
    }
  }
  if (preset.voice && [...$("voice").options].some((o) => o.value === preset.voice)) $("voice").value = preset.voice;
  else if (preset.voice) notes.push(`its voice ${preset.voice} is not available here`);
  if (preset.format && [...$("format").options].some((o) => o.value === preset.format)) $("format").value = preset.format;
  for (const [n, row] of Object.entries(paramRows)) {
    setParam(n, preset.params && n in preset.params ? preset.params[n] : row.spec.default);
  }
  const ignored = Object.keys(preset.params || {}).filter((n) => !(n in paramRows));
  if (ignored.length) notes.push(`${ignored.join(", ")} ${ignored.length === 1 ? "is" : "are"} not a parameter of this engine`);
  presetStatus(`Applied “${name}”` + (notes.length ? `; ${notes.join("; ")}.` : "."));
}

function deletePreset() {
  const name = $("preset").value;
  if (!name) return;
  const presets = readPresets();
  delete presets[name];
  writePresets(presets);
  renderPresets();
  presetStatus(`Deleted preset “${name}”.`);
}

// -- the live player: each chunk's WAV, decoded and scheduled right after the one before ---------------------------
function ensureAudioContext() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return null;
  if (!audioCtx) {
    // At the engine's own rate, decodeAudioData has nothing to resample: the chunks are ready sooner, and the
    // one resampling left, to the sound card's rate, is the audio output's (a good one, off the page's thread).
    const options = { latencyHint: "interactive" };
    if (engine?.sample_rate >= 8000 && engine.sample_rate <= 96000) options.sampleRate = engine.sample_rate;
    try { audioCtx = new Context(options); } catch { audioCtx = new Context({ latencyHint: "interactive" }); }
    audioCtx.addEventListener("statechange", () => current?.stream?.render());
  }
  return audioCtx;
}

class LiveStream {
  // skip: chunks below this index were heard before a reload, and are not played again.
  constructor(ctx, { skip = 0, timed = false } = {}) {
    this.ctx = ctx;
    this.skip = skip;
    this.timed = timed;
    this.seen = new Set();
    this.chain = Promise.resolve();
    this.next = 0;          // where on the audio clock the next chunk starts
    this.received = 0;      // seconds decoded
    this.scheduled = 0;     // seconds scheduled
    this.count = 0;         // chunks scheduled
    this.parts = [];        // {index, start, end, source}
    this.failed = 0;
    this.stopped = false;
    this.finished = false;  // no more chunks will come
    this.userPaused = false;
    this.render();
  }

  add(event) {
    if (this.stopped || this.seen.has(event.index) || event.index < this.skip) return;
    this.seen.add(event.index);
    // Fetching and decoding start at once; only the scheduling waits for the chunks before.
    const decoded = fetch(event.url, { credentials: "same-origin" })
      .then((response) => {
        if (!response.ok) throw new Error(`chunk ${event.index}: ${response.status}`);
        return response.arrayBuffer();
      })
      .then((data) => {
        if (this.timed) mark("firstChunkFetched");
        return this.ctx.decodeAudioData(data);
      })
      .then((buffer) => {
        if (this.timed) mark("firstChunkDecoded");
        this.received += buffer.duration;
        this.render();
        return buffer;
      });
    this.chain = this.chain.then(() => decoded).then((buffer) => this.schedule(buffer, event.index),
                                                     (error) => { this.failed += 1; console.warn(error); this.render(); });
  }

  schedule(buffer, index) {
    if (this.stopped) return;
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    const start = Math.max(this.next, this.ctx.currentTime + LEAD_S);
    source.start(start);
    this.next = start + buffer.duration;
    this.parts.push({ index, start, end: this.next, source });
    this.scheduled += buffer.duration;
    this.count += 1;
    source.addEventListener("ended", () => this.render());
    if (this.timed && !("firstScheduled" in window.speakTimings)) {
      mark("firstScheduled");
      showFirstAudio();
    }
    revealJob(current);
    this.render();
  }

  // The first chunk not yet heard to its end: where a reloaded page picks up.
  heard() {
    let upTo = this.skip;
    for (const part of this.parts) {
      if (part.end <= this.ctx.currentTime) upTo = Math.max(upTo, part.index + 1);
    }
    return upTo;
  }

  playing() { return this.ctx.state === "running" && this.ctx.currentTime < this.next; }

  async toggle() {
    if (this.ctx.state === "running") { this.userPaused = true; await this.ctx.suspend(); }
    else { this.userPaused = false; $("player").pause(); await this.ctx.resume(); }
    this.render();
  }

  stop() {
    this.stopped = true;
    for (const part of this.parts) { try { part.source.stop(); } catch { /* already ended */ } }
    this.render();
  }

  // Everything that will come has been played.
  ended() {
    return this.finished && this.count + this.failed === this.seen.size && this.ctx.currentTime >= this.next;
  }

  render() {
    if (current?.stream !== this) return;
    const box = $("player-stream");
    box.dataset.receivedSeconds = this.received.toFixed(3);
    box.dataset.scheduledSeconds = this.scheduled.toFixed(3);
    box.dataset.chunks = this.count;
    box.dataset.state = this.ctx.state;
    const ended = this.ended();
    if (ended && this.ctx.state === "running" && !this.stopped) {
      // Nothing more to play: let the audio clock rest (a running AudioContext keeps a thread busy).
      this.ctx.suspend();
    }
    const toggle = $("stream-toggle");
    toggle.disabled = this.stopped || ended;
    toggle.textContent = this.ctx.state === "running" || ended ? "Pause" : this.userPaused ? "Resume" : "Play";
    let state;
    if (this.stopped) state = "Live audio stopped.";
    else if (ended) state = this.count ? "Live audio finished; the whole file is in the player below." : "No live audio.";
    else if (this.userPaused) state = `Paused at ${formatSeconds(this.ctx.currentTime - (this.parts[0]?.start ?? 0))}.`;
    else if (this.ctx.state !== "running") state = "The browser holds the sound until you press Play.";
    else if (!this.count) state = this.skip ? "Picking up where the page left off…" : "Waiting for the first chunk…";
    else if (this.ctx.currentTime < this.next) {
      state = `Playing live: ${this.count} chunk${this.count === 1 ? "" : "s"}, ${formatSeconds(this.scheduled)} so far.`;
    } else state = "Waiting for the next chunk…";
    if (this.failed) state += ` ${this.failed} chunk${this.failed === 1 ? "" : "s"} could not be fetched.`;
    $("stream-state").textContent = state;
    if (!current.finished && this.received) $("fig-audio").textContent = `${formatSeconds(this.received)} so far`;
  }
}

// -- the job on screen --------------------------------------------------------------------------------------------
function formatSeconds(s) {
  if (s === null || s === undefined || Number.isNaN(Number(s))) return "—";
  s = Number(s);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function stored(jobId) {
  try { return JSON.parse(sessionStorage.getItem(`speak.job.${jobId}`)) || {}; } catch { return {}; }
}

function persist(job) {
  try {
    sessionStorage.setItem(`speak.job.${job.id}`, JSON.stringify({ heard: job.stream ? job.stream.heard() : job.skip }));
  } catch { /* storage full or off: a reload then starts the player from the first chunk */ }
}

function setStatus(status) {
  $("status").textContent = status;
  $("status").dataset.status = status;
}

function progressLabel(job) {
  $("progress-label").textContent = `${job.chunksDone ?? 0} of ${job.chunksTotal ?? "?"} chunk${job.chunksTotal === 1 ? "" : "s"}`;
}

function newJob(job, { restored = false, skip = 0, live = true } = {}) {
  if (current) dropJob(current);
  current = { id: job.job_id || job.id, eventsUrl: job.events_url, statusUrl: job.status_url, audioUrl: job.audio_url,
              last: null, socket: null, retries: 0, timer: null, finished: false, restored, skip,
              chunksDone: job.chunks_done ?? 0, chunksTotal: job.chunks_total ?? null, items: new Map(), stream: null };
  connect(current);  // first: its events come in a later task, when everything below is ready for them
  const url = new URL(location.href);
  url.searchParams.set("job", current.id);
  history.replaceState(null, "", url);
  $("job").hidden = false;
  $("job-id").textContent = current.id;
  setStatus(job.status || "queued");
  $("job-message").textContent = "";
  $("progress").value = job.progress ?? 0;
  progressLabel(current);
  $("chunks").replaceChildren();
  if ($("player").hasAttribute("src")) {
    $("player").pause();
    $("player").removeAttribute("src");
  }
  $("player").hidden = true;
  $("downloads").hidden = true;
  for (const id of ["fig-first", "fig-rtf", "fig-audio", "fig-queued", "fig-worker", "fig-total"]) $(id).textContent = "—";
  if (job.worker) $("fig-worker").textContent = job.worker;
  $("cancel").disabled = TERMINAL.has(job.status);
  const box = $("player-stream");
  box.dataset.receivedSeconds = "0";
  box.dataset.scheduledSeconds = "0";
  box.dataset.chunks = "0";
  const ctx = live ? ensureAudioContext() : null;
  if (ctx) {
    current.stream = new LiveStream(ctx, { skip, timed: !restored });
    box.hidden = false;
  } else {
    box.hidden = true;
  }
  return current;
}

// Scrolls the job into view once its first audio is on its way: drawing the scrolled page takes the CPU that,
// on a small machine, also makes the audio (the first chunk comes sooner without it).
function revealJob(job) {
  if (!job?.reveal || current !== job) return;
  job.reveal = false;
  requestAnimationFrame(() => $("job").scrollIntoView({ block: "nearest" }));
}

function dropJob(job) {
  job.finished = true;
  clearTimeout(job.timer);
  if (job.socket) job.socket.close();
  job.stream?.stop();
}

function connect(job) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = job.last ? `?after=${encodeURIComponent(job.last)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}${job.eventsUrl}${after}`);
  job.socket = socket;
  socket.onopen = () => {
    if (!job.restored) mark("socket");
    if ($("job-message").textContent === "Reconnecting…") $("job-message").textContent = "";
  };
  socket.onmessage = (message) => {
    if (job.socket !== socket) return;
    job.retries = 0;
    handleEvent(job, JSON.parse(message.data));
  };
  // A dropped connection comes back after a pause that grows, and resumes after the last event seen.
  socket.onclose = () => {
    if (job.socket !== socket || job.finished || current !== job) return;
    const delay = Math.min(RECONNECT_MAX_MS, 500 * 2 ** job.retries);
    job.retries += 1;
    $("job-message").textContent = `Connection lost; reconnecting in ${formatSeconds(delay / 1000)}…`;
    job.timer = setTimeout(() => reconnect(job), delay);
  };
}

async function reconnect(job) {
  if (job.finished || current !== job) return;
  try {
    await api(job.statusUrl);  // still there? (a job can be deleted; the server may be down: then try again later)
  } catch (error) {
    if (error.status === 404) { endJob(job, "failed", error.message); return; }
  }
  if (job.finished || current !== job) return;
  $("job-message").textContent = "Reconnecting…";
  connect(job);
}

function handleEvent(job, event) {
  if (event.id) { job.last = event.id; }
  if (event.type === "progress") {
    setStatus(event.status);
    if (typeof event.progress === "number") $("progress").value = event.progress;
    if (event.chunks_total !== undefined) job.chunksTotal = event.chunks_total;
    if (event.chunks_done !== undefined) job.chunksDone = event.chunks_done;
    progressLabel(job);
    if (event.worker) $("fig-worker").textContent = event.worker;
    $("job-message").textContent = event.message ? event.message.charAt(0).toUpperCase() + event.message.slice(1) + "." : "";
  } else if (event.type === "chunk") {
    if (!job.restored) mark("firstChunkEvent");
    job.stream?.add(event);  // first: its fetch starts before anything else is done
    addChunkText(job, event);
  } else if (event.type === "done") {
    finishJob(job, event);
  } else if (event.type === "error") {
    endJob(job, event.status || "failed", event.error);
  }
  persist(job);
}

// Several audio chunks can belong to one text chunk: each text once, with its audio so far.
function addChunkText(job, event) {
  let item = job.items.get(event.text_index);
  if (!item) {
    item = el("li", {}, el("span", { className: "chunk-text" }), el("span", { className: "chunk-size muted" }));
    item.dataset.textIndex = event.text_index;
    item.dataset.seconds = "0";
    item.firstChild.textContent = event.text;
    job.items.set(event.text_index, item);
    $("chunks").append(item);
  }
  item.dataset.seconds = String(Number(item.dataset.seconds) + event.duration_s);
  item.lastChild.textContent = ` ${formatSeconds(Number(item.dataset.seconds))}`;
}

function showFirstAudio(serverSeconds) {
  const t = window.speakTimings;
  const parts = [];
  if (current && !current.restored && t.firstScheduled !== undefined) parts.push(`${formatSeconds((t.firstScheduled - t.click) / 1000)} here`);
  if (serverSeconds !== undefined && serverSeconds !== null) parts.push(`${formatSeconds(serverSeconds)} on the server`);
  if (parts.length) $("fig-first").textContent = parts.join(" · ");
}

function finishJob(job, event) {
  if (!job.restored) mark("done");
  revealJob(job);
  job.finished = true;
  clearTimeout(job.timer);
  setStatus("succeeded");
  $("progress").value = 1;
  job.chunksTotal = event.chunks_total ?? job.chunksTotal ?? job.items.size;
  job.chunksDone = job.chunksTotal;
  progressLabel(job);
  $("job-message").textContent = "";
  $("cancel").disabled = true;
  const audioUrl = event.audio_url || job.audioUrl;
  $("player").src = audioUrl;
  $("player").hidden = false;
  for (const link of $("downloads").querySelectorAll("a[data-format]")) {
    link.href = `${audioUrl}?format=${link.dataset.format}&download=1`;
    link.setAttribute("download", `${job.id}.${link.dataset.format}`);
  }
  $("downloads").hidden = false;
  showFigures(event);
  if (job.stream) { job.stream.finished = true; job.stream.render(); }
  if (job.socket) job.socket.close();
  // The done event carries the job's figures; where it was a stand-in without them, ask for the record.
  if (event.rtf === undefined) api(job.statusUrl).then((record) => current === job && showFigures(record)).catch(() => {});
}

function showFigures(record) {
  showFirstAudio(record.first_chunk_s);
  if (record.rtf !== undefined) {
    $("fig-rtf").textContent = `${Number(record.rtf).toFixed(3)}` + (record.rtf > 0 ? ` (${(1 / record.rtf).toFixed(1)}× real time)` : "");
  }
  if (record.duration_s !== undefined) $("fig-audio").textContent = formatSeconds(record.duration_s);
  if (record.queued_s !== undefined) $("fig-queued").textContent = formatSeconds(record.queued_s);
  if (record.worker) $("fig-worker").textContent = record.worker;
  if (record.total_s !== undefined) $("fig-total").textContent = formatSeconds(record.total_s);
}

function endJob(job, status, message) {
  revealJob(job);
  job.finished = true;
  clearTimeout(job.timer);
  setStatus(status);
  $("cancel").disabled = true;
  $("job-message").textContent = status === "cancelled" ? "Cancelled." : "";
  if (status === "cancelled") job.stream?.stop();
  else if (job.stream) { job.stream.finished = true; job.stream.render(); }
  if (status !== "cancelled" && message) showError(`Job ${job.id} ${status}: ${message}`);
  if (job.socket) job.socket.close();
}

// -- speaking ----------------------------------------------------------------------------------------------------
async function speak(event) {
  event.preventDefault();
  window.speakTimings = { click: performance.now() };
  // Chromium lets a page start sound only from a user gesture: the AudioContext is made (or woken) here, first.
  const ctx = ensureAudioContext();
  if (ctx && ctx.state !== "running") ctx.resume();
  clearErrors();
  const problems = [];
  const text = textProblem();
  if (text) problems.push({ param: "text", message: text });
  for (const name of Object.keys(paramRows)) {
    const problem = checkParam(name);
    if (problem) problems.push({ param: `params.${name}`, message: problem });
  }
  if (problems.length) {
    problems.forEach((p, i) => showProblem(p, { focus: i === 0 }));
    announce(`Not sent: ${problems.length} field${problems.length === 1 ? "" : "s"} to fix.`);
    return;
  }
  const body = { text: $("text").value, voice: $("voice").value || null, format: $("format").value,
                 params: paramValues(), ...modelChoice() };
  $("submit").disabled = true;
  $("submit").setAttribute("aria-busy", "true");
  try {
    mark("sending");
    const job = await api("/synthesize", { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
    mark("posted");
    newJob(job).reveal = true;
  } catch (error) {
    showProblem(error);
  } finally {
    $("submit").disabled = false;
    $("submit").removeAttribute("aria-busy");
  }
}


async function cancel() {
  if (!current || current.finished) return;
  $("cancel").disabled = true;
  try {
    const answer = await api(`/jobs/${current.id}`, { method: "DELETE" });
    if (answer?.message) $("job-message").textContent = answer.message.charAt(0).toUpperCase() + answer.message.slice(1) + ".";
  } catch (error) {
    showError(error.message);
    $("cancel").disabled = !!current?.finished;
  }
}

function fillForm(job) {
  if (typeof job.text === "string") { $("text").value = job.text; onTextInput(); }
  if (job.voice && [...$("voice").options].some((o) => o.value === job.voice)) $("voice").value = job.voice;
  if (job.format && [...$("format").options].some((o) => o.value === job.format)) $("format").value = job.format;
  for (const [name, value] of Object.entries(job.params || {})) if (name in paramRows) setParam(name, value);
}

// "Change and run" from the history: an earlier job's text and settings in the form, to edit before speaking.
async function prefill(jobId) {
  try {
    fillForm(await api(`/jobs/${encodeURIComponent(jobId)}?text=1`));
    $("text").focus();
  } catch (error) {
    showError(`Cannot copy job ${jobId}: ${error.message}`);
  }
}

// A reloaded job page: the job's text and settings back in the form, its events again from the start (so the chunk
// list is whole), and the live player from the first chunk that had not been heard to its end.
async function restore(jobId) {
  let job;
  try {
    job = await api(`/jobs/${encodeURIComponent(jobId)}?text=1`);
  } catch (error) {
    showError(`Cannot show job ${jobId}: ${error.message}`);
    const url = new URL(location.href);
    url.searchParams.delete("job");
    history.replaceState(null, "", url);
    return;
  }
  if (job.kind && job.kind !== "synthesize") {
    showError(`Job ${jobId} is ${job.kind === "audiobook" ? "an audiobook: see the Audiobooks page" : `a ${job.kind} job`}.`);
    return;
  }
  fillForm(job);
  const live = !TERMINAL.has(job.status);
  const restoredJob = newJob({ ...job, job_id: job.id }, { restored: true, live, skip: stored(job.id).heard || 0 });
  if (live && restoredJob.stream) restoredJob.stream.render();
}

// -- wiring ------------------------------------------------------------------------------------------------------
async function refreshHealth() {
  if (document.hidden) return;
  try {
    const health = await api("/health");
    const busy = health.workers.filter((w) => w.busy).length;
    $("health").textContent = `${health.workers.length} worker${health.workers.length === 1 ? "" : "s"}, ${busy} busy`;
  } catch {
    $("health").textContent = "health unavailable";
  }
}

$("synth-form").addEventListener("submit", speak);
$("synth-form").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("synth-form").requestSubmit($("submit"));
  }
});
$("text").addEventListener("input", onTextInput);
for (const id of ["voice", "format"]) $(id).addEventListener("change", () => setFieldError(id, ""));
$("model").addEventListener("change", modelChanged);
$("language").addEventListener("change", () => { setFieldError("language", ""); onTextInput(); });
$("cancel").addEventListener("click", cancel);
$("stream-toggle").addEventListener("click", () => current?.stream?.toggle());
$("player").addEventListener("play", () => {
  // One sound at a time: the finished file takes over from the live stream.
  const stream = current?.stream;
  if (stream && stream.ctx.state === "running" && stream.playing()) { stream.userPaused = true; stream.ctx.suspend().then(() => stream.render()); }
});
$("params-reset").addEventListener("click", () => {
  for (const [name, row] of Object.entries(paramRows)) setParam(name, row.spec.default);
  presetStatus("Parameters back to their defaults.");
});
$("preset").addEventListener("change", () => applyPreset($("preset").value));
$("preset-save").addEventListener("click", savePreset);
$("preset-name").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) { event.preventDefault(); savePreset(); }
});
$("preset-delete").addEventListener("click", deletePreset);
window.addEventListener("pagehide", () => { if (current) persist(current); });
window.addEventListener("storage", (event) => { if (event.key === PRESETS_KEY) renderPresets($("preset").value); });

renderPresets();
updateCount();
loadEngine()
  .then(() => {
    const query = new URLSearchParams(location.search);
    if (query.get("job")) return restore(query.get("job"));
    if (query.get("from")) return prefill(query.get("from"));
    const voice = query.get("voice");  // "Speak with it" from the voices page
    if (voice && [...$("voice").options].some((o) => o.value === voice)) $("voice").value = voice;
    if ($("text").value) onTextInput();  // text the browser kept across a reload
  })
  .catch((error) => showError(`Cannot load the engine: ${error.message}`));
refreshHealth();
setInterval(refreshHealth, 5000);
