// Live grid: one Media Source Extensions player per camera on the gateway's live.ws (docs/design/live.md),
// each showing the recorder serving it now and its latency behind capture.
// live.ws messages: kind (1 byte: 0 init segment, 1 frame), the frame's camera time (8 bytes, µs), payload;
// text messages say which recorder serves the stream.

import { $, api } from "./console.js";

const tiles = new Map(); // camera id -> tile
const EDGE_S = 1.5; // further behind the newest frame than this: jump to the live edge
const KEEP_S = 30; // media kept in the buffer behind the play position

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
  // Capture latency: the newest frame's camera time against the clock when it arrived, plus how far
  // the player is behind that frame (camera and browser clocks assumed in step, as on one site's NTP).
  let arrivalLagMs = null;
  const describe = () => {
    const ranges = video.buffered;
    const behind = ranges.length ? Math.max(0, ranges.end(ranges.length - 1) - video.currentTime) : 0;
    const latency = arrivalLagMs === null ? null : arrivalLagMs / 1000 + behind;
    const said = latency === null ? "…" : `${latency.toFixed(2)} s`;
    label.textContent = `${camera.id} · ${source || "…"} · ${said} behind capture`;
    element.dataset.source = source;
    element.dataset.behind = behind.toFixed(3);
    if (latency !== null) element.dataset.latency = latency.toFixed(3);
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
      if (ranges.length && ranges.end(ranges.length - 1) - video.currentTime > EDGE_S) {
        video.currentTime = ranges.end(ranges.length - 1) - 0.1; // stay at the live edge
      }
      if (ranges.length && video.currentTime - ranges.start(0) > KEEP_S) {
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
      const header = new DataView(message.data);
      const kind = header.getUint8(0);
      const payload = new Uint8Array(message.data, 9);
      if (kind === 1) arrivalLagMs = Date.now() - Number(header.getBigUint64(1)) / 1000;
      if (kind === 0 && !buffer) {
        const codec = codecOf(payload);
        const type = `video/mp4; codecs="${codec}"`;
        if (!codec || !MediaSource.isTypeSupported(type)) {
          const player = `${location.origin}/api/v1/cameras/${encodeURIComponent(camera.id)}/live.m3u8`;
          note.textContent = `this browser cannot play ${codec.startsWith("hvc1") ? "H.265" : codec || "this codec"}: open ${player} in a player (VLC, ffplay)`;
          element.dataset.unsupported = codec || "unknown";
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
      if (buffer) {
        queue.push(payload);
        pump();
      }
    };
    socket.onclose = () => {
      if (!element.dataset.unsupported) note.textContent = "stream ended; reload to reconnect";
    };
  });
  return { element, close: () => socket && socket.close() };
}

export async function live() {
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
