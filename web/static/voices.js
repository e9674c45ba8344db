// The voices page: clone a voice from an upload or a recording made here (checked in the browser first, then by the
// server), follow the clone job live (resuming after a dropped connection), preview it, and manage the library:
// samples, rename, delete. Errors from the server are shown beside the field they concern.
"use strict";
const FIELDS = ["file", "name", "tags", "exaggeration", "description"];
const MIN_SPEECH_S = 5;
const MAX_S = 60;
let recording = null; // {recorder, chunks, blob, stream, started, timer, audioContext}
let clip = null; // the Blob or File to send
let cloneJob = null; // {id, events_url, last, name, done}



// -- errors beside their fields -----------------------------------------------------------------------------------
function setFieldError(param, message) {
  const error = $(`${param}-error`);
  if (!error) return false;
  markField(error, $(param), message);
  return true;
}

function clearErrors() {
  showError("");
  for (const f of FIELDS) setFieldError(f, "");
}

function showProblem(e) {
  const param = e.param === "audio" ? "file" : e.param;
  if (param === "engine") { engineNote(e.message); return; }
  if (!setFieldError(param, e.message)) { showError(e.message); return; }
  // The file field stands for the recording too: focus the control that made it.
  (param === "file" && clip && !$("file").files.length ? $("record") : $(param)).focus();
}

function engineNote(message) {
  $("engine-note").textContent = message;
  $("engine-note").hidden = !message;
}

// -- the clip: checked here as soon as it is chosen or recorded ---------------------------------------------------
async function check(blob) {
  clip = blob;
  setFieldError("file", "");
  const list = $("checks");
  list.replaceChildren(el("li", { textContent: "Checking the recording…" }));
  let samples, rate;
  try {
    const context = new (window.AudioContext || window.webkitAudioContext)();
    const decoded = await context.decodeAudioData(await blob.arrayBuffer());
    context.close();
    samples = decoded.getChannelData(0);
    rate = decoded.sampleRate;
  } catch {
    list.replaceChildren(el("li", { textContent: "This browser cannot play it; the server will check it when you clone." }));
    return;
  }
  const seconds = samples.length / rate;
  let peak = 0, clipped = 0;
  for (const x of samples) {
    const a = Math.abs(x);
    if (a > peak) peak = a;
    if (a >= 0.98) clipped += 1; // a margin below the server's full scale: decoders differ near the top
  }
  // Sound: 50 ms frames within 40 dB of the loudest, counted from the first to the last (as the server trims).
  const frame = Math.round(rate * 0.05);
  const levels = [];
  for (let i = 0; i + frame <= samples.length; i += frame) {
    let sum = 0;
    for (let j = i; j < i + frame; j++) sum += samples[j] * samples[j];
    levels.push(Math.sqrt(sum / frame));
  }
  const loudest = Math.max(0, ...levels);
  const loud = levels.map((v, i) => (v >= loudest / 100 ? i : -1)).filter((i) => i >= 0);
  const sound = loud.length ? (loud[loud.length - 1] - loud[0] + 1) * 0.05 : 0;
  const peakDb = peak > 0 ? 20 * Math.log10(peak) : -Infinity;
  const checks = [
    [seconds <= MAX_S, `${seconds.toFixed(1)} s long` + (seconds > MAX_S ? `: at most ${MAX_S} s are taken` : "")],
    [peakDb >= -50, peakDb >= -50 ? "not silent" : "silent: check the microphone"],
    [clipped / samples.length <= 0.01, clipped / samples.length <= 0.01 ? "not clipped"
      : "clipped: record it again, further from the microphone"],
    [sound >= MIN_SPEECH_S, `about ${sound.toFixed(1)} s of sound` +
      (sound >= MIN_SPEECH_S ? "" : `: at least ${MIN_SPEECH_S} s of speech are needed`)],
  ];
  list.replaceChildren(...checks.map(([ok, text]) => {
    const li = el("li", { textContent: text });
    li.dataset.ok = String(ok);
    return li;
  }));
  list.dataset.ok = String(checks.every(([ok]) => ok));
}

function chosen() {
  const file = $("file").files[0];
  if (!file) return;
  $("recorded").src = URL.createObjectURL(file);
  $("recorded").hidden = false;
  check(file);
}

// -- recording in the browser (MediaRecorder), with its length and level shown as it goes -------------------------
async function toggleRecording() {
  if (recording?.recorder?.state === "recording") {
    recording.recorder.stop();
    return;
  }
  setFieldError("file", "");
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    showProblem({ param: "file", message: "This browser cannot record here (it needs HTTPS or localhost); upload a file instead." });
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false } });
  } catch (e) {
    showProblem({ param: "file", message: `Cannot record: ${e.message || e.name}. Allow the microphone, or upload a file.` });
    return;
  }
  const recorder = new MediaRecorder(stream);
  const audioContext = new AudioContext();
  const analyser = audioContext.createAnalyser();
  audioContext.createMediaStreamSource(stream).connect(analyser);
  const buffer = new Float32Array(analyser.fftSize);
  recording = { recorder, chunks: [], stream, started: Date.now(), audioContext };
  recorder.ondataavailable = (e) => { if (e.data.size) recording.chunks.push(e.data); };
  recorder.onstop = () => {
    clearInterval(recording.timer);
    stream.getTracks().forEach((t) => t.stop());
    audioContext.close();
    const blob = new Blob(recording.chunks, { type: recorder.mimeType || "audio/webm" });
    $("file").value = ""; // the recording is what will be sent
    $("recorded").src = URL.createObjectURL(blob);
    $("recorded").hidden = false;
    $("level").hidden = true;
    $("record").textContent = "● Record again";
    $("record").setAttribute("aria-pressed", "false");
    $("recording").textContent = `Recorded ${((Date.now() - recording.started) / 1000).toFixed(1)} s.`;
    check(blob);
  };
  recording.timer = setInterval(() => {
    const elapsed = (Date.now() - recording.started) / 1000;
    analyser.getFloatTimeDomainData(buffer);
    $("level").value = Math.min(1, Math.max(...buffer.map(Math.abs)) * 1.5);
    $("recording").textContent = `Recording… ${elapsed.toFixed(0)} s (stop after 10 s or so)`;
    if (elapsed >= MAX_S - 1) recorder.stop();
  }, 200);
  recorder.start(250);
  $("level").hidden = false;
  $("record").textContent = "■ Stop";
  $("record").setAttribute("aria-pressed", "true");
  $("recording").textContent = "Recording…";
}

// -- cloning ------------------------------------------------------------------------------------------------------
async function submit(event) {
  event.preventDefault();
  clearErrors();
  if (!clip) { showProblem({ param: "file", message: "Choose a recording to upload, or record one." }); return; }
  if (!$("name").value.trim()) { showProblem({ param: "name", message: "Give the voice a name." }); return; }
  const form = new FormData();
  for (const field of ["name", "tags", "description", "exaggeration"]) form.append(field, $(field).value.trim());
  form.append("file", clip, clip.name || `recording.${(clip.type.split("/")[1] || "webm").split(";")[0]}`);
  $("clone").disabled = true;
  try {
    const job = await api("/voice-clone", { method: "POST", body: form });
    cloneJob = { id: job.job_id, events_url: job.events_url, last: null, name: $("name").value.trim(), done: false };
    sessionStorage.setItem("cloneJob", JSON.stringify(cloneJob)); // a reload follows it on
    startFollowing();
  } catch (e) {
    showProblem(e);
  } finally {
    $("clone").disabled = false;
  }
}

function startFollowing() {
  $("clone-job").hidden = false;
  $("clone-result").hidden = true;
  $("clone-error").hidden = true;
  $("clone-job-title").textContent = `Cloning “${cloneJob.name}”`;
  setCloneStatus("queued", "Waiting for a worker…", 0);
  $("clone-job-title").focus();
  follow();
}

function setCloneStatus(status, message, progress) {
  $("clone-status").textContent = status;
  $("clone-status").dataset.status = status;
  $("clone-message").textContent = message;
  if (progress != null) $("clone-progress").value = progress;
}

// The job's events over its websocket; a connection that drops is opened again after the last event seen.
function follow(delay = 1000) {
  const job = cloneJob;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = job.last ? `?after=${encodeURIComponent(job.last)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}${job.events_url}${after}`);
  socket.onopen = () => { $("connection").hidden = true; delay = 1000; };
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    job.last = event.id;
    if (event.type === "progress") {
      setCloneStatus(event.status, event.message || (event.status === "running" ? "Computing the voice…" : ""),
                     event.progress ?? 0);
    } else if (event.type === "done") {
      finished(event);
    } else if (event.type === "error") {
      job.done = true;
      sessionStorage.removeItem("cloneJob");
      setCloneStatus(event.status, "", null);
      $("clone-error").textContent = event.status === "cancelled" ? "The clone was cancelled."
        : `The clone failed: ${event.error || "unknown error"}`;
      $("clone-error").hidden = false;
    }
  };
  socket.onclose = () => {
    if (job.done || job !== cloneJob) return;
    $("connection").textContent = "The connection to the server dropped; following the clone again as soon as it answers…";
    $("connection").hidden = false;
    setTimeout(() => follow(Math.min(15000, delay * 2)), delay);
  };
}

async function finished(event) {
  cloneJob.done = true;
  sessionStorage.removeItem("cloneJob");
  setCloneStatus("succeeded", "Voice ready.", 1);
  const voiceId = event.voice_id || (await api(`/jobs/${cloneJob.id}`).catch(() => ({}))).voice_id;
  if (voiceId) {
    $("clone-preview").src = `/voices/${voiceId}/sample`;
    $("clone-use").href = `/?voice=${encodeURIComponent(voiceId)}`;
    $("clone-use").setAttribute("aria-label", `Speak with ${cloneJob.name} on the Speak page`);
    $("clone-result").hidden = false;
  }
  announce(`The voice ${cloneJob.name} is ready.`);
  $("clone-form").reset();
  clip = null;
  $("checks").replaceChildren();
  $("recorded").hidden = true;
  $("recording").textContent = "";
  await loadVoices();
}

// A reload while a clone runs: the page follows it on (from its first event, so nothing is missed).
function resumeClone() {
  try {
    const saved = JSON.parse(sessionStorage.getItem("cloneJob") || "null");
    if (saved && !saved.done) {
      cloneJob = { ...saved, last: null };
      startFollowing();
    }
  } catch { sessionStorage.removeItem("cloneJob"); }
}

// -- the library --------------------------------------------------------------------------------------------------
function cell(className, label, ...children) {
  const td = el("td", { className }, el("div", { className: "v" }, ...children));
  td.dataset.label = label;
  return td;
}

async function loadVoices() {
  let voices;
  try {
    ({ voices } = await api("/voices"));
  } catch (e) {
    if (e.status == null || e.status >= 500) {
      $("connection").textContent = `Could not list the voices (${e.message}); trying again…`;
      $("connection").hidden = false;
      setTimeout(loadVoices, 3000);
      return;
    }
    throw e;
  }
  $("connection").hidden = true;
  const focusedId = document.activeElement?.closest?.("tr")?.dataset.id;
  const rows = voices.map((v) => {
    const row = el("tr");
    row.dataset.id = v.id;
    const name = el("span", { className: "voice-name", textContent: v.name });
    const sample = v.builtin ? el("span", { className: "muted", textContent: "—" })
      : el("audio", { controls: true, preload: "none", src: `/voices/${v.id}/sample` });
    if (!v.builtin) sample.setAttribute("aria-label", `Sample of ${v.name}`);
    const actions = el("div", { className: "actions" });
    if (!v.builtin) {
      const rename = el("button", { type: "button", className: "rename", textContent: "Rename" });
      rename.setAttribute("aria-label", `Rename ${v.name}`);
      rename.onclick = () => startRename(row, v);
      const remove = el("button", { type: "button", className: "delete danger", textContent: "Delete" });
      remove.setAttribute("aria-label", `Delete ${v.name}`);
      remove.onclick = () => removeVoice(row, v);
      actions.append(rename, remove);
    }
    row.append(
      cell("name", "Name", name, v.builtin ? el("span", { className: "muted", textContent: " (built in)" }) : null,
           v.description ? el("div", { className: "muted small", textContent: v.description }) : null),
      cell("engine", "Engine", v.engine || ""),
      cell("tags", "Tags", (v.tags || []).join(", ")),
      cell("sample", "Sample", sample),
      cell("voice-actions", "Actions", actions, el("p", { className: "row-error field-error", hidden: true })));
    row.querySelector(".row-error").setAttribute("role", "alert");
    for (const td of row.children) td.classList.toggle("blank", !td.textContent.trim() && !td.querySelector("audio, button"));
    return row;
  });
  $("voices").tBodies[0].replaceChildren(...rows);
  if (focusedId) $("voices").querySelector(`tr[data-id="${CSS.escape(focusedId)}"] button`)?.focus();
}

function rowError(row, message) {
  const p = row.querySelector(".row-error");
  p.textContent = message;
  p.hidden = !message;
}

// Renamed in place: a field where the name was, saved with Enter or the button, left with Escape.
function startRename(row, voice) {
  const box = row.querySelector("td.name .v");
  const before = [...box.childNodes];
  const inputId = `rename-${voice.id}`;
  const input = el("input", { id: inputId, value: voice.name, maxLength: 64, className: "rename-input" });
  const save = el("button", { type: "submit", className: "save primary", textContent: "Save" });
  const cancel = el("button", { type: "button", className: "cancel", textContent: "Cancel" });
  const error = el("p", { id: `${inputId}-error`, className: "field-error", hidden: true });
  input.setAttribute("aria-describedby", error.id);
  const form = el("form", { className: "rename-form" },
                  el("label", { htmlFor: inputId, className: "visually-hidden", textContent: `New name for ${voice.name}` }),
                  input, save, cancel);
  const restore = () => { box.replaceChildren(...before); row.querySelector("button.rename")?.focus(); };
  cancel.onclick = restore;
  input.addEventListener("keydown", (e) => { if (e.key === "Escape") restore(); });
  form.onsubmit = async (e) => {
    e.preventDefault();
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    try {
      await api(`/voices/${voice.id}`, { method: "PATCH", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify({ name: input.value.trim() }) });
      announce(`Renamed ${voice.name} to ${input.value.trim()}.`);
      await loadVoices();
      $("voices").querySelector(`tr[data-id="${CSS.escape(voice.id)}"] button.rename`)?.focus();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  };
  box.replaceChildren(form, error);
  input.focus();
  input.select();
}

async function removeVoice(row, voice) {
  rowError(row, "");
  if (!confirm(`Delete the voice ${voice.name}? Jobs can no longer use it. This cannot be undone.`)) return;
  try {
    await api(`/voices/${voice.id}`, { method: "DELETE" });
  } catch (e) { rowError(row, `Could not delete: ${e.message}`); return; }
  const next = row.nextElementSibling || row.previousElementSibling;
  row.remove();
  announce(`Deleted the voice ${voice.name}.`);
  (next?.querySelector("button") || $("name")).focus();
}

async function loadEngine() {
  const engine = await api("/engine");
  if (engine.name !== "chatterbox") {
    engineNote(`Cloning needs the Chatterbox engine; this system runs ${engine.name}` +
               `${engine.reason ? ` (${engine.reason})` : ""}. The voices below can still be used.`);
    for (const control of $("clone-form").querySelectorAll("input, button")) control.disabled = true;
  }
}

$("clone-form").addEventListener("submit", submit);
$("record").addEventListener("click", toggleRecording);
$("file").addEventListener("change", chosen);
loadEngine().catch(() => {});
loadVoices().catch((e) => showError(e.message));
resumeClone();
