// The voices page: clone from an upload or a recording, follow the clone job, list, rename, delete.
"use strict";
let recording = null; // {recorder, chunks, blob}

async function loadVoices() {
  const { voices } = await api("/voices");
  const rows = voices.map((v) => {
    const row = document.createElement("tr");
    row.dataset.id = v.id;
    const sample = v.builtin ? "" : `<audio controls preload="none" src="/voices/${v.id}/sample"></audio>`;
    row.innerHTML = `<td class="name"></td><td>${v.engine}</td><td>${(v.tags || []).join(", ")}</td><td>${sample}</td><td></td>`;
    row.querySelector(".name").textContent = v.name + (v.builtin ? " (built in)" : "");
    if (!v.builtin) {
      const rename = Object.assign(document.createElement("button"), { textContent: "Rename", className: "rename" });
      rename.onclick = async () => {
        const name = prompt("New name", v.name);
        if (!name) return;
        try { await api(`/voices/${v.id}`, { method: "PATCH", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify({ name }) }); loadVoices(); }
        catch (e) { showError(e.message); }
      };
      const remove = Object.assign(document.createElement("button"), { textContent: "Delete", className: "delete" });
      remove.onclick = async () => {
        try { await api(`/voices/${v.id}`, { method: "DELETE" }); loadVoices(); } catch (e) { showError(e.message); }
      };
      row.lastElementChild.append(rename, remove);
    }
    return row;
  });
  $("voices").tBodies[0].replaceChildren(...rows);
}

async function toggleRecording() {
  if (recording?.recorder?.state === "recording") {
    recording.recorder.stop();
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const recorder = new MediaRecorder(stream);
    recording = { recorder, chunks: [], blob: null };
    recorder.ondataavailable = (e) => recording.chunks.push(e.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      recording.blob = new Blob(recording.chunks, { type: recorder.mimeType });
      $("recorded").src = URL.createObjectURL(recording.blob);
      $("recorded").hidden = false;
      $("record").textContent = "Record again";
      $("recording").textContent = "recorded";
    };
    recorder.start();
    $("record").textContent = "Stop";
    $("recording").textContent = "recording…";
  } catch (e) {
    showError(`cannot record: ${e.message}`);
  }
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const form = new FormData();
  for (const field of ["name", "tags", "description"]) form.append(field, $(field).value);
  if ($("file").files.length) form.append("file", $("file").files[0]);
  else if (recording?.blob) form.append("file", recording.blob, "recording.webm");
  else { showError("choose a file or record one"); return; }
  try {
    const job = await api("/voice-clone", { method: "POST", body: form });
    follow(job);
  } catch (e) {
    showError(e.message);
  }
}

function follow(job) {
  $("clone-job").hidden = false;
  $("clone-status").textContent = "queued";
  $("clone-progress").value = 0;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${job.events_url}`);
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "progress") {
      $("clone-status").textContent = event.message || event.status;
      $("clone-progress").value = event.progress ?? 0;
    } else if (event.type === "done") {
      $("clone-status").textContent = "ready";
      $("clone-progress").value = 1;
      loadVoices();
    } else if (event.type === "error") {
      $("clone-status").textContent = event.status;
      showError(event.error || event.status);
    }
  };
}

$("clone-form").addEventListener("submit", submit);
$("record").addEventListener("click", toggleRecording);
loadVoices().catch((e) => showError(e.message));
