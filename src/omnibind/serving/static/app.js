// The search page: plain browser JavaScript, no build step. Talks to /v1/info, /v1/search, /v1/items.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, files: [], key: sessionStorage.getItem("omnibind-key") || "" };

function headers(extra = {}) {
  return state.key ? { ...extra, "X-API-Key": state.key } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadInfo() {
  try {
    state.info = await (await api("/v1/info")).json();
  } catch (error) {
    if (error.status === 401) { $("key-box").hidden = false; $("info").textContent = "This server needs an API key."; return; }
    $("info").textContent = error.message;
    return;
  }
  $("key-box").hidden = true;
  const mods = Object.entries(state.info.modalities);
  $("info").textContent = `${state.info.items} items · ` +
    mods.map(([m, v]) => `${m} (${v.kind}, ${v.count})`).join(" · ");
  $("k").max = String(state.info.limits.max_k);
  const select = $("target");
  select.length = 1;
  for (const [m, v] of mods) select.add(new Option(`${m} (${v.kind})`, m));
  const image = mods.find(([, v]) => v.kind === "image");
  if (image) select.value = image[0];
  const hasText = mods.filter(([, v]) => v.kind === "text").length === 1;
  $("q").disabled = !hasText;
  if (!hasText) $("q").placeholder = "this index has no single text modality: drop files instead";
}

// ---- query files (drop zone) --------------------------------------------------------------------
function addFiles(list) {
  for (const file of list) {
    if (/^(image|audio)\//.test(file.type)) state.files.push(file);
    else setStatus(`${file.name}: only image and audio files can be dropped`, true);
  }
  renderChips();
}

function renderChips() {
  const chips = $("chips");
  chips.replaceChildren();
  state.files.forEach((file, i) => {
    const li = document.createElement("li");
    li.textContent = file.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `remove ${file.name}`);
    remove.addEventListener("click", () => { state.files.splice(i, 1); renderChips(); });
    li.append(remove);
    chips.append(li);
  });
}

// ---- search -------------------------------------------------------------------------------------
async function search(extra = {}) {
  const query = { k: Number($("k").value) || 12, include_items: true, ...extra };
  const target = $("target").value;
  if (target) query.target = target;
  const text = $("q").value.trim();
  if (text && !extra.like) query.text = text;
  let body;
  let requestHeaders = {};
  if (state.files.length && !extra.like) {
    body = new FormData();
    body.append("query", JSON.stringify(query));
    for (const file of state.files) body.append("file", file, file.name);
  } else {
    body = JSON.stringify(query);
    requestHeaders = { "Content-Type": "application/json" };
  }
  if (!query.text && !query.like && !(body instanceof FormData)) {
    setStatus("Type a query or drop a file first.", true);
    return;
  }
  setStatus("searching…");
  try {
    const result = await (await api("/v1/search", { method: "POST", body, headers: requestHeaders })).json();
    await render(result, extra.like);
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function mediaUrl(url) {
  if (!state.key) return url;  // <img src> cannot send a key header: fetch and show a blob instead
  return URL.createObjectURL(await (await api(url)).blob());
}

function describe(hit) {
  const lines = [`${hit.id}`, `score ${hit.score.toFixed(4)} (matched ${hit.modality})`];
  for (const [k, v] of Object.entries(hit.metadata)) lines.push(`${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return lines.join("\n");
}

async function card(hit) {
  const li = document.createElement("li");
  li.className = "card";
  li.title = describe(hit);
  const item = hit.item || {};
  // show the matched modality first, then any other with something to show
  const order = [hit.modality, ...Object.keys(item).filter((m) => m !== hit.modality)];
  for (const m of order) {
    const info = item[m];
    if (!info || !info.url) continue;
    if (info.kind === "image") {
      const img = document.createElement("img");
      img.alt = `${m} of ${hit.id}`;
      img.src = await mediaUrl(info.url);
      li.append(img);
    } else if (info.kind === "audio") {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.src = await mediaUrl(info.url);
      audio.setAttribute("aria-label", `${m} of ${hit.id}`);
      li.append(audio);
    } else if (info.kind === "text") {
      const p = document.createElement("p");
      p.className = "text";
      p.textContent = info.value;
      li.append(p);
    }
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = hit.id;
  const score = document.createElement("span");
  score.textContent = hit.score.toFixed(3);
  meta.append(id, score);
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more";
  more.textContent = "More like this";
  more.setAttribute("aria-label", `more like ${hit.id}`);
  more.addEventListener("click", () => search({ like: hit.id }));
  li.append(meta, more);
  return li;
}

async function render(result, like) {
  const cards = await Promise.all(result.hits.map(card));
  $("results").replaceChildren(...cards);
  const what = like ? ` like ${like}` : "";
  setStatus(`${result.hits.length} results${what} (${result.method}, stopped: ${result.stopped_because}, ` +
    `${result.took_ms.toFixed(1)} ms)`);
}

// ---- wiring -------------------------------------------------------------------------------------
$("search").addEventListener("submit", (event) => { event.preventDefault(); search(); });
const drop = $("drop");
drop.addEventListener("click", () => $("files").click());
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("files").click(); }
  if (event.key === "Escape") { state.files = []; renderChips(); }
});
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  addFiles(event.dataTransfer.files);
});
$("files").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
$("key-box").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem("omnibind-key", state.key);
  loadInfo();
});
document.addEventListener("keydown", (event) => {
  const typing = document.activeElement === $("q") || document.activeElement === $("key");
  if (event.key === "/" && !typing) { event.preventDefault(); $("q").focus(); }
});
loadInfo();
