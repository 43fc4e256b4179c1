// The qkv explorer: type a sentence, see the model's output, its tokens, every attention map
// (kind / layer / head, or all heads averaged) and the top-k next tokens at each step.
// Plain JavaScript, no libraries: the heatmaps are drawn on <canvas>.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, data: null, kind: 0, layer: 0, head: -1, hover: null };
const SPECIAL = new Set(["<pad>", "<bos>", "<eos>", "<unk>"]);
const FONT = '13px ui-monospace, "DejaVu Sans Mono", monospace';

// ---- talking to the server -------------------------------------------------------------------

async function postJSON(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.message || (typeof data.detail === "string" ? data.detail : `HTTP ${res.status}`));
  return data;
}

async function loadModel() {
  const res = await fetch("/v1/model");
  const m = await res.json();
  state.model = m;
  const c = m.config;
  const layers = m.kind === "translation" ? `${c.n_encoder_layers}+${c.n_decoder_layers} layers` : `${c.n_decoder_layers} layers`;
  $("model-summary").textContent =
    `${m.kind} model · ${layers} · ${c.n_heads} heads · d_model ${c.d_model} · ${m.parameters.toLocaleString("en")} parameters`;
  const lm = m.kind === "language-model";
  $("text-label").textContent = lm ? "Prompt" : "Source sentence";
  $("go").textContent = lm ? "Generate" : "Translate";
  $("output-title").textContent = lm ? "Continuation" : "Translation";
  $("text").maxLength = 200;
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
    state.head = -1;
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
    out.textContent = d.output || "(empty)";
  }
  $("timing").textContent = `explained in ${d.elapsed_ms.toFixed(0)} ms`;
  renderTokens(d);
  renderControls();
  renderAttention();
  renderSteps(d.steps);
}

function renderTokens(d) {
  const box = $("tokens");
  box.replaceChildren();
  if (d.kind === "translation") {
    box.append(tokenLine("source", d.source_tokens), tokenLine("output", d.output_tokens));
  } else {
    box.append(tokenLine("sequence", d.output_tokens));
  }
}

function tokenLine(what, tokens) {
  const line = document.createElement("div");
  line.className = "token-line";
  const label = document.createElement("span");
  label.className = "what";
  label.textContent = `${what} (${tokens.length})`;
  line.append(label);
  tokens.forEach((t, i) => {
    const chip = document.createElement("span");
    chip.className = SPECIAL.has(t) ? "chip special" : "chip";
    chip.append(document.createTextNode(t));
    const idx = document.createElement("small");
    idx.textContent = i;
    chip.append(idx);
    line.append(chip);
  });
  return line;
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
  const shortName = { encoder: "Encoder self", decoder: "Decoder masked self", cross: "Cross" };
  segmented($("kinds"), maps.map((m, i) => [shortName[m.kind], i]), state.kind, (i) => {
    state.kind = i;
    state.layer = Math.min(state.layer, maps[i].weights.length - 1);
    rerender();
  });
  segmented($("layers"), map.weights.map((_, i) => [String(i + 1), i]), state.layer, (i) => { state.layer = i; rerender(); });
  const heads = [["all (avg)", -1], ...map.weights[0].map((_, h) => [String(h + 1), h])];
  segmented($("heads"), heads, state.head, (h) => { state.head = h; rerender(); });
}

function rerender() {
  renderControls();
  renderAttention();
}

function currentMatrix(map, layer, head) {
  const heads = map.weights[layer];
  if (head >= 0) return heads[head];
  return heads[0].map((row, q) => row.map((_, k) => heads.reduce((s, h) => s + h[q][k], 0) / heads.length));
}

function renderAttention() {
  const map = state.data.attention[state.kind];
  const headName = state.head < 0 ? "all heads averaged" : `head ${state.head + 1}`;
  $("heat-title").textContent = `${map.title} · layer ${state.layer + 1} · ${headName}`;
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
    label.textContent = h < 0 ? "avg" : `head ${h + 1}`;
    item.append(c, label);
    item.addEventListener("click", () => { state.head = h; rerender(); });
    box.append(item);
  }
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
    head.append(`step ${s.position} · after `, ctx, " → ", chosen);
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

loadModel().then(() => {
  const text = new URLSearchParams(location.search).get("text");
  if (text) { $("text").value = text; explain(text); }
}).catch((err) => {
  $("model-summary").textContent = `cannot reach the model: ${err.message}`;
});
