// The mesh dashboard: each service's last hour as the mesh's Prometheus has it (backend-api's
// /metrics), the topology with the rate into each service, the active alerts, the slowest traced
// requests with links into Phoenix (backend-api's /traces/slow). Charts are plain SVG
// (shared.js: the helpers).
"use strict";
const REFRESH_MS = 15000;
const CHART = { w: 240, h: 44, pad: 3 };
const TOPOLOGY_COLUMN = 260; // room for a name and its rate
const FORMATS = {
  reqps: (v) => `${v.toFixed(v < 10 ? 2 : 0)} req/s`,
  percentunit: (v) => `${(v * 100).toFixed(v < 0.1 ? 2 : 1)} %`,
  s: (v) => (v < 1 ? `${(v * 1000).toFixed(0)} ms` : `${v.toFixed(2)} s`),
};

// One series over the window, scaled to its own maximum; where a point is missing for more than
// a step (a service without answers has no error ratio) the line breaks.
function sparkline(points, window, panel, service) {
  const max = Math.max(0, ...points.map(([, v]) => v));
  const top = max > 0 ? max : 1;
  const x = (t) => CHART.pad + ((t - window.start) / (window.end - window.start)) * (CHART.w - 2 * CHART.pad);
  const y = (v) => CHART.h - CHART.pad - (v / top) * (CHART.h - 2 * CHART.pad);
  let d = "", previous = null;
  for (const [t, v] of points) {
    const joined = previous !== null && t - previous <= window.step * 1.5;
    d += `${joined ? "L" : "M"}${x(t).toFixed(1)} ${y(v).toFixed(1)} `;
    previous = t;
  }
  const svg = svgEl("svg", { class: "chart", width: CHART.w, height: CHART.h, viewBox: `0 0 ${CHART.w} ${CHART.h}`,
    "data-panel": panel.id, "data-service": service });
  svg.append(svgEl("line", { x1: 0, x2: CHART.w, y1: CHART.h - CHART.pad, y2: CHART.h - CHART.pad, class: "axis" }));
  if (d) svg.append(svgEl("path", { d: d.trim() }));
  svg.append(svgEl("title", {}, `${service}: ${panel.title}, at most ${FORMATS[panel.unit](max)} in the window`));
  return svg;
}

function renderPanels(data) {
  const byService = new Map();
  for (const panel of data.panels) {
    for (const s of panel.series) {
      if (!byService.has(s.service)) byService.set(s.service, {});
      byService.get(s.service)[panel.id] = s.points;
    }
  }
  // The busiest services first: requests summed over the window.
  const volume = (name) => (byService.get(name).requests || []).reduce((n, [, v]) => n + v, 0);
  const services = [...byService.keys()].sort((a, b) => volume(b) - volume(a) || a.localeCompare(b));
  $("panels").tHead.rows[0].replaceChildren(el("th", {}, "service"),
    ...data.panels.map((p) => el("th", { title: p.caption }, p.title)));
  $("panels").tBodies[0].replaceChildren(...services.map((name) =>
    el("tr", { "data-service": name }, el("td", {}, name), ...data.panels.map((panel) => {
      const points = byService.get(name)[panel.id] || [];
      const now = points.length ? FORMATS[panel.unit](points[points.length - 1][1]) : "no data";
      return el("td", {}, sparkline(points, data.window, panel, name), el("span", { class: "now" }, now));
    }))));
  $("captions").replaceChildren(...data.panels.flatMap((p) => [el("dt", {}, p.title), el("dd", {}, p.caption)]));
  const from = new Date(data.window.start * 1000).toLocaleTimeString();
  const to = new Date(data.window.end * 1000).toLocaleTimeString();
  $("source").textContent = `${services.length} services, ${from}–${to}, a point every ${data.window.step} s; ` +
    `from prometheus's query API via the ${data.source.via} (${data.source.url.split("?")[0]})`;
}

// The latest request rate into each service labels it; each line (caller -> service) carries the
// caller's own rate into it, drawn thicker while it has traffic.
function renderTopology(topology, metrics) {
  const latest = (s) => s.points[s.points.length - 1][1];
  const requests = metrics.panels.find((p) => p.id === "requests");
  const now = new Map(requests.series.filter((s) => s.points.length).map((s) => [s.service, latest(s)]));
  const edges = new Map(metrics.edges.series.filter((s) => s.points.length)
    .map((s) => [`${s.caller}->${s.service}`, latest(s)]));
  const onEdge = (e) => edges.get(`${e.source}->${e.target}`) || 0;
  drawTopology($("topology"), topology,
    (n) => (now.has(n.id) ? `${n.id} ← ${FORMATS.reqps(now.get(n.id))}` : n.id),
    (e) => (onEdge(e) > 0 ? { class: "busy" } : {}), TOPOLOGY_COLUMN,
    (e) => (onEdge(e) > 0 ? FORMATS.reqps(onEdge(e)) : ""));
}

// The slowest traced requests with their links into Phoenix's UI; the page stands without them.
async function refreshSlowTraces() {
  const body = $("slow-traces").tBodies[0];
  let data;
  try {
    data = await getJSON("/traces/slow?limit=10");
  } catch (err) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "error" }, `traces unavailable: ${err.message || err}`)));
    return;
  }
  $("sampling").textContent = data.sampling === null ? "not known to backend-api" : FORMATS.percentunit(Number(data.sampling));
  $("phoenix").textContent = data.phoenix
    ? `Each link opens the trace in Phoenix's own UI, at ${data.phoenix}: the address the registry gives its instance, ` +
      "which your browser must reach (the proxy does not relay Phoenix's UI)."
    : `No links: ${data.no_link}.`;
  const rows = data.traces.map((t) => el("tr", { "data-trace": t.trace_id },
    el("td", {}, FORMATS.s(t.duration_ms / 1000)),
    el("td", {}, new Date(t.start_time).toLocaleTimeString()),
    el("td", {}, t.service ? `${t.service} / ${t.instance}` : "unknown"),
    el("td", {}, t.span || "no entry span"),
    el("td", {}, t.spans),
    el("td", {}, t.link ? el("a", { href: t.link, target: "_blank", rel: "noopener", class: "trace-link" }, t.trace_id)
      : t.trace_id)));
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6 }, "no traced request in the last hour"))]));
}

async function refresh() {
  refreshAlerts($("alerts"));
  refreshSlowTraces();
  try {
    const [metrics, topology] = await Promise.all([getJSON("/metrics"), getJSON("/topology")]);
    renderPanels(metrics);
    renderTopology(topology, metrics);
    $("error").hidden = true;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("error").textContent = String(err.message || err);
    $("error").hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
