// The mesh status page: polls backend-api (through this server's /api/) and renders it (shared.js: the helpers).
"use strict";
const REFRESH_MS = 5000;

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
        s.instances.map((i) => `${i.address}:${i.port}` + (i.host ? ` on ${i.host}` : "")).join(", ")),
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

function renderTopology(data) {
  drawTopology($("topology"), data);
  $("edges").replaceChildren(...data.edges.map((e) =>
    el("li", {}, `${e.source} → ${e.target}${e.target_registered ? "" : " (not registered)"}`)));
}

async function refresh() {
  refreshAlerts($("alerts"));
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
