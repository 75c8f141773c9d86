// The search page: plain DOM, no framework, nothing loaded from elsewhere.
// Every text from the index (class names, paths) goes in as textContent, never as HTML.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const state = { photo: null, box: null, lastQuery: null };

function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function api(url, options = {}) {
  const response = await fetch(withToken(url), options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function filters() {
  const fields = new URLSearchParams();
  fields.set("kinds", document.querySelector("input[name=kinds]:checked").value);
  fields.set("k", $("k").value);
  fields.set("one_hit_per_image", $("one-per-photo").checked ? "true" : "false");
  // A cutoff of the scores of the ranking in use; BM25 (words alone) has no fixed scale to cut.
  const minScore = Number($("min-score").value);
  if (minScore > 0 && $("mode").value !== "text") fields.set("min_score", String(minScore));
  const classes = [...document.querySelectorAll("#class-list input:checked")].map((box) => box.value);
  if (classes.length) fields.set("classes", classes.join(","));
  const sources = [...document.querySelectorAll("#source-list input:checked")].map((box) => box.value);
  if (sources.length) fields.set("region_sources", sources.join(","));
  return fields;
}

// What each region source is called on the page; its boxes are drawn in its own style (style.css).
// What a hit's score means in each ranking: said once, in the status line.
const SCORE_SCALES = {
  vector: "cosine similarity",
  hybrid: "0-1, 1 first by looks and by words",
  text: "BM25, higher matches the words better",
};
const SOURCE_NAMES = {
  detector: "the detector's objects",
  "open-vocabulary": "the open-vocabulary detector's objects",
  proposal: "proposals",
  tile: "tiles",
};

// A box over a picture, in percentages of the picture, so it stays put at any displayed size.
function boxOver(box, width, height, tag = "div", source = "detector") {
  const [x1, y1, x2, y2] = box;
  return element(tag, {
    class: `box source-${source}`,
    style: {
      left: (100 * x1 / width) + "%", top: (100 * y1 / height) + "%",
      width: (100 * (x2 - x1) / width) + "%", height: (100 * (y2 - y1) / height) + "%",
    },
  });
}

function framedPicture(src, width, height, alt) {
  const frame = element("div", { class: "framed", style: { aspectRatio: `${width} / ${height}` } });
  frame.append(element("img", { src: withToken(src), alt, loading: "lazy" }));
  return frame;
}

function hitCard(hit) {
  const image = hit.image;
  const name = image.uri.split("/").pop();
  const what = hit.class_name || (hit.crop ? hit.crop.source : "whole photo");  // a tile has no class
  const matched = element("button", {
    type: "button", class: "picture matched", title: "more like this",
    "aria-label": `more like this ${what} (rank ${hit.rank})`,
  }, [element("img", { src: withToken((hit.crop_url || hit.image_url) + "?size=256"), alt: what, loading: "lazy" })]);
  matched.addEventListener("click", () => similar(hit.crop ? hit.crop.crop_id : image.image_id, what));

  const parent = framedPicture(hit.image_url + "?size=256", image.width, image.height, `photo ${name}`);
  if (hit.box) parent.append(boxOver(hit.box, image.width, image.height, "div", hit.crop ? hit.crop.source : "detector"));
  const opener = element("button", {
    type: "button", class: "picture parent", title: "open the photo", "aria-label": `open photo ${name}`,
  }, [parent]);
  opener.addEventListener("click", () => openPhoto(image.image_id));

  const more = element("button", { type: "button", class: "more", text: "more like this" });
  more.addEventListener("click", () => matched.click());
  const folded = hit.folded.length ? ` (+${hit.folded.length} on this photo)` : "";
  // A whole-photo hit is its photo: shown once (the "more like this" button below searches by it).
  const pictures = hit.crop ? [matched, opener] : [opener];
  return element("li", { class: "hit", "data-kind": hit.kind }, [
    element("div", { class: hit.crop ? "pair" : "pair whole" }, pictures),
    element("div", { class: "label" }, [
      element("span", { class: "class", text: `#${hit.rank} ${what}${folded}` }),
      element("span", { class: "score", text: hit.score.toFixed(4) }),  // SCORE_DECIMALS: what min_score compares
    ]),
    more,
  ]);
}

function show(answer, described) {
  const list = $("hits");
  list.replaceChildren(...answer.hits.map(hitCard));
  const status = $("status");
  status.classList.remove("error");
  status.textContent =
    `${answer.hits.length} hits for ${described}, ranked by ${answer.mode} (scores: ${SCORE_SCALES[answer.mode]}), ` +
    `in ${answer.took_ms} ms`;
}

function failed(error) {
  const status = $("status");
  status.classList.add("error");
  status.textContent = error.message;
}

async function search() {
  try {
    const fields = filters();
    if (state.photo) {
      const form = new FormData();
      form.append("image", state.photo);
      for (const [name, value] of fields) form.append(name, value);
      if (state.box) form.append("box", state.box.map((v) => v.toFixed(1)).join(","));
      state.lastQuery = search;
      show(await api("/api/search", { method: "POST", body: form }), state.box ? "the region you drew" : "your photo");
      return;
    }
    const text = $("text").value.trim();
    if (!text) return;
    fields.set("text", text);
    // Words rank text queries only: a photo and "more like this" are searched by their vectors.
    if ($("mode").value !== "auto") fields.set("mode", $("mode").value);
    state.lastQuery = search;
    show(await api("/api/search?" + fields), `“${text}”`);
  } catch (error) { failed(error); }
}

async function similar(recordId, what) {
  try {
    state.lastQuery = () => similar(recordId, what);
    show(await api(`/api/similar/${recordId}?` + filters()), `more like this ${what}`);
  } catch (error) { failed(error); }
}

async function openPhoto(imageId) {
  try {
    const { image, crops } = await api(`/api/images/${imageId}/crops`);
    const frame = $("viewer-frame");
    const picture = $("viewer-image");
    picture.src = withToken(`/api/images/${imageId}?size=1024`);
    picture.alt = image.uri;
    frame.style.aspectRatio = `${image.width} / ${image.height}`;
    frame.style.width = `min(100%, ${Math.round(80 * image.width / image.height)}vh)`;
    frame.querySelectorAll(".box").forEach((box) => box.remove());
    const listed = [];
    for (const crop of crops) {
      const label = crop.class_name || crop.source;  // a tile has no class
      const box = boxOver([crop.x1, crop.y1, crop.x2, crop.y2], image.width, image.height, "button", crop.source);
      box.type = "button";
      box.setAttribute("aria-label", `more like this ${label}`);
      box.append(element("span", { text: crop.class_name ? `${label} ${crop.confidence.toFixed(2)}` : label }));
      box.addEventListener("click", () => { $("viewer").close(); similar(crop.crop_id, label); });
      frame.append(box);
      const thumbnail = element("button", { type: "button", title: "more like this" }, [
        element("img", { src: withToken(crop.crop_url + "?size=128"), alt: label }),
        element("span", { text: label }),
      ]);
      thumbnail.addEventListener("click", () => box.click());
      listed.push(element("li", {}, [thumbnail]));
    }
    $("viewer-caption").textContent = `${image.uri} · ${image.width}×${image.height} · ${crops.filter((crop) => crop.class_name).length} objects`;
    $("viewer-crops").replaceChildren(...listed);
    $("viewer").showModal();
  } catch (error) { failed(error); }
}

function usePhoto(file) {
  if (!file) return;
  state.photo = file;
  state.box = null;
  $("photo-box").hidden = true;
  $("photo-preview").src = URL.createObjectURL(file);
  $("query-photo").hidden = false;
  search();
}

function clearPhoto() {
  state.photo = null;
  state.box = null;
  $("query-photo").hidden = true;
  $("photo").value = "";
}

// Dragging on the photo draws the region to search with, in the photo's own pixels.
function watchBoxDrawing() {
  const frame = $("photo-frame");
  const preview = $("photo-preview");
  const drawn = $("photo-box");
  let start = null;
  const point = (event) => {
    const rect = preview.getBoundingClientRect();
    return [
      Math.min(Math.max(event.clientX - rect.left, 0), rect.width),
      Math.min(Math.max(event.clientY - rect.top, 0), rect.height),
      rect,
    ];
  };
  frame.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    start = point(event);
    frame.setPointerCapture(event.pointerId);
  });
  frame.addEventListener("pointermove", (event) => {
    if (!start) return;
    const [x, y] = point(event);
    Object.assign(drawn.style, {
      left: Math.min(x, start[0]) + "px", top: Math.min(y, start[1]) + "px",
      width: Math.abs(x - start[0]) + "px", height: Math.abs(y - start[1]) + "px",
    });
    drawn.hidden = false;
  });
  frame.addEventListener("pointerup", (event) => {
    if (!start) return;
    const [x, y, rect] = point(event);
    const [x0, y0] = start;
    start = null;
    if (Math.abs(x - x0) < 4 || Math.abs(y - y0) < 4) return;  // a click, not a box
    const scaleX = preview.naturalWidth / rect.width;
    const scaleY = preview.naturalHeight / rect.height;
    state.box = [Math.min(x, x0) * scaleX, Math.min(y, y0) * scaleY, Math.max(x, x0) * scaleX, Math.max(y, y0) * scaleY];
    search();
  });
}

async function loadSummary() {
  try {
    const summary = await api("/api/index");
    $("index-summary").textContent =
      `${summary.images} photos, ${summary.crops} objects · ${summary.embedder || "no embedder yet"}` +
      (summary.last_write ? ` · last written ${summary.last_write.replace("T", " ").slice(0, 19)}` : "");
    const list = $("class-list");
    const ticked = new Set([...list.querySelectorAll("input:checked")].map((box) => box.value));
    list.replaceChildren(...Object.entries(summary.classes).map(([name, count]) => {
      const box = element("input", { type: "checkbox", value: name });
      box.checked = ticked.has(name);
      box.addEventListener("change", () => state.lastQuery && state.lastQuery());
      return element("label", {}, [element("span", {}, [box, " " + name]), element("span", { class: "count", text: String(count) })]);
    }));
    const sources = $("source-list");
    const sourcesTicked = new Set([...sources.querySelectorAll("input:checked")].map((box) => box.value));
    sources.replaceChildren(...Object.entries(summary.region_sources || {}).map(([source, count]) => {
      const box = element("input", { type: "checkbox", value: source });
      box.checked = sourcesTicked.has(source);
      box.addEventListener("change", () => state.lastQuery && state.lastQuery());
      const name = element("span", { class: `swatch source-${source}`, text: SOURCE_NAMES[source] || source });
      return element("label", {}, [element("span", {}, [box, " ", name]), element("span", { class: "count", text: String(count) })]);
    }));
  } catch (error) { $("index-summary").textContent = error.message; }
}

// A link such as /?text=a+red+car&kinds=crop (a query run's artifact links here) opens with that search.
function searchFromAddress() {
  const asked = new URLSearchParams(location.search);
  if (!asked.get("text")) return;
  $("text").value = asked.get("text");
  const kinds = document.querySelector(`input[name=kinds][value="${CSS.escape(asked.get("kinds") || "both")}"]`);
  if (kinds) kinds.checked = true;
  if (asked.get("k")) {
    const k = asked.get("k");
    if (![...$("k").options].some((option) => option.value === k)) $("k").append(element("option", { text: k }));
    $("k").value = k;
  }
  if (asked.get("one_hit_per_image")) $("one-per-photo").checked = asked.get("one_hit_per_image") !== "false";
  if (asked.get("min_score")) $("min-score").value = asked.get("min_score");
  if ([...$("mode").options].some((option) => option.value === asked.get("mode"))) $("mode").value = asked.get("mode");
  const unknown = [
    ...tickFacets("#class-list", asked.get("classes"), "classes"),
    ...tickFacets("#source-list", asked.get("region_sources"), "region_sources"),
  ];
  if (unknown.length) {
    failed(new Error(unknown.join("; ")));  // a facet asked for that this index lacks is named, not dropped
    return;
  }
  search();
}

// Tick the facets a link asks for; what each facet it names and this index lacks says.
function tickFacets(list, asked, field) {
  const wanted = new Set((asked || "").split(",").filter(Boolean));
  const boxes = [...document.querySelectorAll(`${list} input`)];
  for (const box of boxes) box.checked = wanted.has(box.value);
  const known = new Set(boxes.map((box) => box.value));
  const missing = [...wanted].filter((name) => !known.has(name));
  if (!missing.length) return [];
  return [`${field}: ${missing.join(", ")} not in this index (it has ${[...known].join(", ") || "none"})`];
}

function wire() {
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); clearPhoto(); search(); });
  $("photo").addEventListener("change", () => usePhoto($("photo").files[0]));
  const pick = document.querySelector(".pick");
  pick.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("photo").click(); });
  document.addEventListener("dragover", (event) => { event.preventDefault(); pick.classList.add("dragging"); });
  document.addEventListener("dragleave", () => pick.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    pick.classList.remove("dragging");
    usePhoto(event.dataTransfer.files[0]);
  });
  $("clear-box").addEventListener("click", () => { state.box = null; $("photo-box").hidden = true; search(); });
  $("clear-photo").addEventListener("click", clearPhoto);
  for (const input of document.querySelectorAll("#filters input, #filters select")) {
    input.addEventListener("change", () => state.lastQuery && state.lastQuery());
  }
  $("min-score").addEventListener("input", () => {
    const value = Number($("min-score").value);
    $("min-score-shown").textContent = value > 0 ? value.toFixed(2) : "off";
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "/" && document.activeElement !== $("text")) { event.preventDefault(); $("text").focus(); }
  });
  watchBoxDrawing();
  loadSummary().then(searchFromAddress);
  setInterval(loadSummary, 30000);  // new photos show up while an index run writes
  $("text").focus();
}

wire();
