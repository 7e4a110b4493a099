// The upload page (/app): photos are sent one per POST /predict, a few at a time, so that a
// photo the service refuses never hides the others' answers and each one shows its progress.
// No framework and nothing from outside this service; the API key, when the service wants
// one, stays in sessionStorage (this tab, until it is closed).
"use strict";

(() => {
  const KEY_STORAGE = "catsdogs.apiKey";
  const CONCURRENCY = 4; // requests in flight at once
  const BUSY_RETRIES = 8; // 429 and 503 answers, each after its Retry-After
  const NETWORK_RETRIES = 3;
  const REQUEST_TIMEOUT_MS = 120000;
  const ANNOUNCE_EVERY_MS = 4000; // progress for screen readers, not on every photo
  const MiB = 1024 * 1024;

  // Defaults are the service's; /app/config says what this one is set to.
  const config = { max_bytes: 20 * MiB, min_side: 32, max_files: 16, api_keys: false };

  const $ = (id) => document.getElementById(id);
  const els = {
    input: $("files"),
    dropZone: $("drop-zone"),
    limitHint: $("limit-hint"),
    keyForm: $("key-form"),
    keyInput: $("api-key"),
    keyMessage: $("key-message"),
    keyStatus: $("key-status"),
    forgetKey: $("forget-key"),
    progressArea: $("progress-area"),
    progress: $("progress"),
    progressText: $("progress-text"),
    announcer: $("announcer"),
    resultsArea: $("results-area"),
    resultsHeading: $("results-heading"),
    results: $("results"),
    summary: $("summary"),
    copyStatus: $("copy-status"),
    copy: $("copy-csv"),
    download: $("download-csv"),
    clear: $("clear"),
  };

  let items = []; // every photo on the page, in the order it was added
  let queue = []; // photos waiting to be sent
  let run = []; // the photos of the current run (since the page was last idle)
  let active = 0;
  let waitingForKey = false;
  let nextId = 0;
  let adding = false; // while a pick is being listed, progress is shown once at the end
  let announceTimer = null;
  let lastAnnounced = "";
  const baseTitle = document.title;

  // ---- the API key (sessionStorage only; memory if storage is refused) ----
  let memoryKey = "";
  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return memoryKey;
    }
  }
  function storeKey(key) {
    memoryKey = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage is off in this browser: the key lives in this page only
    }
    els.keyStatus.hidden = !key;
  }

  function askForKey(message) {
    waitingForKey = true;
    els.keyMessage.textContent = message;
    els.keyForm.hidden = false;
    els.keyInput.value = "";
    els.keyInput.focus();
  }

  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = els.keyInput.value.trim();
    if (!key) {
      els.keyMessage.textContent = "Enter the API key first.";
      els.keyInput.focus();
      return;
    }
    storeKey(key);
    els.keyInput.value = "";
    els.keyMessage.textContent = "";
    els.keyForm.hidden = true;
    waitingForKey = false;
    const pending = queue.length > 0;
    (pending ? els.resultsHeading : els.input).focus();
    if (pending) announce("Key saved. Checking the photos.");
    pump();
  });

  els.forgetKey.addEventListener("click", () => {
    storeKey("");
    if (config.api_keys) askForKey("The key is forgotten. Enter a key to check more photos.");
    else els.input.focus();
  });

  // ---- adding photos ----
  els.input.addEventListener("change", () => {
    addFiles(els.input.files);
    els.input.value = ""; // the same photos can be picked again
  });

  // Drop anywhere on the page; the zone shows that a drop will be taken.
  let dragDepth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    els.dropZone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) els.dropZone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault(); // else the browser opens the file instead
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    els.dropZone.classList.remove("dragging");
    addFiles(event.dataTransfer.files);
  });

  function addFiles(fileList) {
    const files = [...(fileList || [])];
    if (files.length === 0) return;
    if (run.length > 0 && run.every(finished)) run = []; // the last run is over: a new one
    const fragment = document.createDocumentFragment();
    adding = true;
    for (const file of files) {
      const item = { id: nextId++, file, name: file.name || "photo", state: "waiting" };
      item.li = resultRow(item);
      fragment.append(item.li);
      items.push(item);
      run.push(item);
      if (file.size > config.max_bytes) {
        finish(item, "error", { reason: "too_large", message: tooLarge(file.size) });
      } else {
        queue.push(item);
        show(item, "waiting", config.api_keys && !storedKey()
          ? "Waiting for the API key" : "Waiting…");
      }
    }
    adding = false;
    els.results.append(fragment);
    els.resultsArea.hidden = false;
    els.summary.textContent = "";
    announce(`Checking ${files.length} ${files.length === 1 ? "photo" : "photos"}.`);
    startAnnouncing();
    updateProgress();
    if (queue.length && config.api_keys && !storedKey()) {
      askForKey("This service needs an API key before it checks photos.");
      return;
    }
    pump();
  }

  // ---- sending: CONCURRENCY at a time, one photo per request ----
  function pump() {
    while (!waitingForKey && active < CONCURRENCY && queue.length > 0) {
      const item = queue.shift();
      active += 1;
      classify(item)
        .catch((error) => finish(item, "error", { reason: "page", message: String(error) }))
        .finally(() => {
          active -= 1;
          pump();
        });
    }
  }

  async function classify(item) {
    let busy = 0;
    let network = 0;
    for (;;) {
      if (item.cancelled) return;
      if (waitingForKey) {
        queue.unshift(item);
        show(item, "waiting", "Waiting for the API key");
        return;
      }
      show(item, "sending", "Checking…");
      const key = storedKey();
      let response;
      try {
        response = await send(item, key);
      } catch (error) {
        if (item.cancelled) return;
        if (network < NETWORK_RETRIES) {
          network += 1;
          show(item, "retrying", "Could not reach the service, trying again…");
          await sleep(1500 * network);
          continue;
        }
        const timedOut = error && error.name === "AbortError";
        finish(item, "error", {
          reason: timedOut ? "timeout" : "network",
          message: timedOut ? "The service did not answer in time" : "Could not reach the service",
          retry: true,
        });
        return;
      }
      if (item.cancelled) return;
      if (response.ok) {
        finish(item, "done", { answer: await response.json() });
        return;
      }
      const refusal = await readRefusal(response);
      if (response.status === 401) {
        queue.unshift(item);
        show(item, "waiting", "Waiting for the API key");
        if (!waitingForKey) {
          if (key && key === storedKey()) {
            storeKey("");
            askForKey("That key was not accepted. Check it and enter it again.");
          } else if (!key) {
            askForKey("This service needs an API key before it checks photos.");
          } else {
            return; // a new key was entered meanwhile: this photo goes again with it
          }
        }
        return;
      }
      if ((response.status === 429 || response.status === 503) && busy < BUSY_RETRIES) {
        busy += 1;
        show(item, "retrying", "The service is busy, trying again…");
        await sleep(retryAfterSeconds(response) * 1000);
        continue;
      }
      finish(item, "error", {
        reason: refusal.reason,
        message: describeRefusal(response.status, refusal, item.file),
        retry: response.status >= 429,
      });
      return;
    }
  }

  function send(item, key) {
    const form = new FormData();
    form.append("file", item.file, item.name);
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const controller = new AbortController();
    item.abort = () => controller.abort();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    return fetch("./predict", {
      method: "POST",
      body: form,
      headers,
      signal: controller.signal,
      cache: "no-store",
      credentials: "same-origin",
    }).finally(() => clearTimeout(timer));
  }

  async function readRefusal(response) {
    try {
      const body = await response.json();
      return { reason: String(body.reason || ""), error: String(body.error || "") };
    } catch {
      return { reason: "", error: "" };
    }
  }

  function retryAfterSeconds(response) {
    const value = response.headers.get("Retry-After");
    let seconds = Number(value);
    if (value && Number.isNaN(seconds)) seconds = (Date.parse(value) - Date.now()) / 1000;
    if (!Number.isFinite(seconds) || seconds <= 0) seconds = 2;
    return Math.min(Math.max(seconds, 1), 60);
  }

  // ---- words ----
  function megabytes(bytes) {
    const value = bytes / MiB;
    return `${value >= 10 ? Math.round(value) : Math.round(value * 10) / 10} MB`;
  }
  function tooLarge(size) {
    return `Too large: ${megabytes(size)}, the limit is ${megabytes(config.max_bytes)}`;
  }
  function describeRefusal(status, refusal, file) {
    switch (refusal.reason) {
      case "empty":
        return "This file is empty";
      case "not_an_image":
        return "This file is not an image";
      case "corrupt":
        return "This image is damaged or incomplete and cannot be read";
      case "too_small":
        return `The photo is too small: it needs at least ${config.min_side} pixels each way`;
      case "too_large":
        return tooLarge(file.size);
      case "too_many_pixels":
        return "The photo has too many pixels to check";
      case "rate_limited":
      case "overloaded":
      case "loading":
        return "The service is busy: try again in a minute";
      default:
        if (status >= 500) return "The service could not check this photo";
        return refusal.error ? `Not checked: ${refusal.error}` : `Not checked (error ${status})`;
    }
  }
  function answerWords(answer) {
    if (answer.label === "other") return "No cat or dog found";
    const animal = answer.label === "cat" ? "Cat" : answer.label === "dog" ? "Dog" : answer.label;
    return answer.needs_review ? `${animal} — please check: not sure` : animal;
  }
  function percent(confidence) {
    return `${(Math.floor(confidence * 1000) / 10).toFixed(1)}%`;
  }

  // ---- the results list ----
  function resultRow(item) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.state = "waiting";
    const box = document.createElement("div");
    box.className = "thumb-box";
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = ""; // the file name is beside it
    img.decoding = "async";
    img.width = 96;
    img.height = 96;
    img.addEventListener("error", () => {
      box.replaceChildren(textElement("span", "no-preview", "No preview"));
      URL.revokeObjectURL(item.url);
    });
    item.url = URL.createObjectURL(item.file);
    img.src = item.url;
    box.append(img);
    const text = document.createElement("div");
    text.className = "result-text";
    item.answerEl = textElement("p", "answer", "");
    item.detailEl = textElement("p", "detail", "");
    text.append(textElement("p", "file-name", item.name), item.answerEl, item.detailEl);
    li.append(box, text);
    return li;
  }

  function textElement(tag, className, text) {
    const element = document.createElement(tag);
    element.className = className;
    element.textContent = text;
    return element;
  }

  function show(item, state, words) {
    item.state = state;
    item.li.dataset.state = state;
    item.li.setAttribute("aria-busy", state === "done" || state === "error" ? "false" : "true");
    item.answerEl.textContent = words;
    item.detailEl.textContent = "";
  }

  function finished(item) {
    return item.state === "done" || item.state === "error";
  }

  function finish(item, state, outcome) {
    if (item.cancelled) return;
    item.outcome = outcome;
    if (state === "done") {
      const { answer } = outcome;
      show(item, "done", answerWords(answer));
      item.li.dataset.label = answer.label;
      item.li.dataset.review = String(Boolean(answer.needs_review));
      item.detailEl.textContent = answer.label === "other"
        ? "Unlike the cat and dog photos the model learned from"
        : `Confidence ${percent(answer.confidence)}`;
    } else {
      show(item, "error", outcome.message);
      delete item.li.dataset.label;
      if (outcome.retry) {
        const again = textElement("button", "button small", "Try again");
        again.type = "button";
        again.setAttribute("aria-label", `Try ${item.name} again`);
        again.addEventListener("click", () => retry(item));
        item.detailEl.append(again);
      }
    }
    updateProgress();
  }

  function retry(item) {
    if (run.length > 0 && run.every(finished)) run = [];
    if (!run.includes(item)) run.push(item);
    show(item, "waiting", "Waiting…");
    queue.push(item);
    els.summary.textContent = "";
    startAnnouncing();
    updateProgress();
    item.answerEl.tabIndex = -1;
    item.answerEl.focus(); // the button that had the focus is gone
    pump();
  }

  // ---- progress ----
  function counts(list) {
    const done = list.filter(finished);
    const of = (label) => done.filter((i) => i.state === "done" && i.outcome.answer.label === label);
    return {
      done: done.length,
      cats: of("cat").length,
      dogs: of("dog").length,
      other: of("other").length,
      failed: done.filter((i) => i.state === "error").length,
    };
  }

  function updateProgress() {
    if (adding) return;
    const total = run.length;
    const { done } = counts(run);
    els.progressArea.hidden = total === 0;
    els.progress.max = Math.max(total, 1);
    els.progress.value = done;
    els.progressText.textContent = `${done} of ${total} done`;
    document.title = total && done < total ? `(${done}/${total}) ${baseTitle}` : baseTitle;
    const any = items.length > 0;
    els.copy.disabled = !any;
    els.download.disabled = !any;
    if (total > 0 && done === total) {
      stopAnnouncing();
      const summary = summarise(counts(run));
      els.summary.textContent = summary;
      announce(`All ${total} done. ${summary}`);
    }
  }

  function summarise(c) {
    const parts = [];
    const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
    if (c.cats) parts.push(plural(c.cats, "cat", "cats"));
    if (c.dogs) parts.push(plural(c.dogs, "dog", "dogs"));
    if (c.other) parts.push(plural(c.other, "photo with no cat or dog", "photos with no cat or dog"));
    if (c.failed) parts.push(plural(c.failed, "file not checked", "files not checked"));
    return parts.length ? `${parts.join(", ")}.` : "";
  }

  function announce(text) {
    lastAnnounced = text;
    els.announcer.textContent = text;
  }
  function startAnnouncing() {
    if (announceTimer) return;
    announceTimer = setInterval(() => {
      const text = els.progressText.textContent;
      if (text !== lastAnnounced) announce(text);
    }, ANNOUNCE_EVERY_MS);
  }
  function stopAnnouncing() {
    clearInterval(announceTimer);
    announceTimer = null;
  }

  // ---- CSV: built here, from what the page shows ----
  const CSV_COLUMNS = ["file", "answer", "confidence", "needs_review", "label", "error"];

  function csvRows() {
    return items.map((item) => {
      const outcome = item.outcome;
      if (item.state === "done") {
        const { answer } = outcome;
        return [item.name, answerWords(answer),
          answer.label === "other" ? "" : answer.confidence.toFixed(4),
          answer.needs_review ? "yes" : "no", answer.label, ""];
      }
      if (item.state === "error") return [item.name, outcome.message, "", "", "", outcome.reason];
      return [item.name, "Not checked yet", "", "", "", ""];
    });
  }

  function csvCell(value) {
    let text = String(value);
    // A cell a spreadsheet would run as a formula is kept as text.
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function csvText() {
    return [CSV_COLUMNS, ...csvRows()].map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
  }

  els.download.addEventListener("click", () => {
    const blob = new Blob(["\ufeff", csvText()], { type: "text/csv;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
    link.download = `catsdogs-results-${stamp}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    els.copyStatus.textContent = `Downloaded ${items.length} ${items.length === 1 ? "row" : "rows"}.`;
  });

  els.copy.addEventListener("click", async () => {
    const text = csvText();
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch {
      // no clipboard API here (a page not on https or localhost): the old way
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.append(area);
      area.select();
      try {
        copied = document.execCommand("copy");
      } catch {
        copied = false;
      }
      area.remove();
      els.copy.focus();
    }
    els.copyStatus.textContent = copied
      ? `Copied ${items.length} ${items.length === 1 ? "row" : "rows"} as CSV.`
      : "Copying is not allowed here: use Download CSV.";
  });

  els.clear.addEventListener("click", () => {
    for (const item of items) {
      item.cancelled = true;
      item.abort?.();
      URL.revokeObjectURL(item.url);
    }
    items = [];
    queue = [];
    run = [];
    els.results.replaceChildren();
    els.summary.textContent = "";
    els.copyStatus.textContent = "";
    els.resultsArea.hidden = true;
    stopAnnouncing();
    updateProgress();
    announce("Results cleared.");
    els.input.focus();
  });

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // ---- start: the service's limits, and whether it wants a key ----
  async function loadConfig() {
    try {
      const response = await fetch("./app/config", { cache: "no-store" });
      if (response.ok) Object.assign(config, await response.json());
    } catch {
      // the defaults stand; the service's answers say the rest
    }
    els.limitHint.textContent = `Up to ${megabytes(config.max_bytes)} each.`;
    els.keyStatus.hidden = !storedKey();
    if (config.api_keys && !storedKey()) {
      waitingForKey = true;
      els.keyMessage.textContent = "";
      els.keyForm.hidden = false;
    }
    document.body.dataset.ready = "true";
  }

  updateProgress();
  loadConfig();
})();
