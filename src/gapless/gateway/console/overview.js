// Overview: clusters (holder, fence, lease, members, a switchover action), pairs, recorders (disk,
// feeds), cameras with their protection and recording state, alerts for everything not fully
// protected (a recorder down, a disk failing or filling, a feed lost, a camera clock that is off),
// and the newest events.

import { $, actionButton, api, cell, element, me } from "./console.js";

let lastEvent = 0;
const events = [];
const DISK_LOW_BYTES = 2 * 1024 ** 3; // less free space than this on a recorder: an alert
const CLOCK_OFF_MS = 2000; // a camera clock further off than this: an alert (its frames are timed by arrival)

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

function recordersTable(recorders, alerts) {
  const rows = recorders.map((recorder) => {
    const row = document.createElement("tr");
    row.dataset.recorder = recorder.id;
    const feeds = Object.entries(recorder.cameras);
    const recording = feeds.filter(([, feed]) => feed.state === "recording").length;
    cell(row, recorder.id);
    cell(row, recorder.cluster ? `cluster ${recorder.cluster}` : "independent");
    cell(row, recorder.reachable ? "up" : "unreachable", recorder.reachable ? "state-ok" : "state-bad");
    const free = recorder.disk_free_bytes;
    const diskBad = recorder.storage_error || (free !== null && free < DISK_LOW_BYTES);
    cell(row, free === null ? null : `${(free / 1024 ** 3).toFixed(1)} GiB free`, diskBad ? "disk state-bad" : "disk");
    cell(row, recorder.reachable ? `${recording} of ${feeds.length} recording` : null, recording < feeds.length ? "state-warn" : "");
    if (!recorder.reachable) alerts.push(`recorder ${recorder.id} cannot be reached: ${recorder.error}`);
    if (recorder.storage_error) alerts.push(`recorder ${recorder.id}: storage failing: ${recorder.storage_error}`);
    else if (free !== null && free < DISK_LOW_BYTES) alerts.push(`recorder ${recorder.id}: disk nearly full (${(free / 1024 ** 2).toFixed(0)} MiB free)`);
    for (const [camera, feed] of feeds) {
      if (feed.state !== "recording") alerts.push(`camera ${camera} on ${recorder.id}: ${feed.state}${feed.reason ? `: ${feed.reason}` : ""}`);
      const offset = feed.camera_clock_offset_ms;
      if (offset !== null && Math.abs(offset) > CLOCK_OFF_MS) {
        alerts.push(`camera ${camera}: its clock is off by ${(offset / 1000).toFixed(1)} s (seen by ${recorder.id}; its frames are timed by arrival)`);
      }
    }
    return row;
  });
  $("#recorders tbody").replaceChildren(...rows);
}

function feedOf(recorders, recorder, camera) {
  const found = recorders.find((r) => r.id === recorder);
  return found && found.reachable ? found.cameras[camera] : undefined;
}

function pairsTable(pairs, cameras, recorders, alerts) {
  const serving = new Map(cameras.map((camera) => [camera.id, camera.holder]));
  const rows = pairs.map((pair) => {
    const row = document.createElement("tr");
    row.dataset.pair = pair.a.camera;
    const sides = [pair.a, pair.b].map((side) => [side, feedOf(recorders, side.recorder, side.camera)]);
    const up = sides.filter(([, feed]) => feed && feed.state === "recording").length;
    const [said, className] = up === 2 ? ["protected", "state-ok"] : up === 1 ? ["degraded: one side records", "state-warn"] : ["unprotected: neither side records", "state-bad"];
    cell(row, pair.a.camera);
    for (const [side, feed] of sides) cell(row, `${side.recorder}:${side.camera} ${feed ? feed.state : "unknown"}`);
    cell(row, serving.get(pair.a.camera), "holder");
    cell(row, said, className);
    if (className !== "state-ok") alerts.push(`pair ${pair.a.recorder}:${pair.a.camera}: ${said}`);
    return row;
  });
  $("#pairs-overview tbody").replaceChildren(...rows);
  $("#pairs-block").hidden = rows.length === 0;
}

export async function overview() {
  const started = performance.now();
  const [cameras, recorders, pairs] = await Promise.all([
    api("/api/v1/cameras").then((answer) => answer.cameras),
    me.management ? api("/api/v1/recorders/status").then((answer) => answer.recorders) : [],
    me.management ? api("/api/v1/pairs").then((answer) => answer.pairs) : [],
  ]);
  const clusterIds = [...new Set(cameras.map((c) => c.cluster).filter((id) => id !== null))];
  const views = await Promise.all(clusterIds.map((id) => api(`/api/v1/clusters/${encodeURIComponent(id)}`)));
  const clusters = new Map(views.map((view) => [view.id, view]));

  const alerts = [];
  recordersTable(recorders, alerts);
  $("#recorders-block").hidden = recorders.length === 0;
  pairsTable(pairs, cameras, recorders, alerts);
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
    const members = camera.cluster === null ? [] : (clusters.get(camera.cluster)?.members ?? []).map((m) => m.id);
    const states = members.map((id) => `${id} ${feedOf(recorders, id, camera.id)?.state ?? "?"}`);
    cell(row, states.length && recorders.length ? states.join(", ") : null, "recording");
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
