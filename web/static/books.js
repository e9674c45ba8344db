// The audiobooks page: upload or paste a book, review and edit its chapters, start it, and follow every book live
// (a progress bar per chapter, time left, pause/resume/cancel, downloads). Errors from the server are shown beside
// what caused them; a dropped connection is said and resumed from the last event seen.
"use strict";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const sockets = new Map(); // book id -> {ws, last, retries}
const refreshTimers = new Map();
let reviewed = null; // {book, edited, file}
let offline = 0; // book updates in a row that could not reach the server



// -- errors beside what caused them -------------------------------------------------------------------------------
const FIELDS = { file: "book-file", source_format: "book-file", text: "book-text", title: "book-title",
                 voice: "book-voice", format: "book-format", model: "book-model", lexicon: "book-lexicon" };

function slotFor(param) {
  if (!param) return null;
  if (param.startsWith("lexicon[")) param = "lexicon";  // "lexicon[2].say": the message names the entry
  if (FIELDS[param]) return { field: $(FIELDS[param]), error: $(`${FIELDS[param]}-error`) };
  if (param === "chapters") return { field: $("review-title"), error: $("chapters-error") };
  const match = /^chapters\[(\d+)\]/.exec(param);
  const li = match && $("review-chapters").children[Number(match[1])];
  if (li) return { field: li.querySelector(".chapter-text"), error: li.querySelector(".field-error"), li };
  return null;
}

function setFieldError(slot, message) {
  markField(slot.error, slot.field?.tagName === "H3" ? null : slot.field, message);  // a chapter's heading is no input
}

function clearErrors() {
  showError("");
  for (const param of [...Object.keys(FIELDS), "chapters"]) setFieldError(slotFor(param), "");
  [...$("review-chapters").children].forEach((li, i) => setFieldError(slotFor(`chapters[${i}]`), ""));
}

function showProblem(e) {
  const slot = slotFor(e.param);
  if (!slot) { showError(e.message); return; }
  setFieldError(slot, e.message);
  if (slot.li) slot.li.querySelector("details").open = true; // the chapter's text, where the problem is
  slot.field?.focus();
}

// -- a new book: preview, review, start ---------------------------------------------------------------------------
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

async function preview(event) {
  event?.preventDefault();
  clearErrors();
  if (!$("book-file").files[0] && !$("book-text").value.trim()) {
    showProblem({ param: "text", message: "Choose a book file or paste its text." });
    return;
  }
  $("preview").disabled = true;
  try {
    const { book } = await api("/audiobooks/parse", { method: "POST", ...bookRequestBody() });
    reviewed = { book, edited: false, file: $("book-file").files[0] || null };
    if (!$("book-title").value && book.title !== "Untitled") $("book-title").value = book.title;
    renderReview(book);
    $("review").hidden = false;
    $("review-title").focus();
  } catch (e) {
    showProblem(e);
  } finally {
    $("preview").disabled = false;
  }
}

function renderReview(book) {
  const words = book.chapters.reduce((n, c) => n + c.words, 0);
  $("review-summary").textContent = `${book.title}${book.author ? " by " + book.author : ""} · ` +
    `${book.chapters.length} chapter${book.chapters.length === 1 ? "" : "s"} · ${words} words` +
    `${book.has_cover ? " · with cover" : ""}`;
  $("review-chapters").replaceChildren(...book.chapters.map((chapter, i) => {
    const li = el("li");
    const titleId = `chapter-${i}-title`, textId = `chapter-${i}-text`, errorId = `chapter-${i}-error`;
    const title = el("input", { id: titleId, className: "chapter-title", value: chapter.title, maxLength: 300 });
    const text = el("textarea", { id: textId, className: "chapter-text", rows: 8, value: chapter.text });
    text.setAttribute("aria-describedby", errorId);
    const remove = el("button", { type: "button", className: "remove danger", textContent: "Remove" });
    const count = el("span", { className: "muted", textContent: `${chapter.words} words` });
    li.append(
      el("div", { className: "field" }, el("label", { htmlFor: titleId, textContent: `Title of chapter ${i + 1}` }), title),
      el("details", {}, el("summary", { textContent: "Text" }), el("label", { htmlFor: textId, className: "visually-hidden",
                                                                     textContent: `Text of chapter ${i + 1}` }), text),
      el("p", { id: errorId, className: "field-error", hidden: true }),
      el("div", { className: "chapter-tools" }, count, remove));
    const describe = () => remove.setAttribute("aria-label",
                                               `Remove chapter ${li.dataset.number}, ${title.value || "untitled"}`);
    li.dataset.number = i + 1;
    describe();
    title.addEventListener("input", () => { reviewed.edited = true; describe(); });
    text.addEventListener("input", () => {
      reviewed.edited = true;
      count.textContent = `${(text.value.match(/\S+/g) || []).length} words`;
    });
    remove.onclick = () => {
      const next = li.nextElementSibling || li.previousElementSibling;
      announce(`Removed chapter ${li.dataset.number}, ${title.value || "untitled"}.`);
      li.remove();
      reviewed.edited = true;
      renumber();
      (next?.querySelector(".chapter-title") || $("start")).focus();
    };
    return li;
  }));
}

// After a removal, the labels count the chapters that are left.
function renumber() {
  [...$("review-chapters").children].forEach((li, i) => {
    li.dataset.number = i + 1;
    li.querySelector(".field label").textContent = `Title of chapter ${i + 1}`;
    li.querySelector("details label").textContent = `Text of chapter ${i + 1}`;
    li.querySelector(".chapter-title").dispatchEvent(new Event("input"));
  });
}

// The book's own pronunciations: a JSON file as the Lexicon page exports it (or a list of entries).
async function bookLexicon() {
  const file = $("book-lexicon").files[0];
  if (!file) return null;
  try {
    return JSON.parse(await file.text());
  } catch (e) {
    throw { param: "lexicon", message: `${file.name} is not JSON: export it from the Lexicon page, or write a list of {"term", "say"} entries.` };
  }
}

async function start() {
  clearErrors();
  const options = { title: $("book-title").value.trim(), voice: $("book-voice").value, format: $("book-format").value,
                    model: $("book-model").value };
  try {
    options.lexicon = await bookLexicon();
  } catch (e) {
    showProblem(e);
    return;
  }
  let request;
  if (reviewed.file && !reviewed.edited) {
    // Unchanged: send the file itself, so that an EPUB keeps its cover and metadata.
    const form = new FormData();
    form.append("file", reviewed.file);
    for (const [k, v] of Object.entries(options)) if (v) form.append(k, k === "lexicon" ? JSON.stringify(v) : v);
    request = { body: form };
  } else {
    const chapters = [...$("review-chapters").children].map((li) => ({
      title: li.querySelector(".chapter-title").value, text: li.querySelector(".chapter-text").value }));
    if (!chapters.length) {
      showProblem({ param: "chapters", message: "Every chapter was removed: there is nothing to read." });
      return;
    }
    const body = { chapters, ...options };
    if (!body.model) delete body.model;
    if (!body.lexicon) delete body.lexicon;
    if (reviewed.book.author) body.author = reviewed.book.author;
    if (reviewed.book.language) body.language = reviewed.book.language;
    request = { headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }
  $("start").disabled = true;
  try {
    const sent = await api("/audiobooks", { method: "POST", ...request });
    discard();
    $("book-form").reset();
    announce(`Started ${sent.title}: ${sent.chapters} chapters.`);
    await refresh(sent.job_id, { first: true });
    follow(sent.job_id);
    document.querySelector(`.book[data-id="${sent.job_id}"] h3`)?.focus();
  } catch (e) {
    showProblem(e);
  } finally {
    $("start").disabled = false;
  }
}

function discard() {
  reviewed = null;
  $("review").hidden = true;
  $("review-chapters").replaceChildren();
}

// -- the books ----------------------------------------------------------------------------------------------------
function duration(seconds) {
  if (seconds == null) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.round((seconds % 3600) / 60)).padStart(2, "0")} min`;
}

function bookCard(state, first) {
  let card = document.querySelector(`.book[data-id="${state.id}"]`);
  if (card) return card;
  const titleId = `book-${state.id}-title`;
  card = el("article", { className: "book card" });
  card.dataset.id = state.id;
  card.setAttribute("aria-labelledby", titleId);
  const h3 = el("h3", { id: titleId, tabIndex: -1 });
  const overall = el("progress", { className: "overall", max: 1, value: 0 });
  card.append(h3,
    el("div", { className: "row" }, el("span", { className: "status status-badge" }),
       el("span", { className: "book-figures muted" })),
    overall,
    el("p", { className: "book-error error", hidden: true }),
    el("div", { className: "actions" }),
    el("p", { className: "action-error field-error", hidden: true }),
    el("ul", { className: "chapters" }),
    el("p", { className: "downloads" }));
  card.querySelector(".book-error").setAttribute("role", "alert");
  card.querySelector(".action-error").setAttribute("role", "alert");
  if (first) $("books").prepend(card);
  else $("books").append(card);
  $("no-books").hidden = true;
  return card;
}

function renderBook(state, { first = false } = {}) {
  const card = bookCard(state, first);
  const name = state.title || state.id;
  card.querySelector("h3").textContent = name + (state.author ? ` — ${state.author}` : "");
  const badge = card.querySelector(".status");
  if (badge.textContent && badge.textContent !== state.status) announce(`${name} is now ${state.status}.`);
  badge.textContent = state.status;
  badge.dataset.status = state.status;
  const overall = card.querySelector(".overall");
  const fraction = state.status === "succeeded" ? 1 : state.chunks_done / Math.max(1, state.chunks_total);
  overall.value = fraction;
  overall.textContent = `${Math.round(fraction * 100)}%`;
  overall.setAttribute("aria-label", `${name}: ${state.chunks_done} of ${state.chunks_total} chunks`);
  const eta = state.eta_s != null && !TERMINAL.includes(state.status) && state.status !== "paused"
    ? ` · about ${duration(state.eta_s)} left` : "";
  card.querySelector(".book-figures").textContent =
    `${state.chunks_done} of ${state.chunks_total} chunks · ${duration(state.audio_s || 0)} of audio${eta}`;
  const error = card.querySelector(".book-error");
  error.textContent = state.error || "";
  error.hidden = !state.error || state.status === "cancelled";
  renderChapters(card, state);
  renderActions(card, state);
  const downloads = card.querySelector(".downloads");
  if (state.m4b_ready && !downloads.querySelector(".m4b")) {
    const m4b = el("a", { href: `${state.m4b_url}?download=1`, textContent: "Download the M4B", className: "m4b" });
    m4b.setAttribute("aria-label", `Download ${name} as one M4B file with chapters`);
    const epub = el("a", { href: `${state.epub_url}?download=1`, textContent: "Read-along EPUB", className: "epub" });
    epub.setAttribute("aria-label", `Download ${name} as an EPUB whose text is lit as it is read`);
    const srt = el("a", { href: `${state.subtitles_url}?download=1`, textContent: "Subtitles", className: "srt" });
    srt.setAttribute("aria-label", `Download the subtitles of ${name} (SRT, on the M4B's time)`);
    downloads.replaceChildren(m4b, el("span", { className: "muted", textContent: " (every chapter, with markers) · " }),
                              epub, " · ", srt);
  } else if (!state.m4b_ready) {
    downloads.replaceChildren();
  }
}

// Patched in place, so that a focused download link survives the updates.
function renderChapters(card, state) {
  const list = card.querySelector(".chapters");
  state.chapters.forEach((c, i) => {
    let li = list.children[i];
    if (!li) {
      li = el("li", {}, el("span", { className: "title" }), el("progress", { max: 1 }), el("span", { className: "link" }));
      list.append(li);
    }
    const title = `${c.index + 1}. ${c.title}`;
    li.querySelector(".title").textContent = title;
    const bar = li.querySelector("progress");
    bar.value = c.progress;
    bar.textContent = `${Math.round(c.progress * 100)}%`;
    bar.setAttribute("aria-label", `Chapter ${title}: ${c.chunks_done} of ${c.chunks_total} chunks, ${c.status}`);
    const slot = li.querySelector(".link");
    if (c.url) {
      const href = `${c.url}?download=1`;
      if (slot.querySelector("a")?.getAttribute("href") !== href) {
        const a = el("a", { href, textContent: "Download" });
        a.setAttribute("aria-label", `Download chapter ${title}`);
        slot.replaceChildren(a, ` ${duration(c.duration_s)}`);
      }
    } else if (slot.textContent !== c.status) {
      slot.textContent = c.status;
    }
  });
  while (list.children.length > state.chapters.length) list.lastElementChild.remove();
}

function actionsFor(state) {
  if (state.status === "running" || state.status === "queued") return [["Pause", "pause"], ["Cancel", "cancel"]];
  if (state.status === "paused") return [["Resume", "resume"], ["Cancel", "cancel"]];
  if (state.status === "failed" || state.status === "cancelled") return [["Resume", "resume"]];
  return [];
}

function renderActions(card, state) {
  const box = card.querySelector(".actions");
  const wanted = actionsFor(state);
  const signature = wanted.map(([label]) => label).join("|");
  if (box.dataset.signature === signature) return;
  const focused = box.contains(document.activeElement) ? document.activeElement.textContent : null;
  box.dataset.signature = signature;
  box.replaceChildren(...wanted.map(([label, path]) => {
    const button = el("button", { type: "button", textContent: label,
                                  className: label.toLowerCase() + (label === "Cancel" ? " danger" : "") });
    button.setAttribute("aria-label", `${label} ${state.title || state.id}`);
    button.onclick = () => act(card, state.id, path, button);
    return button;
  }));
  if (focused !== null) (box.querySelector("button") || card.querySelector("h3")).focus();
}

async function act(card, id, path, button) {
  const problem = card.querySelector(".action-error");
  problem.hidden = true;
  button.disabled = true;
  try {
    await api(`/audiobooks/${id}/${path}`, { method: "POST" });
    await refresh(id);
    follow(id);
  } catch (e) {
    problem.textContent = `Could not ${path}: ${e.message}`;
    problem.hidden = false;
  } finally {
    button.disabled = false;
  }
}

// -- live updates -------------------------------------------------------------------------------------------------
function connection(ok) {
  if (ok) {
    if (offline) announce("Connected again.");
    offline = 0;
    $("connection").hidden = true;
    return;
  }
  offline += 1;
  $("connection").textContent = "The server cannot be reached; progress shown here may be out of date. " +
                                "Trying again…";
  $("connection").hidden = false;
}

async function refresh(id, options = {}) {
  try {
    renderBook(await api(`/audiobooks/${id}`), options);
    connection(true);
    return true;
  } catch (e) {
    if (e.status == null || e.status >= 500) connection(false);
    else showError(e.message);
    return false;
  }
}

function scheduleRefresh(id) {
  if (refreshTimers.has(id)) return;
  refreshTimers.set(id, setTimeout(() => { refreshTimers.delete(id); refresh(id); }, 400));
}

// One websocket per unfinished book. The server closes it after the book's last event; any other close is a dropped
// connection, resumed after the last event seen (?after=), with a growing wait while the server does not answer.
function follow(id) {
  const existing = sockets.get(id);
  if (existing?.ws && existing.ws.readyState <= WebSocket.OPEN) return;
  const entry = existing || { last: null, retries: 0 };
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = entry.last ? `?after=${encodeURIComponent(entry.last)}` : "";
  entry.ws = new WebSocket(`${scheme}://${location.host}/ws/jobs/${id}${after}`);
  entry.seen = Date.now();
  entry.ws.onopen = () => { entry.retries = 0; entry.seen = Date.now(); };
  entry.ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    entry.last = event.id;
    entry.seen = Date.now();
    scheduleRefresh(id);
  };
  entry.ws.onclose = async () => {
    entry.ws = null;
    const reached = await refresh(id);
    const badge = document.querySelector(`.book[data-id="${id}"] .status`);
    const status = badge?.dataset.status;
    if (reached && (TERMINAL.includes(status) || status === "paused")) return; // resumed by its button
    entry.retries += 1;
    setTimeout(() => follow(id), Math.min(15000, 500 * 2 ** Math.min(entry.retries, 5)));
  };
  sockets.set(id, entry);
}

// A connection can also die without closing (a network gone quiet): a book whose socket has said nothing for a while
// is asked about directly, which shows whether the server can be reached, and its socket is made again if need be.
const QUIET_MS = 8000;
setInterval(async () => {
  for (const [id, entry] of sockets) {
    if (!entry.ws || Date.now() - entry.seen < QUIET_MS) continue;
    const status = document.querySelector(`.book[data-id="${id}"] .status`)?.dataset.status;
    if (TERMINAL.includes(status) || status === "paused") continue;
    if (await refresh(id) && Date.now() - entry.seen > 3 * QUIET_MS && entry.ws) {
      entry.ws.close(); // onclose follows again, after the last event seen
    }
  }
}, QUIET_MS / 2);

async function loadBooks() {
  let audiobooks;
  try {
    ({ audiobooks } = await api("/audiobooks"));
  } catch (e) {
    if (e.status == null || e.status >= 500) { connection(false); setTimeout(loadBooks, 3000); return; }
    throw e;
  }
  connection(true);
  await Promise.all(audiobooks.map((b) => refresh(b.id)));
  for (const b of audiobooks) if (!TERMINAL.includes(b.status)) follow(b.id);
  // Newest first, as the server lists them.
  const cards = audiobooks.map((b) => document.querySelector(`.book[data-id="${b.id}"]`)).filter(Boolean);
  $("books").replaceChildren(...cards);
  $("no-books").hidden = cards.length > 0;
}

async function loadVoices() {
  const { voices } = await api("/voices");
  $("book-voice").replaceChildren(...voices.map((v) => new Option(v.name + (v.builtin ? "" : " (saved)"), v.id)));
  const engine = await api("/engine");
  const models = (engine.models || []).filter((m) => m.available);
  $("book-model").replaceChildren($("book-model").options[0], ...models.map((m) => new Option(m.title, m.name)));
  $("book-model-field").hidden = models.length < 2;
}

$("book-form").addEventListener("submit", preview);
$("start").onclick = start;
$("discard").onclick = () => { discard(); $("preview").focus(); };
window.addEventListener("online", () => { for (const id of sockets.keys()) follow(id); });
loadVoices().catch((e) => showProblem({ param: "voice", message: `Could not list the voices: ${e.message}` }));
loadBooks().catch((e) => showError(e.message));
