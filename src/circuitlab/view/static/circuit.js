// circuitlab circuit page: draws the circuit embedded as JSON in #circuit-data. No network, no libraries.
"use strict";
const D = JSON.parse(document.getElementById("circuit-data").textContent);
const SVG_NS = "http://www.w3.org/2000/svg";
const COL_W = 230, PAD = 14, STEP = 13, R = 4.5, LABEL_W = 92, TOP = 34, ROW_GAP = 16;
const state = { a: 0, b: -1, residual: true, selected: null };

function el(tag, attrs, parent, ns) {
  const e = ns ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function text(tag, content, attrs, parent) {
  const e = el(tag, attrs, parent);
  e.textContent = content;
  return e;
}
function fmt(x, digits) {
  if (x === null || x === undefined) return "n/a";
  if (typeof x !== "number") return String(x);
  return Math.abs(x) >= 1000 ? x.toFixed(0) : x.toPrecision(digits || 4);
}
function column(node) { return node.layer === null ? D.n_layer : node.layer; }

// The nodes on show: method A's, or the union of A and B with each node's membership.
function shown() {
  const a = D.methods[state.a], b = state.b >= 0 ? D.methods[state.b] : null;
  const inA = new Set(a.nodes), inB = new Set(b ? b.nodes : []);
  const names = b ? [...new Set([...a.nodes, ...b.nodes])] : a.nodes.slice();
  const member = (n) => (!b ? "a" : inA.has(n) && inB.has(n) ? "both" : inA.has(n) ? "only-a" : "only-b");
  const edges = new Map();
  for (const m of b ? [a, b] : [a]) for (const e of m.edges) edges.set(e[0] + ">" + e[1], e);
  return { a, b, names, member, edges: [...edges.values()] };
}

// Positions: one column per layer (final last), one band per site; nodes wrap inside their cell.
function layout(names) {
  const perRow = Math.floor((COL_W - 2 * PAD) / STEP);
  const cells = new Map();
  for (const n of names) {
    const node = D.nodes[n], key = column(node) + "|" + node.site;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(n);
  }
  const lines = {};
  for (const s of D.sites) lines[s] = 1;
  for (const [key, list] of cells) {
    list.sort((x, y) => D.nodes[x].index - D.nodes[y].index);
    const site = key.split("|")[1];
    lines[site] = Math.max(lines[site], Math.ceil(list.length / perRow));
  }
  const rowY = {};
  let y = TOP;
  for (const s of D.sites) { rowY[s] = y; y += lines[s] * STEP + ROW_GAP; }
  const pos = {};
  for (const [key, list] of cells) {
    const [col, site] = key.split("|");
    list.forEach((n, i) => {
      pos[n] = { x: LABEL_W + Number(col) * COL_W + PAD + (i % perRow) * STEP + R,
                 y: rowY[site] + Math.floor(i / perRow) * STEP + R + 2 };
    });
  }
  return { pos, rowY, lines, height: y + 10, width: LABEL_W + (D.n_layer + 1) * COL_W };
}

function edgePath(p, q) {
  if (Math.abs(p.x - q.x) < COL_W / 2) {  // inside one layer: bow out to the right
    const bow = 18 + Math.abs(p.y - q.y) * 0.15;
    return `M${p.x},${p.y} C${p.x + bow},${p.y} ${q.x + bow},${q.y} ${q.x},${q.y}`;
  }
  const mx = (p.x + q.x) / 2;
  return `M${p.x},${p.y} C${mx},${p.y} ${mx},${q.y} ${q.x},${q.y}`;
}

// Weight edges end at attn.out / mlp.out; only residual edges start there.
function isResidual(e) {
  const s = D.nodes[e[0]];
  return Boolean(s) && (s.site === "attn.out" || s.site === "mlp.out");
}

function draw() {
  const view = shown(), L = layout(view.names);
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  svg.setAttribute("width", L.width);
  svg.setAttribute("height", L.height);
  for (let c = 0; c <= D.n_layer; c++) {
    const x = LABEL_W + c * COL_W;
    el("rect", { x: x + 2, y: 4, width: COL_W - 4, height: L.height - 8, class: "col" }, svg, true);
    const t = el("text", { x: x + COL_W / 2, y: 20, class: "col-label" }, svg, true);
    t.textContent = c === D.n_layer ? "final" : "layer " + c;
  }
  for (const s of D.sites) {
    const t = el("text", { x: 6, y: L.rowY[s] + 10, class: "row-label" }, svg, true);
    t.textContent = s;
  }
  const edgeLayer = el("g", { id: "edges" }, svg, true), nodeLayer = el("g", { id: "nodes" }, svg, true);
  const maxW = Math.max(1e-9, ...view.edges.map((e) => Math.abs(e[2] || 0)));
  for (const e of view.edges) {
    const p = L.pos[e[0]], q = L.pos[e[1]];
    if (!p || !q || (!state.residual && isResidual(e))) continue;
    const w = e[2], mag = w === null ? 0.3 : Math.abs(w) / maxW;
    const cls = w === null ? "edge unknown" : w >= 0 ? "edge pos" : "edge neg";
    el("path", { d: edgePath(p, q), class: cls, "stroke-width": (0.4 + 2.6 * mag).toFixed(2),
                 "stroke-opacity": (0.15 + 0.6 * mag).toFixed(2), "data-src": e[0], "data-dst": e[1] },
       edgeLayer, true);
  }
  for (const n of view.names) {
    const p = L.pos[n];
    const freq = view.a.frequency ? view.a.frequency[n] : undefined;  // share of pruning seeds keeping n
    const c = el("circle", { cx: p.x, cy: p.y, r: R, class: "node " + view.member(n), "data-name": n,
                             ...(freq === undefined ? {} : { "fill-opacity": (0.2 + 0.8 * freq).toFixed(2) }) },
                 nodeLayer, true);
    c.addEventListener("mouseenter", (ev) => tooltip(n, ev, view));
    c.addEventListener("mousemove", (ev) => moveTip(ev));
    c.addEventListener("mouseleave", () => { document.getElementById("tip").hidden = true; });
    c.addEventListener("click", () => select(n));
  }
  document.getElementById("legend-diff").hidden = !view.b;
  document.getElementById("shown").textContent =
    `${view.names.length} nodes, ${view.edges.length} edges` + (view.b ? ` (union of ${view.a.label} and ${view.b.label})` : "");
  if (state.selected && L.pos[state.selected]) select(state.selected); else details(null);
}

function scoreLines(n, view) {
  const out = [];
  for (const m of view.b ? [view.a, view.b] : [view.a]) {
    const s = m.scores[n];
    out.push(`mask score (${m.label}): ${s === undefined ? "not kept" : fmt(s)}`);
    if (m.frequency) out.push(`kept by ${Math.round(100 * (m.frequency[n] || 0))}% of ${m.n_seeds} pruning seeds`);
  }
  return out;
}

function tooltip(n, ev, view) {
  const tip = document.getElementById("tip"), node = D.nodes[n];
  tip.replaceChildren();
  text("b", n, {}, tip);
  for (const line of [...scoreLines(n, view), `mean activation: ${fmt(node.mean)}`,
                      `loss change, ablated alone: ${node.delta === null ? "n/a" : fmt(node.delta)}`]) {
    text("div", line, {}, tip);
  }
  tip.hidden = false;
  moveTip(ev);
}
function moveTip(ev) {
  const tip = document.getElementById("tip");
  tip.style.left = ev.pageX + 14 + "px";
  tip.style.top = ev.pageY + 10 + "px";
}

function select(n) {
  state.selected = n;
  for (const c of document.querySelectorAll("#nodes .node")) c.classList.toggle("selected", c.dataset.name === n);
  for (const p of document.querySelectorAll("#edges .edge")) {
    const on = p.dataset.src === n || p.dataset.dst === n;
    p.classList.toggle("hl", on);
    p.classList.toggle("dim", !on);
  }
  details(n);
}

function details(n) {
  const box = document.getElementById("details");
  box.replaceChildren();
  if (!n) { text("p", "Click a node to see what it responds to.", { class: "muted" }, box); return; }
  const node = D.nodes[n], view = shown();
  text("h2", n, {}, box);
  const facts = el("ul", { class: "facts" }, box);
  for (const line of [...scoreLines(n, view), `mean activation over corpus tokens: ${fmt(node.mean)}`]) {
    text("li", line, {}, facts);
  }
  const ab = D.ablation || {};
  text("li", node.delta === null || node.delta === undefined
    ? "task-loss change when ablated alone: not computed" + (D.notes.ablation ? ` (${D.notes.ablation})` : "")
    : `task-loss change when ablated alone: ${node.delta >= 0 ? "+" : ""}${fmt(node.delta)} ` +
      `(full model ${fmt(ab.base_loss)}, ${ab.pairs} test pairs, ${ab.ablation} ablation)`,
  { class: "delta" }, facts);
  text("h3", "Top-activating corpus examples", {}, box);
  const ex = el("ol", { id: "examples", class: "examples" }, box);
  if (!node.examples) {
    text("li", D.notes.examples || "none recorded", { class: "muted" }, ex);
    return;
  }
  for (const h of node.examples) {
    const li = el("li", { class: "example" }, ex);
    text("span", fmt(h.activation, 3), { class: "act" }, li);
    const snippet = el("span", { class: "snippet" }, li);
    text("span", h.before, {}, snippet);
    text("mark", h.token.replace(/\n/g, "\u21b5\n"), {}, snippet);
    text("span", h.after, {}, snippet);
  }
}

function summary() {
  const c = D.circuit, box = document.getElementById("summary");
  const v = c.validations || {};
  const rows = [["task", `${c.suite ? c.suite + ":" : ""}${c.task}`], ["method", c.method],
    ["nodes / edges", `${c.node_count} / ${c.edge_count} (of ${c.total_nodes} nodes)`],
    ["test loss", `${fmt(c.loss)} (target ${fmt(c.target_loss)} on train pairs: ${c.reached ? "reached" : "NOT reached"})`],
    ["full model", `loss ${fmt(c.full_model_loss)}, accuracy ${fmt(c.full_model_accuracy, 3)}`],
    ["validations", `sufficiency ${fmt(v.sufficiency)}, necessity ${fmt(v.necessity)}, random ${fmt(v.random)}`]];
  for (const [k, val] of rows) { const tr = el("tr", {}, box); text("th", k, {}, tr); text("td", val, {}, tr); }
  const notes = document.getElementById("notes");
  for (const note of Object.values(D.notes)) text("li", note, {}, notes);
}

function controls() {
  const a = document.getElementById("method-a"), b = document.getElementById("method-b");
  D.methods.forEach((m, i) => {
    const label = `${m.label} (${m.node_count} nodes, ${m.edge_count} edges)`;
    text("option", label, { value: i }, a);
    text("option", label, { value: i }, b);
  });
  a.addEventListener("change", () => { state.a = Number(a.value); draw(); });
  b.addEventListener("change", () => { state.b = Number(b.value); draw(); });
  document.getElementById("residual").addEventListener("change", (ev) => { state.residual = ev.target.checked; draw(); });
  document.getElementById("methods-box").hidden = D.methods.length < 2;
}

summary();
controls();
draw();
