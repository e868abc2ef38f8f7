// The studio page: submit image and video jobs, follow them over the event stream (or by polling when the
// stream is down), keep the credit balance current and show the results. Strings come from Django's
// JavaScript catalog (gettext, ngettext, interpolate).

const config = JSON.parse(document.getElementById("studio-config").textContent);
const csrfToken = document.querySelector("meta[name=csrf-token]").content;

const POLL_INTERVAL_MS = 3000;
const STREAM_RETRY_MS = 5000;
const TOAST_MS = 6000;
const TOASTS_SHOWN = 4;
const JOBS_SHOWN = 20;
const GALLERY_SHOWN = 24;
const PENDING = new Set(["queued", "processing"]);
const STATUS_RANK = { queued: 0, processing: 1, completed: 2, failed: 2, canceled: 2 };

const jobs = new Map();
// The results on show, by job and index: their links change as they are renewed.
const galleryKeys = new Set();
const connection = { mode: "connecting", pollTimer: null };

const byId = (id) => document.getElementById(id);

// --- Talking to the API -----------------------------------------------------------------------------

async function request(url, { method = "GET", payload } = {}) {
  const headers = { Accept: "application/json" };
  if (payload !== undefined) {
    headers["Content-Type"] = "application/json";
    headers["X-CSRFToken"] = csrfToken;
  }
  const body = payload === undefined ? undefined : JSON.stringify(payload);
  const response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign(`${config.urls.login}?next=${encodeURIComponent(window.location.pathname)}`);
  }
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

// --- Building elements ----------------------------------------------------------------------------

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function shortPrompt(prompt) {
  return prompt.length > 60 ? `${prompt.slice(0, 57)}…` : prompt;
}

// --- Toasts ---------------------------------------------------------------------------------------

function toast(message, tone = "info") {
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

function announce(job) {
  const prompt = shortPrompt(job.prompt);
  if (job.status === "processing") {
    toast(interpolate(gettext("Started: %(prompt)s"), { prompt }, true));
  } else if (job.status === "completed") {
    toast(interpolate(gettext("Ready: %(prompt)s"), { prompt }, true), "success");
  } else if (job.status === "failed") {
    const text = gettext("Failed: %(prompt)s. %(reason)s");
    toast(interpolate(text, { prompt, reason: failureReason(job) }, true), "error");
  }
}

// --- Jobs -----------------------------------------------------------------------------------------

function statusLabel(status) {
  const labels = {
    queued: gettext("Queued"),
    processing: gettext("Processing"),
    completed: gettext("Completed"),
    failed: gettext("Failed"),
    canceled: gettext("Canceled"),
  };
  return labels[status] ?? status;
}

function failureReason(job) {
  return job.error?.message || gettext("The job failed.");
}

function progressText(job) {
  const text = ngettext("%(done)s of %(total)s image", "%(done)s of %(total)s images", job.quantity);
  return interpolate(text, { done: job.result_count, total: job.quantity }, true);
}

function secondsUntil(moment) {
  return moment ? Math.ceil((Date.parse(moment) - Date.now()) / 1000) : 0;
}

function jobDetail(job) {
  if (job.status === "failed") {
    return failureReason(job);
  }
  if (job.status === "canceled") {
    return gettext("Canceled; undelivered results were refunded.");
  }
  const wait = secondsUntil(job.next_run_at);
  if (job.status === "queued" && job.retries > 0 && wait > 0) {
    const text = gettext("Retrying in %(seconds)s s (retry %(retries)s)");
    return interpolate(text, { seconds: wait, retries: job.retries }, true);
  }
  if (job.kind === "image") {
    return job.status === "queued" ? gettext("Waiting to start") : progressText(job);
  }
  if (job.stage === "preparing") {
    return gettext("Fetching the frames…");
  }
  if (job.status === "queued") {
    return job.position
      ? interpolate(gettext("In queue, position %(position)s"), { position: job.position }, true)
      : gettext("Waiting to start");
  }
  if (job.status !== "processing") {
    return gettext("Video ready");
  }
  const stages = {
    starting: gettext("Starting at the provider…"),
    downloading: gettext("Storing the video…"),
  };
  return stages[job.stage] ?? gettext("Generating the video…");
}

function jobContent(job) {
  const kind = job.kind === "video"
    ? gettext("Video")
    : interpolate(ngettext("%(count)s image", "%(count)s images", job.quantity), { count: job.quantity }, true);
  const parts = [
    element(
      "div",
      { class: "job-head" },
      element("span", { class: "job-kind" }, kind),
      element("span", { class: "badge", "data-status": job.status }, statusLabel(job.status)),
    ),
    element("p", { class: "job-prompt", title: job.prompt }, job.prompt),
    element("p", { class: "job-detail" }, jobDetail(job)),
  ];
  if (job.kind === "image" && job.status !== "failed") {
    parts.push(element("progress", { max: job.quantity, value: job.result_count, "aria-label": progressText(job) }));
  }
  if (job.status === "failed") {
    parts.push(element("button", { type: "button", "data-retry": job.id }, gettext("Try again")));
  }
  return parts;
}

function renderJob(job) {
  let card = byId(`job-${job.id}`);
  if (!card) {
    card = element("li", { id: `job-${job.id}`, class: "job", "data-created": Date.parse(job.created_at) });
    const list = byId("jobs");
    const older = [...list.children].find((other) => Number(other.dataset.created) < Number(card.dataset.created));
    list.insertBefore(card, older ?? null);
  }
  card.dataset.status = job.status;
  card.replaceChildren(...jobContent(job));
}

// A poll answer may arrive after a newer event: retries, status and progress only ever move forward.
function isNewer(next, current) {
  const order = (job) => [job.retries, STATUS_RANK[job.status], job.result_count];
  const [a, b] = [order(next), order(current)];
  const differs = a.findIndex((value, index) => value !== b[index]);
  return differs === -1 || a[differs] > b[differs];
}

// live: the change happened while the page watched, so it is announced and its results join the gallery.
function updateJob(job, { live = true } = {}) {
  const previous = jobs.get(job.id);
  if (previous && !isNewer(job, previous)) {
    return;
  }
  jobs.set(job.id, job);
  renderJob(job);
  if (!live) {
    return;
  }
  // A job first heard of through the stream was created after the page loaded, so it started out queued.
  if ((previous?.status ?? "queued") !== job.status) {
    announce(job);
  }
  addResults(job);
}

function tickCountdowns() {
  for (const job of jobs.values()) {
    if (job.status === "queued" && job.next_run_at) {
      renderJob(job);
    }
  }
}

// --- Gallery --------------------------------------------------------------------------------------

function galleryItem({ key, url, isVideo, prompt }) {
  const href = new URL(url, window.location.href).href;
  galleryKeys.add(key);
  const media = isVideo
    ? element("video", { src: href, controls: "", preload: "metadata", "aria-label": prompt })
    : element(
      "a",
      { href, target: "_blank", rel: "noopener" },
      element("img", { src: href, alt: prompt, loading: "lazy" }),
    );
  return element("li", { class: "result" }, element("figure", {}, media, element("figcaption", {}, prompt)));
}

function addResults(job) {
  const isVideo = job.kind === "video";
  const fresh = job.result_urls
    .map((url, index) => ({ key: `${job.id}:${index}`, url }))
    .filter(({ key }) => !galleryKeys.has(key));
  byId("gallery").prepend(...fresh.map(({ key, url }) => galleryItem({ key, url, isVideo, prompt: job.prompt })));
}

// --- Credits --------------------------------------------------------------------------------------

function setBalance(balance) {
  const node = byId("balance");
  if (node.textContent !== String(balance)) {
    node.textContent = balance;
    node.animate([{ backgroundColor: "#ffe58a" }, { backgroundColor: "transparent" }], 1200);
  }
}

// --- Live updates: the event stream, with polling while it is down ---------------------------------

async function refreshJob(job) {
  const { status, body } = await request(`${config.urls.jobs}${job.id}/`);
  if (status === 200) {
    updateJob(body);
  }
}

async function refreshBalance() {
  const { status, body } = await request(config.urls.credits);
  if (status === 200) {
    setBalance(body.balance);
  }
}

async function pollOnce() {
  const pending = [...jobs.values()].filter((job) => PENDING.has(job.status));
  // A request that fails is simply tried again at the next poll.
  await Promise.allSettled([...pending.map(refreshJob), refreshBalance()]);
}

function setMode(mode) {
  if (connection.mode === mode) {
    return;
  }
  connection.mode = mode;
  const indicator = byId("connection");
  indicator.dataset.mode = mode;
  indicator.textContent = mode === "live" ? gettext("Live") : gettext("Polling");
  indicator.title = mode === "live"
    ? gettext("Updates arrive as they happen.")
    : gettext("The live connection is down: checking for updates every 3 seconds.");
  if (mode === "polling" && connection.pollTimer === null) {
    connection.pollTimer = setInterval(pollOnce, POLL_INTERVAL_MS);
  } else if (mode === "live") {
    clearInterval(connection.pollTimer);
    connection.pollTimer = null;
  }
}

function openStream() {
  const source = new EventSource(config.urls.events);
  source.addEventListener("ready", () => {
    const wasLive = connection.mode === "live";
    setMode("live");
    // A new stream starts from now: catch up on whatever changed while it was down.
    if (!wasLive) {
      pollOnce();
    }
  });
  source.addEventListener("job", (event) => updateJob(JSON.parse(event.data)));
  source.addEventListener("credits", (event) => setBalance(JSON.parse(event.data).balance));
  source.addEventListener("error", () => {
    setMode("polling");
    // While CONNECTING the browser retries (resuming with Last-Event-ID); CLOSED means it gave up for good.
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(openStream, STREAM_RETRY_MS);
    }
  });
}

// --- Forms ----------------------------------------------------------------------------------------

function imagePayload(form) {
  const data = new FormData(form);
  return {
    prompt: data.get("prompt").trim(),
    aspect_ratio: data.get("aspect_ratio"),
    quantity: Number(data.get("quantity")),
    image_urls: data.get("image_urls").split(/\s+/).filter(Boolean),
  };
}

function videoPayload(form) {
  const data = new FormData(form);
  const payload = {
    prompt: data.get("prompt").trim(),
    aspect_ratio: data.get("aspect_ratio"),
    duration: Number(data.get("duration")),
  };
  for (const name of ["start_frame", "end_frame"]) {
    const value = data.get(name).trim();
    if (value) {
      payload[name] = value;
    }
  }
  return payload;
}

function retryPayload(job) {
  const { aspect_ratio, image_urls, duration, start_frame, end_frame, negative_prompt } = job.params;
  const common = { prompt: job.prompt, aspect_ratio, project_id: job.project_id };
  return job.kind === "video"
    ? { ...common, duration, start_frame, end_frame, negative_prompt }
    : { ...common, quantity: job.quantity, image_urls };
}

function messagesOf(detail) {
  return typeof detail === "string" ? [detail] : Object.values(detail).flatMap(messagesOf);
}

function clearFieldErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) {
    slot.hidden = true;
    slot.textContent = "";
  }
  for (const field of form.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
  }
}

// Shows each field's errors next to it; returns the messages that have no field in the form.
function showFieldErrors(form, fields) {
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

async function submitJob(kind, payload, form = null) {
  let answer;
  try {
    answer = await request(kind === "video" ? config.urls.videos : config.urls.images, { method: "POST", payload });
  } catch {
    toast(gettext("The server could not be reached. Please try again."), "error");
    return;
  }
  if (answer.status === 202) {
    updateJob(answer.body);
    return;
  }
  const error = answer.body.error ?? {};
  const unplaced = error.fields ? showFieldErrors(form, error.fields) : [];
  if (!error.fields || unplaced.length) {
    toast([error.message || gettext("Something went wrong."), ...unplaced].join(" "), "error");
  }
}

function bindForm(form, kind, payloadOf) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await submitJob(kind, payloadOf(form), form);
    } finally {
      button.disabled = false;
    }
  });
}

async function tryAgain(button) {
  const job = jobs.get(button.dataset.retry);
  button.disabled = true;
  await submitJob(job.kind, retryPayload(job));
  button.disabled = false;
}

function showCost(form, units) {
  const note = form.querySelector(".cost");
  const credits = units * Number(note.dataset.costPerUnit);
  const text = ngettext("Costs %(credits)s credit", "Costs %(credits)s credits", credits);
  note.textContent = interpolate(text, { credits }, true);
}

// --- Start ----------------------------------------------------------------------------------------

async function loadJobs() {
  const { status, body } = await request(`${config.urls.jobs}?limit=${JOBS_SHOWN}`);
  if (status === 200) {
    body.results.forEach((job) => updateJob(job, { live: false }));
  }
}

async function loadGallery() {
  const { status, body } = await request(`${config.urls.generations}?limit=${GALLERY_SHOWN}`);
  if (status === 200) {
    const fresh = body.results.filter(
      (generation) => generation.url && !galleryKeys.has(`${generation.job_id}:${generation.index}`),
    );
    const items = fresh.map(({ job_id, index, url, mime_type, prompt }) =>
      galleryItem({ key: `${job_id}:${index}`, url, isVideo: mime_type.startsWith("video/"), prompt }),
    );
    byId("gallery").append(...items);
  }
}

function start() {
  const imageForm = byId("image-form");
  const videoForm = byId("video-form");
  bindForm(imageForm, "image", imagePayload);
  bindForm(videoForm, "video", videoPayload);
  const quantity = imageForm.elements.quantity;
  quantity.addEventListener("input", () => showCost(imageForm, Number(quantity.value) || 0));
  showCost(imageForm, Number(quantity.value));
  // Videos are billed per second.
  const duration = videoForm.elements.duration;
  duration.addEventListener("change", () => showCost(videoForm, Number(duration.value)));
  showCost(videoForm, Number(duration.value));
  byId("jobs").addEventListener("click", (event) => {
    const button = event.target.closest("[data-retry]");
    if (button) {
      tryAgain(button);
    }
  });
  openStream();
  loadGallery().then(loadJobs);
  setInterval(tickCountdowns, 1000);
}

start();
