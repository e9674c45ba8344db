// The audiobooks page: upload or paste a book, review and edit its chapters, start it, follow every book live.
"use strict";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const sockets = new Map(); // book id -> {ws, last}
const refreshTimers = new Map();
let reviewed = null; // {book, edited, file}

function bookRequestBody() {
  const file = $("book-file").files[0];
  const text = $("book-text").value;
  if (file) {
    const form = new FormData();
    form.append("file", file);
    return { body: form };
  }
  const markdown = /^#{1,6}\s/m.test(text);
  return { headers: { "Content-Type": "application/json" },
           body: JSON.stringify({ text, source_format: markdown ? "md" : "txt" }) };
}

async function preview() {
  showError("");
  try {
    const { book } = await api("/audiobooks/parse", { method: "POST", ...bookRequestBody() });
    reviewed = { book, edited: false, file: $("book-file").files[0] || null };
    if (!$("book-title").value) $("book-title").value = book.title;
    const words = book.chapters.reduce((n, c) => n + c.words, 0);
    $("review-summary").textContent = `${book.title}${book.author ? " by " + book.author : ""} · ` +
      `${book.chapters.length} chapters · ${words} words${book.has_cover ? " · with cover" : ""}`;
    const items = book.chapters.map((chapter, i) => {
      const li = document.createElement("li");
      li.innerHTML = `<label>Title of chapter ${i + 1} <input class="chapter-title"></label>
        <details><summary>Text (${chapter.words} words)</summary>
        <textarea class="chapter-text" rows="6" aria-label="Text of chapter ${i + 1}"></textarea></details>
        <button type="button" class="remove">Remove</button>`;
      li.querySelector(".chapter-title").value = chapter.title;
      li.querySelector(".chapter-text").value = chapter.text;
      li.querySelectorAll("input, textarea").forEach((el) => el.addEventListener("input", () => { reviewed.edited = true; }));
      li.querySelector(".remove").onclick = () => { li.remove(); reviewed.edited = true; };
      return li;
    });
    $("review-chapters").replaceChildren(...items);
    $("review").hidden = false;
  } catch (e) { showError(e.message); }
}

async function start() {
  showError("");
  const options = { title: $("book-title").value.trim(), voice: $("book-voice").value, format: $("book-format").value };
  let request;
  if (reviewed.file && !reviewed.edited) {
    // Unchanged: send the file itself, so that an EPUB keeps its cover and metadata.
    const form = new FormData();
    form.append("file", reviewed.file);
    for (const [k, v] of Object.entries(options)) if (v) form.append(k, v);
    request = { body: form };
  } else {
    const chapters = [...$("review-chapters").children].map((li) => ({
      title: li.querySelector(".chapter-title").value, text: li.querySelector(".chapter-text").value }));
    request = { headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ chapters, author: reviewed.book.author, language: reviewed.book.language, ...options }) };
  }
  try {
    const sent = await api("/audiobooks", { method: "POST", ...request });
    $("review").hidden = true;
    $("book-form").reset();
    await loadBooks();
    follow(sent.job_id);
  } catch (e) { showError(e.message); }
}

function minutes(seconds) {
  if (seconds == null) return "";
  return seconds < 90 ? `${Math.round(seconds)} s` : `${(seconds / 60).toFixed(1)} min`;
}

function renderBook(state) {
  let card = document.querySelector(`.book[data-id="${state.id}"]`);
  if (!card) {
    card = document.createElement("article");
    card.className = "book";
    card.dataset.id = state.id;
    card.innerHTML = `<h3></h3><div class="row"><span class="status"></span><span class="figures muted"></span>
      <span class="actions"></span></div><progress class="overall" max="1" value="0"></progress>
      <p class="error" hidden></p><ul class="chapters"></ul><p class="downloads"></p>`;
    $("books").append(card);
  }
  card.querySelector("h3").textContent = state.title + (state.author ? ` — ${state.author}` : "");
  card.querySelector(".status").textContent = state.status;
  const overall = card.querySelector(".overall");
  overall.value = state.status === "succeeded" ? 1 : state.chunks_done / Math.max(1, state.chunks_total);
  overall.setAttribute("aria-label", `${state.title}: ${state.chunks_done} of ${state.chunks_total} chunks`);
  const eta = state.eta_s != null ? ` · about ${minutes(state.eta_s)} left` : "";
  card.querySelector(".figures").textContent =
    `${state.chunks_done}/${state.chunks_total} chunks · ${minutes(state.audio_s)} of audio${eta}`;
  const error = card.querySelector(".error");
  error.textContent = state.error || "";
  error.hidden = !state.error || state.status === "cancelled";
  card.querySelector(".chapters").replaceChildren(...state.chapters.map((c) => {
    const li = document.createElement("li");
    li.innerHTML = `<span class="title"></span><progress max="1"></progress><span class="link"></span>`;
    li.querySelector(".title").textContent = `${c.index + 1}. ${c.title}`;
    const bar = li.querySelector("progress");
    bar.value = c.progress;
    bar.setAttribute("aria-label", `${c.title}: ${c.chunks_done} of ${c.chunks_total} chunks, ${c.status}`);
    if (c.url) {
      const a = Object.assign(document.createElement("a"), { href: c.url + "?download=1", textContent: "download" });
      li.querySelector(".link").append(a, ` ${minutes(c.duration_s)}`);
    } else {
      li.querySelector(".link").textContent = c.status;
    }
    return li;
  }));
  const downloads = card.querySelector(".downloads");
  downloads.replaceChildren();
  if (state.m4b_ready) {
    downloads.append(Object.assign(document.createElement("a"),
      { href: state.m4b_url + "?download=1", textContent: "Download the M4B", className: "m4b" }));
  }
  const actions = card.querySelector(".actions");
  actions.replaceChildren(...actionsFor(state).map(([label, path]) => {
    const button = Object.assign(document.createElement("button"), { type: "button", textContent: label,
                                                                     className: label.toLowerCase() });
    button.onclick = async () => {
      try { await api(`/audiobooks/${state.id}/${path}`, { method: "POST" }); await refresh(state.id); follow(state.id); }
      catch (e) { showError(e.message); }
    };
    return button;
  }));
}

function actionsFor(state) {
  if (state.status === "running" || state.status === "queued") return [["Pause", "pause"], ["Cancel", "cancel"]];
  if (state.status === "paused") return [["Resume", "resume"], ["Cancel", "cancel"]];
  if (state.status === "failed" || state.status === "cancelled") return [["Resume", "resume"]];
  return [];
}

async function refresh(id) {
  try { renderBook(await api(`/audiobooks/${id}`)); } catch (e) { showError(e.message); }
}

function scheduleRefresh(id) {
  if (refreshTimers.has(id)) return;
  refreshTimers.set(id, setTimeout(() => { refreshTimers.delete(id); refresh(id); }, 500));
}

function follow(id) {
  const existing = sockets.get(id);
  if (existing && existing.ws && existing.ws.readyState <= 1) return;
  const entry = existing || { last: null };
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = entry.last ? `?after=${encodeURIComponent(entry.last)}` : "";
  entry.ws = new WebSocket(`${scheme}://${location.host}/ws/jobs/${id}${after}`);
  entry.ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    entry.last = event.id;
    scheduleRefresh(id);
  };
  entry.ws.onclose = async () => {
    // The server closes after the final event; anything else was a dropped connection: resume after the last id.
    const state = await api(`/audiobooks/${id}`).catch(() => null);
    if (state) renderBook(state);
    if (state && !TERMINAL.includes(state.status) && state.status !== "paused") setTimeout(() => follow(id), 1000);
  };
  sockets.set(id, entry);
}

async function loadBooks() {
  const { audiobooks } = await api("/audiobooks");
  for (const b of audiobooks) {
    await refresh(b.id);
    if (!TERMINAL.includes(b.status)) follow(b.id);
  }
  // Newest first, as the server lists them.
  const cards = audiobooks.map((b) => document.querySelector(`.book[data-id="${b.id}"]`)).filter(Boolean);
  $("books").replaceChildren(...cards);
}

async function loadVoices() {
  const { voices } = await api("/voices");
  $("book-voice").replaceChildren(...voices.map((v) => new Option(v.name, v.id)));
}

$("preview").onclick = preview;
$("start").onclick = start;
loadVoices().catch((e) => showError(e.message));
loadBooks().catch((e) => showError(e.message));
