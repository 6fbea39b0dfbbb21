// The Gapless console: overview (clusters, cameras and their protection, events) and live tiles.
// No build step and no dependencies: the browser's own fetch, WebSocket and Media Source Extensions.
// Data comes from the gateway's and management server's APIs with a session cookie (common/sessions.py).

const $ = (selector) => document.querySelector(selector);
const REFRESH_MS = 2000;
let timer = null;
let lastEvent = 0;
const events = [];
const tiles = new Map(); // camera id -> {element, close}

async function api(path) {
  const reply = await fetch(path, { credentials: "same-origin" });
  if (reply.status === 401) {
    show("login");
    throw new Error("not signed in");
  }
  if (!reply.ok) throw new Error(`${path}: HTTP ${reply.status}`);
  return reply.json();
}

function show(page) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== page;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
}

function status(text) {
  $("#status").textContent = text;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "—";
  if (className) td.className = className;
  return td;
}

function protection(camera, clusters) {
  if (camera.cluster === null) return camera.holder ? ["paired", "state-ok"] : ["unprotected", "state-bad"];
  const cluster = clusters.get(camera.cluster);
  if (!cluster || !cluster.holder) return ["unprotected: nobody holds the token", "state-bad"];
  const down = cluster.members.filter((m) => !m.alive).map((m) => `${m.id} down`);
  const behind = cluster.members.filter((m) => m.alive && !m.ready).map((m) => `${m.id} catching up`);
  if (down.length || behind.length) return [`degraded: ${[...down, ...behind].join(", ")}`, "state-warn"];
  return ["protected", "state-ok"];
}

async function overview() {
  const cameras = (await api("/api/v1/cameras")).cameras;
  const clusterIds = [...new Set(cameras.map((c) => c.cluster).filter((id) => id !== null))];
  const clusters = new Map();
  for (const id of clusterIds) clusters.set(id, await api(`/api/v1/clusters/${encodeURIComponent(id)}`));

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
    for (const member of cluster.members) {
      if (!member.alive) alerts.push(`cluster ${cluster.id}: ${member.id} is down`);
      else if (!member.ready) alerts.push(`cluster ${cluster.id}: ${member.id} is catching up (${member.backfill_open ?? 0} backfill open)`);
    }
    if (!cluster.holder) alerts.push(`cluster ${cluster.id}: nobody holds the token`);
    if (!cluster.coordinator_reachable) alerts.push(`cluster ${cluster.id}: the coordinator cannot be reached`);
  }

  const cameraRows = $("#cameras tbody");
  cameraRows.replaceChildren();
  for (const camera of cameras) {
    const row = cameraRows.insertRow();
    row.dataset.camera = camera.id;
    const [said, className] = protection(camera, clusters);
    cell(row, camera.id);
    cell(row, camera.holder, "holder");
    cell(row, said, className);
    cell(row, camera.cluster === null ? "pair" : `cluster ${camera.cluster}`);
    if (className !== "state-ok") alerts.push(`camera ${camera.id}: ${said}`);
  }
  $("#alerts").replaceChildren(
    ...alerts.map((text) => Object.assign(document.createElement("div"), { className: "alert", textContent: text })),
  );
  await refreshEvents();
  return cameras;
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
      .map((e) => Object.assign(document.createElement("li"), { textContent: `${e.time.slice(11, 19)} ${e.kind}: ${e.message}` })),
  );
}

// ---- live -----------------------------------------------------------------------------------
// live.ws messages: kind (1 byte: 0 init segment, 1 frame), camera decode time (8 bytes), payload.

function codecOf(init) {
  const text = String.fromCharCode(...init.subarray(0, Math.min(init.length, 4096)));
  const avc = text.indexOf("avcC");
  if (avc >= 0) {
    const hex = (n) => init[avc + 4 + n].toString(16).padStart(2, "0");
    return `avc1.${hex(1)}${hex(2)}${hex(3)}`;
  }
  if (text.indexOf("hvcC") >= 0) return "hvc1.1.6.L93.B0";
  return "";
}

function liveTile(camera) {
  const element = document.createElement("div");
  element.className = "tile";
  element.dataset.camera = camera.id;
  element.innerHTML = '<video muted autoplay playsinline></video><span class="label"></span><span class="note"></span>';
  const video = element.querySelector("video");
  const label = element.querySelector(".label");
  const note = element.querySelector(".note");
  let source = "";
  const describe = () => {
    const ranges = video.buffered;
    const behind = ranges.length ? ranges.end(ranges.length - 1) - video.currentTime : 0;
    label.textContent = `${camera.id} · ${source || "…"} · ${behind.toFixed(2)} s behind the newest frame`;
    element.dataset.source = source;
    element.dataset.behind = behind.toFixed(3);
  };
  const media = new MediaSource();
  video.src = URL.createObjectURL(media);
  let socket = null;
  media.addEventListener("sourceopen", () => {
    const protocol = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${protocol}//${location.host}/api/v1/cameras/${encodeURIComponent(camera.id)}/live.ws`);
    socket.binaryType = "arraybuffer";
    const queue = [];
    let buffer = null;
    const pump = () => {
      if (!buffer || buffer.updating || !queue.length) return;
      const ranges = buffer.buffered;
      if (ranges.length && ranges.end(ranges.length - 1) - video.currentTime > 1.5) {
        video.currentTime = ranges.end(ranges.length - 1) - 0.1; // stay at the live edge
      }
      if (ranges.length && video.currentTime - ranges.start(0) > 30 && !buffer.updating) {
        buffer.remove(0, video.currentTime - 10);
        return;
      }
      buffer.appendBuffer(queue.shift());
    };
    socket.onmessage = (message) => {
      if (typeof message.data === "string") {
        source = JSON.parse(message.data).source;
        describe();
        return;
      }
      const kind = new DataView(message.data).getUint8(0);
      const payload = new Uint8Array(message.data, 9);
      if (kind === 0 && !buffer) {
        const codec = codecOf(payload);
        const type = `video/mp4; codecs="${codec}"`;
        if (!codec || !MediaSource.isTypeSupported(type)) {
          note.textContent = `this browser cannot play ${codec || "this codec"}: open /api/v1/cameras/${camera.id}/live.m3u8 in a player`;
          socket.close();
          return;
        }
        buffer = media.addSourceBuffer(type);
        buffer.addEventListener("updateend", () => {
          pump();
          if (video.paused) video.play().catch(() => {});
          describe();
        });
      }
      queue.push(payload);
      pump();
    };
    socket.onclose = () => {
      note.textContent = "stream ended; reload to reconnect";
    };
  });
  return { element, close: () => socket && socket.close() };
}

async function live() {
  const cameras = (await api("/api/v1/cameras")).cameras;
  const grid = $("#grid");
  for (const camera of cameras) {
    if (!tiles.has(camera.id)) {
      const tile = liveTile(camera);
      tiles.set(camera.id, tile);
      grid.append(tile.element);
    }
  }
}

// ---- pages ----------------------------------------------------------------------------------

async function refresh() {
  const page = (location.hash || "#overview").slice(1);
  show(page === "live" ? "live" : "overview");
  try {
    if (page === "live") await live();
    else await overview();
    status(`updated ${new Date().toLocaleTimeString()}`);
  } catch (problem) {
    status(String(problem.message || problem));
  }
}

async function signIn(token) {
  const reply = await fetch("/api/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  return reply.ok;
}

async function start() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    url.searchParams.delete("token"); // never left in the address bar or history
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    if (!(await signIn(token))) status("that login link is not valid");
  }
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await signIn($("#login-token").value)) refresh();
    else status("that token is not valid");
  });
  window.addEventListener("hashchange", refresh);
  await refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

start();
