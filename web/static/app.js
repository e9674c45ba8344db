// The dashboard: submit a job, follow its websocket events, play the result.
"use strict";
let current = null; // {jobId, socket, lastEventId}

async function loadEngine() {
  const engine = await api("/engine");
  $("engine").textContent = `engine: ${engine.name}`;
  $("text").maxLength = engine.max_text_chars;
  $("voice").replaceChildren(...engine.voices.map((v) => new Option(v.name, v.id)));
  const fields = engine.params.map((p) => {
    const label = document.createElement("label");
    label.title = p.help;
    const input = document.createElement("input");
    Object.assign(input, { type: "number", name: p.name, min: p.min, max: p.max,
                           step: p.type === "int" ? 1 : "any", value: p.default ?? "" });
    input.dataset.kind = p.type;
    label.append(`${p.name} (${p.min}–${p.max})`, input);
    return label;
  });
  $("params").append(...fields);
}

async function refreshHealth() {
  try {
    const health = await api("/health");
    const busy = health.workers.filter((w) => w.busy).length;
    $("health").textContent = `${health.workers.length} worker(s), ${busy} busy`;
  } catch (e) {
    $("health").textContent = "unavailable";
  }
}

function params() {
  const out = {};
  for (const input of $("params").querySelectorAll("input")) {
    if (input.value !== "") out[input.name] = input.dataset.kind === "int" ? parseInt(input.value, 10) : parseFloat(input.value);
  }
  return out;
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const body = { text: $("text").value, voice: $("voice").value || null, format: $("format").value, params: params() };
  try {
    const job = await api("/synthesize", { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
    startJob(job);
  } catch (e) {
    showError(e.message);
  }
}

function startJob(job) {
  if (current?.socket) current.socket.close();
  current = { jobId: job.job_id, socket: null, lastEventId: null, eventsUrl: job.events_url };
  $("job").hidden = false;
  $("job-id").textContent = job.job_id;
  $("status").textContent = "queued";
  $("progress").value = 0;
  $("chunks").replaceChildren();
  $("player").removeAttribute("src");
  $("download").hidden = true;
  $("stats").textContent = "";
  $("cancel").disabled = false;
  connect();
}

function connect() {
  const job = current;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const resume = job.lastEventId ? `?after=${encodeURIComponent(job.lastEventId)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}${job.eventsUrl}${resume}`);
  job.socket = socket;
  let finished = false;
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    job.lastEventId = event.id;
    if (event.type === "progress") {
      $("status").textContent = event.status + (event.message ? ` (${event.message})` : "");
      $("progress").value = event.progress ?? 0;
    } else if (event.type === "chunk") {
      // Several audio chunks can belong to one text chunk: list each text once, with its audio so far.
      let item = $("chunks").lastElementChild;
      if (!item || item.dataset.textIndex !== String(event.text_index)) {
        item = document.createElement("li");
        item.dataset.textIndex = event.text_index;
        item.dataset.seconds = 0;
        $("chunks").append(item);
      }
      item.dataset.seconds = Number(item.dataset.seconds) + event.duration_s;
      item.textContent = `${event.text} (${Number(item.dataset.seconds).toFixed(1)} s)`;
    } else if (event.type === "done") {
      finished = true;
      $("status").textContent = "succeeded";
      $("progress").value = 1;
      $("player").src = event.audio_url;
      $("download").href = `${event.audio_url}?download=1`;
      $("download").hidden = false;
      $("stats").textContent = `${event.duration_s.toFixed(1)} s of audio, real-time factor ${event.rtf}, on ${event.worker}`;
      $("cancel").disabled = true;
    } else if (event.type === "error") {
      finished = true;
      $("status").textContent = event.status;
      showError(event.error || event.status);
      $("cancel").disabled = true;
    }
  };
  // A dropped connection resumes after the last event seen, so nothing is missed or repeated.
  socket.onclose = () => { if (!finished && current === job) setTimeout(connect, 1000); };
}

async function cancel() {
  if (!current) return;
  try { await api(`/jobs/${current.jobId}`, { method: "DELETE" }); } catch (e) { showError(e.message); }
}

$("synth-form").addEventListener("submit", submit);
$("cancel").addEventListener("click", cancel);
$("text").addEventListener("input", () => { $("chars").textContent = `${$("text").value.length} characters`; });
loadEngine().catch((e) => showError(`cannot load the engine: ${e.message}`));
refreshHealth();
setInterval(refreshHealth, 5000);
