// The webhook settings panel: the caller's signing secret, hidden until asked for, to copy or rotate. It is read
// the first time the panel opens (the API makes the secret on first use).

import { byId, config, errorMessage, request, toast } from "./common.js";

const panel = byId("webhooks");
const secret = byId("webhook-secret");
const reveal = byId("webhook-reveal");
const copy = byId("webhook-copy");
const rotate = byId("webhook-rotate");
const status = byId("webhook-status");

function setState(state, message = "") {
  panel.dataset.state = state;
  status.textContent = message;
  for (const button of [reveal, copy, rotate]) {
    button.disabled = state !== "ready";
  }
}

function showSecret(value) {
  secret.value = value;
  setState("ready");
}

function unavailable() {
  secret.value = "";
  setState("unavailable", gettext("Webhook settings are unavailable right now. Open this panel again later."));
}

async function load() {
  if (!config.urls.webhookSecret) {
    unavailable();
    return;
  }
  setState("loading", gettext("Loading…"));
  try {
    const { status: code, body } = await request(config.urls.webhookSecret);
    code === 200 && body.secret ? showSecret(body.secret) : unavailable();
  } catch {
    unavailable();
  }
}

function toggleReveal() {
  const hidden = secret.type === "password";
  secret.type = hidden ? "text" : "password";
  reveal.textContent = hidden ? gettext("Hide") : gettext("Show");
}

async function copySecret() {
  try {
    await navigator.clipboard.writeText(secret.value);
    status.textContent = gettext("Secret copied.");
  } catch {
    // No clipboard (an insecure context, or permission refused): show it selected, for the keyboard to copy.
    secret.type = "text";
    reveal.textContent = gettext("Hide");
    secret.select();
    status.textContent = gettext("Could not copy: the secret is selected, copy it with the keyboard.");
  }
}

async function rotateSecret() {
  const question = gettext(
    "Rotate the signing secret? Deliveries will be signed with the new secret, and with the current one too " +
      "for a transition period.",
  );
  if (!window.confirm(question)) {
    return;
  }
  setState("loading", gettext("Rotating…"));
  try {
    const { status: code, body } = await request(config.urls.webhookSecretRotate, { method: "POST" });
    if (code === 200 && body.secret) {
      showSecret(body.secret);
      status.textContent = gettext("Secret rotated: update your receivers to the new one.");
      return;
    }
    toast(errorMessage(body), "error");
  } catch {
    toast(gettext("The server could not be reached. Please try again."), "error");
  }
  setState("ready");
}

export function bindWebhooks() {
  panel.addEventListener("toggle", () => {
    if (panel.open && panel.dataset.state !== "ready") {
      load();
    }
  });
  reveal.addEventListener("click", toggleReveal);
  copy.addEventListener("click", copySecret);
  rotate.addEventListener("click", rotateSecret);
}
