// The studio page: submit image and video jobs, follow them over the event stream (or by polling when the
// stream is down), cancel them, keep the credit balance current and show the results. The forms' costs and
// bodies are in forms.js, the webhook panel in webhooks.js. Strings come from Django's JavaScript catalog
// (gettext, ngettext, interpolate).

import { byId, config, element, errorMessage, request, toast } from "./common.js";
import {
  bindCosts,
  clearFieldErrors,
  idempotencyKey,
  imagePayload,
  retryPayload,
  showCosts,
  showFieldErrors,
  submitAnswered,
  videoPayload,
} from "./forms.js";
import { bindWebhooks } from "./webhooks.js";

const POLL_INTERVAL_MS = 3000;
const STREAM_RETRY_MS = 5000;
const JOBS_SHOWN = 20;
const GALLERY_SHOWN = 24;
const PENDING = new Set(["queued", "processing"]);
const STATUS_RANK = { queued: 0, processing: 1, completed: 2, failed: 2, canceled: 2 };

const jobs = new Map();
// The results on show, by job and index: their links change as they are renewed.
const galleryKeys = new Set();
const connection = { mode: "connecting", pollTimer: null };

// --- Announcements --------------------------------------------------------------------------------

function shortPrompt(prompt) {
  return prompt.length > 60 ? `${prompt.slice(0, 57)}…` : prompt;
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
  } else if (job.status === "canceled") {
    toast(interpolate(gettext("Canceled: %(prompt)s"), { prompt }, true));
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

// When a queued job should start, coarsely: seconds under a minute, minutes above.
function startText(job) {
  if (!job.estimated_start_at) {
    return "";
  }
  const seconds = secondsUntil(job.estimated_start_at);
  if (seconds <= 0) {
    return gettext("starting soon");
  }
  return seconds < 60
    ? interpolate(gettext("starts in about %(seconds)s s"), { seconds }, true)
    : interpolate(gettext("starts in about %(minutes)s min"), { minutes: Math.round(seconds / 60) }, true);
}

function queuedText(job) {
  const place = job.position
    ? interpolate(gettext("In queue, position %(position)s"), { position: job.position }, true)
    : gettext("Waiting to start");
  return [place, startText(job)].filter(Boolean).join(" · ");
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
    return job.status === "queued" ? queuedText(job) : progressText(job);
  }
  if (job.stage === "preparing") {
    return gettext("Fetching the frames…");
  }
  if (job.status === "queued") {
    return queuedText(job);
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
  if (PENDING.has(job.status)) {
    parts.push(element("button", { type: "button", "data-cancel": job.id }, gettext("Cancel")));
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
  // The card is drawn anew: a button that had the focus hands it to its successor.
  const focused = card.contains(document.activeElement) ? document.activeElement.getAttribute("data-cancel") : null;
  card.replaceChildren(...jobContent(job));
  if (focused) {
    card.querySelector("[data-cancel]")?.focus();
  }
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

// Retry countdowns and start estimates tick down between events; only the status line changes.
function tickCountdowns() {
  for (const job of jobs.values()) {
    if (job.status === "queued") {
      const detail = byId(`job-${job.id}`)?.querySelector(".job-detail");
      const text = jobDetail(job);
      if (detail && detail.textContent !== text) {
        detail.textContent = text;
      }
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
    showCosts();
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

// source names what submitted (a form, a job's Try again): its retries after a lost answer reuse its key.
async function submitJob(kind, payload, { form = null, source = kind } = {}) {
  const headers = { "Idempotency-Key": idempotencyKey(source, payload) };
  const url = kind === "video" ? config.urls.videos : config.urls.images;
  let answer;
  try {
    answer = await request(url, { method: "POST", payload, headers });
  } catch {
    toast(gettext("The server could not be reached. Please try again."), "error");
    return;
  }
  // Only a server error leaves it unknown whether the job was made; the key is kept for the same body then.
  if (answer.status < 500) {
    submitAnswered(source);
  }
  if (answer.status === 202) {
    updateJob(answer.body);
    return;
  }
  const error = answer.body.error ?? {};
  const unplaced = error.fields ? showFieldErrors(form, error.fields) : [];
  if (!error.fields || unplaced.length) {
    toast([errorMessage(answer.body), ...unplaced].join(" "), "error");
  }
}

function bindForm(form, kind, payloadOf) {
  const button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    // One submit at a time: a double click or a second Enter while the first is in flight does nothing.
    if (button.disabled) {
      return;
    }
    clearFieldErrors(form);
    button.disabled = true;
    try {
      await submitJob(kind, payloadOf(form), { form, source: form.id });
    } finally {
      button.disabled = false;
    }
  });
}

async function tryAgain(button) {
  const job = jobs.get(button.dataset.retry);
  button.disabled = true;
  await submitJob(job.kind, retryPayload(job), { source: `retry-${job.id}` });
  button.disabled = false;
}

// A video the provider is already making costs the service whether or not it is kept: it is refunded by half.
function confirmCancel(job) {
  if (job.kind !== "video" || job.status !== "processing") {
    return true;
  }
  const question = gettext("This video is already being made: canceling it now refunds half its credits. Cancel it?");
  return window.confirm(question);
}

async function cancelJob(button) {
  const job = jobs.get(button.dataset.cancel);
  if (!confirmCancel(job)) {
    return;
  }
  button.disabled = true;
  let answer;
  try {
    answer = await request(`${config.urls.jobs}${job.id}/cancel/`, { method: "POST" });
  } catch {
    toast(gettext("The server could not be reached. Please try again."), "error");
    button.disabled = false;
    return;
  }
  if (answer.status === 200) {
    updateJob(answer.body);
  } else {
    // 409: it finished meanwhile; its card catches up with what it became.
    toast(errorMessage(answer.body), "error");
    await refreshJob(job).catch(() => {});
    button.disabled = false;
  }
  // The refund comes as a credits event too; reading it here also covers a page that is polling.
  refreshBalance().catch(() => {});
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
  bindForm(byId("image-form"), "image", imagePayload);
  bindForm(byId("video-form"), "video", videoPayload);
  bindCosts();
  bindWebhooks();
  byId("jobs").addEventListener("click", (event) => {
    const retry = event.target.closest("[data-retry]");
    const cancel = event.target.closest("[data-cancel]");
    if (retry) {
      tryAgain(retry);
    } else if (cancel) {
      cancelJob(cancel);
    }
  });
  openStream();
  loadGallery().then(loadJobs);
  setInterval(tickCountdowns, 1000);
}

start();
