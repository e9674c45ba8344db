// Helpers shared by the dashboard's pages.
"use strict";
const $ = (id) => document.getElementById(id);

// Requests that change something carry the session's CSRF token (the page has it in a meta tag).
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";

async function api(path, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  if (!["GET", "HEAD"].includes(method)) options = { ...options, headers: { ...(options.headers || {}), "X-CSRF-Token": CSRF } };
  const response = await fetch(path, options);
  if (response.status === 401) { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; }
  const body = response.headers.get("Content-Type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    // param names the field at fault (e.g. "params.length_scale"), so a page can show the message beside it.
    throw Object.assign(new Error(body?.error?.message || `${response.status} ${response.statusText}`),
                        { status: response.status, param: body?.error?.param || null, code: body?.error?.code || null });
  }
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c != null && c !== ""));
  return node;
}

// For screen readers (an aria-live #announce on the page): cleared first, so the same sentence twice is read twice.
function announce(message) {
  $("announce").textContent = "";
  setTimeout(() => { $("announce").textContent = message; }, 50);
}

// A message beside a field (or "" to clear it), and the field marked invalid for screen readers.
function markField(error, field, message) {
  error.textContent = message;
  error.hidden = !message;
  if (!field) return;
  if (message) field.setAttribute("aria-invalid", "true");
  else field.removeAttribute("aria-invalid");
}
