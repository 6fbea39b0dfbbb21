// Backfill and events: every recorder's jobs (running and queued first, with progress), an
// operator's order to copy a range, and the event log filtered by camera, recorder, kind and time,
// followed live over Server-Sent Events.

import { $, api, cell, element, me, status } from "./console.js";

const SHOWN_EVENTS = 200;
let stream = null;
let streamFilter = "";
const shown = [];

function progressOf(job) {
  const total = job.fragments_total || 0;
  const bar = element("progress", { max: 1, value: total ? job.fragments_done / total : job.state === "done" ? 1 : 0 });
  return element("span", { className: "job-progress" }, bar, ` ${job.fragments_done}/${total} fragments, ${(job.bytes_done / 1e6).toFixed(1)} MB`);
}

async function jobs() {
  const overview = await api("/api/v1/backfill");
  const order = { running: 0, waiting: 1, partial: 2, done: 3 };
  const rows = [];
  for (const recorder of overview.recorders) {
    if (recorder.error) {
      const row = document.createElement("tr");
      cell(row, recorder.recorder);
      cell(row, `cannot be read: ${recorder.error}`, "state-bad").colSpan = 6;
      rows.push(row);
    }
    const sorted = recorder.jobs.slice().sort((p, q) => (order[p.state] ?? 5) - (order[q.state] ?? 5) || q.id - p.id);
    for (const job of sorted) {
      const row = document.createElement("tr");
      row.dataset.job = `${recorder.recorder}/${job.id}`;
      row.dataset.state = job.state;
      cell(row, recorder.recorder);
      cell(row, job.camera);
      cell(row, `${job.source}${job.automatic ? "" : " (ordered)"}`);
      cell(row, `${job.start.slice(0, 19)} – ${job.end.slice(11, 19)}`);
      cell(row, job.state, job.state === "partial" ? "state-bad" : job.state === "done" ? "state-ok" : "state-warn");
      row.insertCell().append(progressOf(job));
      cell(row, job.errors.length ? job.errors[job.errors.length - 1] : "");
      rows.push(row);
    }
  }
  $("#jobs tbody").replaceChildren(...rows);
}

function eventQuery() {
  const query = new URLSearchParams();
  for (const key of ["camera", "recorder", "kind"]) {
    const value = $(`#ev-${key}`).value.trim();
    if (value) query.set(key, value);
  }
  const since = $("#ev-since").value;
  if (since) query.set("since", String(new Date(since).getTime() / 1000));
  return query;
}

function addEvent(event) {
  shown.push(event);
  shown.splice(0, Math.max(0, shown.length - SHOWN_EVENTS));
}

function drawEvents() {
  const rows = shown
    .slice()
    .reverse()
    .map((event) => {
      const row = document.createElement("tr");
      row.dataset.kind = event.kind;
      cell(row, event.time.replace("T", " ").slice(0, 19));
      cell(row, event.kind);
      cell(row, event.cluster || event.recorder || "");
      cell(row, event.camera || "");
      cell(row, event.message);
      return row;
    });
  $("#event-log tbody").replaceChildren(...rows);
}

/** The log as filtered, then followed live: the stream resumes after the newest event shown. */
async function followEvents() {
  const query = eventQuery();
  const filter = query.toString();
  if (stream && filter === streamFilter) return;
  if (stream) stream.close();
  streamFilter = filter;
  shown.length = 0;
  query.set("limit", "1000");
  const first = await api(`/api/v1/events?${query}`);
  first.events.forEach(addEvent);
  drawEvents();
  query.delete("limit");
  query.set("after", String(shown.length ? shown[shown.length - 1].id : 0));
  stream = new EventSource(`/api/v1/events/stream?${query}`, { withCredentials: true });
  const onEvent = (message) => {
    addEvent(JSON.parse(message.data));
    drawEvents();
  };
  for (const kind of ["token", "member", "feed", "backfill", "route", "config", "user"]) stream.addEventListener(kind, onEvent);
}

function orderForm() {
  const form = $("#backfill-form");
  form.querySelector("button").disabled = !me.may_act;
  form.querySelector("button").title = me.may_act ? "" : "operators and admins only";
  form.onsubmit = async (event) => {
    event.preventDefault();
    const value = (name) => form.elements[name].value.trim();
    const seconds = (name) => String(new Date(value(name)).getTime() / 1000);
    try {
      const job = await api("/api/v1/backfill", {
        json: { recorder: value("recorder"), camera: value("camera"), source: value("source"), start: seconds("start"), end: seconds("end") },
      });
      status(`backfill job ${job.id} queued on ${value("recorder")}`);
      await jobs();
    } catch (problem) {
      status(String(problem.message || problem), true);
    }
  };
}

export async function backfill(entered) {
  if (!me.management) {
    $("#backfill-note").textContent = "backfill jobs and the event log are on the management server's console";
    return;
  }
  if (entered) {
    orderForm();
    $("#event-filter").onsubmit = (event) => {
      event.preventDefault();
      followEvents();
    };
  }
  await Promise.all([jobs(), followEvents()]);
}
