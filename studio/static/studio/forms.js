// The image and video forms: the models and resolutions the price catalog offers, the live cost of what the form
// asks for against the balance, the bodies they send, their field errors and the idempotency key of each submit.

import { byId, config } from "./common.js";

const catalog = config.prices;
// Resolutions the provider makes in 16:9 only (the API refuses them with any other aspect ratio).
const WIDE_ONLY = new Set(["1080p"]);
const WIDE = "16:9";

// --- Models, resolutions and what they cost -------------------------------------------------------

function videoModel(name) {
  return catalog.video.models.find((entry) => entry.model === name)
    ?? catalog.video.models.find((entry) => entry.model === catalog.video.default_model);
}

function imageCost(form) {
  const name = form.elements.model?.value ?? catalog.image.default_model;
  const model = catalog.image.models.find((entry) => entry.model === name) ?? catalog.image.models[0];
  return model.credits_per_image * (Number(form.elements.quantity.value) || 0);
}

function videoCost(form) {
  const model = videoModel(form.elements.model.value);
  const resolution = model.resolutions.find((entry) => entry.resolution === form.elements.resolution.value)
    ?? model.resolutions.find((entry) => entry.resolution === model.default_resolution);
  // Videos are billed per second.
  return resolution.credits_per_second * Number(form.elements.duration.value);
}

// Offers the chosen model's resolutions, keeping the one chosen when the model offers it; a 16:9-only resolution
// is disabled for other aspect ratios.
function syncResolutions(form) {
  const model = videoModel(form.elements.model.value);
  const select = form.elements.resolution;
  const wide = form.elements.aspect_ratio.value === WIDE;
  const allowed = (resolution) => wide || !WIDE_ONLY.has(resolution);
  const offered = model.resolutions.map((entry) => entry.resolution);
  const wanted = [select.value, model.default_resolution, ...offered].find(
    (resolution) => offered.includes(resolution) && allowed(resolution),
  );
  select.replaceChildren(
    ...offered.map((resolution) => {
      const option = new Option(resolution, resolution, false, resolution === wanted);
      option.disabled = !allowed(resolution);
      return option;
    }),
  );
}

function showCost(form) {
  const note = form.querySelector(".cost");
  const credits = form.id === "video-form" ? videoCost(form) : imageCost(form);
  const balance = Number(byId("balance").textContent);
  const covered = credits <= balance;
  const text = covered
    ? ngettext("Costs %(credits)s credit", "Costs %(credits)s credits", credits)
    : ngettext(
      "Costs %(credits)s credit, more than your balance of %(balance)s",
      "Costs %(credits)s credits, more than your balance of %(balance)s",
      credits,
    );
  note.textContent = interpolate(text, { credits, balance }, true);
  note.dataset.covered = String(covered);
}

export function showCosts() {
  showCost(byId("image-form"));
  showCost(byId("video-form"));
}

export function bindCosts() {
  const imageForm = byId("image-form");
  const videoForm = byId("video-form");
  imageForm.addEventListener("input", () => showCost(imageForm));
  videoForm.addEventListener("change", (event) => {
    if (["model", "aspect_ratio"].includes(event.target.name)) {
      syncResolutions(videoForm);
    }
    showCost(videoForm);
  });
  syncResolutions(videoForm);
  showCosts();
}

// --- Request bodies -------------------------------------------------------------------------------

export function imagePayload(form) {
  const data = new FormData(form);
  const payload = {
    prompt: data.get("prompt").trim(),
    aspect_ratio: data.get("aspect_ratio"),
    quantity: Number(data.get("quantity")),
    image_urls: data.get("image_urls").split(/\s+/).filter(Boolean),
  };
  // The model is chosen only when the catalog offers several.
  if (data.has("model")) {
    payload.model = data.get("model");
  }
  return payload;
}

export function videoPayload(form) {
  const data = new FormData(form);
  const payload = {
    prompt: data.get("prompt").trim(),
    aspect_ratio: data.get("aspect_ratio"),
    duration: Number(data.get("duration")),
    model: data.get("model"),
    resolution: data.get("resolution"),
  };
  for (const name of ["start_frame", "end_frame"]) {
    const value = data.get(name).trim();
    if (value) {
      payload[name] = value;
    }
  }
  return payload;
}

export function retryPayload(job) {
  const { aspect_ratio, image_urls, duration, start_frame, end_frame, negative_prompt, model, resolution } = job.params;
  const common = { prompt: job.prompt, aspect_ratio, project_id: job.project_id, model };
  return job.kind === "video"
    ? { ...common, duration, start_frame, end_frame, negative_prompt, resolution }
    : { ...common, quantity: job.quantity, image_urls };
}

// --- Idempotency keys -----------------------------------------------------------------------------

// The key of each submit still waiting for an answer, with the body it was sent with, by what submitted it.
const attempts = new Map();

function newKey() {
  if (crypto.randomUUID) {
    return crypto.randomUUID();
  }
  // randomUUID exists in secure contexts only (https or localhost); getRandomValues everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

// A new key for each submit; the same one again when the same body is sent again after the first got no answer,
// so that a job the server made before the network failed is returned, not charged twice.
export function idempotencyKey(source, payload) {
  const body = JSON.stringify(payload);
  const attempt = attempts.get(source);
  if (attempt?.body === body) {
    return attempt.key;
  }
  const key = newKey();
  attempts.set(source, { key, body });
  return key;
}

// The server answered: whatever it decided, the next submit is a new request.
export function submitAnswered(source) {
  attempts.delete(source);
}

// --- Field errors ---------------------------------------------------------------------------------

function messagesOf(detail) {
  return typeof detail === "string" ? [detail] : Object.values(detail).flatMap(messagesOf);
}

export function clearFieldErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) {
    slot.hidden = true;
    slot.textContent = "";
  }
  for (const field of form.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
  }
}

// Shows each field's errors next to it; returns the messages that have no field in the form.
export function showFieldErrors(form, fields) {
  const unplaced = [];
  for (const [name, detail] of Object.entries(fields)) {
    const slot = form?.querySelector(`[data-error-for="${name}"]`);
    if (slot) {
      slot.textContent = messagesOf(detail).join(" ");
      slot.hidden = false;
      form.elements[name].setAttribute("aria-invalid", "true");
    } else {
      unplaced.push(...messagesOf(detail));
    }
  }
  return unplaced;
}
