/* Corral dashboard: a live, dependency-free operator view (vanilla ES2020).
 *
 * Layout of this file:
 *   1. formatting helpers        4. live event stream
 *   2. DOM helpers and widgets   5. views: home, job, task
 *   3. API access and refresh    6. router and start-up
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

/* ----------------------------------------------------------------- 5. views */

/* A view is { root, update(route), refresh(), destroy() }. update() takes the
 * route's parameters (it runs again when only the query changes); refresh()
 * fetches and paints. `seq` drops answers to questions no longer asked. */

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
// and failed are counted apart.
const JOB_HEADERS = [['ID', 'num'], 'Name', 'Pool', 'Owner', 'State', 'Progress', ['Done', 'num'], ['Succeeded', 'num'], ['Failed', 'num'], ['Throughput', 'num'], ['ETA', 'num'], ['Submitted', 'num']];
const NODE_HEADERS = ['ID', 'Pool', 'Host', 'State', ['Heartbeat', 'num'], ['Slots', 'num'], 'CPU', 'Memory', 'Running', 'Reason'];
const EVENT_HEADERS = [['Time', 'num'], ['#', 'num'], 'Kind', 'Subject', 'State', 'Detail'];
const TASK_HEADERS = [['Index', 'num'], 'Name', 'State', ['Attempt', 'num'], 'Node', ['Started', 'num'], 'Reason'];
const ATTEMPT_HEADERS = [['Attempt', 'num'], 'Node', ['Started', 'num'], ['Ended', 'num'], ['Duration', 'num'], 'Outcome', ['Exit', 'num'], 'Message'];

function poolCard(p, selected) {
  const nodes = p.nodes || {}, slots = p.slots || { total: 0, used: 0, free: 0 }, q = p.queue || {};
  const a = p.autoscale;
  return h('div', { class: `card${selected ? ' selected' : ''}`, 'data-pool': p.name },
    h('div', { class: 'card-head' },
      h('a', { class: 'pool-name', href: routeHref('/', { pool: p.name }), title: 'Show only this pool’s nodes' }, p.name),
      h('span', { class: 'tag' }, p.provider),
      p.deleting && badge('deleting')),
    fact('nodes', h('span', { class: 'node-states' }, NODE_STATES.map((s) =>
      h('span', { class: nodes[s] ? 'ns' : 'ns zero', title: s }, h('i', { class: `dot s-${s}` }), `${s} `, h('b', null, fmtInt(nodes[s] || 0)))))),
    fact('slots', meter(slots.used, slots.total), ` ${fmtInt(slots.used)}/${fmtInt(slots.total)} used · ${fmtInt(slots.free)} free`),
    fact('queue', h('b', null, fmtInt(q.ready)), ' ready · ', h('b', null, fmtInt(q.assigned || 0)), ' assigned · ', h('b', null, fmtInt(q.running)), ' running'),
    fact('scale', a ? `autoscale ${a.min_nodes}..${a.max_nodes}, target ${a.target ?? p.target_nodes}` : `fixed, ${fmtInt(p.target_nodes)} nodes`,
      h('span', { class: 'muted' }, ` · ${p.slots_per_node} slots/node · ${p.fill}`)),
    (p.scale_log || []).length > 0 && h('ul', { class: 'scale-log' }, (p.scale_log || []).slice(-5).reverse().map((d) =>
      h('li', null, timeEl(d.at_ms), h('b', null, ` ${d.from}→${d.to} `), h('span', { class: 'muted' }, d.reason)))),
    me.may.change_nodes && p.provider !== 'static' && !a && !p.deleting && h('div', { class: 'actions' },
      actionButton('Resize', { 'data-action': 'resize' }, () => {
        const answer = prompt(`Nodes for pool ${p.name}?`, String(p.target_nodes));
        if (answer === null) return;
        const nodes = Number(answer);
        if (!Number.isInteger(nodes) || nodes < 0) { showError(`resize ${p.name}: '${answer}' is not a whole number of nodes`); return; }
        act(`/api/pools/${encodeURIComponent(p.name)}/resize`, `Resize pool ${p.name} to ${nodes} node(s)?`, { nodes });
      })),
    p.last_error && h('div', { class: 'error-text' }, p.last_error));
}

function jobRow(j) {
  const c = j.counts || {};
  return h('tr', { 'data-job-id': j.id, 'data-state': j.state },
    h('td', { class: 'num' }, h('a', { href: `#/jobs/${j.id}` }, j.id)),
    h('td', { class: 'name' }, h('a', { href: `#/jobs/${j.id}` }, j.name)),
    h('td', null, j.pool),
    h('td', { 'data-field': 'owner' }, j.owner || '-'),
    h('td', null, badge(j.state)),
    h('td', { class: 'bar-cell' }, progressBar(c, j.tasks)),
    // Plain integers on purpose: the browser tests read these.
    h('td', { class: 'num' }, h('span', { 'data-field': 'done' }, String(finished(c))), '/', h('span', { 'data-field': 'total' }, String(j.tasks))),
    h('td', { class: 'num' }, h('span', { 'data-field': 'succeeded' }, String(c.succeeded || 0))),
    h('td', { class: c.failed > 0 ? 'num bad' : 'num' }, fmtInt(c.failed || 0)),
    h('td', { class: 'num' }, fmtRate(j.throughput_per_s, finished(c))),
    h('td', { class: 'num' }, fmtEta(j.eta_s)),
    h('td', { class: 'num' }, timeEl(j.submitted_at_ms)));
}

function nodeRow(n) {
  const usage = n.usage || [];
  const gone = n.state === 'lost' || n.state === 'removed';
  const running = n.running || [];
  const age = n.heartbeat_age_ms;
  // cpu_percent is taken as 0-100 for the whole node; rescale if a host reports per-core sums.
  const cpuMax = Math.max(100, ...usage.map((u) => u.cpu_percent || 0));
  return h('tr', { 'data-node-id': n.id, 'data-state': n.state, class: gone ? 'dim' : null },
    h('td', { class: 'mono' }, n.id),
    h('td', null, h('a', { href: routeHref('/', { pool: n.pool }) }, n.pool)),
    h('td', { class: 'mono', title: `${n.cpus} CPUs, ${fmtBytes(n.memory_bytes)}` }, n.hostname),
    h('td', null, badge(n.state, { 'data-field': 'state' })),
    h('td', { class: !gone && age > 3000 ? 'num warn' : 'num' }, age == null ? '—' : fmtDuration(age)),
    h('td', { class: 'num', 'data-field': 'slots' }, `${n.slots_used}/${n.slots}`,
      Object.entries(n.resources || {}).filter(([name]) => name !== 'mem').map(([name, total]) =>
        h('div', { class: 'muted', 'data-resource': name }, `${name} ${(n.resources_used || {})[name] || 0}/${total}`))),
    h('td', null, h('span', { class: 'spark-cell' }, sparkline(usage.map((u) => u.cpu_percent), cpuMax, 'cpu'),
      fmtPct(n.cpu_percent))),
    h('td', null, h('span', { class: 'spark-cell' }, sparkline(usage.map((u) => u.memory_used_bytes), n.memory_bytes || Math.max(...usage.map((u) => u.memory_used_bytes || 0)), 'mem'),
      `${fmtBytes(n.memory_used_bytes)} / ${fmtBytes(n.memory_bytes)}`)),
    h('td', { class: 'running' }, running.slice(0, 4).map((r) =>
      h('a', { href: taskHref(r.job, r.index), class: 'chip' }, `${r.job}/${r.index} #${r.attempt}`)),
      running.length > 4 && h('span', { class: 'muted' }, ` +${running.length - 4}`)),
    h('td', { class: 'reason' }, n.reason || '',
      me.may.change_nodes && (n.state === 'idle' || n.state === 'running') && actionButton('Drain', { 'data-action': 'drain' },
        () => act(`/api/nodes/${encodeURIComponent(n.id)}/drain`, `Drain node ${n.id}? It takes no new tasks; its running ones finish.`))));
}

function eventRow(e) {
  const subject = [];
  if (e.pool) subject.push(h('a', { href: routeHref('/', { pool: e.pool }) }, `pool ${e.pool}`));
  if (e.job != null && e.task != null) subject.push(h('a', { href: taskHref(e.job, e.task) }, `task ${e.job}/${e.task}${e.attempt != null ? ` #${e.attempt}` : ''}`));
  else if (e.job != null) subject.push(h('a', { href: `#/jobs/${e.job}` }, `job ${e.job}`));
  if (e.node) subject.push(h('span', { class: 'mono' }, e.node));
  return h('tr', null,
    h('td', { class: 'num' }, timeEl(e.at_ms)), h('td', { class: 'num muted' }, e.id), h('td', null, e.kind),
    h('td', null, subject.flatMap((s, i) => (i ? [' · ', s] : [s]))),
    h('td', null, e.state && badge(e.state)),
    h('td', { class: 'reason' }, [e.detail || '', e.actor ? h('span', { class: 'muted', 'data-field': 'actor' }, ` (by ${e.actor})`) : ''].filter(Boolean)));
}

function homeView() {
  let alive = true, seq = 0, params = {};
  const poolsEl = h('div', { class: 'cards' });
  const jobsBody = h('tbody'), nodesBody = h('tbody'), eventsBody = h('tbody');
  const jobsPager = pager((p) => setParams({ page: toPage(p) }));
  const jobFilter = h('select', { onchange: (e) => setParams({ jobs: e.target.value || null, page: null }) },
    ['', ...JOB_STATES].map((s) => h('option', { value: s }, s || 'all states')));
  const nodesFilter = h('span', { class: 'filter-chip' });
  const root = h('div', { class: 'home' },
    section('Pools', null, poolsEl),
    section('Jobs', [jobFilter, jobsPager.el], table(JOB_HEADERS, jobsBody)),
    section('Nodes', nodesFilter, table(NODE_HEADERS, nodesBody)),
    section('Recent events', null, table(EVENT_HEADERS, eventsBody)));

  return {
    root,
    destroy() { alive = false; },
    update(r) {
      seq++;
      params = { page: pageOf(r.q), pool: r.q.get('pool'), jobs: r.q.get('jobs') };
      jobFilter.value = params.jobs || '';
      nodesFilter.replaceChildren(...(params.pool ? [`pool ${params.pool}`,
        h('button', { type: 'button', class: 'close', title: 'Show all pools', onclick: () => setParams({ pool: null }) }, '×')] : []));
    },
    async refresh() {
      const my = seq, { page, pool, jobs: jobState } = params;
      const offset = page * PAGE;
      const [pools, jobs, nodes] = await Promise.all([
        get('/api/pools'),
        get(`/api/jobs?offset=${offset}&limit=${PAGE}${jobState ? `&state=${encodeURIComponent(jobState)}` : ''}`),
        get(pool ? `/api/nodes?pool=${encodeURIComponent(pool)}` : '/api/nodes'),
      ]);
      if (!alive || my !== seq) return;
      if (jobs && jobs.total > 0 && offset >= jobs.total) { setParams({ page: Math.ceil(jobs.total / PAGE) }); return; }
      paint('home', () => {
        if (!alive || my !== seq) return;
        if (pools) poolsEl.replaceChildren(...(pools.length ? pools.map((p) => poolCard(p, p.name === pool)) : [h('p', { class: 'muted' }, 'No pools.')]));
        if (jobs) {
          jobsBody.replaceChildren(...(jobs.jobs.length ? jobs.jobs.map(jobRow) : [emptyRow(JOB_HEADERS.length, 'No jobs.')]));
          jobsPager.update(offset, jobs.jobs.length, jobs.total);
        }
        if (nodes) {
          // Live nodes first, then lost and removed ones (dimmed); stable otherwise.
          const gone = (n) => (n.state === 'lost' || n.state === 'removed' ? 1 : 0);
          const sorted = [...nodes].sort((a, b) => gone(a) - gone(b));
          nodesBody.replaceChildren(...(sorted.length ? sorted.map(nodeRow) : [emptyRow(NODE_HEADERS.length, 'No nodes.')]));
        }
        eventsBody.replaceChildren(...(recent.length ? [...recent].reverse().map(eventRow)
          : [emptyRow(EVENT_HEADERS.length, 'No events since this page opened.')]));
        if (pools && jobs && nodes) document.body.dataset.ready = 'true';
      });
    },
  };
}

function jobHeader(j) {
  const c = j.counts || {};
  const n = j.notify;
  return h('div', { class: 'job-head', 'data-job-id': j.id, 'data-state': j.state },
    h('div', { class: 'title-row' }, h('h1', null, `Job ${j.id} `, h('span', { class: 'muted' }, j.name)), badge(j.state)),
    h('div', { class: 'facts' },
      fact('pool', h('a', { href: routeHref('/', { pool: j.pool }) }, j.pool)),
      fact('owner', j.owner || '-'),
      fact('priority', j.priority),
      fact('submitted', timeEl(j.submitted_at_ms)),
      fact('finished', timeEl(j.finished_at_ms)),
      fact('elapsed', fmtDuration((j.finished_at_ms ?? Date.now()) - j.submitted_at_ms)),
      fact('done', `${fmtInt(finished(c))} / ${fmtInt(j.tasks)}`,
        h('span', { class: 'muted' }, ` (${fmtInt(c.succeeded || 0)} succeeded · ${fmtInt(c.failed || 0)} failed · ${fmtInt(c.cancelled || 0)} cancelled)`)),
      fact('throughput', fmtRate(j.throughput_per_s, finished(c))),
      fact('ETA', fmtEta(j.eta_s))),
    me.may.change_jobs && h('div', { class: 'actions' },
      j.state === 'active' && actionButton('Cancel job', { 'data-action': 'cancel' },
        () => act(`/api/jobs/${j.id}/cancel`, `Cancel job ${j.id}? Its queued tasks are dropped and its running ones killed.`)),
      (c.failed || 0) > 0 && !(j.auto_pool && j.state !== 'active') && actionButton(`Retry ${fmtInt(c.failed)} failed`, { 'data-action': 'retry' },
        () => act(`/api/jobs/${j.id}/retry`, `Retry the ${c.failed} failed task(s) of job ${j.id}?`))),
    j.reason && h('div', { class: 'reason-line' }, j.reason),
    progressBar(c, j.tasks, true),
    h('div', { class: 'counts' }, COUNT_STATES.map((s) =>
      h('span', { class: s === 'failed' && c.failed > 0 ? 'count bad' : 'count' }, h('i', { class: `dot s-${s}` }), `${s} `, h('b', null, fmtInt(c[s] || 0))))),
    n && h('div', { class: 'notify' }, 'notify ', h('span', { class: 'mono' }, n.url), ' ',
      n.delivered ? badge('delivered') : badge('pending'),
      ` · ${fmtInt(n.attempts)} attempt${n.attempts === 1 ? '' : 's'}`,
      n.last_error && h('span', { class: 'error-text' }, ` · ${n.last_error}`)));
}

function taskRow(job, t) {
  return h('tr', { 'data-task-index': t.index, 'data-state': t.state },
    h('td', { class: 'num' }, h('a', { href: taskHref(job, t.index) }, t.index)),
    h('td', { class: 'name' }, t.name),
    h('td', null, badge(t.state)),
    h('td', { class: 'num', title: `${t.failures} failures, ${t.node_losses} node losses` }, t.attempt ?? '—'),
    h('td', { class: 'mono' }, t.node || '—'),
    h('td', { class: 'num' }, timeEl(t.started_at_ms)),
    h('td', { class: 'reason' }, t.reason || t.last_error || ''));
}

function jobView() {
  let alive = true, seq = 0, job, state, page;
  const head = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const filters = new Map(); // state -> the count element in its button
  const filterEl = h('div', { class: 'filters' }, ['all', ...TASK_STATES].map((s) => {
    const count = h('span', { class: 'count' });
    filters.set(s, count);
    return h('button', { type: 'button', 'data-filter': s, onclick: () => setParams({ state: s === 'all' ? null : s, page: null }) }, s, ' ', count);
  }));
  const pg = pager((p) => setParams({ page: toPage(p) }));
  const body = h('tbody');
  const root = h('div', null, head, section('Tasks', [filterEl, pg.el], table(TASK_HEADERS, body)));

  return {
    root,
    destroy() { alive = false; },
    update(r) {
      seq++;
      job = r.job;
      state = TASK_STATES.includes(r.q.get('state')) ? r.q.get('state') : null;
      page = pageOf(r.q);
      for (const b of filterEl.children) b.classList.toggle('active', b.dataset.filter === (state || 'all'));
    },
    async refresh() {
      const my = seq, offset = page * PAGE;
      const [j, tasks] = await Promise.all([
        get(`/api/jobs/${job}`),
        get(`/api/jobs/${job}/tasks?offset=${offset}&limit=${PAGE}${state ? `&state=${state}` : ''}`),
      ]);
      if (!alive || my !== seq) return;
      if (!j && !head.querySelector('.job-head')) head.replaceChildren(h('p', { class: 'section error-text' }, `Job ${job} could not be loaded.`));
      if (tasks && tasks.total > 0 && offset >= tasks.total) { setParams({ page: Math.ceil(tasks.total / PAGE) }); return; }
      paint('job', () => {
        if (!alive || my !== seq) return;
        if (j) {
          document.title = `Job ${j.id} ${j.name} · Corral`;
          head.replaceChildren(jobHeader(j));
          filters.get('all').textContent = fmtInt(j.tasks);
          const c = j.counts || {};
          for (const s of TASK_STATES) filters.get(s).textContent = fmtInt((c[s] || 0) + (s === 'running' ? c.assigned || 0 : 0));
        }
        if (tasks) {
          body.replaceChildren(...(tasks.tasks.length ? tasks.tasks.map((t) => taskRow(job, t)) : [emptyRow(TASK_HEADERS.length, 'No tasks.')]));
          pg.update(offset, tasks.tasks.length, tasks.total);
        }
      });
    },
  };
}

/* Tails one attempt's stdout and stderr into two <pre>s, following next_offset.
 * While `live` (the task runs this attempt) it polls every 500 ms; otherwise it
 * reads until a read brings nothing new, then stops. */
class LogTail {
  constructor(job, index, attempt, panes, statusEl) {
    Object.assign(this, { job, index, attempt, panes, statusEl });
    this.offsets = { stdout: 0, stderr: 0 };
    this.live = false; this.stopped = false; this.idle = false; this.error = null; this.timer = null;
    this.pump();
  }

  setLive(live) {
    this.live = live;
    if (live && this.idle) { this.idle = false; this.pump(); }
    this.status();
  }

  stop() { this.stopped = true; clearTimeout(this.timer); }

  async read(stream) {
    const url = `/api/jobs/${this.job}/tasks/${this.index}/log?attempt=${this.attempt}&stream=${stream}&offset=${this.offsets[stream]}`;
    const res = await api(url); // errors go to the status line, not the banner (it polls)
    if (this.stopped) return 0;
    if (!res.ok) { this.error = res.error; return 0; }
    this.error = null;
    const { text, next_offset: next } = res.data;
    if (typeof next === 'number') this.offsets[stream] = next;
    if (!text) return 0;
    const pre = this.panes[stream];
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.append(text); // a text node per chunk: appending never re-parses what is there
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    return text.length;
  }

  async pump() {
    if (this.stopped) return;
    const got = Math.max(...(await Promise.all([this.read('stdout'), this.read('stderr')])));
    if (this.stopped) return;
    if (this.live || got > 0) {
      // Catch up without waiting when there is a backlog; otherwise poll at 500 ms.
      const backlog = got > 0 && (!this.live || got >= 65536);
      this.timer = setTimeout(() => this.pump(), backlog ? 0 : 500);
    } else {
      this.idle = true;
    }
    this.status();
  }

  status() {
    const size = `${fmtBytes(this.offsets.stdout)} stdout, ${fmtBytes(this.offsets.stderr)} stderr`;
    this.statusEl.className = this.error ? 'error-text' : 'muted';
    this.statusEl.textContent = this.error ? `log: ${this.error}` : `${this.idle ? 'complete' : this.live ? 'tailing live' : 'reading'} · ${size}`;
  }
}

function taskView() {
  let alive = true, seq = 0, job, index, wanted = null, tail = null;
  const head = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const attemptsBody = h('tbody');
  const tabs = h('div', { class: 'filters' });
  const statusEl = h('span', { class: 'muted' });
  const panes = { stdout: h('pre', { class: 'log' }), stderr: h('pre', { class: 'log stderr' }) };
  const root = h('div', null, head,
    section('Attempts', null, table(ATTEMPT_HEADERS, attemptsBody)),
    section('Output', [tabs, statusEl],
      h('div', { class: 'logs' },
        h('div', null, h('h3', null, 'stdout'), panes.stdout),
        h('div', null, h('h3', null, 'stderr'), panes.stderr))));

  function stopTail() {
    tail?.stop();
    tail = null;
    panes.stdout.replaceChildren();
    panes.stderr.replaceChildren();
  }

  return {
    root,
    destroy() { alive = false; stopTail(); },
    update(r) {
      seq++;
      if (r.job !== job || r.index !== index) stopTail();
      job = r.job; index = r.index;
      wanted = /^\d+$/.test(r.q.get('attempt') || '') ? Number(r.q.get('attempt')) : null; // null: the latest
    },
    async refresh() {
      const my = seq;
      const t = await get(`/api/jobs/${job}/tasks/${index}`);
      if (!alive || my !== seq) return;
      if (!t) {
        if (!head.querySelector('.job-head')) head.replaceChildren(h('p', { class: 'section error-text' }, `Task ${job}/${index} could not be loaded.`));
        return;
      }
      const attempts = t.attempts || [];
      const latest = attempts.length ? Math.max(...attempts.map((a) => a.attempt)) : null;
      const sel = wanted ?? latest;
      const href = (a) => taskHref(job, index, { attempt: a === latest ? null : a });
      paint('task', () => {
        if (!alive || my !== seq) return;
        document.title = `Task ${job}/${index} · Corral`;
        head.replaceChildren(h('div', { class: 'job-head', 'data-task-index': t.index, 'data-state': t.state },
          h('div', { class: 'title-row' }, h('h1', null, `Task ${t.index} `, String(t.name) !== String(t.index) && h('span', { class: 'muted' }, t.name)), badge(t.state)),
          h('div', { class: 'facts' },
            fact('job', h('a', { href: `#/jobs/${job}` }, `job ${job}`)),
            fact('attempt', t.attempt ?? '—'), fact('failures', t.failures), fact('node losses', t.node_losses),
            fact('node', t.node || '—'), fact('started', timeEl(t.started_at_ms))),
          t.reason && h('div', { class: 'reason-line' }, t.reason)));
        attemptsBody.replaceChildren(...(attempts.length ? [...attempts].reverse().map((a) => h('tr', { class: a.attempt === sel ? 'selected' : null },
          h('td', { class: 'num' }, h('a', { href: href(a.attempt) }, `#${a.attempt}`)),
          h('td', { class: 'mono' }, a.node || '—'),
          h('td', { class: 'num' }, timeEl(a.started_at_ms)),
          h('td', { class: 'num' }, timeEl(a.ended_at_ms)),
          h('td', { class: 'num' }, a.started_at_ms == null ? '—' : fmtDuration((a.ended_at_ms ?? Date.now()) - a.started_at_ms)),
          h('td', null, a.outcome ? badge(a.outcome) : badge('running')),
          h('td', { class: 'num' }, a.exit_code != null ? `exit ${a.exit_code}` : a.signal != null ? `signal ${a.signal}` : '—'),
          h('td', { class: 'reason' }, a.message || ''))) : [emptyRow(ATTEMPT_HEADERS.length, 'Not started yet.')]));
        tabs.replaceChildren(...attempts.map((a) => h('a', { href: href(a.attempt), class: a.attempt === sel ? 'tab active' : 'tab' }, `attempt ${a.attempt}`)));
      });

      // The tail is not DOM rebuilding, so it is synced outside paint().
      if (sel == null) { stopTail(); statusEl.textContent = 'no output yet'; return; }
      if (!tail || tail.attempt !== sel) {
        stopTail();
        tail = new LogTail(job, index, sel, panes, statusEl);
      }
      const att = attempts.find((a) => a.attempt === sel);
      tail.setLive(t.state === 'running' && !!att && att.ended_at_ms == null);
    },
  };
}

function notFoundView() {
  return {
    root: h('div', { class: 'section' }, h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/' }, 'Back to the overview'))),
    update() {}, destroy() {}, async refresh() {},
  };
}

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
  // A pool page is the overview with its nodes filtered.
  if (parts[0] === 'pools' && parts.length === 2) return { redirect: routeHref('/', { pool: parts[1] }) };
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

addEventListener('hashchange', navigate);
get('/api/whoami').then((who) => { if (who) { me = who; requestRefresh(); } });
navigate();
connect();
// /api/events answers with last_id, the newest event: that is where the backfill ends.
get('/api/events?after=0&limit=1').then((r) => { if (r && r.last_id > 0 && !recentLoaded) loadRecent(r.last_id); });
