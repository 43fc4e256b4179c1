// The qkv explorer: type a sentence, see the model's output (and which engine wrote it), its tokens,
// every attention map (kind / layer / head, or all heads averaged) with the chosen head's steps as the
// qkv explain page shows them, and the top-k next tokens at each step; with rotary positions, each
// query and key pair before and after its turn; with RMSNorm, each norm's step. Every word comes from
// the pages' table in English or Korean (the toggle, ?lang=ko, remembered in localStorage).
// Plain JavaScript, no libraries: the heatmaps are drawn on <canvas>.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null, data: null, kind: 0, layer: 0, head: 0, hover: null,
  rope: { stack: 0, layer: 0, head: 0, pos: 0 },
  rms: { stack: 0, layer: 0, block: 0, pos: 0 },
};
const SPECIAL = new Set(["<pad>", "<bos>", "<eos>", "<unk>"]);
const FONT = '13px ui-monospace, "DejaVu Sans Mono", monospace';

// ---- words: the pages' one table (qkv.explain.i18n), put into the page by the server ------------
// Layers and heads are counted from 0 everywhere, as `qkv explain --layer/--head` counts them.

const I18N = JSON.parse($("strings").textContent);    // {languages: {en: "English", ...}, strings: {en: {...}, ...}}
const STORE = "qkv.lang";
let lang = firstLanguage();

function firstLanguage() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked && I18N.strings[asked]) { remember(asked); return asked; }
  let saved = null;
  try { saved = localStorage.getItem(STORE); } catch (err) { /* storage off: English */ }
  return saved && I18N.strings[saved] ? saved : "en";
}

function remember(code) {
  try { localStorage.setItem(STORE, code); } catch (err) { /* storage off: not remembered */ }
}

const msg = (key, args = {}) => ({ key, args });
const argText = (v) => (v && typeof v === "object" && "key" in v ? say(v) : String(v));

function t(key, args = {}) {           // the string `key` in the page's language, {name}s filled
  const template = I18N.strings[lang][key];
  if (template === undefined) return key;
  return template.replace(/\{(\w+)\}/g, (_, name) => argText(args[name]));
}

function say(m) { return t(m.key, m.args); }

// `el` holds the string `key`; an argument may be a DOM node (a token in <code>); a `_html` key's own
// markup (<sub>, <sup>) is kept.
function fill(el, key, args = {}) {
  const template = I18N.strings[lang][key] || key;
  const arg = (name) => (args[name] instanceof Node ? args[name] : document.createTextNode(argText(args[name])));
  if (key.endsWith("_html")) {
    el.innerHTML = template.replace(/\{(\w+)\}/g, (_, name) => `<span data-arg="${name}"></span>`);
    el.querySelectorAll("span[data-arg]").forEach((s) => s.replaceWith(arg(s.dataset.arg)));
    return;
  }
  el.replaceChildren();
  let last = 0;
  for (const m of template.matchAll(/\{(\w+)\}/g)) {
    el.append(template.slice(last, m.index), arg(m[1]));
    last = m.index + m[0].length;
  }
  el.append(template.slice(last));
}

function applyLanguage() {
  document.documentElement.lang = lang;
  document.title = t("explorer.title");
  document.querySelectorAll("[data-i18n]").forEach((el) => fill(el, el.dataset.i18n));
  document.querySelectorAll("[data-i18n-aria]").forEach((el) => el.setAttribute("aria-label", t(el.dataset.i18nAria)));
  segmented($("lang"), Object.entries(I18N.languages).map(([code, name]) => [name, code]), lang, (code) => {
    lang = code;
    remember(code);
    applyLanguage();
  });
  $("lang").querySelectorAll("button").forEach((b, i) => { b.lang = Object.keys(I18N.languages)[i]; });
  renderModel();
  if (state.data) render();          // the same results, said again: nothing is asked of the server
}

// ---- talking to the server -------------------------------------------------------------------

async function postJSON(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.message || (typeof data.detail === "string" ? data.detail : `HTTP ${res.status}`));
  return data;
}

async function loadModel() {
  const res = await fetch("/v1/model");
  state.model = await res.json();
  renderModel();
  $("text").maxLength = 200;
  document.documentElement.dataset.model = "ready";
}

function renderModel() {
  const m = state.model;
  if (!m) return;
  const c = m.config;
  const layers = m.kind === "translation"
    ? msg("explorer.layers_ed", { enc: c.n_encoder_layers, dec: c.n_decoder_layers })
    : msg("explorer.layers_lm", { dec: c.n_decoder_layers });
  $("model-summary").textContent = t("explorer.summary", {
    kind: msg(`explorer.kind.${m.kind}`), layers, heads: c.n_heads, d_model: c.d_model,
    params: m.parameters.toLocaleString("en"),
  });
  const lm = m.kind === "language-model";
  $("text-label").textContent = t(lm ? "explorer.prompt_label" : "explorer.source_label");
  $("go").textContent = t(lm ? "explorer.generate" : "explorer.translate");
  $("output-title").textContent = t(lm ? "explorer.continuation" : "explorer.translation");
}

async function explain(text) {
  $("error").hidden = true;
  $("warning").hidden = true;
  $("go").disabled = true;
  try {
    state.data = await postJSON("/v1/explain", { text, top_k: 5, max_new_tokens: 60 });
    const kinds = state.data.attention.map((a) => a.kind);
    state.kind = Math.max(0, kinds.indexOf("cross"));
    state.layer = state.data.attention[state.kind].weights.length - 1;
    state.head = 0;
    const last = (stacks) => (stacks ? stacks.length - 1 : 0);    // the decoder, where there are two stacks
    state.rope = { stack: last(state.data.rope && state.data.rope.stacks), layer: 0, head: 0, pos: 1 };
    state.rms = { stack: last(state.data.rmsnorm && state.data.rmsnorm.stacks), layer: 0, block: 0, pos: 1 };
    const warnings = state.data.warnings || [];            // e.g. a text cut to what the model reads
    $("warning").textContent = warnings.join(" ");
    $("warning").hidden = warnings.length === 0;
    render();
  } catch (err) {
    $("error").textContent = err.message;
    $("error").hidden = false;
  } finally {
    $("go").disabled = false;
  }
}

// ---- rendering ---------------------------------------------------------------------------------

function render() {
  const d = state.data;
  $("result").hidden = false;
  const out = $("output");
  out.replaceChildren();
  if (d.kind === "language-model") {
    const p = document.createElement("span");
    p.className = "prompt";
    p.textContent = d.source;
    out.append(p, document.createTextNode(d.output));
  } else {
    out.textContent = d.output || t("explorer.empty");
  }
  const engine = $("engine");
  engine.textContent = t(`explorer.engine.${d.engine || "qkv"}`);
  engine.dataset.engine = d.engine || "qkv";
  $("timing").textContent = t("explorer.timing", { ms: d.elapsed_ms.toFixed(0) });
  renderTokens(d);
  renderControls();
  renderAttention();
  renderWalk();
  renderRope(d.rope);
  renderRmsNorm(d.rmsnorm);
  renderFinalNorm(d.final_norm);
  renderSteps(d.steps);
}

function renderTokens(d) {
  const box = $("tokens");
  box.replaceChildren();
  if (d.kind === "translation") {
    box.append(tokenLine("explorer.line.source", d.source_tokens), tokenLine("explorer.line.output", d.output_tokens));
  } else {
    box.append(tokenLine("explorer.line.sequence", d.output_tokens));
  }
}

function tokenLine(what, tokens) {
  const line = document.createElement("div");
  line.className = "token-line";
  const label = document.createElement("span");
  label.className = "what";
  label.textContent = `${t(what)} (${tokens.length})`;
  line.append(label);
  tokens.forEach((tok, i) => line.append(tokenChip(tok, i)));
  return line;
}

function tokenChip(tok, i) {          // a token with its position under it
  const chip = document.createElement("span");
  chip.className = SPECIAL.has(tok) ? "chip special" : "chip";
  chip.append(document.createTextNode(tok));
  const idx = document.createElement("small");
  idx.textContent = i;
  chip.append(idx);
  return chip;
}

function segmented(box, items, active, onPick) {
  box.replaceChildren();
  items.forEach(([label, value]) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    if (value === active) b.className = "on";
    b.addEventListener("click", () => onPick(value));
    box.append(b);
  });
}

function renderControls() {
  const maps = state.data.attention;
  const map = maps[state.kind];
  segmented($("kinds"), maps.map((m, i) => [t(`explorer.short.${m.kind}`), i]), state.kind, (i) => {
    state.kind = i;
    state.layer = Math.min(state.layer, maps[i].weights.length - 1);
    rerender();
  });
  segmented($("layers"), map.weights.map((_, i) => [String(i), i]), state.layer, (i) => { state.layer = i; rerender(); });
  const heads = [[t("explorer.all_avg"), -1], ...map.weights[0].map((_, h) => [String(h), h])];
  segmented($("heads"), heads, state.head, (h) => { state.head = h; rerender(); });
}

function rerender() {
  renderControls();
  renderAttention();
  renderWalk();
}

function currentMatrix(map, layer, head) {
  const heads = map.weights[layer];
  if (head >= 0) return heads[head];
  return heads[0].map((row, q) => row.map((_, k) => heads.reduce((s, h) => s + h[q][k], 0) / heads.length));
}

function renderAttention() {
  const map = state.data.attention[state.kind];
  const headName = state.head < 0 ? t("explorer.heads_avg") : t("explorer.head_n", { head: state.head });
  $("heat-title").textContent = t("explorer.heat_title", { title: msg(`explorer.map.${map.kind}`), layer: state.layer, head: headName });
  drawHeatmap($("heatmap"), currentMatrix(map, state.layer, state.head), map.queries, map.keys, state.hover);
  renderThumbs(map);
}

function renderThumbs(map) {
  const box = $("thumbs");
  box.replaceChildren();
  const heads = [-1, ...map.weights[state.layer].map((_, h) => h)];
  for (const h of heads) {
    const item = document.createElement("div");
    item.className = h === state.head ? "thumb on" : "thumb";
    const c = document.createElement("canvas");
    drawThumb(c, currentMatrix(map, state.layer, h));
    const label = document.createElement("span");
    label.textContent = h < 0 ? t("explorer.avg") : t("explorer.head_n", { head: h });
    item.append(c, label);
    item.addEventListener("click", () => { state.head = h; rerender(); });
    box.append(item);
  }
}

// ---- one head, step by step: the qkv explain page's steps (qkv.explain.steps), from the server ----

function renderWalk() {
  const map = state.data.attention[state.kind];
  const box = $("walk");
  box.replaceChildren();
  if (state.head < 0 || !map.walk || !map.walk.length) {
    $("walk-title").textContent = "";
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = t("explorer.walk_pick");
    box.append(p);
    return;
  }
  $("walk-title").textContent = t("explorer.walk_title", { title: msg(`explorer.map.${map.kind}`), layer: state.layer, head: state.head });
  box.dataset.kind = map.kind;
  box.dataset.layer = state.layer;
  box.dataset.head = state.head;
  for (const step of map.walk[state.layer][state.head]) box.append(stepEl(step, "h4"));
}

function stepEl(step, heading) {
  const div = document.createElement("div");
  div.className = "walk-step";
  const h = document.createElement(heading);
  h.textContent = say(step.title);
  const p = document.createElement("p");
  p.textContent = step.text.map(say).join(" ");
  const eq = document.createElement("p");
  eq.className = "eq";
  eq.textContent = say(step.equation);
  const mats = document.createElement("div");
  mats.className = "mats";
  if (step.norm) {
    const eps = document.createElement("span");
    eps.className = "caption";
    const e = step.norm.eps;
    eps.textContent = `ε = ${e < 1e-4 ? e.toExponential() : e}`;        // 1e-5, as the equation's 1e-05
    mats.append(eps);
  }
  for (const tb of step.tables) mats.append(tableEl(tb));
  div.append(h, p, eq, mats);
  return div;
}

function tableEl(tb) {               // as the explain page prints it: cut rows ⋮, cut columns …, masked cells hatched
  const wrap = document.createElement("div");
  if (tb.caption) {
    const cap = document.createElement("div");
    cap.className = "caption";
    cap.textContent = `${say(tb.caption)} (${tb.shape.join(" × ")})`;
    wrap.append(cap);
  }
  const table = document.createElement("table");
  table.className = "m";
  if (tb.name) table.dataset.tensor = tb.name;
  const head = table.insertRow();
  head.append(document.createElement("th"));
  for (const c of tb.cols) {
    const th = document.createElement("th");
    th.textContent = c;
    head.append(th);
  }
  tb.cells.forEach((cells, i) => {
    const row = table.insertRow();
    const th = document.createElement("th");
    th.textContent = tb.rows[i];
    row.append(th);
    cells.forEach((c, j) => {
      const td = row.insertCell();
      td.textContent = c;
      if (tb.masked[i][j]) td.className = "masked";
    });
  });
  wrap.append(table);
  return wrap;
}

function renderFinalNorm(step) {
  const box = $("final-norm");
  box.replaceChildren();
  if (step) box.append(stepEl(step, "h3"));
}

// ---- heatmaps ----------------------------------------------------------------------------------

function color(w) {
  // white -> light blue -> deep blue (a sequential scale: darker = more attention)
  const stops = [[255, 255, 255], [140, 180, 230], [16, 52, 140]];
  const x = Math.max(0, Math.min(1, w)) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const c = stops[i].map((a, j) => Math.round(a + f * (stops[i + 1][j] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function setupCanvas(canvas, width, height) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.ceil(width * dpr);
  canvas.height = Math.ceil(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

function layoutHeatmap(rows, cols) {
  const probe = document.createElement("canvas").getContext("2d");
  probe.font = FONT;
  const width = (labels) => Math.max(...labels.map((t) => probe.measureText(t).width), 0);
  const cell = Math.max(14, Math.min(34, Math.floor(560 / Math.max(rows.length, cols.length))));
  const colWidth = width(cols);
  const rotate = colWidth > cell - 4;
  return { cell, rotate, left: width(rows) + 12, top: (rotate ? colWidth : 14) + 12 };
}

function drawHeatmap(canvas, m, rows, cols, hover) {
  const L = layoutHeatmap(rows, cols);
  const ctx = setupCanvas(canvas, L.left + cols.length * L.cell + 2, L.top + rows.length * L.cell + 2);
  ctx.font = FONT;
  ctx.fillStyle = "#1d2330";
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  rows.forEach((t, q) => ctx.fillText(t, L.left - 6, L.top + (q + 0.5) * L.cell));
  cols.forEach((t, k) => {
    const x = L.left + (k + 0.5) * L.cell;
    ctx.save();
    if (L.rotate) {
      ctx.translate(x, L.top - 6);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(t, 0, 0);
    } else {
      ctx.textAlign = "center";
      ctx.fillText(t, x, L.top - 10);
    }
    ctx.restore();
  });
  m.forEach((row, q) => row.forEach((w, k) => {
    ctx.fillStyle = color(w);
    ctx.fillRect(L.left + k * L.cell, L.top + q * L.cell, L.cell - 1, L.cell - 1);
  }));
  if (hover) {
    ctx.strokeStyle = "#f59e0b";
    ctx.lineWidth = 2;
    ctx.strokeRect(L.left + hover.k * L.cell - 1, L.top + hover.q * L.cell - 1, L.cell + 1, L.cell + 1);
  }
  canvas.dataset.layout = JSON.stringify(L);
}

function drawThumb(canvas, m) {
  const cell = Math.max(2, Math.min(8, Math.floor(96 / Math.max(m.length, m[0].length))));
  const ctx = setupCanvas(canvas, m[0].length * cell, m.length * cell);
  m.forEach((row, q) => row.forEach((w, k) => {
    ctx.fillStyle = color(w);
    ctx.fillRect(k * cell, q * cell, cell, cell);
  }));
}

function onHeatmapMove(ev) {
  if (!state.data) return;
  const canvas = $("heatmap");
  const L = JSON.parse(canvas.dataset.layout || "null");
  const map = state.data.attention[state.kind];
  const rect = canvas.getBoundingClientRect();
  const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
  const q = Math.floor((y - L.top) / L.cell), k = Math.floor((x - L.left) / L.cell);
  const tip = $("tooltip");
  const inside = q >= 0 && k >= 0 && q < map.queries.length && k < map.keys.length;
  state.hover = inside ? { q, k } : null;
  renderAttentionOnly();
  if (!inside) { tip.hidden = true; return; }
  const w = currentMatrix(map, state.layer, state.head)[q][k];
  tip.textContent = `${map.queries[q]} → ${map.keys[k]}: ${w.toFixed(3)}`;
  tip.style.left = `${canvas.offsetLeft + x + 14}px`;
  tip.style.top = `${canvas.offsetTop + y + 14}px`;
  tip.hidden = false;
}

function renderAttentionOnly() {
  const map = state.data.attention[state.kind];
  drawHeatmap($("heatmap"), currentMatrix(map, state.layer, state.head), map.queries, map.keys, state.hover);
}

// ---- rotary positions: each pair of a query and a key, before and after its turn ----------------

const DIAL = 62;            // px per dial

function pickTokens(box, tokens, active, onPick) {
  box.replaceChildren();
  tokens.forEach((t, i) => {
    const chip = tokenChip(t, i);
    if (i === active) chip.classList.add("on");
    chip.addEventListener("click", () => onPick(i));
    box.append(chip);
  });
}

function wrapAngle(a) {     // to (-pi, pi]
  const t = a % (2 * Math.PI);
  return t > Math.PI ? t - 2 * Math.PI : t <= -Math.PI ? t + 2 * Math.PI : t;
}

const degrees = (a) => (a * 180) / Math.PI;

function renderRope(rope) {
  const card = $("rope-card");
  card.hidden = !rope;
  if (!rope) return;
  const r = state.rope;
  r.stack = Math.min(r.stack, rope.stacks.length - 1);
  const stack = rope.stacks[r.stack];
  r.layer = Math.min(r.layer, stack.layers.length - 1);
  const layer = stack.layers[r.layer];
  r.head = Math.min(r.head, layer.q.length - 1);
  r.pos = Math.min(r.pos, stack.tokens.length - 1);
  const again = () => renderRope(rope);
  const theta = document.createElement("span");
  theta.id = "rope-theta";
  theta.textContent = String(rope.theta);
  fill($("rope-help"), "explorer.rope_help_html", { theta });
  $("rope-stack-control").hidden = rope.stacks.length < 2;
  segmented($("rope-stacks"), rope.stacks.map((s, i) => [t(`stack.${s.kind}`), i]), r.stack, (i) => { r.stack = i; again(); });
  segmented($("rope-layers"), stack.layers.map((_, i) => [String(i), i]), r.layer, (i) => { r.layer = i; again(); });
  segmented($("rope-heads"), layer.q.map((_, h) => [String(h), h]), r.head, (h) => { r.head = h; again(); });
  pickTokens($("rope-tokens"), stack.tokens, r.pos, (i) => { r.pos = i; again(); });
  const p = r.pos;
  $("rope-title").textContent = t("explorer.rope_title",
    { stack: msg(`stack.${stack.kind}`), layer: r.layer, head: r.head, token: stack.tokens[p], pos: p });
  const q = drawDials($("rope-q"), layer.q_before[r.head][p], layer.q[r.head][p], p, rope);
  const k = drawDials($("rope-k"), layer.k_before[r.head][p], layer.k[r.head][p], p, rope);
  const worst = Math.max(q, k);
  $("rope-check").textContent = Number.isFinite(worst)
    ? t("explorer.rope_check", { pos: p, gap: degrees(worst).toFixed(3) })
    : t("explorer.rope_short");
}

// One dial per pair (x₂ᵢ, x₂ᵢ₊₁): the vector before (grey) and after (blue) the turn, scaled to the
// longest pair of the row; below it the turn the model made, in degrees. Returns the largest gap
// between that turn and p·θᵢ (mod 360°) over pairs long enough to have an angle.
function drawDials(canvas, before, after, p, rope) {
  const pairs = before.length / 2;
  const perRow = Math.max(1, Math.floor(1040 / DIAL));
  const rows = Math.ceil(pairs / perRow);
  const ctx = setupCanvas(canvas, Math.min(pairs, perRow) * DIAL, rows * (DIAL + 16));
  const longest = Math.max(1e-12, ...Array.from({ length: pairs }, (_, i) => Math.hypot(before[2 * i], before[2 * i + 1])));
  let worst = -Infinity;
  ctx.font = '10px ui-monospace, "DejaVu Sans Mono", monospace';
  ctx.textAlign = "center";
  for (let i = 0; i < pairs; i++) {
    const cx = (i % perRow) * DIAL + DIAL / 2, cy = Math.floor(i / perRow) * (DIAL + 16) + DIAL / 2;
    const rad = DIAL / 2 - 5;
    ctx.strokeStyle = "#e3e6ec";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.arc(cx, cy, rad, 0, 2 * Math.PI);
    ctx.stroke();
    const [bx, by, ax, ay] = [before[2 * i], before[2 * i + 1], after[2 * i], after[2 * i + 1]];
    arrow(ctx, cx, cy, (bx / longest) * rad, (by / longest) * rad, "#a3aab8");
    arrow(ctx, cx, cy, (ax / longest) * rad, (ay / longest) * rad, "#2f5bd3");
    const turned = Math.atan2(bx * ay - by * ax, bx * ax + by * ay);            // before -> after
    const expected = p * Math.pow(rope.theta, (-2 * i) / rope.d_head);
    const long = Math.hypot(bx, by) > 1e-3;
    if (long) worst = Math.max(worst, Math.abs(wrapAngle(turned - expected)));
    ctx.fillStyle = "#667085";
    ctx.fillText(long ? `${degrees(turned).toFixed(0)}°` : "–", cx, cy + DIAL / 2 + 8);
    ctx.textAlign = "left";
    ctx.fillText(`i=${i}`, cx - DIAL / 2 + 1, cy - DIAL / 2 + 8);                // the pair's index
    ctx.textAlign = "center";
  }
  return worst;
}

function arrow(ctx, cx, cy, dx, dy, colour) {
  // y grows downwards on a canvas: draw (x, y) with y up, as on paper
  const x = cx + dx, y = cy - dy;
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(cx, cy);
  ctx.lineTo(x, y);
  ctx.stroke();
  const a = Math.atan2(y - cy, x - cx);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x - 6 * Math.cos(a - 0.4), y - 6 * Math.sin(a - 0.4));
  ctx.lineTo(x - 6 * Math.cos(a + 0.4), y - 6 * Math.sin(a + 0.4));
  ctx.closePath();
  ctx.fill();
}

// ---- RMSNorm: what each norm divided by, and one vector through it --------------------------------

function rmsNorms(rmsnorm, stack) {
  const list = rmsnorm.stacks[stack].layers.map((norms, layer) => norms.map((n) => ({ ...n, layer })));
  if (rmsnorm.final && rmsnorm.stacks[stack].kind === "decoder") list.push([{ ...rmsnorm.final, layer: -1 }]);
  return list;                // [layer][norm]; the decoder's final norm as one more "layer"
}

function renderRmsNorm(rmsnorm) {
  const card = $("rms-card");
  card.hidden = !rmsnorm;
  if (!rmsnorm) return;
  const r = state.rms;
  r.stack = Math.min(r.stack, rmsnorm.stacks.length - 1);
  const stack = rmsnorm.stacks[r.stack];
  const layers = rmsNorms(rmsnorm, r.stack);
  r.layer = Math.min(r.layer, layers.length - 1);
  r.block = Math.min(r.block, layers[r.layer].length - 1);
  r.pos = Math.min(r.pos, stack.tokens.length - 1);
  const norm = layers[r.layer][r.block];
  const again = () => renderRmsNorm(rmsnorm);
  $("rms-stack-control").hidden = rmsnorm.stacks.length < 2;
  segmented($("rms-stacks"), rmsnorm.stacks.map((s, i) => [t(`stack.${s.kind}`), i]), r.stack, (i) => { r.stack = i; again(); });
  segmented($("rms-layers"), layers.map((l, i) => [l[0].layer < 0 ? t("explorer.final") : String(i), i]), r.layer,
    (i) => { r.layer = i; again(); });
  segmented($("rms-blocks"), layers[r.layer].map((n, i) => [t(`explorer.block.${n.block}`), i]), r.block,
    (i) => { r.block = i; again(); });
  drawRmsBars($("rms-bars"), norm.rms, stack.tokens, r.pos, (i) => { r.pos = i; again(); });
  pickTokens($("rms-tokens"), stack.tokens, r.pos, (i) => { r.pos = i; again(); });
  const where = norm.layer < 0 ? msg("explorer.rms_final")
    : msg("explorer.rms_where", { layer: norm.layer, block: msg(`explorer.block.${norm.block}`) });
  const x = norm.input[r.pos];
  $("rms-title").textContent = t("explorer.rms_title",
    { stack: msg(`stack.${stack.kind}`), where, token: stack.tokens[r.pos], pos: r.pos });
  const divided = x.map((v) => v / norm.rms[r.pos]);
  drawStrips($("rms-strips"), [["x", x], ["x / RMS", divided], ["· g", norm.output[r.pos]]]);
  const rms = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
  const length = (v) => Math.hypot(...v);
  $("rms-check").textContent = t("explorer.rms_check", {
    rms: rms.toFixed(4), model: norm.rms[r.pos].toFixed(4), x: length(x).toFixed(3),
    divided: length(divided).toFixed(3), root: Math.sqrt(x.length).toFixed(3), out: length(norm.output[r.pos]).toFixed(3),
  });
}

function drawRmsBars(canvas, rms, tokens, active, onPick) {
  const bar = Math.max(6, Math.min(28, Math.floor(1040 / tokens.length)));
  const height = 110;
  const ctx = setupCanvas(canvas, tokens.length * bar + 50, height + 8);
  const top = Math.max(...rms, 1e-12);
  ctx.font = '10px ui-monospace, "DejaVu Sans Mono", monospace';
  ctx.fillStyle = "#667085";
  ctx.textAlign = "right";
  ctx.fillText(top.toFixed(2), 44, 10);
  ctx.fillText("0", 44, height);
  rms.forEach((v, i) => {
    const h = (v / top) * (height - 8);
    ctx.fillStyle = i === active ? "#2f5bd3" : "#9aaed8";
    ctx.fillRect(50 + i * bar, height - h, bar - 2, h);
  });
  canvas.onclick = (ev) => {
    const i = Math.floor((ev.clientX - canvas.getBoundingClientRect().left - 50) / bar);
    if (i >= 0 && i < tokens.length) onPick(i);
  };
}

function diverging(v, scale) {
  // red (negative) -> white (0) -> blue (positive)
  const t = Math.max(-1, Math.min(1, v / scale));
  const [end, white] = [t < 0 ? [178, 24, 43] : [33, 102, 172], [255, 255, 255]];
  const c = white.map((w, j) => Math.round(w + Math.abs(t) * (end[j] - w)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function drawStrips(canvas, strips) {
  const d = strips[0][1].length;
  const cell = Math.max(3, Math.min(14, Math.floor(960 / d)));
  const left = 70, rowH = 22;
  const ctx = setupCanvas(canvas, left + d * cell + 4, strips.length * rowH + 4);
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  const scale = Math.max(...strips.flatMap(([, v]) => v.map(Math.abs)), 1e-12);   // one scale: sizes compare
  strips.forEach(([name, v], row) => {
    ctx.fillStyle = "#1d2330";
    ctx.textAlign = "right";
    ctx.fillText(name, left - 8, row * rowH + rowH / 2);
    v.forEach((x, j) => {
      ctx.fillStyle = diverging(x, scale);
      ctx.fillRect(left + j * cell, row * rowH + 2, cell - (cell > 4 ? 1 : 0), rowH - 4);
    });
  });
  $("rms-lo").textContent = (-scale).toFixed(2);
  $("rms-hi").textContent = `+${scale.toFixed(2)}`;
}

// ---- top-k per step ----------------------------------------------------------------------------

function renderSteps(steps) {
  const box = $("steps");
  box.replaceChildren();
  for (const s of steps) {
    const card = document.createElement("div");
    card.className = "step";
    const head = document.createElement("div");
    head.className = "step-head";
    const ctx = document.createElement("code");
    ctx.textContent = s.context;
    const chosen = document.createElement("code");
    chosen.textContent = s.chosen;
    fill(head, "explorer.step_head", { pos: s.position, context: ctx, chosen });
    card.append(head);
    for (const c of s.candidates) card.append(candidateRow(c, c.token === s.chosen));
    box.append(card);
  }
}

function candidateRow(c, chosen) {
  const row = document.createElement("div");
  row.className = chosen ? "cand chosen" : "cand";
  const tok = document.createElement("span");
  tok.className = "tok";
  tok.textContent = c.token;
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${(100 * c.prob).toFixed(1)}%`;
  bar.append(fill);
  const p = document.createElement("span");
  p.className = "p";
  p.textContent = `${(100 * c.prob).toFixed(1)}%`;
  row.append(tok, bar, p);
  return row;
}

// ---- wiring ------------------------------------------------------------------------------------

$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value;
  if (text.trim()) explain(text);
});
$("heatmap").addEventListener("mousemove", onHeatmapMove);
$("heatmap").addEventListener("mouseleave", () => { state.hover = null; $("tooltip").hidden = true; if (state.data) renderAttentionOnly(); });

applyLanguage();
loadModel().then(() => {
  const text = new URLSearchParams(location.search).get("text");
  if (text) { $("text").value = text; explain(text); }
}).catch((err) => {
  $("model-summary").textContent = t("explorer.unreachable", { error: err.message });
});
