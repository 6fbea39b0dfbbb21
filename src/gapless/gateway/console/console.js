// The Gapless console: sign-in, then one page at a time (overview, live, playback, mapping,
// backfill and events). No build step; one third-party library (hls.js, for recorded video).
// Data comes from the gateway's and management server's APIs with a session cookie
// (common/sessions.py); what a role may not do, the server refuses (the buttons only follow it).

import { overview } from "./overview.js";
import { live } from "./live.js";
import { playback } from "./playback.js";
import { mapping } from "./mapping.js";
import { backfill } from "./backfill.js";

export const $ = (selector, root = document) => root.querySelector(selector);
export const me = { name: "", role: "viewer", may_act: false, may_configure: false, management: false };

const PAGES = { overview, live, playback, mapping, backfill };
const REFRESH_MS = 2000;

export class SignedOut extends Error {}

export async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.json);
  }
  const reply = await fetch(path, init);
  if (reply.status === 401) {
    show("login");
    throw new SignedOut("not signed in");
  }
  const text = await reply.text();
  const body = text ? JSON.parse(text) : {};
  if (!reply.ok) throw new Error(body.error || `${path}: HTTP ${reply.status}`);
  return body;
}

export function element(tag, properties = {}, ...children) {
  const made = Object.assign(document.createElement(tag), properties);
  made.append(...children);
  return made;
}

export function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "—";
  if (className) td.className = className;
  return td;
}

/** The status line: the outcome of the operator's last action, or why the page cannot refresh. It
 *  stays until the next one (a refresh that works again clears only its own error); when the page
 *  was last refreshed is shown beside it, so a confirmation is never overwritten by a poll. */
let refreshError = false;

export function status(text, bad = false) {
  const line = $("#status");
  line.textContent = text;
  line.classList.toggle("bad", bad);
  refreshError = false;
}

/** An action button: runs `act`, shows its outcome in the status line, refused ones included. */
export function actionButton(label, act, attributes = {}) {
  const button = element("button", { textContent: label, className: "action", ...attributes });
  button.disabled = !me.may_act;
  button.title = me.may_act ? "" : "operators and admins only";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      status(await act());
    } catch (problem) {
      status(String(problem.message || problem), true);
    } finally {
      button.disabled = !me.may_act;
    }
  });
  return button;
}

function show(page) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== page;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  document.body.dataset.page = page;
}

function currentPage() {
  const page = (location.hash || "#overview").slice(1).split("?")[0];
  return page in PAGES ? page : "overview";
}

async function whoami() {
  const reply = await fetch("/api/v1/whoami", { credentials: "same-origin" });
  if (reply.status === 404) {
    // a standalone gateway: it serves media, the management server the rest
    Object.assign(me, { name: "signed in", role: "viewer", may_act: false, may_configure: false, management: false });
  } else if (reply.ok) {
    Object.assign(me, await reply.json(), { management: true });
  } else {
    return false;
  }
  $("#who").textContent = `${me.name} · ${me.role}`;
  $("#sign-out").hidden = false;
  document.body.dataset.role = me.role;
  return true;
}

let running = null;
let pageShown = "";

async function refresh() {
  const page = currentPage();
  if (running) return; // the previous refresh is still under way
  running = (async () => {
    try {
      if (!me.name && !(await whoami())) {
        show("login");
        return;
      }
      show(page);
      await PAGES[page](page !== pageShown);
      pageShown = page;
      $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      if (refreshError) status("");
    } catch (problem) {
      if (problem instanceof SignedOut) me.name = "";
      else {
        status(String(problem.message || problem), true);
        refreshError = true;
      }
    }
  })();
  await running;
  running = null;
}

async function signIn(body) {
  const reply = await fetch("/api/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (reply.ok) me.name = "";
  return reply.ok;
}

async function start() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    url.searchParams.delete("token"); // never left in the address bar or history
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    if (!(await signIn({ token }))) status("that login link is not valid (used, expired or wrong)", true);
  }
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("#login-user").value.trim();
    const secret = $("#login-password").value;
    const ok = await signIn(user ? { user, password: secret } : { token: secret });
    if (ok) {
      $("#login-password").value = "";
      status("signed in");
      refresh();
    } else status("wrong user name or password", true);
  });
  $("#sign-out").addEventListener("click", async () => {
    await fetch("/api/v1/session", { method: "DELETE", credentials: "same-origin" });
    location.reload();
  });
  window.addEventListener("hashchange", () => {
    status("");
    refresh();
  });
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
