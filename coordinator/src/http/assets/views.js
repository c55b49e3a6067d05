/* Corral dashboard: the overview, job and task pages (see app.js for the
 * helpers, the refresh policy and the router these build on). */
'use strict';

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
      h('a', { class: 'pool-name', href: `#/pools/${encodeURIComponent(p.name)}`, title: 'The pool’s page: its jobs and nodes' }, p.name),
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
    h('td', null, h('a', { href: `#/pools/${encodeURIComponent(j.pool)}` }, j.pool)),
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
      fact('pool', h('a', { href: `#/pools/${encodeURIComponent(j.pool)}` }, j.pool)),
      fact('owner', j.owner || '-'),
      j.schedule && fact('schedule', h('a', { href: `#/schedules/${encodeURIComponent(j.schedule)}` }, j.schedule)),
      j.template && fact('template', h('a', { href: `#/templates/${encodeURIComponent(j.template)}` }, j.template)),
      fact('priority', j.priority),
      j.policy?.replicas && fact('continuous', `${j.policy.replicas} replica${j.policy.replicas === 1 ? '' : 's'}, always running`),
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
    h('td', { class: 'reason' }, t.reason || t.last_error || replicaLine(t)));
}

// A continuous job's replica: restarts, uptime, its last exit; one ending again
// and again (3 quick ends in a row or more) stands out.
function replicaLine(t) {
  if (!t.last_exit) return '';
  const running = t.state === 'running' || t.state === 'assigned';
  const restarts = running ? t.attempt - 1 : t.attempt;
  const up = running && t.started_at_ms ? ` · up ${fmtDuration(Date.now() - t.started_at_ms)}` : '';
  const looping = t.failures >= 3;
  return h('span', { class: looping ? 'error-text' : '', 'data-field': 'replica' },
    h('span', { 'data-field': 'restarts' }, `${restarts} restart${restarts === 1 ? '' : 's'}`),
    looping ? ` (${t.failures} quick ends in a row)` : '', up, ` · last exit: ${t.last_exit}`);
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

/* Tails one attempt's stdout and stderr (of a multi-node task: one rank's) into
 * two <pre>s, following next_offset. While `live` (the task runs this attempt) it
 * polls every 500 ms; otherwise it reads until a read brings nothing new, then stops. */
class LogTail {
  constructor(job, index, attempt, rank, panes, statusEl) {
    Object.assign(this, { job, index, attempt, rank, panes, statusEl });
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
    const url = `/api/jobs/${this.job}/tasks/${this.index}/log?attempt=${this.attempt}&rank=${this.rank}&stream=${stream}&offset=${this.offsets[stream]}`;
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
  let alive = true, seq = 0, job, index, wanted = null, rank = 0, tail = null;
  const head = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const attemptsBody = h('tbody');
  const tabs = h('div', { class: 'filters' });
  const rankTabs = h('div', { class: 'filters' });
  const statusEl = h('span', { class: 'muted' });
  const panes = { stdout: h('pre', { class: 'log' }), stderr: h('pre', { class: 'log stderr' }) };
  const root = h('div', null, head,
    section('Attempts', null, table(ATTEMPT_HEADERS, attemptsBody)),
    section('Output', [tabs, rankTabs, statusEl],
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
      rank = /^\d+$/.test(r.q.get('rank') || '') ? Number(r.q.get('rank')) : 0; // a multi-node task's rank
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
      const href = (a, rk = 0) => taskHref(job, index, { attempt: a === latest ? null : a, rank: rk || null });
      // A multi-node attempt's nodes, rank 0's first.
      const nodesOf = (a) => [a.node, ...(a.members || [])].filter(Boolean);
      const selAttempt = attempts.find((a) => a.attempt === sel);
      const ranks = selAttempt ? nodesOf(selAttempt).length : 1;
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
          h('td', { class: 'mono' }, nodesOf(a).join(', ') || '—'),
          h('td', { class: 'num' }, timeEl(a.started_at_ms)),
          h('td', { class: 'num' }, timeEl(a.ended_at_ms)),
          h('td', { class: 'num' }, a.started_at_ms == null ? '—' : fmtDuration((a.ended_at_ms ?? Date.now()) - a.started_at_ms)),
          h('td', null, a.outcome ? badge(a.outcome) : badge('running')),
          h('td', { class: 'num' }, a.exit_code != null ? `exit ${a.exit_code}` : a.signal != null ? `signal ${a.signal}` : '—'),
          h('td', { class: 'reason' }, a.message || ''))) : [emptyRow(ATTEMPT_HEADERS.length, 'Not started yet.')]));
        tabs.replaceChildren(...attempts.map((a) => h('a', { href: href(a.attempt), class: a.attempt === sel ? 'tab active' : 'tab' }, `attempt ${a.attempt}`)));
        // Rank 0's output is the task's; the other ranks' (their coordination command's) are their own.
        rankTabs.replaceChildren(...(ranks > 1 ? nodesOf(selAttempt).map((n, i) => h('a', { href: href(sel, i), class: i === rank ? 'tab active' : 'tab', title: n }, `rank ${i}`)) : []));
      });

      // The tail is not DOM rebuilding, so it is synced outside paint().
      if (sel == null) { stopTail(); statusEl.textContent = 'no output yet'; return; }
      if (!tail || tail.attempt !== sel || tail.rank !== rank) {
        stopTail();
        tail = new LogTail(job, index, sel, rank, panes, statusEl);
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

