// Playback: a timeline per camera (the merged timeline the gateway plays, and what each recorder
// holds, backfilled parts marked, gaps hatched), zoom from a week to seconds, jump to a time, click
// to play from a point (several cameras kept in step by their program date time), and export a range
// as MP4 with progress. Recorded video plays through hls.js on the gateway's playback.m3u8.

import { $, api, element, status } from "./console.js";

let Hls = null; // hls.js, loaded when first needed: the other pages work without it

const SPANS = [
  ["7 d", 7 * 86400],
  ["1 d", 86400],
  ["1 h", 3600],
  ["10 min", 600],
  ["1 min", 60],
  ["10 s", 10],
];
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000; // the timeline's viewBox width
const PLAY_AHEAD_S = 3600; // a playlist covers this much from the point clicked
const IN_STEP_S = 0.3; // a camera further than this from the first one's time is moved to it
const EXPORT_LONGEST_S = 6 * 3600;

const view = { span: 3600, end: Date.now() / 1000, cameras: [], follow: true };
const players = new Map(); // camera id -> {hls, video, box}
let built = false;

function at(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function localInput(seconds) {
  const date = new Date(seconds * 1000);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

function fromInput(value) {
  return value ? new Date(value).getTime() / 1000 : NaN;
}

function readHash() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  if (query.get("cameras")) view.cameras = query.get("cameras").split(",").filter(Boolean);
  if (query.get("span")) view.span = Math.max(1, Number(query.get("span")));
  if (query.get("end")) {
    view.end = Number(query.get("end"));
    view.follow = false;
  }
}

function writeHash() {
  const query = new URLSearchParams({ cameras: view.cameras.join(","), span: String(view.span) });
  if (!view.follow) query.set("end", view.end.toFixed(3));
  history.replaceState(null, "", `#playback?${query}`);
}

function build(cameras) {
  readHash();
  if (!view.cameras.length && cameras.length) view.cameras = [cameras[0].id];
  const spans = $("#pb-spans");
  spans.replaceChildren(
    ...SPANS.map(([label, seconds]) =>
      element("button", {
        textContent: label,
        onclick: () => {
          const middle = view.end - view.span / 2;
          view.span = seconds;
          view.end = Math.min(Date.now() / 1000, middle + seconds / 2);
          view.follow = view.end >= Date.now() / 1000 - 1;
          redraw();
        },
      }),
    ),
  );
  $("#pb-earlier").onclick = () => move(-view.span / 2);
  $("#pb-later").onclick = () => move(view.span / 2);
  $("#pb-now").onclick = () => {
    view.follow = true;
    view.end = Date.now() / 1000;
    redraw();
  };
  $("#pb-jump-form").onsubmit = (event) => {
    event.preventDefault();
    const time = fromInput($("#pb-jump").value);
    if (Number.isNaN(time)) return;
    view.follow = false;
    view.end = Math.min(Date.now() / 1000, time + view.span / 2);
    redraw();
    play(time);
  };
  $("#pb-export-form").onsubmit = (event) => {
    event.preventDefault();
    exportRange();
  };
  built = true;
}

function move(seconds) {
  view.end = Math.min(Date.now() / 1000, view.end + seconds);
  view.follow = view.end >= Date.now() / 1000 - 1;
  redraw();
}

function chooser(cameras) {
  const box = $("#pb-cameras");
  const known = new Set([...box.querySelectorAll("input")].map((input) => input.value));
  if (cameras.every((c) => known.has(c.id)) && known.size === cameras.length) return;
  box.replaceChildren(
    ...cameras.map((camera) => {
      const input = element("input", { type: "checkbox", value: camera.id, checked: view.cameras.includes(camera.id) });
      input.onchange = () => {
        view.cameras = [...box.querySelectorAll("input:checked")].map((i) => i.value);
        for (const [id, player] of players) {
          if (!view.cameras.includes(id)) {
            player.hls.destroy();
            player.box.remove();
            players.delete(id);
          }
        }
        redraw();
      };
      return element("label", { className: "camera-choice" }, input, ` ${camera.id}`);
    }),
  );
}

function svgNode(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function x(seconds, start) {
  return Math.max(0, Math.min(WIDTH, ((seconds - start) / view.span) * WIDTH));
}

function bars(svg, intervals, y, height, start, className, title) {
  for (const [from, to, recorder] of intervals) {
    const a = x(Date.parse(from) / 1000, start);
    const b = x(Date.parse(to) / 1000, start);
    const bar = svgNode("rect", { x: a, y, width: Math.max(0.5, b - a), height, class: className });
    if (recorder) bar.dataset.recorder = recorder;
    bar.append(svgNode("title", {}));
    bar.firstChild.textContent = `${title}${recorder ? ` (${recorder})` : ""}: ${at(Date.parse(from) / 1000)} – ${at(Date.parse(to) / 1000)}`;
    svg.append(bar);
  }
}

function timelineOf(camera, timeline, start) {
  const rows = [{ label: "merged", kind: "merged" }, ...timeline.recorders.map((side) => ({ label: `${side.recorder} (${side.role})`, side }))];
  const rowHeight = 16;
  const svg = svgNode("svg", { viewBox: `0 0 ${WIDTH} ${rows.length * rowHeight}`, preserveAspectRatio: "none", class: "timeline" });
  svg.dataset.camera = camera;
  const sources = [...new Set(timeline.intervals.map((i) => i.recorder))];
  rows.forEach((row, index) => {
    const y = index * rowHeight + 2;
    svg.append(svgNode("rect", { x: 0, y, width: WIDTH, height: rowHeight - 4, class: "gap" })); // hatched unless covered
    if (row.kind === "merged") {
      for (const interval of timeline.intervals) {
        const tone = sources.indexOf(interval.recorder) === 0 ? "merged" : "merged other";
        bars(svg, [[interval.start, interval.end, interval.recorder]], y, rowHeight - 4, start, tone, "plays from");
      }
    } else {
      bars(svg, row.side.intervals, y, rowHeight - 4, start, row.side.reachable ? "held" : "unknown", row.label);
      bars(svg, row.side.backfilled, y, rowHeight - 4, start, "backfilled", "backfilled");
    }
  });
  const playhead = svgNode("line", { x1: -10, x2: -10, y1: 0, y2: rows.length * rowHeight, class: "playhead" });
  svg.append(playhead);
  svg.addEventListener("click", (event) => {
    const box = svg.getBoundingClientRect();
    play(start + ((event.clientX - box.left) / box.width) * view.span);
  });
  const labels = element("div", { className: "timeline-labels" }, ...rows.map((row) => element("div", { textContent: row.label })));
  return element("div", { className: "camera-timeline" }, element("h4", { textContent: camera }), element("div", { className: "timeline-row" }, labels, svg));
}

function axis(start) {
  const ticks = element("div", { className: "axis" });
  for (let i = 0; i <= 4; i += 1) {
    const seconds = start + (view.span * i) / 4;
    ticks.append(element("span", { textContent: view.span <= 120 ? at(seconds).slice(11) : at(seconds).slice(5, 16) }));
  }
  return ticks;
}

async function redraw() {
  if (view.follow) view.end = Date.now() / 1000;
  const start = view.end - view.span;
  writeHash();
  const found = await Promise.all(
    view.cameras.map(async (camera) => {
      const query = new URLSearchParams({ start: start.toFixed(3), end: view.end.toFixed(3) });
      return [camera, await api(`/api/v1/cameras/${encodeURIComponent(camera)}/timeline?${query}`)];
    }),
  );
  $("#pb-range").textContent = `${at(start)} – ${at(view.end)} UTC`;
  $("#pb-timelines").replaceChildren(axis(start), ...found.map(([camera, timeline]) => timelineOf(camera, timeline, start)));
  $("#pb-timelines").dataset.start = String(start);
  if (!$("#pb-export-from").value) {
    $("#pb-export-from").value = localInput(Math.max(start, view.end - 60));
    $("#pb-export-to").value = localInput(view.end);
  }
  playheads();
}

function playheads() {
  const start = Number($("#pb-timelines").dataset.start);
  for (const svg of document.querySelectorAll("#pb-timelines svg")) {
    const player = players.get(svg.dataset.camera);
    const date = player && player.hls.playingDate;
    const line = svg.querySelector(".playhead");
    const position = date ? x(date.getTime() / 1000, start) : -10;
    line.setAttribute("x1", position);
    line.setAttribute("x2", position);
  }
}

async function library() {
  if (!Hls) {
    try {
      Hls = (await import("./vendor/hls.light.min.mjs")).default;
    } catch (problem) {
      throw new Error("recorded video needs hls.js, which this server lacks (make console builds it)");
    }
  }
  return Hls;
}

function player(camera) {
  if (players.has(camera)) return players.get(camera);
  const video = element("video", { muted: true, controls: true, playsInline: true });
  const clock = element("span", { className: "clock" });
  const box = element("div", { className: "player" }, element("div", { className: "label", textContent: camera }), video, clock);
  box.dataset.camera = camera;
  $("#pb-players").append(box);
  const hls = new Hls({ enableWorker: false, lowLatencyMode: false });
  hls.attachMedia(video);
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (data.fatal) clock.textContent = `cannot play: ${data.details}`;
  });
  const made = { hls, video, box, clock, target: null };
  hls.on(Hls.Events.LEVEL_LOADED, (_event, data) => {
    const first = data.details.fragments[0];
    if (made.target !== null && first && first.programDateTime) {
      video.currentTime = Math.max(0, made.target - first.programDateTime / 1000);
      made.target = null;
    }
  });
  players.set(camera, made);
  return made;
}

async function play(seconds) {
  try {
    await library();
  } catch (problem) {
    status(problem.message, true);
    return;
  }
  const until = Math.min(Date.now() / 1000, seconds + PLAY_AHEAD_S);
  for (const camera of view.cameras) {
    const chosen = player(camera);
    chosen.target = seconds;
    const query = new URLSearchParams({ start: (seconds - 10).toFixed(3), end: until.toFixed(3) });
    chosen.hls.loadSource(`/api/v1/cameras/${encodeURIComponent(camera)}/playback.m3u8?${query}`);
    chosen.video.play().catch(() => {});
  }
  $("#pb-players").dataset.from = String(seconds);
}

/** Every camera plays the first one's camera time (program date time), within IN_STEP_S. */
function keepInStep() {
  const [leader, ...others] = view.cameras.map((camera) => players.get(camera)).filter(Boolean);
  if (!leader) return;
  const lead = leader.hls.playingDate;
  for (const chosen of [leader, ...others]) {
    const date = chosen.hls.playingDate;
    chosen.clock.textContent = date ? `${at(date.getTime() / 1000)}.${String(date.getMilliseconds()).padStart(3, "0")} UTC` : "";
    chosen.box.dataset.playing = date ? String(date.getTime() / 1000) : "";
    if (chosen !== leader && lead && date && Math.abs(date - lead) / 1000 > IN_STEP_S && !chosen.video.seeking) {
      chosen.video.currentTime += (lead - date) / 1000;
    }
  }
}

async function exportRange() {
  const camera = view.cameras[0];
  const from = fromInput($("#pb-export-from").value);
  const to = fromInput($("#pb-export-to").value);
  const said = $("#pb-export-status");
  const progress = $("#pb-progress");
  if (!camera || !(to > from) || to - from > EXPORT_LONGEST_S) {
    said.textContent = "choose a camera and a range of at most 6 h";
    return;
  }
  said.textContent = `preparing ${camera}, ${at(from)} – ${at(to)} …`;
  said.dataset.done = "";
  progress.removeAttribute("value");
  progress.hidden = false;
  const query = new URLSearchParams({ start: from.toFixed(3), end: to.toFixed(3), layout: "progressive" });
  const reply = await fetch(`/api/v1/cameras/${encodeURIComponent(camera)}/export.mp4?${query}`, { credentials: "same-origin" });
  if (!reply.ok) {
    said.textContent = `export refused: ${(await reply.json().catch(() => ({}))).error || reply.status}`;
    progress.hidden = true;
    return;
  }
  const total = Number(reply.headers.get("Content-Length")) || 0;
  const reader = reply.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    if (total) progress.value = received / total;
    said.textContent = `${(received / 1e6).toFixed(1)} MB${total ? ` of ${(total / 1e6).toFixed(1)} MB` : ""}`;
  }
  progress.value = 1;
  const name = `${camera}-${new Date(from * 1000).toISOString().replace(/[:.]/g, "-")}.mp4`;
  const link = element("a", { href: URL.createObjectURL(new Blob(chunks, { type: "video/mp4" })), download: name, textContent: `save ${name}`, id: "pb-export-save" });
  said.replaceChildren(`${(received / 1e6).toFixed(1)} MB exported · `, link);
  said.dataset.done = "true";
  said.dataset.bytes = String(received);
}

export async function playback(entered) {
  const cameras = (await api("/api/v1/cameras")).cameras;
  if (!built) build(cameras);
  if (entered) readHash();
  chooser(cameras);
  await redraw();
  keepInStep();
}
