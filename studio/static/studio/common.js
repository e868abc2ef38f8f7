// What every part of the studio page shares: its configuration, the API client, element building and toasts.
// Strings come from Django's JavaScript catalog (gettext, ngettext, interpolate).

export const config = JSON.parse(document.getElementById("studio-config").textContent);
const csrfToken = document.querySelector("meta[name=csrf-token]").content;

const TOAST_MS = 6000;
const TOASTS_SHOWN = 4;

export const byId = (id) => document.getElementById(id);

// --- Talking to the API -----------------------------------------------------------------------------

export async function request(url, { method = "GET", payload, headers: extra = {} } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (method !== "GET") {
    headers["X-CSRFToken"] = csrfToken;
  }
  if (payload !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  const body = payload === undefined ? undefined : JSON.stringify(payload);
  const response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign(`${config.urls.login}?next=${encodeURIComponent(window.location.pathname)}`);
  }
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

export function errorMessage(body) {
  return body.error?.message || gettext("Something went wrong.");
}

// --- Building elements ----------------------------------------------------------------------------

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// --- Toasts ---------------------------------------------------------------------------------------

export function toast(message, tone = "info") {
  const close = element("button", { type: "button", class: "toast-close", "aria-label": gettext("Dismiss") }, "×");
  const node = element(
    "div",
    { class: `toast toast-${tone}`, role: tone === "error" ? "alert" : "status" },
    element("p", {}, message),
    close,
  );
  close.addEventListener("click", () => node.remove());
  const toasts = byId("toasts");
  toasts.append(node);
  if (toasts.children.length > TOASTS_SHOWN) {
    toasts.firstElementChild.remove();
  }
  setTimeout(() => node.remove(), TOAST_MS);
}
