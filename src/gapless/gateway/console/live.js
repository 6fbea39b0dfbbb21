// Live grid: one Media Source Extensions player per camera on the gateway's live.ws (docs/design/live.md),
// each showing the recorder serving it now and its latency behind capture.
// live.ws messages: kind (1 byte: 0 init segment, 1 frame), the frame's camera time (8 bytes, µs), payload;
// text messages say which recorder serves the stream.

import { $, api } from "./console.js";

const tiles = new Map(); // camera id -> tile
const EDGE_S = 1.5; // further behind the newest frame than this: jump to the live edge
// Between: play a little faster until close to it (a viewer joins at the newest keyframe, up to a
// GOP old; frames come in bursts of half a second, the recorder's read pass).
const CATCH_UP_S = 0.7;
const CAUGHT_UP_S = 0.3;
const CATCH_UP_RATE = 1.3; // muted live video: a short fast-forward, not a sound
const KEEP_S = 30; // media kept in the buffer behind the play position
const KEEP_SAMPLES = 3000; // capture → display latencies kept per tile (bench/live.py reads them)
const LATENCIES = new Map(); // camera id -> latest latencies, s
window.gaplessLatencies = LATENCIES;

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
  // Capture → display: a live frame's media time is its camera time (epoch seconds: the recorders
  // stamp fragments with it), so the moment the browser shows it, less that time, is how late it is
  // (camera and browser clocks in step, as on one site's NTP).
  let latency = null;
  const samples = [];
  LATENCIES.set(camera.id, samples);
  const shown = (_now, frame) => {
    latency = (performance.timeOrigin + frame.expectedDisplayTime) / 1000 - frame.mediaTime;
    samples.push(latency);
    if (samples.length > KEEP_SAMPLES) samples.splice(0, samples.length - KEEP_SAMPLES);
    video.requestVideoFrameCallback(shown);
  };
  video.requestVideoFrameCallback(shown);
  const describe = () => {
    const ranges = video.buffered;
    const behind = ranges.length ? Math.max(0, ranges.end(ranges.length - 1) - video.currentTime) : 0;
    const said = latency === null ? "…" : `${latency.toFixed(2)} s`;
    label.textContent = `${camera.id} · ${source || "…"} · ${said} behind capture`;
    if (behind > CATCH_UP_S) video.playbackRate = CATCH_UP_RATE;
    else if (behind < CAUGHT_UP_S) video.playbackRate = 1;
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
      const kind = new DataView(message.data).getUint8(0);
      const payload = new Uint8Array(message.data, 9);
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
