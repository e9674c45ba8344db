// The lexicon page: the key's pronunciation entries listed, added, edited and removed (the server's 4xx messages
// shown beside the field they name), imported and exported as JSON, and heard: each entry, or any text, spoken by a
// real job with the lexicon applied, in a voice chosen here. An entry is shown by its kind and what it says, whatever
// field holds that (a respelling's "say", a phoneme entry's "phonemes"), as the REST answer gives it.
"use strict";
const SAYS = { respell: "say", phonemes: "phonemes" };  // the field that holds what an entry of each kind says
const KIND_HINTS = {
  respell: ["Say it as", "Spelled as it sounds: Win, sequel, C plus plus.", "Win"],
  phonemes: ["Phonemes", "IPA, as Piper reads them: wˈɪn.", "wˈɪn"],
};
const NOT_SAID = new Set(["term", "kind", "case_sensitive", "updated_at"]);
// The API's param -> the input: a phoneme entry's phonemes are in the main field, its optional respelling beside.
const formField = (param) => ($("kind").value === "phonemes"
  ? { term: "term", kind: "kind", phonemes: "say", say: "fallback" } : { term: "term", kind: "kind", say: "say" })[param];
const TERMINAL = ["succeeded", "failed", "cancelled"];
let entries = [];
let editing = null;   // the entry the form edits, or null when it adds one
let hearing = 0;      // each "hear it" takes a ticket: a later one wins over an earlier still on its way
let playerUrl = null; // the object URL the player plays, revoked when replaced

// -- what an entry says, whatever its kind ------------------------------------------------------------------------
function saysOf(entry) {
  const field = SAYS[entry.kind];
  if (field && typeof entry[field] === "string") return entry[field];
  for (const [name, value] of Object.entries(entry)) {
    if (!NOT_SAID.has(name) && typeof value === "string" && value) return value;
  }
  return "";
}

// An entry as PUT /lexicon takes it back (no timestamp, no empty fields).
function portable(entry) {
  if (!entry || typeof entry !== "object" || Array.isArray(entry)) return entry;
  return Object.fromEntries(Object.entries(entry).filter(([name, value]) => name !== "updated_at" && value != null));
}

const segment = (term) => encodeURIComponent(term);
const jsonBody = (body) => ({ headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// -- the form: add or edit ----------------------------------------------------------------------------------------
function formError(id, message) {
  markField($(`${id}-error`), $(id), message);
}

function clearFormErrors() {
  for (const id of ["term", "kind", "say", "fallback"]) formError(id, "");
  $("form-error").textContent = "";
  $("form-error").hidden = true;
}

function showFormProblem(e) {
  const id = formField(e.param);
  if (id) {
    formError(id, e.message);
    $(id).focus();
  } else {
    $("form-error").textContent = e.message;
    $("form-error").hidden = false;
  }
}

function kindChanged() {
  const [label, hint, example] = KIND_HINTS[$("kind").value] || ["Says", "", ""];
  $("say-label").textContent = label;
  $("say-hint").textContent = hint;
  $("say").placeholder = example;
  $("say").lang = $("kind").value === "phonemes" ? "und-fonipa" : "";
  $("fallback-field").hidden = $("kind").value !== "phonemes";
}

function startEdit(entry) {
  editing = entry;
  clearFormErrors();
  if (![...$("kind").options].some((o) => o.value === entry.kind)) $("kind").append(new Option(entry.kind, entry.kind));
  $("term").value = entry.term;
  $("kind").value = entry.kind;
  kindChanged();
  $("say").value = saysOf(entry);
  $("fallback").value = entry.kind === "phonemes" && typeof entry.say === "string" ? entry.say : "";
  $("case-sensitive").checked = Boolean(entry.case_sensitive);
  $("entry-title").textContent = `Edit “${entry.term}”`;
  $("save").textContent = "Save";
  $("cancel-edit").hidden = false;
  $("entry-form").scrollIntoView({ block: "nearest" });
  $("say").focus();
  $("say").select();
}

function resetForm() {
  editing = null;
  $("entry-form").reset();
  clearFormErrors();
  kindChanged();
  $("entry-title").textContent = "Add an entry";
  $("save").textContent = "Add";
  $("cancel-edit").hidden = true;
}

async function save(event) {
  event.preventDefault();
  clearFormErrors();
  const term = $("term").value.trim();
  if (!term) {
    showFormProblem({ param: "term", message: "Give the term: the word (or words) to say another way." });
    return;
  }
  const kind = $("kind").value;
  const body = { kind, case_sensitive: $("case-sensitive").checked, [SAYS[kind] || "say"]: $("say").value };
  if (kind === "phonemes" && $("fallback").value.trim()) body.say = $("fallback").value;
  const before = editing;
  $("save").disabled = true;
  try {
    const stored = await api(`/lexicon/${segment(term)}`, { method: "PUT", ...jsonBody(body) });
    if (before && before.term !== stored.term) {
      // The term itself was edited: the entry under its old term goes.
      await api(`/lexicon/${segment(before.term)}`, { method: "DELETE" }).catch(() => {});
    }
    announce(before ? `Saved the entry for ${stored.term}.` : `Added an entry for ${stored.term}.`);
    resetForm();
    await loadEntries();
    rowOf(stored.term)?.querySelector("button.edit")?.focus({ preventScroll: true });
  } catch (e) {
    showFormProblem(e);
  } finally {
    $("save").disabled = false;
  }
}

// -- the list -----------------------------------------------------------------------------------------------------
function rowOf(term) {
  return [...$("entries").tBodies[0].rows].find((row) => row.dataset.term === term) || null;
}

function cell(className, label, ...children) {
  const td = el("td", { className }, ...children);
  td.dataset.label = label;
  return td;
}

function rowError(row, message) {
  const p = row.querySelector(".row-error");
  p.textContent = message;
  p.hidden = !message;
}

function render(maxEntries) {
  $("count").textContent = `${entries.length} ${entries.length === 1 ? "entry" : "entries"}` +
    (maxEntries ? ` of at most ${maxEntries}` : "");
  $("empty").hidden = entries.length > 0;
  $("entries").hidden = entries.length === 0;
  $("clear-all").disabled = entries.length === 0;
  const rows = entries.map((entry) => {
    const row = el("tr");
    row.dataset.term = entry.term;
    row.dataset.kind = entry.kind;
    const said = el("span", { className: `says kind-${entry.kind}`, textContent: saysOf(entry) });
    if (entry.kind === "phonemes") said.lang = "und-fonipa";
    const otherwise = entry.kind === "phonemes" && entry.say
      ? el("div", { className: "muted small", textContent: `otherwise “${entry.say}”` }) : null;
    const hearButton = el("button", { type: "button", className: "hear", textContent: "▶ Hear it" });
    hearButton.setAttribute("aria-label", `Hear ${entry.term}`);
    hearButton.onclick = () => hear(entry.term, entry.term);
    const edit = el("button", { type: "button", className: "edit", textContent: "Edit" });
    edit.setAttribute("aria-label", `Edit ${entry.term}`);
    edit.onclick = () => startEdit(entry);
    const remove = el("button", { type: "button", className: "delete danger", textContent: "Delete" });
    remove.setAttribute("aria-label", `Delete ${entry.term}`);
    remove.onclick = () => removeEntry(row, entry);
    const error = el("p", { className: "row-error field-error", hidden: true });
    error.setAttribute("role", "alert");
    row.append(
      cell("term", "Term", el("span", { className: "term-text", textContent: entry.term })),
      cell("kind", "Kind", entry.kind || "respell"),
      cell("said", "Says", said, otherwise),
      cell("case", "Case-sensitive", entry.case_sensitive ? "yes" : "no"),
      cell("entry-actions", "Actions", el("div", { className: "actions" }, hearButton, edit, remove), error));
    return row;
  });
  $("entries").tBodies[0].replaceChildren(...rows);
}

async function loadEntries() {
  let answer;
  try {
    answer = await api("/lexicon");
  } catch (e) {
    if (e.status == null || e.status >= 500) {
      $("connection").textContent = `Could not read the lexicon (${e.message}); trying again…`;
      $("connection").hidden = false;
      setTimeout(() => loadEntries().catch((err) => showError(err.message)), 3000);
      return;
    }
    throw e;
  }
  $("connection").hidden = true;
  entries = answer.entries;
  render(answer.max_entries);
}

async function removeEntry(row, entry) {
  rowError(row, "");
  if (!confirm(`Remove the entry for ${entry.term}? Jobs from now on say it as written.`)) return;
  try {
    await api(`/lexicon/${segment(entry.term)}`, { method: "DELETE" });
  } catch (e) {
    if (e.status !== 404) { rowError(row, `Could not delete: ${e.message}`); return; }
  }
  const next = row.nextElementSibling || row.previousElementSibling;
  if (editing?.term === entry.term) resetForm();
  announce(`Removed the entry for ${entry.term}.`);
  await loadEntries();
  (next && rowOf(next.dataset.term)?.querySelector("button.edit") || $("term")).focus();
}

async function clearAll() {
  if (!confirm(`Remove all ${entries.length} entries? This cannot be undone (export them first to keep a copy).`)) return;
  showError("");
  try {
    const { deleted } = await api("/lexicon", { method: "DELETE" });
    announce(`Removed ${deleted} entries.`);
    resetForm();
    await loadEntries();
    $("term").focus();
  } catch (e) { showError(e.message); }
}

// -- hear it: a real job speaks the text, the lexicon applied by the server as for every job of the key ------------
function modelChoice() {
  return !$("model-field").hidden && $("model").value ? { model: $("model").value } : {};
}

function synthesisError(response, data) {
  const error = data?.error || {};
  return Object.assign(new Error(error.message || `${response.status} ${response.statusText}`),
                       { status: response.status, param: error.param || null, code: error.code || null });
}

// The audio of a synthesis job as a URL to play: ?wait=1 answers the audio itself; a job that takes longer than the
// server waits is followed until its audio is there.
async function synthesize(text) {
  const body = { text, ...modelChoice() };
  if ($("voice").value) body.voice = $("voice").value;
  const response = await fetch("/synthesize?wait=1", {
    method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF }, body: JSON.stringify(body) });
  if (response.status === 401) { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; }
  const type = response.headers.get("Content-Type") || "";
  if (response.ok && !type.includes("json")) return URL.createObjectURL(await response.blob());
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw synthesisError(response, data);
  for (;;) {  // 202: still queued or running
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const job = await api(data.status_url);
    if (job.status === "succeeded") return data.audio_url;
    if (TERMINAL.includes(job.status)) throw new Error(job.error || `The job was ${job.status}.`);
  }
}

function showHearProblem(e) {
  const id = { text: "sample", voice: "voice", model: "model" }[e.param];
  if (id) { markField($(`${id}-error`), $(id), e.message); $(id).focus(); } else { showError(e.message); }
}

async function hear(text, what) {
  const ticket = ++hearing;
  showError("");
  for (const id of ["sample", "voice", "model"]) markField($(`${id}-error`), $(id), "");
  if (!text.trim()) { showHearProblem({ param: "text", message: "Type something to hear." }); return; }
  $("hear").setAttribute("aria-busy", "true");
  $("spoken").textContent = `Making “${what}”…`;
  try {
    const preview = await api("/lexicon/preview", { method: "POST", ...jsonBody({ text }) });
    if (ticket !== hearing) return;
    $("spoken").textContent = `Spoken as “${preview.text}”` + (preview.changed ? "" : " (no entry applies)") + ": making the audio…";
    const url = await synthesize(text);
    if (ticket !== hearing) { if (url.startsWith("blob:")) URL.revokeObjectURL(url); return; }
    if (playerUrl) URL.revokeObjectURL(playerUrl);
    playerUrl = url.startsWith("blob:") ? url : null;
    $("spoken").textContent = `Spoken as “${preview.text}”` + (preview.changed ? "" : " (no entry applies)");
    const player = $("player");
    player.src = url;
    player.dataset.text = text;
    try { await player.play(); } catch { /* the browser wants a press of play first: the player is there */ }
  } catch (e) {
    if (ticket !== hearing) return;
    $("spoken").textContent = "";
    showHearProblem(e);
  } finally {
    if (ticket === hearing) $("hear").removeAttribute("aria-busy");
  }
}

async function loadVoices() {
  const [{ voices }, engine] = await Promise.all([api("/voices"), api("/engine")]);
  $("voice").replaceChildren(new Option(`Default (${engine.name})`, ""),
                             ...voices.map((v) => new Option(v.name + (v.builtin === false ? " (saved)" : ""), v.id)));
  const models = (engine.models || []).filter((m) => m.available);
  $("model").replaceChildren(new Option("Default", ""), ...models.map((m) => new Option(m.title, m.name)));
  $("model-field").hidden = models.length < 2;
  const wanted = new URLSearchParams(location.search).get("voice");  // /pronunciation?voice=<id>
  if (wanted && [...$("voice").options].some((o) => o.value === wanted)) $("voice").value = wanted;
}

// -- import and export --------------------------------------------------------------------------------------------
function importError(message) {
  markField($("import-error"), $("import-file"), message);
}

async function importFile() {
  importError("");
  const file = $("import-file").files[0];
  if (!file) { importError("Choose a JSON file of entries to import."); $("import-file").focus(); return; }
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (e) {
    importError(`${file.name} is not JSON: ${e.message}`);
    return;
  }
  const items = Array.isArray(data) ? data : data?.entries;
  if (!Array.isArray(items)) {
    importError(`${file.name} holds no list of entries: a list, or {"entries": [...]}, as Export makes it.`);
    return;
  }
  const sent = items.map(portable);
  const replace = $("import-replace").checked;
  if (!replace) {  // added to what is there: the file's entries win over the lexicon's own of the same term
    const named = new Set(sent.map((e) => e?.term));
    sent.push(...entries.filter((e) => !named.has(e.term)).map(portable));
  }
  $("import").disabled = true;
  try {
    const { entries: stored } = await api("/lexicon", { method: "PUT", ...jsonBody({ entries: sent }) });
    announce(`Imported ${items.length} entries from ${file.name}; the lexicon has ${stored.length}.`);
    $("import-file").value = "";
    await loadEntries();
  } catch (e) {
    const match = /^entries\[(\d+)\]/.exec(e.param || "");
    const index = match ? Number(match[1]) : -1;
    const term = index >= 0 && typeof sent[index]?.term === "string" ? ` (“${sent[index].term}”)` : "";
    const where = index < 0 ? "" : index < items.length ? `Entry ${index + 1} of the file${term}: `
      : `An entry already in the lexicon${term}: `;
    importError(where + e.message);
  } finally {
    $("import").disabled = false;
  }
}

async function exportFile() {
  showError("");
  try {
    const answer = await api("/lexicon");
    const blob = new Blob([JSON.stringify({ entries: answer.entries.map(portable) }, null, 2) + "\n"],
                          { type: "application/json" });
    const link = el("a", { href: URL.createObjectURL(blob), download: "lexicon.json", hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    announce(`Exported ${answer.entries.length} entries as lexicon.json.`);
  } catch (e) { showError(e.message); }
}

$("entry-form").addEventListener("submit", save);
$("entry-form").addEventListener("keydown", (e) => { if (e.key === "Escape" && editing) { resetForm(); $("term").focus(); } });
$("kind").addEventListener("change", kindChanged);
$("cancel-edit").onclick = () => { const term = editing?.term; resetForm(); (term && rowOf(term)?.querySelector("button.edit") || $("term")).focus(); };
$("hear-text").onclick = () => hear($("sample").value, "your text");
$("import").onclick = importFile;
$("export").onclick = exportFile;
$("clear-all").onclick = clearAll;
kindChanged();
loadVoices().catch((e) => showHearProblem({ param: "voice", message: `Could not list the voices: ${e.message}` }));
loadEntries().catch((e) => showError(e.message));
