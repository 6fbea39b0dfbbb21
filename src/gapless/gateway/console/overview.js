// Overview: clusters (holder, fence, lease, members, a switchover action), cameras with their
// protection, alerts for everything not fully protected, and the newest events.

import { $, actionButton, api, cell, element, me } from "./console.js";

let lastEvent = 0;
const events = [];

function protection(camera, clusters) {
  if (camera.cluster === null) return camera.holder ? ["paired", "state-ok"] : ["unprotected", "state-bad"];
  const cluster = clusters.get(camera.cluster);
  if (!cluster || !cluster.holder) return ["unprotected: nobody holds the token", "state-bad"];
  const down = cluster.members.filter((m) => !m.alive).map((m) => `${m.id} down`);
  const behind = cluster.members.filter((m) => m.alive && !m.ready).map((m) => `${m.id} catching up`);
  if (down.length || behind.length) return [`degraded: ${[...down, ...behind].join(", ")}`, "state-warn"];
  return ["protected", "state-ok"];
}

function switchover(cluster) {
  return actionButton(
    "Switch over",
    async () => {
      const answer = await api(`/api/v1/clusters/${encodeURIComponent(cluster.id)}/switchover`, { json: {} });
      return `switchover of ${answer.cluster} asked: ${answer.from ?? "nobody"} → ${answer.to}`;
    },
    { className: "action switchover" },
  );
}

export async function overview() {
  const started = performance.now();
  const cameras = (await api("/api/v1/cameras")).cameras;
  const clusterIds = [...new Set(cameras.map((c) => c.cluster).filter((id) => id !== null))];
  const views = await Promise.all(clusterIds.map((id) => api(`/api/v1/clusters/${encodeURIComponent(id)}`)));
  const clusters = new Map(views.map((view) => [view.id, view]));

  const alerts = [];
  const clusterRows = $("#clusters tbody");
  clusterRows.replaceChildren();
  for (const cluster of clusters.values()) {
    const row = clusterRows.insertRow();
    row.dataset.cluster = cluster.id;
    cell(row, cluster.id);
    cell(row, cluster.holder ?? "nobody", cluster.holder ? "holder state-ok" : "holder state-bad");
    cell(row, cluster.fence);
    cell(row, cluster.lease_remaining === null ? null : `${cluster.lease_remaining.toFixed(1)} s of ${cluster.lease_ttl} s`);
    cell(row, cluster.members.map((m) => `${m.id} ${m.alive ? (m.ready ? "ready" : "catching up") : "down"}`).join(", "));
    if (me.management) row.insertCell().append(switchover(cluster));
    else cell(row, "");
    for (const member of cluster.members) {
      if (!member.alive) alerts.push(`cluster ${cluster.id}: ${member.id} is down`);
      else if (!member.ready) alerts.push(`cluster ${cluster.id}: ${member.id} is catching up (${member.backfill_open ?? 0} backfill open)`);
    }
    if (!cluster.holder) alerts.push(`cluster ${cluster.id}: nobody holds the token`);
    if (!cluster.coordinator_reachable) alerts.push(`cluster ${cluster.id}: the coordinator cannot be reached`);
  }

  const cameraRows = $("#cameras tbody");
  const rows = [];
  let protectedCount = 0;
  for (const camera of cameras) {
    const row = document.createElement("tr");
    row.dataset.camera = camera.id;
    const [said, className] = protection(camera, clusters);
    cell(row, camera.id);
    cell(row, camera.holder, "holder");
    cell(row, said, className);
    cell(row, camera.cluster === null ? "pair" : `cluster ${camera.cluster}`);
    if (className === "state-ok") protectedCount += 1;
    else alerts.push(`camera ${camera.id}: ${said}`);
    rows.push(row);
  }
  cameraRows.replaceChildren(...rows);
  $("#camera-count").textContent = `${protectedCount} of ${cameras.length} fully protected`;
  $("#alerts").replaceChildren(...alerts.map((text) => element("div", { className: "alert", textContent: text })));
  await refreshEvents();
  const section = $("#overview");
  section.dataset.settledMs = (performance.now() - started).toFixed(0);
  section.dataset.cameras = String(cameras.length);
}

async function refreshEvents() {
  let page;
  try {
    page = await api(`/api/v1/events?after=${lastEvent}&limit=1000`);
  } catch (problem) {
    return; // a standalone gateway keeps no event log
  }
  for (const event of page.events) {
    events.push(event);
    lastEvent = event.id;
  }
  events.splice(0, Math.max(0, events.length - 50));
  $("#events").replaceChildren(
    ...events
      .slice()
      .reverse()
      .map((e) => element("li", { textContent: `${e.time.slice(11, 19)} ${e.kind}: ${e.message}` })),
  );
}
