// The mesh status page: polls backend-api (through this server's /api/) and renders it.
"use strict";
const API = "/api/v1/mesh";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function getJSON(path) {
  const resp = await fetch(API + path, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${body.error || ""}`);
  return body;
}

function renderServices(data) {
  const kind = $("kind-filter").value;
  const kinds = [...new Set(data.services.map((s) => s.kind).filter(Boolean))].sort();
  const select = $("kind-filter");
  if (select.options.length !== kinds.length + 1) {
    select.replaceChildren(el("option", { value: "" }, "all"), ...kinds.map((k) => el("option", { value: k }, k)));
    select.value = kinds.includes(kind) ? kind : "";
  }
  const rows = data.services.filter((s) => !select.value || s.kind === select.value).map((s) =>
    el("tr", { "data-service": s.name },
      el("td", {}, s.name),
      el("td", {}, s.kind || "–"),
      el("td", {}, el("span", { class: `badge ${s.status}` }, s.status)),
      el("td", {}, `${s.counts.passing}/${s.instances.length} passing ` +
        s.instances.map((i) => `${i.address}:${i.port}`).join(", ")),
      el("td", {}, ...s.tags.map((t) => el("span", { class: "tag" }, t)))));
  $("services").tBodies[0].replaceChildren(...rows);
  $("count-services").textContent = data.count;
  $("count-instances").textContent = data.services.reduce((n, s) => n + s.instances.length, 0);
}

function renderHealth(data) {
  for (const s of ["passing", "warning", "critical"]) $(`count-${s}`).textContent = data.instances_by_status[s];
  const failing = data.instances.filter((i) => i.status !== "passing").map((i) =>
    el("li", {}, el("span", { class: `badge ${i.status}` }, i.status), ` ${i.service} (${i.id}): `,
      i.checks.filter((c) => c.status !== "passing").map((c) => `${c.name}: ${c.output}`).join("; ")));
  $("failing").replaceChildren(...(failing.length ? failing : [el("li", {}, "none")]));
}

// Layered layout: a service sits one column right of the deepest service it depends on.
function renderTopology(data) {
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
  const colW = 190, rowH = 22, pos = new Map();
  columns.forEach((col, c) => col.forEach((n, r) => pos.set(n.id, { x: 12 + c * colW, y: 16 + r * rowH })));
  const height = 24 + rowH * Math.max(1, ...columns.map((c) => c.length));
  const svg = $("topology");
  svg.setAttribute("viewBox", `0 0 ${Math.max(1, columns.length) * colW + 40} ${height}`);
  svg.setAttribute("height", height);
  const NS = "http://www.w3.org/2000/svg";
  const make = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const parts = [];
  for (const e of data.edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (a && b) parts.push(make("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
  }
  for (const n of data.nodes) {
    const p = pos.get(n.id);
    parts.push(make("circle", { cx: p.x, cy: p.y, r: 5, class: n.status }));
    parts.push(make("text", { x: p.x + 9, y: p.y + 4 }, n.id));
  }
  svg.replaceChildren(...parts);
  $("edges").replaceChildren(...data.edges.map((e) =>
    el("li", {}, `${e.source} → ${e.target}${e.target_registered ? "" : " (not registered)"}`)));
}

// Alertmanager's active alerts of the mesh's rules; the page stands without them (its own line says why).
async function refreshAlerts() {
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
  $("alerts").replaceChildren(...items);
}

async function refresh() {
  refreshAlerts();
  try {
    const [services, health, topology] = await Promise.all(
      [getJSON("/services"), getJSON("/health"), getJSON("/topology")]);
    renderServices(services);
    renderHealth(health);
    renderTopology(topology);
    $("error").hidden = true;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("error").textContent = String(err.message || err);
    $("error").hidden = false;
  }
}

$("kind-filter").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
