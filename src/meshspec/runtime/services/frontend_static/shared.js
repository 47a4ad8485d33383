// What the status page and the dashboard share: the API, DOM helpers, the topology, the alerts list.
"use strict";
// Relative, so the pages work where the frontend serves them and behind the proxy's /svc/frontend/ prefix.
const API = "api/v1/mesh";
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(path) {
  const resp = await fetch(API + path, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${body.error || ""}`);
  return body;
}

// Layered layout: a service sits one column right of the deepest service it depends on.
// `label(node)` is the text beside each node, in columns `colW` wide; `edgeAttrs(edge)` adds to each edge's line;
// `edgeLabel(edge)`, when it says something, is written at the line's middle.
function drawTopology(svg, data, label = (n) => n.id, edgeAttrs = () => ({}), colW = 190, edgeLabel = () => "") {
  const deps = new Map(data.nodes.map((n) => [n.id, []]));
  for (const e of data.edges) if (deps.has(e.source) && deps.has(e.target)) deps.get(e.source).push(e.target);
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0; // a cycle: cut it
    seen.add(id);
    const d = Math.max(-1, ...deps.get(id).map((t) => depthOf(t, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  data.nodes.forEach((n) => depthOf(n.id));
  const columns = [];
  for (const n of data.nodes) (columns[depth.get(n.id)] ||= []).push(n);
  const rowH = 22, pos = new Map();
  columns.forEach((col, c) => col.forEach((n, r) => pos.set(n.id, { x: 12 + c * colW, y: 16 + r * rowH })));
  const height = 24 + rowH * Math.max(1, ...columns.map((c) => c.length));
  svg.setAttribute("viewBox", `0 0 ${Math.max(1, columns.length) * colW + 40} ${height}`);
  svg.setAttribute("height", height);
  const parts = [], edgeTexts = [];
  for (const e of data.edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) continue;
    const edge = `${e.source}->${e.target}`;
    parts.push(svgEl("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, "data-edge": edge, ...edgeAttrs(e) }));
    const text = edgeLabel(e);
    if (text) edgeTexts.push(svgEl("text", { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 3, class: "edge-rate", "data-edge": edge }, text));
  }
  for (const n of data.nodes) {
    const p = pos.get(n.id);
    parts.push(svgEl("circle", { cx: p.x, cy: p.y, r: 5, class: n.status }));
    parts.push(svgEl("text", { x: p.x + 9, y: p.y + 4 }, label(n)));
  }
  svg.replaceChildren(...parts, ...edgeTexts);
}

// Alertmanager's active alerts of the mesh's rules; the page stands without them (its own line says why).
async function refreshAlerts(list) {
  let items;
  try {
    const data = await getJSON("/alerts");
    items = data.alerts.map((a) =>
      el("li", { "data-alert": a.name }, el("span", { class: `badge ${a.severity}` }, a.severity),
        ` ${a.name}: ${a.summary || Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(" ")}` +
        ` (since ${new Date(a.starts_at).toLocaleTimeString()})`));
    if (!items.length) items = [el("li", {}, "none")];
  } catch (err) {
    items = [el("li", { class: "error" }, `alerts unavailable: ${err.message || err}`)];
  }
  list.replaceChildren(...items);
}
