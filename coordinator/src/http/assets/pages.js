/* Corral dashboard: the pool page, and the pages of what makes jobs by itself
 * (schedules, templates, triggers). Built on app.js's helpers like views.js. */
'use strict';

const SCHEDULE_HEADERS = ['Name', 'When', 'Overlap', 'Pool', 'Owner', 'State', ['Next', 'num'], 'Last run', 'Error'];
const RUN_HEADERS = [['Slot', 'num'], ['Job', 'num'], 'State'];
const TEMPLATE_HEADERS = ['Name', 'Payload', 'Meta', 'Pool', 'Command', 'Owner', ['Dispatched', 'num'], 'Triggers'];
const DISPATCH_HEADERS = [['Job', 'num'], 'Name', 'Owner', 'State', ['Submitted', 'num'], ['Finished', 'num']];
const TRIGGER_HEADERS = ['Name', 'Template', 'Watches', 'Owner', 'State', ['Fired', 'num'], ['Skipped', 'num'], ['Failed', 'num'], 'Last error'];
const FIRED_HEADERS = [['Time', 'num'], 'Object', ['Job', 'num'], 'State'];

const scheduleHref = (name) => `#/schedules/${encodeURIComponent(name)}`;
const templateHref = (name) => `#/templates/${encodeURIComponent(name)}`;
const triggerHref = (name) => `#/triggers/${encodeURIComponent(name)}`;
const jobLink = (id) => h('a', { href: `#/jobs/${id}` }, String(id));
const when = (s) => (s.cron ? `cron ${s.cron} (${s.tz})` : `every ${fmtDuration(s.every_ms)}`);
const scheduleState = (s) => (s.ended ? 'ended' : s.paused ? 'paused' : 'active');
/** Whether the signed-in token may change what `owner` made (the server checks again). */
const mayChange = (owner) => me.may.change_jobs && (me.role === 'admin' || me.name === owner);

/** A page that shows one list: `load()` answers its rows, `row` draws one. */
function listView(title, url, headers, row, empty) {
  let alive = true, seq = 0;
  const body = h('tbody');
  const root = h('div', null, section(title, null, table(headers, body)));
  return {
    root,
    destroy() { alive = false; },
    update() { seq++; },
    async refresh() {
      const my = seq;
      const items = await get(url);
      if (!alive || my !== seq || !items) return;
      paint(url, () => {
        document.title = `${title} · Corral`;
        body.replaceChildren(...(items.length ? items.map(row) : [emptyRow(headers.length, empty)]));
        document.body.dataset.ready = 'true';
      });
    },
  };
}

/** A page about one named thing: `draw(item)` answers its content. */
function itemView(what, urlOf, draw) {
  let alive = true, seq = 0, name;
  const root = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  return {
    root,
    destroy() { alive = false; },
    update(r) { seq++; name = r.name; },
    async refresh() {
      const my = seq;
      const item = await get(urlOf(name));
      if (!alive || my !== seq) return;
      if (!item) {
        if (!root.querySelector('.job-head')) root.replaceChildren(h('p', { class: 'section error-text' }, `${what} ${name} could not be loaded.`));
        return;
      }
      paint(`${what}/${name}`, () => {
        if (!alive || my !== seq) return;
        document.title = `${what} ${name} · Corral`;
        root.replaceChildren(...draw(item));
        document.body.dataset.ready = 'true';
      });
    },
  };
}

function head(title, state, ...facts) {
  return h('div', { class: 'job-head', 'data-state': state },
    h('div', { class: 'title-row' }, h('h1', null, title), state && badge(state)),
    h('div', { class: 'facts' }, ...facts));
}

/* ---------------------------------------------------------------- schedules */

function scheduleRow(s) {
  const last = (s.runs || [])[0];
  return h('tr', { 'data-schedule': s.name, 'data-state': scheduleState(s) },
    h('td', { class: 'name' }, h('a', { href: scheduleHref(s.name) }, s.name)),
    h('td', { class: 'mono' }, when(s)),
    h('td', null, s.overlap),
    h('td', null, h('a', { href: `#/pools/${encodeURIComponent(s.pool)}` }, s.pool)),
    h('td', null, s.owner),
    h('td', null, badge(scheduleState(s))),
    h('td', { class: 'num' }, s.next.length ? timeEl(s.next[0].at_ms) : '—'),
    h('td', null, last ? [jobLink(last.job), ' ', last.state ? badge(last.state) : ''] : '—'),
    h('td', { class: 'reason' }, s.last_error || ''));
}

const schedulesView = () => listView('Schedules', '/api/schedules', SCHEDULE_HEADERS, scheduleRow,
  'No schedules. `corral schedule create NAME --cron "0 2 * * *" --pool P -- CMD` makes one.');

function scheduleView() {
  return itemView('Schedule', (name) => `/api/schedules/${encodeURIComponent(name)}`, (s) => {
    const path = `/api/schedules/${encodeURIComponent(s.name)}`;
    const actions = mayChange(s.owner) && !s.ended && h('div', { class: 'actions' },
      s.paused
        ? actionButton('Resume', { 'data-action': 'resume' }, () => act(`${path}/resume`, `Resume schedule ${s.name}? Slots missed meanwhile run by its catch-up window.`))
        : actionButton('Pause', { 'data-action': 'pause' }, () => act(`${path}/pause`, `Pause schedule ${s.name}? No slot starts a job until it is resumed.`)),
      actionButton('Run now', { 'data-action': 'run' }, () => act(`${path}/run`, `Run schedule ${s.name} now (by its overlap policy, ${s.overlap})?`)));
    return [
      head(`Schedule ${s.name}`, scheduleState(s),
        fact('when', h('span', { class: 'mono' }, when(s))),
        fact('overlap', s.overlap),
        fact('catch-up window', fmtDuration(s.catchup_window_ms)),
        fact('pool', h('a', { href: `#/pools/${encodeURIComponent(s.pool)}` }, s.pool)),
        fact('command', h('span', { class: 'mono' }, (s.command || []).join(' '))),
        fact('owner', s.owner),
        fact('created', timeEl(s.created_at_ms)),
        fact('missed', fmtInt(s.missed)), fact('skipped', fmtInt(s.skipped)), fact('waiting', fmtInt(s.buffered))),
      actions || '',
      s.last_error ? h('div', { class: 'error-text' }, s.last_error) : '',
      section('Next slots', null, h('ul', { class: 'slots' }, s.next.length
        ? s.next.map((n) => h('li', { 'data-slot': n.at_ms }, timeEl(n.at_ms), h('span', { class: 'muted mono' }, ` ${n.shown}`)))
        : [h('li', { class: 'muted' }, s.ended ? 'None: the schedule has ended.' : 'None.')])),
      section('Last runs', null, table(RUN_HEADERS, h('tbody', null,
        ...(s.runs.length ? s.runs.map((r) => h('tr', { 'data-job-id': r.job },
          h('td', { class: 'num' }, timeEl(r.slot_ms)), h('td', { class: 'num' }, jobLink(r.job)), h('td', null, r.state ? badge(r.state) : '—')))
          : [emptyRow(RUN_HEADERS.length, 'No runs yet.')])))),
    ];
  });
}

/* ---------------------------------------------------------------- templates */

function templateRow(t) {
  return h('tr', { 'data-template': t.name },
    h('td', { class: 'name' }, h('a', { href: templateHref(t.name) }, t.name)),
    h('td', null, t.payload),
    h('td', { class: 'mono' }, (t.meta_required || []).join(', ') || '—'),
    h('td', null, h('a', { href: `#/pools/${encodeURIComponent(t.pool)}` }, t.pool)),
    h('td', { class: 'mono' }, (t.command || []).join(' ')),
    h('td', null, t.owner),
    h('td', { class: 'num' }, fmtInt(t.dispatched)),
    h('td', null, (t.triggers || []).map((n) => h('a', { href: triggerHref(n), class: 'chip' }, n))));
}

const templatesView = () => listView('Templates', '/api/templates', TEMPLATE_HEADERS, templateRow,
  'No templates. `corral template create NAME --pool P -- CMD` makes one.');

function templateView() {
  return itemView('Template', (name) => `/api/templates/${encodeURIComponent(name)}`, (t) => [
    head(`Template ${t.name}`, null,
      fact('payload', t.payload),
      fact('meta required', (t.meta_required || []).join(', ') || 'none'),
      fact('pool', h('a', { href: `#/pools/${encodeURIComponent(t.pool)}` }, t.pool)),
      fact('command', h('span', { class: 'mono' }, (t.command || []).join(' '))),
      fact('tasks per job', fmtInt(t.tasks)),
      fact('owner', t.owner),
      fact('created', timeEl(t.created_at_ms)),
      fact('triggers', ...((t.triggers || []).length ? t.triggers.map((n) => h('a', { href: triggerHref(n), class: 'chip' }, n)) : ['none']))),
    section(`Dispatches (${fmtInt(t.dispatched)})`, null, table(DISPATCH_HEADERS, h('tbody', null,
      ...((t.history || []).length ? t.history.map((d) => h('tr', { 'data-job-id': d.job, 'data-state': d.state },
        h('td', { class: 'num' }, jobLink(d.job)), h('td', { class: 'name' }, d.name), h('td', null, d.owner),
        h('td', null, badge(d.state)), h('td', { class: 'num' }, timeEl(d.submitted_at_ms)), h('td', { class: 'num' }, timeEl(d.finished_at_ms))))
        : [emptyRow(DISPATCH_HEADERS.length, 'Not dispatched yet (or its jobs were deleted).')])))),
  ]);
}

/* ----------------------------------------------------------------- triggers */

const triggerState = (t) => (t.paused ? 'paused' : 'active');
const watches = (t) => `${t.prefix || '(the whole store)'}${t.glob ? ` ${t.glob}` : ''}${t.poll_ms ? `, polled every ${fmtDuration(t.poll_ms)}` : ', on each put'}`;

function triggerRow(t) {
  return h('tr', { 'data-trigger': t.name, 'data-state': triggerState(t) },
    h('td', { class: 'name' }, h('a', { href: triggerHref(t.name) }, t.name)),
    h('td', null, h('a', { href: templateHref(t.template) }, t.template)),
    h('td', { class: 'mono' }, watches(t)),
    h('td', null, t.owner),
    h('td', null, badge(triggerState(t))),
    h('td', { class: 'num' }, fmtInt(t.fired)),
    h('td', { class: 'num' }, fmtInt(t.skipped)),
    h('td', { class: t.failed > 0 ? 'num bad' : 'num' }, fmtInt(t.failed)),
    h('td', { class: 'reason' }, t.last_error || ''));
}

const triggersView = () => listView('Triggers', '/api/triggers', TRIGGER_HEADERS, triggerRow,
  'No triggers. `corral trigger create NAME --template T --prefix in/` makes one.');

function triggerView() {
  return itemView('Trigger', (name) => `/api/triggers/${encodeURIComponent(name)}`, (t) => [
    head(`Trigger ${t.name}`, triggerState(t),
      fact('template', h('a', { href: templateHref(t.template) }, t.template)),
      fact('watches', h('span', { class: 'mono' }, watches(t))),
      fact('max active', t.max_active ?? 'no limit'),
      fact('owner', t.owner),
      fact('created', timeEl(t.created_at_ms)),
      fact('last poll', timeEl(t.last_poll_ms)),
      fact('fired', fmtInt(t.fired)), fact('skipped', fmtInt(t.skipped)), fact('failed', fmtInt(t.failed))),
    t.last_error ? h('div', { class: 'error-text', 'data-field': 'last-error' }, t.last_error) : '',
    section('Last dispatches', null, table(FIRED_HEADERS, h('tbody', null,
      ...((t.recent || []).length ? t.recent.map((f) => h('tr', { 'data-job-id': f.job },
        h('td', { class: 'num' }, timeEl(f.at_ms)), h('td', { class: 'mono' }, f.object),
        h('td', { class: 'num' }, jobLink(f.job)), h('td', null, f.state ? badge(f.state) : '—')))
        : [emptyRow(FIRED_HEADERS.length, 'Nothing yet.')])))),
  ]);
}

/* --------------------------------------------------------------------- pool */

/** A pool: its card, its jobs (paged), and its nodes. */
function poolView() {
  let alive = true, seq = 0, name, page = 0;
  const card = h('div', { class: 'cards' }, h('p', { class: 'muted' }, 'Loading…'));
  const jobsBody = h('tbody'), nodesBody = h('tbody');
  const pg = pager((p) => setParams({ page: toPage(p) }));
  const root = h('div', null, card,
    section('Jobs', pg.el, table(JOB_HEADERS, jobsBody)),
    section('Nodes', null, table(NODE_HEADERS, nodesBody)));
  return {
    root,
    destroy() { alive = false; },
    update(r) { seq++; name = r.name; page = pageOf(r.q); },
    async refresh() {
      const my = seq, offset = page * PAGE, q = encodeURIComponent(name);
      const [pool, jobs, nodes] = await Promise.all([
        get(`/api/pools/${q}`), get(`/api/jobs?pool=${q}&offset=${offset}&limit=${PAGE}`), get(`/api/nodes?pool=${q}`),
      ]);
      if (!alive || my !== seq) return;
      if (jobs && jobs.total > 0 && offset >= jobs.total) { setParams({ page: Math.ceil(jobs.total / PAGE) }); return; }
      paint(`pool/${name}`, () => {
        if (!alive || my !== seq) return;
        document.title = `Pool ${name} · Corral`;
        if (pool) card.replaceChildren(poolCard(pool, false));
        else if (!card.querySelector('.card')) card.replaceChildren(h('p', { class: 'error-text' }, `Pool ${name} could not be loaded.`));
        if (jobs) {
          jobsBody.replaceChildren(...(jobs.jobs.length ? jobs.jobs.map(jobRow) : [emptyRow(JOB_HEADERS.length, 'No jobs in this pool.')]));
          pg.update(offset, jobs.jobs.length, jobs.total);
        }
        if (nodes) nodesBody.replaceChildren(...(nodes.length ? nodes.map(nodeRow) : [emptyRow(NODE_HEADERS.length, 'No nodes.')]));
        if (pool && jobs && nodes) document.body.dataset.ready = 'true';
      });
    },
  };
}
