// The API page: fetches /openapi.json and shows every operation grouped by tag. Plain DOM building (no innerHTML,
// no libraries), so it works offline and nothing in the document can inject markup.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];
const MAX_DEPTH = 4; // nested fields shown in tables; deeper ones are named by their schema only

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// -- a little Markdown: paragraphs, "- " lists, `code` and **bold**, enough for the document's descriptions -------
function inline(text) {
  const out = [];
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    out.push(match[1] !== undefined ? el("code", { text: match[1] }) : el("strong", { text: match[2] }));
    last = match.index + match[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function markdown(text) {
  const box = el("div");
  for (const block of (text || "").split(/\n\s*\n/)) {
    const lines = block.split("\n").filter((l) => l.trim());
    if (!lines.length) continue;
    if (lines.every((l) => l.startsWith("- "))) {
      box.append(el("ul", {}, lines.map((l) => el("li", {}, inline(l.slice(2))))));
    } else if (lines[0].startsWith("- ")) {
      box.append(el("ul", {}, lines.map((l) => el("li", {}, inline(l.replace(/^- /, ""))))));
    } else {
      box.append(el("p", {}, inline(lines.join(" "))));
    }
  }
  return box;
}

// -- schemas ------------------------------------------------------------------------------------------------------
let SPEC = {};

function resolve(node) {
  // {"$ref": "#/components/schemas/Name"} -> [the schema, "Name"]; anything else as it is.
  let name = null;
  let seen = 0;
  while (node && node.$ref && seen++ < 20) {
    name = node.$ref.split("/").pop();
    node = node.$ref.slice(2).split("/").reduce((at, key) => (at ? at[key] : undefined), SPEC);
  }
  return [node || {}, name];
}

function typeName(raw) {
  const [schema, name] = resolve(raw);
  const variants = schema.oneOf || schema.anyOf;
  let type;
  if (variants) type = variants.map(typeName).join(" or ");
  else if (schema.type === "array") type = `array of ${typeName(schema.items || {})}`;
  else if (schema.format === "binary") type = "file";
  else if (schema.type === "object" && name) type = name;
  else type = schema.type || name || "any";
  if (schema.nullable) type += " or null";
  return type;
}

function constraints(raw) {
  const [schema] = resolve(raw);
  const parts = [];
  const values = (list) => list.filter((v) => v !== null).map((v) => JSON.stringify(v)).join(", ");
  if (schema.enum) parts.push(`one of ${values(schema.enum)}`);
  const { minimum, maximum } = schema;
  if (minimum !== undefined && maximum !== undefined) parts.push(`${minimum} to ${maximum}`);
  else if (minimum !== undefined) parts.push(`at least ${minimum}`);
  else if (maximum !== undefined) parts.push(`at most ${maximum}`);
  const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  if (schema.minLength !== undefined) parts.push(`at least ${count(schema.minLength, "character")}`);
  if (schema.maxLength !== undefined) parts.push(`at most ${count(schema.maxLength, "character")}`);
  if (schema.minItems !== undefined) parts.push(`at least ${count(schema.minItems, "item")}`);
  if (schema.maxItems !== undefined) parts.push(`at most ${count(schema.maxItems, "item")}`);
  if (schema.pattern) parts.push(`matches ${schema.pattern}`);
  if (schema.default !== undefined) parts.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.additionalProperties === false && schema.properties) parts.push("no other fields");
  return parts.join("; ");
}

// The rows of a field table: every property, with nested objects' properties as "parent.child" (arrays: "[]").
function fieldRows(raw, prefix = "", depth = 0, trail = []) {
  const [schema, name] = resolve(raw);
  if (name && trail.includes(name)) return [];
  const path = name ? [...trail, name] : trail;
  const objectish = schema.type === "object" && schema.properties;
  if (!objectish) {
    if (schema.type === "array" && depth < MAX_DEPTH) return fieldRows(schema.items || {}, prefix + "[]", depth, path);
    return [];
  }
  const required = new Set(schema.required || []);
  const rows = [];
  for (const [field, sub] of Object.entries(schema.properties)) {
    const [resolved] = resolve(sub);
    const full = prefix ? `${prefix}.${field}` : field;
    rows.push({ name: full, type: typeName(sub), required: required.has(field),
                description: resolved.description || "", constraints: constraints(sub) });
    if (depth + 1 < MAX_DEPTH) rows.push(...fieldRows(sub, full, depth + 1, path));
  }
  if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
    rows.push({ name: `${prefix ? prefix + "." : ""}<name>`, type: typeName(schema.additionalProperties),
                required: false, description: "any key", constraints: constraints(schema.additionalProperties) });
  }
  return rows;
}

const headRow = (names) => el("thead", {}, el("tr", {}, names.map((h) => el("th", { scope: "col", text: h }))));
const requiredMark = (required) => (required ? el("span", { class: "required", title: "required" }, " *") : null);

function fieldTable(raw, caption) {
  const rows = fieldRows(raw);
  const [schema] = resolve(raw);
  if (!rows.length) {
    const info = [typeName(raw), constraints(raw), schema.description].filter(Boolean).join(" — ");
    return el("p", {}, inline(info));
  }
  return el("table", {},
    caption ? el("caption", { class: "muted", style: "text-align:left" }, caption) : null,
    headRow(["Field", "Type", "Description"]),
    el("tbody", {}, rows.map((r) => el("tr", {},
      el("td", { class: "name" }, r.name, requiredMark(r.required)),
      el("td", { class: "type", text: r.type }),
      el("td", {}, inline([r.description, r.constraints].filter(Boolean).join(" — ")))))));
}

// -- operations ---------------------------------------------------------------------------------------------------
function parametersBlock(params) {
  if (!params.length) return null;
  return el("div", {}, el("h3", { text: "Parameters" }), el("table", {},
    headRow(["Name", "In", "Type", "Description"]),
    el("tbody", {}, params.map((raw) => {
      const [p] = resolve(raw);
      const note = [p.description, constraints(p.schema || {})].filter(Boolean).join(" — ");
      return el("tr", {},
        el("td", { class: "name" }, p.name, requiredMark(p.required)),
        el("td", { text: p.in }), el("td", { class: "type", text: typeName(p.schema || {}) }),
        el("td", {}, inline(note)));
    }))));
}

function bodyBlock(raw) {
  if (!raw) return null;
  const [body] = resolve(raw);
  const box = el("div", {}, el("h3", { text: `Request body${body.required ? " (required)" : ""}` }));
  if (body.description) box.append(markdown(body.description));
  for (const [type, media] of Object.entries(body.content || {})) {
    box.append(el("h4", {}, el("code", { text: type })));
    box.append(fieldTable(media.schema || {}));
    const [schema] = resolve(media.schema || {});
    if (schema.description && fieldRows(media.schema || {}).length) {
      box.append(el("p", { class: "muted" }, inline(schema.description)));
    }
    const example = media.example !== undefined ? media.example : schema.example;
    if (example !== undefined) box.append(el("pre", {}, el("code", { text: JSON.stringify(example, null, 2) })));
  }
  return box;
}

function responsesBlock(responses) {
  const box = el("div", {}, el("h3", { text: "Responses" }));
  for (const [status, raw] of Object.entries(responses || {})) {
    const [response] = resolve(raw);
    const row = el("div", { class: "response" },
      el("h4", {}, el("span", { class: `status s${status[0]}`, text: status }), " ",
        inline(response.description || "")));
    const headers = Object.entries(response.headers || {});
    if (headers.length) {
      row.append(el("p", { class: "muted" }, "Headers: ", headers.map(([name, h], i) =>
        [i ? ", " : "", el("code", { text: name }), h.description ? [" (", inline(h.description), ")"] : ""])));
    }
    const files = [];
    for (const [type, media] of Object.entries(response.content || {})) {
      const [schema] = resolve(media.schema || {});
      if (schema.format === "binary") { files.push(type); continue; } // listed together below
      // One of several shapes (anyOf/oneOf): each gets its own table.
      for (const variant of schema.anyOf || schema.oneOf || [media.schema || {}]) {
        const [resolved, name] = resolve(variant);
        const label = [el("code", { text: type }), name ? ` — ${name}` : ""];
        if (!fieldRows(variant).length) {
          row.append(el("p", {}, label, resolved.type ? ` (${typeName(variant)})` : ""));
        } else {
          // Field tables of big answers are folded: the statuses stay readable at a glance.
          row.append(el("details", {}, el("summary", {}, label, " fields"), fieldTable(variant)));
        }
      }
    }
    if (files.length) {
      row.append(el("p", {}, files.map((type, i) => [i ? ", " : "", el("code", { text: type })]),
        files.length > 1 ? " (the file itself, in one of these types)" : " (the file itself)"));
    }
    box.append(row);
  }
  return box;
}

function operationBlock(method, path, op) {
  const security = Array.isArray(op.security) ? op.security : SPEC.security || [];
  const access = security.length === 0 ? "no key needed"
    : security.some((s) => Object.keys(s).length === 0) ? "key optional" : "API key";
  const id = op.operationId || `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, "-");
  const details = el("details", { class: "op", id, "data-method": method, "data-path": path },
    el("summary", {},
      el("span", { class: `method ${method}`, text: method }),
      el("span", { class: "path", text: path }),
      el("span", { class: "summary", text: op.summary || "" }),
      el("span", { class: "lock", text: access })),
    el("div", { class: "body" },
      op.description ? markdown(op.description) : null,
      parametersBlock(op.parameters || []),
      bodyBlock(op.requestBody),
      responsesBlock(op.responses)));
  details.dataset.search = [method, path, op.summary, op.description, op.operationId].join(" ").toLowerCase();
  return details;
}

function render(spec) {
  SPEC = spec;
  const info = spec.info || {};
  document.title = `${info.title || "API"} · API`;
  document.getElementById("intro").append(
    el("h2", { text: `${info.title || "API"} ${info.version ? "v" + info.version : ""}`.trim() }),
    markdown(info.description || ""));

  const groups = new Map((spec.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["Other"])[0];
      if (!groups.has(tag)) groups.set(tag, { tag: { name: tag }, ops: [] });
      groups.get(tag).ops.push(operationBlock(method, path, item[method]));
    }
  }
  const toc = el("ul");
  const container = document.getElementById("operations");
  for (const { tag, ops } of groups.values()) {
    if (!ops.length) continue;
    const anchor = `tag-${tag.name.replace(/[^A-Za-z0-9]+/g, "-")}`;
    toc.append(el("li", {}, el("a", { href: `#${anchor}`, text: `${tag.name} (${ops.length})` })));
    container.append(el("section", { class: "tag", id: anchor, "aria-labelledby": `${anchor}-h` },
      el("h2", { id: `${anchor}-h`, text: tag.name }),
      tag.description ? el("p", { class: "muted" }, inline(tag.description)) : null,
      ops));
  }
  document.getElementById("toc").append(toc);
  document.getElementById("toolbar").hidden = false;
  updateCount();
  // A link to one operation (#operationId) opens it.
  const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView(); }
}

function updateCount() {
  const all = document.querySelectorAll("details.op");
  const shown = [...all].filter((d) => !d.hidden).length;
  document.getElementById("count").textContent = `${shown} of ${all.length} operations`;
}

function filter(text) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  for (const op of document.querySelectorAll("details.op")) {
    op.hidden = !words.every((w) => op.dataset.search.includes(w));
  }
  for (const section of document.querySelectorAll("section.tag")) {
    section.hidden = !section.querySelector("details.op:not([hidden])");
  }
  updateCount();
}

async function load() {
  const main = document.querySelector("main");
  try {
    const response = await fetch(main.dataset.spec, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    render(await response.json());
  } catch (exc) {
    const box = document.getElementById("error");
    box.textContent = `The API description could not be loaded: ${exc.message}`;
    box.hidden = false;
  } finally {
    document.getElementById("loading").hidden = true;
  }
}

document.getElementById("filter").addEventListener("input", (e) => filter(e.target.value));
document.getElementById("expand").addEventListener("click", () => {
  document.querySelectorAll("details.op:not([hidden])").forEach((d) => { d.open = true; });
});
document.getElementById("collapse").addEventListener("click", () => {
  document.querySelectorAll("details.op").forEach((d) => { d.open = false; });
});
load();
