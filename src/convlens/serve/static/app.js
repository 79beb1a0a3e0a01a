// convlens explorer: plain JavaScript over the JSON/PNG API of `convlens serve`.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, offset: 0, pageSize: 48, image: null, cls: null, off: new Set() };
let pending = 0;

function busy(delta) {
  pending += delta;
  $("busy").hidden = pending === 0;
}

async function api(path, options) {
  busy(1);
  try {
    const r = await fetch(path, options);
    const body = await readBody(r);
    if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    $("error").textContent = "";
    return body;
  } finally {
    busy(-1);
  }
}

// The answer's JSON, or, when a proxy or the server's size limit answered in plain
// text, that text as the error's detail (never "Unexpected token ... is not valid JSON").
async function readBody(r) {
  const text = await r.text();
  try {
    return JSON.parse(text);
  } catch {
    const detail = r.status === 413 ? "the file is too large for the explorer" : text.slice(0, 200);
    return { detail: detail || `HTTP ${r.status}` };
  }
}

function showError(e) {
  $("error").textContent = e.message;
}

// Long work (the fewest-units search, a unit's visualisation) runs as a job on the
// server: started by one request, polled for its progress, cancelled with DELETE when
// the page moves on (another image, layer or unit). One job per slot at a time.
const jobs = {};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function cancelJob(slot) {
  const id = jobs[slot];
  if (!id) return;
  delete jobs[slot];
  fetch(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => {});
}

// The job's result, or null when it was cancelled or replaced meanwhile.
async function runJob(slot, path, body, onProgress) {
  cancelJob(slot);
  let job = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  jobs[slot] = job.id;
  while (job.status === "queued" || job.status === "running") {
    onProgress(job);
    await sleep(200);
    if (jobs[slot] !== job.id) return null;
    const r = await fetch(`/api/jobs/${job.id}`);
    job = await readBody(r);
    if (!r.ok) throw new Error(job.detail);
  }
  if (jobs[slot] !== job.id) return null;
  delete jobs[slot];
  if (job.status === "failed") throw new Error(job.error);
  return job.status === "done" ? job.result : null;
}

function showProgress(bar, job) {
  bar.hidden = false;
  bar.max = Math.max(1, job.total);
  bar.value = job.done;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text || value;
  select.appendChild(o);
}

function fillClasses(list, top5, onClick) {
  list.replaceChildren();
  for (const c of top5) {
    const li = document.createElement("li");
    li.dataset.index = c.index;
    li.textContent = `${c.name} ${(100 * c.prob).toFixed(1)}%`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(80 * c.prob)}px`;
    li.appendChild(bar);
    if (onClick) li.addEventListener("click", () => onClick(c.index));
    list.appendChild(li);
  }
}

async function loadPage() {
  const page = await api(`/api/images?offset=${state.offset}&limit=${state.pageSize}`);
  const thumbs = $("thumbs");
  thumbs.replaceChildren();
  for (const item of page.items) {
    const img = document.createElement("img");
    img.src = `/api/images/${item.id}.png`;
    img.alt = item.label ? `${item.name} (${item.label})` : item.name;
    img.title = img.alt;
    img.dataset.id = item.id;
    img.addEventListener("click", () => choose(item.id).catch(showError));
    thumbs.appendChild(img);
  }
  const ups = $("uploads");
  ups.replaceChildren();
  for (const item of page.uploads) {
    const img = document.createElement("img");
    img.src = `/api/images/${item.id}.png`;
    img.alt = item.name;
    img.title = `${item.name} (uploaded)`;
    img.dataset.id = item.id;
    img.addEventListener("click", () => choose(item.id).catch(showError));
    ups.appendChild(img);
  }
  $("uploads-box").hidden = page.uploads.length === 0;
  const last = Math.min(state.offset + state.pageSize, page.total);
  $("page").textContent = page.total ? `${state.offset + 1}-${last} of ${page.total}` : "no images";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= page.total;
}

async function choose(id) {
  state.image = id;
  state.off.clear();
  cancelJob("fewest");
  cancelJob("map");
  $("fewest-progress").hidden = true;
  for (const t of [...$("thumbs").children, ...$("uploads").children]) t.classList.toggle("chosen", t.dataset.id === id);
  $("image").src = `/api/images/${id}.png`;
  $("image-name").textContent = id;
  $("overlay").hidden = true;
  const p = await api(`/api/predict?image=${encodeURIComponent(id)}`);
  if (state.image !== id) return; // another image was chosen meanwhile
  fillClasses($("top5"), p.top5, (c) => showMap(c));
  fillClasses($("before"), p.top5);
  $("after").replaceChildren();
  $("ablated").textContent = "nothing";
  $("fewest-result").textContent = "";
  await showMap(p.top5[0].index);
  await loadUnits();
  if (state.info.concepts) await loadConcepts();
}

// The concepts of the top class where they are in the image; a click shows the card.
async function loadConcepts() {
  const id = state.image;
  const r = await api(`/api/concepts?image=${encodeURIComponent(id)}`);
  if (state.image !== id) return;
  $("concept-card").hidden = true;
  const box = $("concepts");
  box.replaceChildren();
  for (const c of r.concepts) {
    const div = document.createElement("div");
    div.className = "unit concept";
    div.dataset.concept = c.concept;
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + c.png;
    img.alt = `concept ${c.concept} of ${r.group}`;
    div.appendChild(img);
    const score = c.sobol === null ? "" : ` · ${c.sobol.toFixed(2)}`;
    div.appendChild(document.createTextNode(`concept ${c.concept}${score}`));
    div.title = `concept ${c.concept} of ${r.group}` +
      (c.sobol === null ? "" : `: Sobol importance for ${r.class} ${c.sobol.toFixed(3)}`);
    div.addEventListener("click", () => {
      const caption = document.createElement("figcaption");
      caption.textContent =
        `concept ${c.concept} of ${r.group}: its picture, then its exemplars (region outlined)`;
      const card = document.createElement("img");
      card.src = c.card;
      card.alt = `card of concept ${c.concept} of ${r.group}`;
      $("concept-card").replaceChildren(caption, card);
      $("concept-card").hidden = false;
    });
    box.appendChild(div);
  }
}

async function showMap(cls) {
  state.cls = cls;
  for (const li of $("top5").children) li.classList.toggle("chosen", Number(li.dataset.index) === cls);
  const method = $("method").value;
  const image = state.image;
  const overlay = $("overlay");
  // a pixel attribution is drawn in a sign mode, its outliers clipped (render/heatmaps.py)
  const pixel = method in state.info.signs;
  $("pixel-controls").hidden = !pixel;
  const sign = pixel ? $("sign").value : "";
  const clip = $("clip").value;
  const style = `${sign}|${clip}`;
  let blob;
  if (state.info.long_methods.includes(method)) {
    // many passes of the network: a job, with progress; cancelled when the page moves on
    const bar = $("map-progress");
    const body = { image, class: cls, method, clip: Number(clip) };
    if (sign) body.sign = sign;
    try {
      const r = await runJob("map", "/api/jobs/map", body, (job) => showProgress(bar, job));
      if (r === null) return;
      blob = await (await fetch("data:image/png;base64," + r.png)).blob();
    } finally {
      bar.hidden = true;
    }
  } else {
    cancelJob("map");
    busy(1);
    try {
      const drawn = (sign ? `&sign=${sign}` : "") + `&clip=${clip}`;
      const r = await fetch(`/api/cam.png?image=${encodeURIComponent(image)}&class=${cls}&method=${method}${drawn}`);
      if (!r.ok) throw new Error((await readBody(r)).detail);
      blob = await r.blob();
    } finally {
      busy(-1);
    }
  }
  const now = `${method in state.info.signs ? $("sign").value : ""}|${$("clip").value}`;
  if (state.cls !== cls || state.image !== image || $("method").value !== method || now !== style) return; // moved on
  const old = overlay.src;
  overlay.src = URL.createObjectURL(blob);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  overlay.dataset.cls = cls;
  overlay.dataset.method = method;
  overlay.style.opacity = $("opacity").value;
  overlay.hidden = false;
}

async function loadUnits() {
  const layer = $("layer").value;
  const id = state.image;
  const r = await api(`/api/units?image=${encodeURIComponent(id)}&layer=${encodeURIComponent(layer)}&top=12`);
  if (state.image !== id || $("layer").value !== layer) return;
  const box = $("units");
  box.replaceChildren();
  for (const u of r.units) {
    const div = document.createElement("div");
    div.className = "unit";
    div.dataset.unit = u.unit;
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + u.png;
    img.alt = `unit ${u.unit}`;
    div.appendChild(img);
    div.appendChild(document.createTextNode(`unit ${u.unit} · ${u.mean.toFixed(2)}`));
    div.title = `unit ${u.unit}: mean activation ${u.mean.toFixed(3)}, peak ${u.peak.toFixed(3)}`;
    div.addEventListener("click", () => toggleUnit(u.unit).catch(showError));
    box.appendChild(div);
  }
}

function markUnits() {
  for (const d of $("units").children) d.classList.toggle("off", state.off.has(Number(d.dataset.unit)));
}

async function toggleUnit(unit) {
  if (state.off.has(unit)) state.off.delete(unit);
  else state.off.add(unit);
  markUnits();
  showCard(unit).catch(showError); // long: its visualisation comes when it is ready
  await ablate();
}

async function ablate() {
  const units = [...state.off];
  if (units.length === 0) {
    $("after").replaceChildren();
    $("ablated").textContent = "nothing";
    return;
  }
  const id = state.image;
  const r = await api("/api/ablate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ image: id, layer: $("layer").value, units, mode: $("mode").value }),
  });
  if (state.image !== id || [...state.off].join() !== units.join()) return; // a newer request follows
  fillClasses($("before"), r.before);
  fillClasses($("after"), r.after);
  $("ablated").textContent = `${r.units.length} unit${r.units.length > 1 ? "s" : ""}`;
}

function clearCard() {
  cancelJob("visualize");
  $("unit-card").hidden = true;
  $("unit-card").replaceChildren();
}

// The clicked unit: what it responds to most (optimised, on demand, with progress) and,
// when a dissection of this layer was given, its top images in the data set.
async function showCard(unit) {
  const layer = $("layer").value;
  const card = $("unit-card");
  cancelJob("visualize");
  card.replaceChildren();
  const h = document.createElement("h3");
  h.textContent = `unit ${unit} of ${layer}`;
  const vis = document.createElement("figure");
  vis.id = "unit-vis";
  const caption = document.createElement("figcaption");
  caption.textContent = "what it responds to most (optimised image): starting…";
  const bar = document.createElement("progress");
  vis.append(caption, bar);
  card.append(h, vis);
  card.hidden = false;
  const d = state.info.dissection;
  if (d && d.layer === layer) {
    const u = await api(`/api/dissection/${unit}`);
    const what = u.label !== undefined
      ? `${u.label || u.concept} (IoU ${u.iou.toFixed(3)})`
      : u.top_class !== undefined ? `${u.top_class} (selectivity ${u.selectivity.toFixed(2)})` : "";
    const top = document.createElement("figure");
    top.id = "unit-exemplars";
    const img = document.createElement("img");
    img.src = `/api/dissection/${unit}.png`;
    img.alt = `top images of unit ${unit} across the data set`;
    const cap = document.createElement("figcaption");
    cap.textContent = `its top images in the data set: ${what}`;
    top.append(cap, img);
    card.append(top);
  }
  const r = await runJob("visualize", "/api/jobs/visualize", { layer, unit }, (job) => {
    showProgress(bar, job);
    caption.textContent = job.status === "queued"
      ? "what it responds to most: waiting for other long work…"
      : `what it responds to most: optimising, step ${job.done} of ${job.total}`;
  });
  if (r === null || !vis.isConnected) return;
  bar.remove();
  if (r.dead) {
    caption.textContent = "a dead unit: it does not respond to any image the optimisation tried";
    return;
  }
  const img = document.createElement("img");
  img.src = "data:image/png;base64," + r.png;
  img.alt = `the image optimised for unit ${unit}`;
  caption.textContent = `what it responds to most (optimised for ${r.steps} steps; mean activation ${r.activation.toFixed(2)})`;
  vis.append(img);
}

async function fewest() {
  $("fewest-result").textContent = "searching…";
  const bar = $("fewest-progress");
  let r;
  try {
    r = await runJob("fewest", "/api/jobs/fewest",
      { image: state.image, layer: $("layer").value, mode: $("mode").value },
      (job) => {
        showProgress(bar, job);
        $("fewest-result").textContent = job.status === "queued" ? "waiting for other long work…"
          : `searching… ${job.done} unit(s) removed so far (at most ${job.total})`;
      });
  } finally {
    bar.hidden = true;
  }
  if (r === null) return; // cancelled: the page moved on
  state.off = new Set(r.units);
  markUnits();
  fillClasses($("before"), r.before);
  fillClasses($("after"), r.after);
  const tiles = new Set([...$("units").children].map((d) => Number(d.dataset.unit)));
  const unseen = r.units.filter((u) => !tiles.has(u));
  $("ablated").textContent = `${r.units.length} unit${r.units.length === 1 ? "" : "s"}` +
    (unseen.length ? ` (${unseen.join(", ")} not among the tiles)` : "");
  $("fewest-result").textContent = r.found
    ? `Removing ${r.units.length} unit(s) (${r.units.join(", ")}) changes the top-1 (${r.method}).`
    : r.stopped === "budget"
      ? `Out of time after ${r.seconds} s: the ${r.units.length} units marked are the best set so far and do not change the top-1 (${r.method}).`
      : `No set of up to 32 units changes the top-1 (${r.method}).`;
}

async function start() {
  const info = await api("/api/info");
  state.info = info;
  $("model").textContent = `· ${info.model}`;
  for (const m of info.methods) option($("method"), m, info.method_names[m]);
  for (const l of info.layers) option($("layer"), l);
  $("layer").value = info.default_layer;
  for (const l of info.filter_layers) option($("filter-layer"), l);
  $("filters").src = `/api/filters.png?layer=${encodeURIComponent(info.filter_layers[0])}`;
  $("limits").textContent = info.limits;
  if (info.concepts) {
    $("concepts-panel").hidden = false;
    $("concepts-layer").textContent = info.concepts.layer;
  }
  $("method").addEventListener("change", () => state.cls !== null && showMap(state.cls).catch(showError));
  for (const id of ["sign", "clip"]) {
    $(id).addEventListener("change", () => state.cls !== null && showMap(state.cls).catch(showError));
  }
  $("opacity").addEventListener("input", () => { $("overlay").style.opacity = $("opacity").value; });
  $("layer").addEventListener("change", () => {
    state.off.clear();
    clearCard();
    cancelJob("fewest");
    loadUnits().then(ablate).catch(showError);
  });
  $("mode").addEventListener("change", () => ablate().catch(showError));
  $("fewest").addEventListener("click", () => fewest().catch(showError));
  $("clear").addEventListener("click", () => { state.off.clear(); markUnits(); ablate().catch(showError); });
  $("filter-layer").addEventListener("change", () => {
    $("filters").src = `/api/filters.png?layer=${encodeURIComponent($("filter-layer").value)}`;
  });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.pageSize); loadPage().catch(showError); });
  $("next").addEventListener("click", () => { state.offset += state.pageSize; loadPage().catch(showError); });
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    $("upload-error").textContent = "";
    try {
      const r = await api("/api/upload", { method: "POST", body: form });
      await loadPage();
      await choose(r.id);
    } catch (e) {
      $("upload-error").textContent = e.message; // beside the control, not only in the header
      showError(e);
    }
  });
  await loadPage();
  if (info.images > 0) await choose($("thumbs").firstChild.dataset.id);
  document.body.dataset.ready = "1";
}

start().catch(showError);
