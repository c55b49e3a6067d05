/* Corral dashboard: a live, dependency-free operator view (vanilla ES2020).
 *
 * Three files, loaded in this order (classic scripts sharing one global scope):
 *   app.js    1. formatting helpers        4. live event stream
 *             2. DOM helpers and widgets   5. routes and links
 *             3. API access and refresh    6. router and start-up
 *   views.js  the overview, job and task pages
 *   pages.js  the pool, schedule, template and trigger pages
 * Start-up waits for DOMContentLoaded, by when all three have run.
 *
 * Rendering model: each view builds a fixed skeleton once. Controls (filters,
 * pagers, attempt tabs' container, log panes) live in that skeleton and are never
 * replaced; every refresh rebuilds only the data-bearing parts from the JSON.
 * Pages hold at most 50 rows, so rebuilding is cheaper and simpler than diffing.
 */
'use strict';

const PAGE = 50;
const TASK_STATES = ['waiting', 'ready', 'running', 'succeeded', 'failed', 'cancelled'];
// What a job's counts show: `assigned` (sent ahead to a node, waiting there for a
// slot) apart from `running` (its process runs); a filter for `running` lists both.
const COUNT_STATES = ['waiting', 'ready', 'assigned', 'running', 'succeeded', 'failed', 'cancelled'];
const NODE_STATES = ['starting', 'idle', 'running', 'draining', 'lost'];
const JOB_STATES = ['active', 'completed', 'failed', 'cancelled'];
// Progress bar segment order: finished work first, then in flight, then queued.
const BAR_ORDER = ['succeeded', 'failed', 'cancelled', 'running', 'assigned', 'ready', 'waiting'];

/* ---------------------------------------------------------------- 1. formatting */

const nf = new Intl.NumberFormat();
const fmtInt = (n) => (n == null ? '—' : nf.format(n));
const pad = (n) => String(n).padStart(2, '0');

/** Local HH:MM:SS, with the date in front only when it is not today. */
function fmtTime(ms) {
  if (ms == null) return '—';
  const d = new Date(ms);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === new Date().toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

/** "0.4 s", "42 s", "3 m 4 s", "2 h 5 m", "3 d 4 h". */
function fmtDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  const s = Math.max(0, ms) / 1000; // clock skew between hosts can make it negative
  if (s < 10) return `${s.toFixed(1)} s`;
  const t = Math.round(s);
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} m ${t % 60} s`;
  if (t < 86400) return `${Math.floor(t / 3600)} h ${Math.floor((t % 3600) / 60)} m`;
  return `${Math.floor(t / 86400)} d ${Math.floor((t % 86400) / 3600)} h`;
}

function fmtBytes(b) {
  if (b == null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${i === 0 ? b : b < 10 ? b.toFixed(1) : Math.round(b)} ${units[i]}`;
}

const fmtPct = (p) => (p == null ? '—' : `${p.toFixed(p < 10 ? 1 : 0)} %`);
// A rate over fewer than ten tasks says little ("1000 tasks/s" for one task that
// took a millisecond): those show a dash.
const fmtRate = (r, finished = Infinity) => (r == null || finished < 10 ? '—' : `${r.toFixed(1)} tasks/s`);
const fmtEta = (s) => (s == null ? '—' : `~${fmtDuration(s * 1000)}`);

/* ------------------------------------------------------- 2. DOM helpers, widgets */

/** h('a', {href, class, onclick, style: {...}, 'data-x': 1}, ...children). Text is never parsed as HTML. */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style') Object.assign(el.style, v); // CSSOM, so a strict CSP is fine
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...kids.flat(Infinity).filter((c) => c != null && c !== false)
    .map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

const badge = (state, attrs = {}) => h('span', { class: `badge s-${state}`, ...attrs }, state);
const timeEl = (ms) => h('span', { title: ms == null ? null : new Date(ms).toLocaleString() }, fmtTime(ms));
const fact = (label, ...value) => h('div', { class: 'fact' }, h('span', { class: 'k' }, label), h('span', { class: 'v' }, ...value));
const emptyRow = (cols, text) => h('tr', { class: 'empty' }, h('td', { colspan: cols }, text));

function section(title, extra, ...body) {
  return h('section', { class: 'section' },
    h('div', { class: 'section-head' }, h('h2', null, title), extra), ...body);
}

/** headers: strings, or [label, class] for numeric columns. */
function table(headers, tbody) {
  const ths = headers.map((x) => (Array.isArray(x) ? h('th', { class: x[1] }, x[0]) : h('th', null, x)));
  return h('div', { class: 'table-wrap' }, h('table', null, h('thead', null, h('tr', null, ths)), tbody));
}

/** Stacked bar of task states; failures get a minimum width so one in a million still shows. */
/** Tasks that ended, however: what "done" means in the CLI and here. */
function finished(c) {
  return (c.succeeded || 0) + (c.failed || 0) + (c.cancelled || 0);
}

function progressBar(counts = {}, total = 0, big = false) {
  const bar = h('div', {
    class: big ? 'progress big' : 'progress',
    title: BAR_ORDER.map((s) => `${s}: ${fmtInt(counts[s] || 0)}`).join('\n'),
  });
  for (const s of BAR_ORDER) {
    const n = counts[s] || 0;
    if (n > 0 && total > 0) bar.append(h('span', { class: `seg s-${s}`, style: { width: `${(n / total) * 100}%` } }));
  }
  return bar;
}

function meter(used, total) {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  return h('span', { class: 'meter' }, h('span', { style: { width: `${pct}%` } }));
}

/** Inline SVG sparkline of values scaled to [0, max]. */
function sparkline(values, max, cls) {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 64, H = 18;
  const svg = document.createElementNS(NS, 'svg');
  for (const [k, v] of Object.entries({ viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: `spark ${cls}` })) svg.setAttribute(k, v);
  const vals = values.filter((v) => v != null);
  if (vals.length >= 2 && max > 0) {
    const step = W / (vals.length - 1);
    const pts = vals.map((v, i) => `${(i * step).toFixed(1)},${(H - 1 - Math.min(1, Math.max(0, v / max)) * (H - 2)).toFixed(1)}`);
    const area = document.createElementNS(NS, 'polygon');
    area.setAttribute('points', `0,${H} ${pts.join(' ')} ${W},${H}`);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(area, line);
  }
  return svg;
}

/** First / Prev / "showing 101–150 of 1,000,000" / Next / Last. onPage gets a 0-based page. */
function pager(onPage) {
  let page = 0, pages = 1;
  const btn = (label, target) => h('button', { type: 'button', onclick: () => onPage(target()) }, label);
  const first = btn('« First', () => 0), prev = btn('‹ Prev', () => page - 1);
  const next = btn('Next ›', () => page + 1), last = btn('Last »', () => pages - 1);
  const info = h('span', { class: 'pager-info' });
  return {
    el: h('div', { class: 'pager' }, first, prev, info, next, last),
    update(offset, shown, total) {
      page = Math.floor(offset / PAGE);
      pages = Math.max(1, Math.ceil(total / PAGE));
      info.textContent = shown === 0 ? `none of ${fmtInt(total)}`
        : `showing ${fmtInt(offset + 1)}–${fmtInt(offset + shown)} of ${fmtInt(total)}`;
      first.disabled = prev.disabled = page <= 0;
      next.disabled = last.disabled = page >= pages - 1;
    },
  };
}

/* Rebuilding a row between mousedown and mouseup swallows the click (the element
 * that got mousedown is gone). So while a pointer is down, DOM updates are parked
 * by key and applied right after the click has been dispatched. Parking lasts at
 * most a second: a native <select> popup can swallow the pointerup. */
let pointerDown = false, pointerDownAt = 0;
const parked = new Map();
function paint(key, fn) {
  if (pointerDown && Date.now() - pointerDownAt < 1000) { parked.set(key, fn); return; }
  parked.delete(key); // anything parked under this key is older than fn
  fn();
}
function releasePointer() {
  pointerDown = false;
  setTimeout(() => {
    if (pointerDown) return;
    const fns = [...parked.values()];
    parked.clear();
    fns.forEach((f) => f());
  }, 0);
}
addEventListener('pointerdown', () => { pointerDown = true; pointerDownAt = Date.now(); }, true);
for (const t of ['pointerup', 'pointercancel']) addEventListener(t, releasePointer, true);
addEventListener('blur', releasePointer); // the window's own blur (not captured: elements blur on every click)

/* Errors go to a dismissible banner; the same message is counted, not repeated.
 * An error keyed by a URL goes away by itself once that URL answers again. */
const bannerEl = document.getElementById('banner');
function showError(msg, key = msg) {
  for (const item of bannerEl.children) {
    if (item.dataset.key === key) {
      item.querySelector('.msg').textContent = msg;
      item.dataset.count = Number(item.dataset.count) + 1;
      item.querySelector('.count').textContent = `×${item.dataset.count}`;
      return;
    }
  }
  const item = h('div', { class: 'banner-item', 'data-key': key, 'data-count': 1 },
    h('span', { class: 'msg' }, msg), h('span', { class: 'count' }),
    h('button', { type: 'button', class: 'close', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
  bannerEl.append(item);
  while (bannerEl.children.length > 5) bannerEl.firstElementChild.remove();
}
function clearError(key) {
  for (const item of [...bannerEl.children]) if (item.dataset.key === key) item.remove();
}

/* ---------------------------------------------------------- 3. API and refresh */

// One fetch per URL at a time: a second caller for a URL in flight shares its promise.
const inflight = new Map();

/** Resolves to {ok: true, data} or {ok: false, error}; never rejects. */
function api(url) {
  if (inflight.has(url)) return inflight.get(url);
  const p = (async () => {
    try {
      // The timeout keeps a stalled answer from holding up every later refresh.
      const res = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' }, signal: AbortSignal.timeout(15000) });
      let body = null;
      try { body = await res.json(); } catch { /* not JSON: keep the status text */ }
      // The token was revoked or has expired: sign in again.
      if (res.status === 401) { location.href = '/login'; return { ok: false, error: 'signed out' }; }
      if (!res.ok) return { ok: false, error: (body && body.error) || `HTTP ${res.status} ${res.statusText}` };
      return { ok: true, data: body };
    } catch (e) {
      return { ok: false, error: e.message || String(e) };
    } finally {
      inflight.delete(url);
    }
  })();
  inflight.set(url, p);
  return p;
}

/* What the signed-in token may do (GET /api/whoami): the page shows only the
 * actions it may take; the server checks each one again. */
let me = { may: { change_jobs: false, change_nodes: false } };

/** Asks `question`; if confirmed, POSTs `body` to `url` as a dashboard action (with
 * the header that tells the server a page of this dashboard sent it), then
 * refreshes. The event feed records who did it. */
async function act(url, question, body) {
  if (!confirm(question)) return false;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { Accept: 'application/json', 'Content-Type': 'application/json', 'X-Corral-Action': '1' },
      body: body ? JSON.stringify(body) : '{}',
      signal: AbortSignal.timeout(15000),
    });
    let answer = null;
    try { answer = await res.json(); } catch { /* not JSON */ }
    if (!res.ok) { showError(`${question.replace(/\?$/, '')}: ${(answer && answer.error) || `HTTP ${res.status}`}`); return false; }
    requestRefresh();
    return true;
  } catch (e) {
    showError(`${question.replace(/\?$/, '')}: ${e.message || e}`);
    return false;
  }
}

function actionButton(label, attrs, onclick) {
  return h('button', { type: 'button', class: 'action', ...attrs, onclick }, label);
}

/** The data, or null after putting the error in the banner. */
async function get(url) {
  const res = await api(url);
  if (!res.ok) showError(`${url}: ${res.error}`, url);
  else clearError(url);
  return res.ok ? res.data : null;
}

/* Refresh policy: on every event (debounced to one per 300 ms) and every 2 s.
 * At most one scheduled refresh runs at a time; a request during a run is
 * remembered and served after it. Hidden tabs do not poll. */
let current = null; // { key, view }
let refreshTimer = null, refreshing = false, refreshAgain = false, lastRefreshAt = 0;

function requestRefresh() {
  if (document.hidden) return;
  if (refreshing) { refreshAgain = true; return; }
  if (refreshTimer) return;
  refreshTimer = setTimeout(runRefresh, Math.max(0, lastRefreshAt + 300 - Date.now()));
}

async function runRefresh() {
  refreshTimer = null;
  refreshing = true;
  lastRefreshAt = Date.now();
  try {
    await current?.view.refresh();
  } catch (e) {
    showError(`refresh failed: ${e.message}`); // a bug in a view, not a server error
  } finally {
    refreshing = false;
    if (refreshAgain) { refreshAgain = false; requestRefresh(); }
  }
}

setInterval(requestRefresh, 2000);
document.addEventListener('visibilitychange', requestRefresh);

/* ------------------------------------------------------------ 4. event stream */

let lastEventId = null;
let recent = []; // the last 20 events, oldest first, unique by id
let recentLoaded = false;
const liveEl = document.getElementById('live');
const lastEventEl = document.getElementById('last-event');

function setLive(connected) {
  liveEl.dataset.connected = String(connected);
  liveEl.querySelector('.label').textContent = connected ? 'live' : 'reconnecting…';
  // A live feed that has sent nothing yet still knows where the log ends.
  if (connected && lastEventId == null) lastKnownEvent();
}

/** Names the newest event in the header (and backfills the recent panel) when
 * the feed is up but quiet. */
async function lastKnownEvent() {
  const r = await get('/api/events?limit=1');
  const last = r && r.last_id ? r.last_id : null;
  if (last == null) { if (r && lastEventId == null) lastEventEl.textContent = 'live, no events recorded'; return; }
  if (lastEventId == null || last > lastEventId) lastEventEl.textContent = `event #${fmtInt(last)}`;
  if (!recentLoaded) loadRecent(last);
}

function addRecent(events) {
  const byId = new Map(recent.map((e) => [e.id, e]));
  for (const e of events) if (e && e.id != null) byId.set(e.id, e);
  recent = [...byId.values()].sort((a, b) => a.id - b.id).slice(-20);
}

function onEvent(msg) {
  let ev;
  try { ev = JSON.parse(msg.data); } catch { return; }
  const id = Number(msg.lastEventId || ev.id);
  if (id) {
    lastEventId = Math.max(lastEventId ?? 0, id);
    lastEventEl.textContent = `event #${fmtInt(lastEventId)}`;
  }
  addRecent([ev]);
  if (!recentLoaded && id) loadRecent(id); // the start-up backfill did not learn where the log ends
  requestRefresh();
}

/** Backfills the recent-events panel once with the 20 events up to `last`. */
async function loadRecent(last) {
  recentLoaded = true;
  const r = await get(`/api/events?after=${Math.max(0, last - 20)}&limit=20`);
  if (r && r.events) { addRecent(r.events); requestRefresh(); }
}

/* Without a known id the stream starts at "now" (no after=): replaying the whole
 * log of a million-task job into a fresh tab would be useless. EventSource
 * reconnects by itself and sends Last-Event-ID; only when it gives up for good
 * (CLOSED, e.g. a non-200 answer) do we open a new one, from our last id. */
function connect() {
  const es = new EventSource(lastEventId != null ? `/api/stream?after=${lastEventId}` : '/api/stream');
  es.onopen = () => setLive(true);
  es.onerror = (e) => {
    // A server-sent "event: error" comes here too, as a message with data; the stream is still up.
    if (e.data) { showError(`event stream: ${e.data}`); return; }
    setLive(false);
    if (es.readyState === EventSource.CLOSED) { es.close(); setTimeout(connect, 3000); }
  };
  es.addEventListener('corral', onEvent);
  es.onmessage = onEvent; // in case a server sends them without "event: corral"
}

/* ------------------------------------------------------ 5. routes and links */

/* A view (views.js, pages.js) is { root, update(route), refresh(), destroy() }.
 * update() takes the route's parameters (it runs again when only the query
 * changes); refresh() fetches and paints. `seq` drops answers to questions no
 * longer asked. */

function routeHref(path, params = {}) {
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== '')).toString();
  return `#${path}${qs ? `?${qs}` : ''}`;
}

/** Change some query parameters of the current route (null removes one). */
function setParams(changes) {
  const r = parseRoute();
  const q = new URLSearchParams(r.q);
  for (const [k, v] of Object.entries(changes)) (v == null ? q.delete(k) : q.set(k, v));
  const qs = q.toString();
  location.hash = `${r.path}${qs ? `?${qs}` : ''}`;
}

const pageOf = (q) => Math.max(0, (parseInt(q.get('page'), 10) || 1) - 1); // ?page= is 1-based
const toPage = (p) => (p > 0 ? p + 1 : null);
const taskHref = (job, index, params) => routeHref(`/jobs/${job}/tasks/${index}`, params);

// "Done" means finished (succeeded, failed or cancelled), as in the CLI; succeeded
/* --------------------------------------------------------- 6. router, start-up */

function parseRoute() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, qs = ''] = raw.split('?');
  const q = new URLSearchParams(qs);
  const decode = (s) => { try { return decodeURIComponent(s); } catch { return s; } };
  const parts = path.split('/').filter(Boolean).map(decode);
  const id = (s) => /^\d+$/.test(s || '');
  if (parts.length === 0) return { key: 'home', path: '/', q, make: homeView, crumbs: [] };
  if (parts[0] === 'jobs' && parts.length === 2 && id(parts[1])) {
    return { key: `job/${parts[1]}`, path, q, job: parts[1], make: jobView, crumbs: [[`Job ${parts[1]}`, `#/jobs/${parts[1]}`]] };
  }
  if (parts[0] === 'jobs' && parts[2] === 'tasks' && parts.length === 4 && id(parts[1]) && id(parts[3])) {
    return {
      key: `task/${parts[1]}/${parts[3]}`, path, q, job: parts[1], index: parts[3], make: taskView,
      crumbs: [[`Job ${parts[1]}`, `#/jobs/${parts[1]}`], [`Task ${parts[3]}`, taskHref(parts[1], parts[3])]],
    };
  }
  if (parts[0] === 'pools' && parts.length === 2) {
    return { key: `pool/${parts[1]}`, path, q, name: parts[1], make: poolView, crumbs: [[`Pool ${parts[1]}`, `#/pools/${encodeURIComponent(parts[1])}`]] };
  }
  // Schedules, templates and triggers: a list, and a page for each.
  const kinds = { schedules: ['Schedules', schedulesView, scheduleView], templates: ['Templates', templatesView, templateView], triggers: ['Triggers', triggersView, triggerView] };
  const kind = kinds[parts[0]];
  if (kind && parts.length === 1) return { key: parts[0], path, q, make: kind[1], crumbs: [[kind[0], `#/${parts[0]}`]] };
  if (kind && parts.length === 2) {
    return { key: `${parts[0]}/${parts[1]}`, path, q, name: parts[1], make: kind[2], crumbs: [[kind[0], `#/${parts[0]}`], [parts[1], `#/${parts[0]}/${encodeURIComponent(parts[1])}`]] };
  }
  return { key: `404/${path}`, path, q, make: notFoundView, crumbs: [] };
}

function navigate() {
  const r = parseRoute();
  if (r.redirect) { location.replace(r.redirect); return; }
  if (!current || current.key !== r.key) {
    current?.view.destroy();
    // The last page's errors go with it (a failed action, a page that would not load).
    bannerEl.replaceChildren();
    current = { key: r.key, view: r.make() };
    current.view.update(r);
    document.getElementById('view').replaceChildren(current.view.root);
    document.title = 'Corral';
    scrollTo(0, 0);
  } else {
    current.view.update(r);
  }
  document.getElementById('crumbs').replaceChildren(...r.crumbs.flatMap(([label, href]) => [h('span', { class: 'sep' }, '/'), h('a', { href }, label)]));
  // A new question gets an answer now, outside the debounce (in-flight URLs are still shared).
  current.view.refresh().catch((e) => showError(`refresh failed: ${e.message}`));
}

addEventListener('DOMContentLoaded', () => {
  addEventListener('hashchange', navigate);
  get('/api/whoami').then((who) => { if (who) { me = who; requestRefresh(); } });
  navigate();
  connect();
  // /api/events answers with last_id, the newest event: that is where the backfill ends.
  get('/api/events?after=0&limit=1').then((r) => { if (r && r.last_id > 0 && !recentLoaded) loadRecent(r.last_id); });
});
