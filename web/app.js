// quern dashboard: a single ES module, no framework, no network but quernd's own
// HTTP API.  The API key lives in sessionStorage (gone when the tab closes).
// Pages are hash routes (#/tasks?status=queued); each render builds DOM nodes
// with h() (never innerHTML with data) and registers cleanups (timers, streams)
// that run when the route changes.

const STATUSES = ['queued', 'running', 'paused', 'interaction_required', 'review_required',
  'completed', 'failed', 'timed_out', 'denied', 'canceling', 'canceled'];
const TASK_STATUSES = ['pending', ...STATUSES];
const TERMINAL = new Set(['completed', 'failed', 'timed_out', 'denied', 'canceled']);
const PRIORITIES = ['urgent', 'high', 'medium', 'low'];
const TYPES = ['manual', 'scheduled', 'triggered'];
const RUNTIMES = ['default', 'sh', 'bash', 'python', 'node', 'ts'];
const SCOPES = ['task:read', 'task:write', 'worker', 'admin'];
const EVENT_TYPES = ['queued', 'started', 'log', 'progress', 'checkpoint', 'output', 'artifact',
  'interaction_required', 'review_required', 'completed', 'failed', 'timed_out', 'denied',
  'canceling', 'canceled', 'retrying', 'paused', 'running', 'resumed'].map((t) => 'task_run.' + t);
const STATUS_COLOR = {
  pending: ['#e5e7eb', '#374151'], queued: ['#e0e7ff', '#3730a3'], running: ['#dbeafe', '#1e40af'],
  paused: ['#fef3c7', '#854d0e'], interaction_required: ['#f3e8ff', '#6b21a8'],
  review_required: ['#ffedd5', '#9a3412'], completed: ['#dcfce7', '#166534'],
  failed: ['#fee2e2', '#991b1b'], timed_out: ['#ffe4e6', '#9f1239'], denied: ['#fce7f3', '#9d174d'],
  canceling: ['#dbeafe', '#1e40af'], canceled: ['#f1f5f9', '#475569'],
};
const BAR_COLOR = {
  queued: '#6366f1', running: '#2563eb', paused: '#d97706', interaction_required: '#9333ea',
  review_required: '#ea580c', completed: '#16a34a', failed: '#dc2626', timed_out: '#e11d48',
  denied: '#db2777', canceling: '#64748b', canceled: '#94a3b8',
};

/* ---------- tiny DOM helpers ---------- */

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}
const SVGNS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}
function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (k === 'checked' || k === 'selected') { el[k] = true; el.setAttribute(k, ''); }
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}
function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}
const $ = (sel, root = document) => root.querySelector(sel);

function badge(status) {
  return h('span', { class: 'badge s-' + status }, (status || '—').replace(/_/g, ' '));
}
function fmtTime(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}
function timeEl(ts) {
  return ts ? h('time', { datetime: ts, title: ts }, fmtTime(ts)) : '—';
}
function fmtDur(ms) {
  if (ms == null || isNaN(ms)) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  if (ms < 3600000) return Math.floor(ms / 60000) + ' m ' + Math.round((ms % 60000) / 1000) + ' s';
  return Math.floor(ms / 3600000) + ' h ' + Math.round((ms % 3600000) / 60000) + ' m';
}
function clock(d) {
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}
function jsonPre(v, label) {
  return h('pre', { class: 'json', tabindex: 0, 'aria-label': label }, JSON.stringify(v, null, 2));
}
function toast(msg, err) {
  const t = h('div', { class: 'toast' + (err ? ' err' : '') }, msg);
  const box = $('#toasts');
  while (box.children.length >= 3) box.firstChild.remove();
  box.append(t);
  setTimeout(() => t.remove(), err ? 8000 : 4000);
}
function alertBox(msg) {
  return h('div', { class: 'alert', role: 'alert' }, msg);
}
function field(label, control, hint) {
  const id = control.id || (control.id = 'f-' + Math.random().toString(36).slice(2, 9));
  const hintEl = hint ? h('div', { class: 'hint', id: id + '-hint' }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl);
}
function select(name, values, current, opts = {}) {
  return h('select', { name, id: opts.id },
    opts.any !== undefined ? h('option', { value: '' }, opts.any) : null,
    values.map((v) => h('option', { value: v, selected: v === current }, v.replace(/_/g, ' '))));
}

/* ---------- session and API ---------- */

const session = {
  get key() { return sessionStorage.getItem('quern.key'); },
  get project() { return sessionStorage.getItem('quern.project') || 'default'; },
  set(key, project) {
    sessionStorage.setItem('quern.key', key);
    sessionStorage.setItem('quern.project', project || 'default');
  },
  clear() { sessionStorage.removeItem('quern.key'); },
};

class ApiError extends Error {
  constructor(status, err) {
    super((err && err.message) || 'HTTP ' + status);
    this.status = status;
    this.code = err && err.code;
    this.param = err && err.param;
  }
}

async function api(method, path, body, opts = {}) {
  const headers = { Authorization: 'Bearer ' + (opts.key || session.key) };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  // a read over the key's rate limit (429, when quernd has one) is sent again
  // after the Retry-After it was told, twice at most; a write is not (the
  // user sees the error and decides)
  for (let attempt = 0; ; attempt++) {
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, { message: 'quernd is not reachable (' + e.message + ')' });
    }
    if (res.status !== 429 || method !== 'GET' || attempt >= 2) break;
    const wait = Math.min(10, Math.max(1, parseInt(res.headers.get('Retry-After'), 10) || 1));
    await new Promise((ok) => setTimeout(ok, wait * 1000));
  }
  const text = await res.text();
  const ct = res.headers.get('Content-Type') || '';
  let js = null;
  if (ct.includes('json') && !ct.includes('jsonl') && text) {
    try { js = JSON.parse(text); } catch { js = null; }
  }
  if (res.status === 401 && !opts.key) {
    session.clear();
    toast('Your API key was refused; sign in again.', true);
    location.hash = '#/signin';
  }
  if (!res.ok) throw new ApiError(res.status, js && js.error);
  return opts.raw ? { res, text, json: js } : js;
}
const P = () => '/api/projects/' + encodeURIComponent(session.project);
const taskPath = (id) => P() + '/tasks/' + encodeURIComponent(id);
const runPath = (tid, rid) => taskPath(tid) + '/runs/' + encodeURIComponent(rid);
function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) u.set(k, v);
  const t = u.toString();
  return t ? '?' + t : '';
}
async function act(label, fn) {
  try {
    const r = await fn();
    toast(label);
    return r;
  } catch (e) {
    toast(label.replace(/\.$/, '') + ' failed: ' + e.message, true);
    return undefined;
  }
}

/* ---------- router ---------- */

let cleanups = [];
function onLeave(fn) { cleanups.push(fn); }
function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || '') };
}
function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

const routes = {
  '': pageOverview,
  tasks: pageTasks,
  task: pageTask,
  run: pageRun,
  runs: pageRuns,
  definitions: pageDefinitions,
  triggers: pageTriggers,
  webhooks: pageWebhooks,
  keys: pageKeys,
  signin: pageSignin,
};

async function route() {
  for (const fn of cleanups) { try { fn(); } catch { /* ignore */ } }
  cleanups = [];
  const { parts, query } = parseHash();
  const main = $('#main');
  const signedIn = !!session.key;
  $('#nav').hidden = !signedIn;
  $('#session').hidden = !signedIn;
  if (!signedIn && parts[0] !== 'signin') { location.hash = '#/signin'; return; }
  const page = routes[parts[0] || ''] || pageNotFound;
  const navName = { '': 'overview', task: 'tasks', run: 'runs' }[parts[0] || ''] || parts[0];
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.nav === navName) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (route.focus !== false) main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  const token = Symbol('render');
  route.current = token;
  try {
    const node = await page(parts.slice(1), query);
    if (route.current !== token) return;
    main.replaceChildren(node);
  } catch (e) {
    if (route.current !== token) return;
    main.replaceChildren(h('h1', {}, 'Something went wrong'),
      alertBox(e.status === 404 ? 'Not found: ' + e.message : e.status === 403
        ? 'This API key may not do that: ' + e.message : e.message));
  }
  const h1 = $('h1', main);
  document.title = (h1 ? h1.textContent + ' · ' : '') + 'quern';
  if (route.focus !== false) main.focus({ preventScroll: true });
}

function pageNotFound() {
  return h('section', {}, h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
}

/* ---------- sign in ---------- */

async function pageSignin() {
  const key = h('input', { id: 'signin-key', name: 'key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const project = h('input', { id: 'signin-project', name: 'project', value: session.project, required: true });
  const err = h('div', { 'aria-live': 'assertive' });
  const form = h('form', {
    class: 'stack', onsubmit: async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      const k = key.value.trim();
      try {
        const list = await api('GET', '/api/projects', undefined, { key: k });
        const ids = (list.data || []).map((p) => p.id);
        let pr = project.value.trim();
        if (!ids.includes(pr) && ids.length) pr = ids[0];
        session.set(k, pr);
        await loadProjects();
        go('#/');
      } catch (e) {
        key.setAttribute('aria-invalid', 'true');
        err.replaceChildren(alertBox(e.status === 401 ? 'That API key was refused.' : e.message));
        key.focus();
      }
    },
  },
  field('API key', key, 'A quern API key (qk_…). It is kept in this tab\'s session storage only.'),
  field('Project', project),
  err,
  h('div', {}, h('button', { type: 'submit' }, 'Sign in')));
  return h('section', { class: 'panel signin' }, h('h1', {}, 'Sign in to quern'), form);
}

async function loadProjects() {
  const sel = $('#project-select');
  try {
    const list = await api('GET', '/api/projects');
    sel.replaceChildren(...(list.data || []).map((p) =>
      h('option', { value: p.id, selected: p.id === session.project }, p.name || p.id)));
  } catch {
    sel.replaceChildren(h('option', { value: session.project }, session.project));
  }
}

/* ---------- overview ---------- */

async function countRuns(status) {
  const r = await api('GET', P() + '/runs' + qs({ status, limit: 1 }));
  return r.total;
}

// /metrics is public and plain text; a request that failed on the network (a TypeError, e.g. a
// kept-alive connection closed under it) is sent once more before the overview says so
function metricsText(again = true) {
  return fetch('/metrics').then((r) => (r.ok ? r.text() : Promise.reject(new Error('HTTP ' + r.status))),
    (e) => (again && e instanceof TypeError ? metricsText(false) : Promise.reject(e)));
}

async function pageOverview() {
  const [counts, tasksTotal, metrics, recent] = await Promise.all([
    Promise.all(STATUSES.map((st) => countRuns(st).catch(() => null))),
    api('GET', P() + '/tasks?limit=1').then((r) => r.total).catch(() => null),
    metricsText().catch((e) => ({ error: e.message || String(e) })),
    api('GET', P() + '/runs?limit=500').then((r) => r.data).catch(() => []),
  ]);
  const depth = {};
  if (typeof metrics === 'string') for (const m of metrics.matchAll(/^quern_queue_depth\{priority="(\w+)"\}\s+([\d.e+]+)/gm)) depth[m[1]] = Number(m[2]);

  const cards = h('div', { class: 'cards', role: 'list', 'aria-label': 'Runs per status' },
    h('a', { class: 'card', role: 'listitem', href: '#/tasks' }, h('div', { class: 'muted' }, 'tasks'), h('div', { class: 'n' }, tasksTotal ?? '—')),
    STATUSES.map((st, i) => h('a', { class: 'card', role: 'listitem', href: '#/runs?status=' + st, 'data-status': st },
      h('div', {}, badge(st)), h('div', { class: 'n' }, counts[i] ?? '—'))));

  // quiet refresh, only while the reader is not on a control of the page (focus is never stolen)
  const idle = () => !document.hidden && [document.body, $('#main')].includes(document.activeElement);
  const refresh = setInterval(() => { if (idle()) { route.focus = false; route().finally(() => { route.focus = true; }); } }, 10000);
  onLeave(() => clearInterval(refresh));

  return h('section', {},
    h('h1', {}, 'Overview'),
    h('h2', { id: 'h-status' }, 'Runs per status'), cards,
    h('div', { class: 'grid' },
      h('div', { class: 'panel' }, h('h2', {}, 'Queue depth per priority'), depthChart(depth, metrics.error)),
      h('div', { class: 'panel' }, h('h2', {}, 'Last hour: finished runs'), hourChart(recent))),
    h('div', { class: 'grid' },
      h('div', { class: 'panel' }, h('h2', {}, 'Slowest tasks'), slowest(recent)),
      h('div', { class: 'panel' }, h('h2', {}, 'Most failing tasks'), failing(recent))),
    h('p', { class: 'muted' }, 'Charts and rankings are computed from the latest ', String(recent.length),
      ' runs; counts are exact. Refreshes every 10 s.'));
}

function depthChart(depth, error) {
  const W = 420, H = 150, max = Math.max(1, ...PRIORITIES.map((p) => depth[p] || 0));
  const bw = (W - 40) / PRIORITIES.length;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': 'Queue depth: ' + PRIORITIES.map((p) => `${p} ${depth[p] ?? 0}`).join(', ') },
  s('line', { class: 'axis', x1: 30, y1: H - 25, x2: W, y2: H - 25 }),
  PRIORITIES.map((p, i) => {
    const v = depth[p] || 0, bh = (v / max) * (H - 50);
    return s('g', {},
      s('rect', { class: 'bar-q', x: 40 + i * bw, y: H - 25 - bh, width: bw * 0.6, height: Math.max(bh, 0.5) }),
      s('text', { x: 40 + i * bw + bw * 0.3, y: H - 10, 'text-anchor': 'middle' }, p),
      s('text', { x: 40 + i * bw + bw * 0.3, y: H - 30 - bh, 'text-anchor': 'middle' }, String(v)));
  }));
  return Object.keys(depth).length ? svg
    : h('p', { class: 'muted' }, 'No queue metrics from /metrics' + (error ? ` (${error})` : '') + '.');
}

function hourChart(runs) {
  const now = Date.now(), bins = 12, span = 3600000, bw = span / bins;
  const ok = new Array(bins).fill(0), bad = new Array(bins).fill(0);
  for (const r of runs) {
    if (!TERMINAL.has(r.status) || !r.completed_at) continue;
    const age = now - Date.parse(r.completed_at);
    if (age < 0 || age >= span) continue;
    const i = bins - 1 - Math.floor(age / bw);
    if (r.status === 'completed') ok[i]++; else if (r.status !== 'canceled') bad[i]++;
  }
  const total = ok.reduce((a, b) => a + b, 0), fails = bad.reduce((a, b) => a + b, 0);
  const W = 420, H = 150, max = Math.max(1, ...ok.map((v, i) => v + bad[i]));
  const cw = (W - 40) / bins;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `In the last hour ${total} runs completed and ${fails} failed` },
  s('line', { class: 'axis', x1: 30, y1: H - 25, x2: W, y2: H - 25 }),
  ok.map((v, i) => {
    const ho = (v / max) * (H - 45), hf = (bad[i] / max) * (H - 45), x = 35 + i * cw;
    return s('g', {},
      s('rect', { class: 'bar-ok', x, y: H - 25 - ho, width: cw * 0.75, height: ho }),
      s('rect', { class: 'bar-fail', x, y: H - 25 - ho - hf, width: cw * 0.75, height: hf }),
      s('title', {}, `${60 - i * 5} to ${55 - i * 5} min ago: ${v} completed, ${bad[i]} failed`));
  }),
  s('text', { x: 35, y: H - 10 }, '−60 min'), s('text', { x: W - 5, y: H - 10, 'text-anchor': 'end' }, 'now'));
  const rate = total + fails ? ((fails / (total + fails)) * 100).toFixed(1) + '%' : '—';
  return h('div', {}, svg,
    h('div', { class: 'legend' }, h('span', {}, h('i', { style: 'background:#16a34a' }), `completed ${total}`),
      h('span', {}, h('i', { style: 'background:#dc2626' }), `failed/timed out/denied ${fails}`),
      h('span', {}, 'failure rate ', h('strong', {}, rate))));
}

const taskNames = new Map();
function taskLink(id) {
  // shows the id at once, then the task's name once fetched (cached per page load)
  const a = h('a', { href: '#/task/' + id, class: 'mono' }, taskNames.get(id) || id);
  if (!taskNames.has(id)) {
    api('GET', taskPath(id)).then((t) => { taskNames.set(id, t.name || id); a.textContent = t.name || id; a.classList.remove('mono'); }).catch(() => {});
  } else if (taskNames.get(id) !== id) a.classList.remove('mono');
  return a;
}
function miniTable(caption, head, rows) {
  if (!rows.length) return h('p', { class: 'muted' }, 'Nothing yet.');
  return h('table', {}, h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, head.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c))))));
}
function slowest(runs) {
  const by = new Map();
  for (const r of runs) if (r.duration_ms != null) {
    const cur = by.get(r.task_id) || { n: 0, sum: 0, max: 0 };
    cur.n++; cur.sum += r.duration_ms; cur.max = Math.max(cur.max, r.duration_ms);
    by.set(r.task_id, cur);
  }
  const rows = [...by.entries()].sort((a, b) => b[1].sum / b[1].n - a[1].sum / a[1].n).slice(0, 5)
    .map(([id, v]) => [taskLink(id), fmtDur(v.sum / v.n), fmtDur(v.max)]);
  return miniTable('Slowest tasks by mean run time', ['task', 'mean', 'max'], rows);
}
function failing(runs) {
  const by = new Map();
  for (const r of runs) if (TERMINAL.has(r.status)) {
    const cur = by.get(r.task_id) || { n: 0, f: 0 };
    cur.n++; if (['failed', 'timed_out', 'denied'].includes(r.status)) cur.f++;
    by.set(r.task_id, cur);
  }
  const rows = [...by.entries()].filter(([, v]) => v.f).sort((a, b) => b[1].f - a[1].f).slice(0, 5)
    .map(([id, v]) => [taskLink(id), String(v.f), `${v.f}/${v.n}`]);
  return miniTable('Tasks with the most failed runs', ['task', 'failures', 'of finished'], rows);
}

/* ---------- tasks ---------- */

function pager(total, offset, limit, hrefFor) {
  const from = total ? offset + 1 : 0, to = Math.min(offset + limit, total);
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('span', { class: 'page-info' }, `${from}–${to} of ${total}`),
    h('span', { class: 'actions' },
      offset > 0 ? h('a', { class: 'btn secondary', href: hrefFor(Math.max(0, offset - limit)), rel: 'prev' }, '← Previous') : null,
      to < total ? h('a', { class: 'btn secondary', href: hrefFor(offset + limit), rel: 'next' }, 'Next →') : null));
}

function taskActions(t, after) {
  const st = t.status;
  const b = (label, fn, cls) => h('button', { type: 'button', class: 'small ' + (cls || 'secondary'),
    'aria-label': `${label} ${t.name || t.id}`, onclick: async (ev) => {
      ev.currentTarget.disabled = true;
      await fn();
      after();
    } }, label);
  const p = taskPath(t.id);
  return h('div', { class: 'actions' },
    b('Run', () => act('Run started.', () => api('POST', p + '/run', {}))),
    !TERMINAL.has(st) && st !== 'pending' ? b('Cancel', () => act('Canceled.', () => api('POST', p + '/cancel', {}))) : null,
    ['failed', 'timed_out', 'canceled', 'denied'].includes(st) ? b('Retry', () => act('Retry started.', () => api('POST', p + '/retry', {}))) : null,
    t.paused ? b('Resume', () => act('Resumed.', () => api('POST', p + '/resume', {})))
      : b('Pause', () => act('Paused.', () => api('POST', p + '/pause', {}))),
    b('Delete', async () => {
      if (!confirm(`Delete task ${t.name || t.id}? Its active runs are canceled.`)) return;
      await act('Deleted.', () => api('DELETE', p));
    }, 'danger'));
}

async function pageTasks(parts, q) {
  if (parts[0] === 'new') return pageTaskNew(q);
  const limit = Math.min(500, Number(q.get('limit')) || 50);
  const offset = Math.max(0, Number(q.get('offset')) || 0);
  const filt = {
    status: q.get('status') || '', type: q.get('type') || '', priority: q.get('priority') || '',
    assigned_agent_id: q.get('assigned_agent_id') || '', definition_id: q.get('definition_id') || '',
    q: q.get('q') || '',
  };
  const [list, defs] = await Promise.all([
    api('GET', P() + '/tasks' + qs({ ...filt, limit, offset })),
    api('GET', P() + '/definitions?limit=500').then((r) => r.data).catch(() => []),
  ]);
  const hrefFor = (off, extra = {}) => '#/tasks' + qs({ ...filt, limit: limit === 50 ? '' : limit, offset: off || '', ...extra });

  const form = h('form', {
    class: 'filters', role: 'search', 'aria-label': 'Filter tasks', onsubmit: (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      const p = {};
      for (const [k, v] of fd.entries()) if (v) p[k] = v;
      go('#/tasks' + qs(p));
    },
  },
  field('Name', h('input', { name: 'q', id: 'filter-q', type: 'search', value: filt.q, placeholder: 'part of a name or id' })),
  field('Status', select('status', TASK_STATUSES, filt.status, { any: 'any', id: 'filter-status' })),
  field('Type', select('type', TYPES, filt.type, { any: 'any', id: 'filter-type' })),
  field('Priority', select('priority', PRIORITIES, filt.priority, { any: 'any', id: 'filter-priority' })),
  field('Agent', h('input', { name: 'assigned_agent_id', id: 'filter-agent', value: filt.assigned_agent_id, placeholder: 'agent id' })),
  field('Definition', h('select', { name: 'definition_id', id: 'filter-definition' }, h('option', { value: '' }, 'any'),
    defs.map((d) => h('option', { value: d.id, selected: d.id === filt.definition_id }, d.title || d.id)),
    filt.definition_id && !defs.some((d) => d.id === filt.definition_id) ? h('option', { value: filt.definition_id, selected: true }, filt.definition_id) : null)),
  field('Per page', select('limit', ['25', '50', '100', '200'], String(limit), { id: 'filter-limit' })),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply'),
    h('a', { class: 'btn secondary', href: '#/tasks' }, 'Clear')));

  // the Name filter above searches on the server (?q=); this box filters and sorts the loaded page
  const search = h('input', { id: 'task-search', type: 'search', placeholder: 'name or id on this page' });
  let sortKey = 'created_at', sortDir = -1;
  const tbody = h('tbody');
  const refresh = () => route();
  const renderRows = () => {
    const needle = search.value.trim().toLowerCase();
    const rows = list.data.filter((t) => !needle || (t.name || '').toLowerCase().includes(needle) || t.id.includes(needle))
      .sort((a, b) => {
        const x = a[sortKey] ?? '', y = b[sortKey] ?? '';
        if (sortKey === 'priority') return (PRIORITIES.indexOf(x) - PRIORITIES.indexOf(y)) * sortDir;
        return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
      });
    tbody.replaceChildren(...rows.map((t) => h('tr', { 'data-task-id': t.id },
      h('td', { 'data-label': 'Name' }, h('a', { href: '#/task/' + t.id }, t.name || t.id), h('div', { class: 'muted mono' }, t.id)),
      h('td', { 'data-label': 'Status' }, badge(t.status), t.paused ? h('span', { class: 'muted' }, ' (paused)') : null),
      h('td', { 'data-label': 'Type' }, t.type),
      h('td', { 'data-label': 'Priority', class: 'prio-' + t.priority }, t.priority),
      h('td', { 'data-label': 'Runs by' }, t.code ? 'code (' + t.runtime_id + ')' : t.assigned_agent_id ? 'agent ' + t.assigned_agent_id
        : t.definition_id ? 'definition ' + t.definition_id : (t.assigned_agents || []).join(', ') || '—'),
      h('td', { 'data-label': 'Runs', class: 'num' }, String(t.run_count ?? 0)),
      h('td', { 'data-label': 'Created' }, timeEl(t.created_at)),
      h('td', { 'data-label': 'Actions' }, taskActions(t, refresh)))));
    if (!rows.length) tbody.append(h('tr', {}, h('td', { colspan: 8, class: 'empty' }, list.total ? 'No task on this page matches.' : 'No tasks yet.')));
  };
  search.addEventListener('input', renderRows);
  const sortBtn = (key, label) => h('th', { scope: 'col', 'aria-sort': 'none', 'data-key': key },
    h('button', { type: 'button', class: 'sort', onclick: (ev) => {
      sortDir = sortKey === key ? -sortDir : 1;
      sortKey = key;
      for (const th of ev.currentTarget.closest('tr').children) th.setAttribute('aria-sort', 'none');
      ev.currentTarget.parentElement.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
      renderRows();
    } }, label));
  renderRows();
  return h('section', {},
    h('div', { class: 'head' }, h('h1', {}, 'Tasks'), h('a', { class: 'btn', href: '#/tasks/new' }, 'New task'),
      h('button', { type: 'button', class: 'secondary', onclick: refresh }, 'Refresh')),
    form,
    h('div', { class: 'filters' }, field('Search this page', search, 'Filters and sorts the loaded page; the filters above run on the server.')),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'stack-sm', id: 'tasks-table' },
        h('caption', {}, `Tasks, newest first (${list.total} matching)`),
        h('thead', {}, h('tr', {}, sortBtn('name', 'Name'), sortBtn('status', 'Status'), sortBtn('type', 'Type'),
          sortBtn('priority', 'Priority'), h('th', { scope: 'col' }, 'Runs by'), sortBtn('run_count', 'Runs'),
          sortBtn('created_at', 'Created'), h('th', { scope: 'col' }, 'Actions'))),
        tbody),
      pager(list.total, offset, limit, hrefFor)));
}

function parseJsonField(el, label, errors, { object = true } = {}) {
  const txt = el.value.trim();
  el.removeAttribute('aria-invalid');
  if (!txt) return undefined;
  try {
    const v = JSON.parse(txt);
    if (object && (typeof v !== 'object' || v === null || Array.isArray(v))) throw new Error('must be a JSON object');
    return v;
  } catch (e) {
    el.setAttribute('aria-invalid', 'true');
    errors.push(`${label}: ${e.message}`);
    return undefined;
  }
}

function codeEditor(id, value) {
  // a textarea that indents with Tab; Escape then Tab leaves it (keyboard users are never trapped)
  const ta = h('textarea', { id, name: 'code', class: 'code', spellcheck: 'false', autocapitalize: 'off', value });
  let escaped = false;
  ta.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') { escaped = true; return; }
    if (ev.key === 'Tab' && !escaped && !ev.shiftKey) {
      ev.preventDefault();
      const { selectionStart: a, selectionEnd: b } = ta;
      ta.setRangeText('  ', a, b, 'end');
    }
    if (ev.key !== 'Tab') escaped = false;
  });
  ta.addEventListener('blur', () => { escaped = false; });
  return ta;
}

const SAMPLE_CODE = {
  // QUERN_INPUT is the path of a file holding the run's input JSON
  node: 'import fs from "node:fs";\nconst input = JSON.parse(fs.readFileSync(process.env.QUERN_INPUT, "utf8"));\nconsole.log("hello from node", input);\n',
  python: 'import json, os\nwith open(os.environ["QUERN_INPUT"]) as f:\n    input = json.load(f)\nprint("hello from python", input)\n',
  sh: 'echo "hello from sh, input: $(cat "$QUERN_INPUT")"\n', bash: 'echo "hello from bash, input: $(cat "$QUERN_INPUT")"\n', default: 'echo "hello"\n',
  ts: 'console.log("hello from ts");\n',
};

async function pageTaskNew() {
  const defs = await api('GET', P() + '/definitions?limit=500').then((r) => r.data).catch(() => []);
  const name = h('input', { id: 'task-name', name: 'name', maxlength: 256, required: true });
  const desc = h('input', { id: 'task-description', name: 'description', maxlength: 4096 });
  const kindRadios = ['code', 'agent', 'definition'].map((k) => h('label', {},
    h('input', { type: 'radio', name: 'kind', value: k, checked: k === 'code', onchange: () => showKind() }),
    { code: 'Code', agent: 'External agent', definition: 'Definition' }[k]));
  const runtime = select('runtime_id', RUNTIMES, 'node', { id: 'task-runtime' });
  const code = codeEditor('task-code', SAMPLE_CODE.node);
  runtime.addEventListener('change', () => {
    if (Object.values(SAMPLE_CODE).includes(code.value) || !code.value.trim()) code.value = SAMPLE_CODE[runtime.value] || '';
  });
  const agent = h('input', { id: 'task-agent', name: 'assigned_agent_id', placeholder: 'e.g. img-resizer' });
  const def = h('select', { id: 'task-definition', name: 'definition_id' },
    defs.length ? defs.map((d) => h('option', { value: d.id }, `${d.title || d.id} (${d.id})`)) : h('option', { value: '' }, 'no definitions yet'));
  const input = h('textarea', { id: 'task-input', name: 'input', class: 'mono', spellcheck: 'false', value: '{}' });
  const settings = h('textarea', { id: 'task-settings', name: 'settings', class: 'mono', spellcheck: 'false', value: '{}' });
  const prio = select('priority', PRIORITIES, 'medium', { id: 'task-priority' });
  const deps = h('input', { id: 'task-dependencies', name: 'dependencies', placeholder: 'task_… task_…' });
  const schedule = h('input', { id: 'task-schedule', name: 'schedule', placeholder: '*/5 * * * * or @daily' });
  const tz = h('input', { id: 'task-timezone', name: 'timezone', placeholder: 'UTC', value: '' });
  const runNow = h('input', { type: 'checkbox', id: 'task-run', name: 'run', checked: true });
  const codeBox = h('div', { class: 'stack', style: 'display:grid;gap:.8em' }, field('Runtime', runtime),
    field('Code', code, 'Tab indents; press Escape then Tab to leave the editor.'));
  const agentBox = field('Agent id', agent, 'Runs go to workers leasing with this agent_id.');
  const defBox = field('Definition', def);
  const showKind = () => {
    const k = kindRadios.find((l) => l.firstChild.checked).firstChild.value;
    codeBox.hidden = k !== 'code'; agentBox.hidden = k !== 'agent'; defBox.hidden = k !== 'definition';
  };
  const err = h('div', { 'aria-live': 'assertive' });
  const form = h('form', {
    class: 'stack', id: 'task-form', onsubmit: async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      const errors = [];
      const kind = new FormData(form).get('kind');
      const body = { name: name.value.trim() || undefined, priority: prio.value, run: runNow.checked };
      if (desc.value.trim()) body.description = desc.value.trim();
      if (kind === 'code') { body.code = code.value; body.runtime_id = runtime.value; }
      if (kind === 'agent') {
        if (!agent.value.trim()) errors.push('Agent id: required for an agent task');
        body.assigned_agent_id = agent.value.trim();
      }
      if (kind === 'definition') body.definition_id = def.value;
      const inp = parseJsonField(input, 'Input', errors);
      if (inp) body.input = inp;
      const set = parseJsonField(settings, 'Settings', errors);
      if (set && Object.keys(set).length) body.settings = set;
      const d = deps.value.split(/[\s,]+/).filter(Boolean);
      if (d.length) body.dependencies = d;
      if (schedule.value.trim()) body.schedule = schedule.value.trim();
      if (tz.value.trim()) body.timezone = tz.value.trim();
      if (errors.length) {
        err.replaceChildren(alertBox(errors.join('; ')));
        return;
      }
      const btn = form.querySelector('button[type=submit]');
      btn.disabled = true;
      try {
        const t = await api('POST', P() + '/tasks', body);
        toast('Task created.');
        go('#/task/' + t.id);
      } catch (e) {
        const map = { name, input, settings, description: desc, code, runtime_id: runtime, dependencies: deps,
          schedule, timezone: tz, assigned_agent_id: agent, priority: prio, definition_id: def };
        const top = (e.param || '').split(/[.[]/)[0];
        if (map[top]) { map[top].setAttribute('aria-invalid', 'true'); map[top].focus(); }
        err.replaceChildren(alertBox((e.param ? e.param + ': ' : '') + e.message));
      } finally {
        btn.disabled = false;
      }
    },
  },
  field('Name', name),
  field('Description', desc),
  h('fieldset', {}, h('legend', {}, 'What runs it'), h('div', { class: 'inline' }, kindRadios)),
  codeBox, agentBox, defBox,
  field('Input (JSON object)', input),
  field('Settings (JSON object)', settings, 'e.g. {"max_retries": 2, "timeout_ms": 60000, "require_review": true}. Keys: max_retries, timeout_ms, retry_delay_ms, retry_backoff, require_review, require_approval, memory_limit_mb, network, concurrency_key, max_concurrency, …'),
  field('Priority', prio),
  field('Dependencies', deps, 'Task ids, separated by spaces or commas; runs wait until they complete.'),
  field('Schedule (cron)', schedule),
  field('Time zone', tz, 'IANA name, default UTC.'),
  h('label', { class: 'inline' }, runNow, 'Start a run now'),
  err,
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create task'), h('a', { class: 'btn secondary', href: '#/tasks' }, 'Cancel')));
  showKind();
  return h('section', {}, h('h1', {}, 'New task'), h('div', { class: 'panel' }, form));
}

/* ---------- task detail ---------- */

async function pageTask(parts, q) {
  const id = parts[0];
  const offset = Math.max(0, Number(q.get('offset')) || 0), limit = 20;
  const [t, runs, sched] = await Promise.all([
    api('GET', taskPath(id)),
    api('GET', taskPath(id) + '/runs' + qs({ limit, offset })),
    api('GET', taskPath(id) + '/schedule?count=5').catch(() => null),
  ]);
  const runRows = runs.data.map((r) => h('tr', {},
    h('td', { 'data-label': 'Run' }, h('a', { href: `#/run/${t.id}/${r.id}`, class: 'mono' }, r.id)),
    h('td', { 'data-label': 'Attempt', class: 'num' }, String(r.attempt)),
    h('td', { 'data-label': 'Status' }, badge(r.status)),
    h('td', { 'data-label': 'Agent / worker' }, [r.agent_id, r.worker_id].filter(Boolean).join(' / ') || '—'),
    h('td', { 'data-label': 'Created' }, timeEl(r.created_at)),
    h('td', { 'data-label': 'Duration', class: 'num' }, fmtDur(r.duration_ms))));
  const dagBox = h('div', { class: 'dag-wrap', id: 'dag' }, h('p', { class: 'muted' }, 'Loading the dependency graph…'));
  if ((t.dependencies || []).length) {
    drawDag(t).then((svg) => dagBox.replaceChildren(svg)).catch((e) => dagBox.replaceChildren(alertBox(e.message)));
  } else {
    dagBox.replaceChildren(h('p', { class: 'muted' }, 'This task has no dependencies.'));
  }
  const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
  return h('section', {},
    h('div', { class: 'head' }, h('h1', {}, t.name || t.id), badge(t.status), t.paused ? h('span', { class: 'badge s-paused' }, 'task paused') : null),
    taskActions(t, () => route()),
    h('div', { class: 'grid', style: 'margin-top:1em' },
      h('div', { class: 'panel' }, h('h2', {}, 'Details'), kv([
        ['id', h('span', { class: 'mono' }, t.id)], ['type', t.type], ['priority', t.priority],
        ['runs by', t.code ? 'code, runtime ' + t.runtime_id : t.assigned_agent_id ? 'agent ' + t.assigned_agent_id
          : t.definition_id ? h('span', {}, 'definition ', h('a', { href: '#/definitions' }, t.definition_id)) : (t.assigned_agents || []).join(', ')],
        t.description && ['description', t.description],
        ['progress', Math.round((t.progress || 0) * 100) + '%'], ['runs', String(t.run_count ?? 0)],
        ['last run', timeEl(t.last_run_at)], ['created', timeEl(t.created_at)], ['updated', timeEl(t.updated_at)],
        ['triggers', h('a', { href: '#/triggers?task_id=' + encodeURIComponent(t.id) }, 'webhook triggers of this task')],
        t.deadline && ['deadline', timeEl(t.deadline)], t.parent_id && ['parent', h('a', { href: '#/task/' + t.parent_id }, t.parent_id)],
      ])),
      h('div', { class: 'panel' }, h('h2', {}, 'Schedule'), scheduleView(t, sched))),
    h('h2', {}, 'Dependencies'), dagBox,
    h('h2', {}, 'Runs'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack-sm', id: 'runs-table' },
      h('caption', {}, `Runs of this task, newest first (${runs.total})`),
      h('thead', {}, h('tr', {}, ['Run', 'Attempt', 'Status', 'Agent / worker', 'Created', 'Duration'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, runRows.length ? runRows : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No runs yet.')))),
    pager(runs.total, offset, limit, (o) => `#/task/${t.id}` + qs({ offset: o || '' }))),
    h('div', { class: 'grid', style: 'margin-top:1em' },
      h('div', { class: 'panel' }, h('h2', {}, 'Input'), jsonPre(t.input, 'Task input')),
      h('div', { class: 'panel' }, h('h2', {}, 'Settings'), jsonPre(t.settings, 'Task settings'))),
    t.code ? h('div', { class: 'panel' }, h('h2', {}, 'Code (' + t.runtime_id + ')'), h('pre', { class: 'json', tabindex: 0 }, t.code)) : null,
    Object.keys(t.metadata || {}).length ? h('div', { class: 'panel' }, h('h2', {}, 'Metadata'), jsonPre(t.metadata, 'Metadata')) : null);
}

function scheduleView(t, sched) {
  if (!sched || !sched.schedule) return h('p', { class: 'muted' }, 'No schedule: runs start when asked, by a trigger or a dependency.');
  const tz = sched.timezone || t.timezone || 'UTC';
  const viewer = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const fmt = (ts, zone) => {
    try {
      return new Intl.DateTimeFormat(undefined, { timeZone: zone, dateStyle: 'medium', timeStyle: 'medium' }).format(new Date(ts));
    } catch { return ts; }
  };
  return h('div', {}, h('p', {}, h('code', {}, sched.schedule), ' in ', h('strong', {}, tz), t.paused ? ' (paused)' : ''),
    miniTable('Next fire times', [`task time (${tz})`, `your time (${viewer})`],
      (sched.next_run_times || []).map((ts) => [h('time', { datetime: ts }, fmt(ts, tz)), fmt(ts, viewer)])));
}

async function drawDag(root) {
  // walk the dependencies upward (breadth first, at most 60 tasks)
  const nodes = new Map([[root.id, root]]);
  const queue = [root];
  while (queue.length && nodes.size < 60) {
    const batch = queue.splice(0, 8);
    const want = [...new Set(batch.flatMap((t) => t.dependencies || []))].filter((d) => !nodes.has(d));
    const got = await Promise.all(want.map((d) => api('GET', taskPath(d)).catch(() => ({ id: d, name: d, status: 'pending', dependencies: [], missing: true }))));
    for (const t of got) if (!nodes.has(t.id) && nodes.size < 60) { nodes.set(t.id, t); queue.push(t); }
  }
  // layer = longest path to the root (the root is the rightmost column)
  const layer = new Map([[root.id, 0]]);
  for (let changed = true, guard = 0; changed && guard < 100; guard++) {
    changed = false;
    for (const [id, t] of nodes) {
      if (!layer.has(id)) continue;
      for (const d of t.dependencies || []) {
        if (nodes.has(d) && (layer.get(d) ?? -1) < layer.get(id) + 1) { layer.set(d, layer.get(id) + 1); changed = true; }
      }
    }
  }
  const maxL = Math.max(...layer.values());
  const cols = [];
  for (const [id] of nodes) { const l = maxL - (layer.get(id) ?? 0); (cols[l] ||= []).push(id); }
  const NW = 170, NH = 46, GX = 70, GY = 22, PAD = 12;
  const pos = new Map();
  cols.forEach((ids, c) => ids.forEach((id, r) => pos.set(id, { x: PAD + c * (NW + GX), y: PAD + r * (NH + GY) })));
  const W = PAD * 2 + cols.length * NW + (cols.length - 1) * GX;
  const H = PAD * 2 + Math.max(...cols.map((c) => c.length)) * (NH + GY) - GY;
  const edges = [];
  for (const [id, t] of nodes) for (const d of t.dependencies || []) if (pos.has(d)) {
    const a = pos.get(d), b = pos.get(id);
    const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x - 4, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
    edges.push(s('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
  }
  const label = `Dependency graph of ${root.name || root.id}: ` + [...nodes.values()].map((t) => `${t.name || t.id} ${t.status}`).join(', ');
  return s('svg', { class: 'dag', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'group', 'aria-label': label },
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#6b7280' }))),
    edges,
    [...nodes.values()].map((t) => {
      const p = pos.get(t.id), [fill, stroke] = STATUS_COLOR[t.status] || STATUS_COLOR.pending;
      const nm = (t.name || t.id);
      return s('a', { href: '#/task/' + t.id, class: 'node' + (t.id === root.id ? ' self' : ''), 'data-task-id': t.id, 'data-status': t.status,
        'aria-label': `${nm}, ${t.status}${t.id === root.id ? ' (this task)' : ''}` },
      s('title', {}, `${nm} — ${t.status}`),
      s('rect', { x: p.x, y: p.y, width: NW, height: NH, rx: 8, fill, stroke, 'stroke-width': 2 }),
      s('text', { x: p.x + 10, y: p.y + 19, 'font-weight': 600 }, nm.length > 22 ? nm.slice(0, 21) + '…' : nm),
      s('text', { x: p.x + 10, y: p.y + 36, fill: stroke }, t.status.replace(/_/g, ' ')));
    }));
}

/* ---------- runs (project-wide) ---------- */

async function pageRuns(parts, q) {
  const limit = 50, offset = Math.max(0, Number(q.get('offset')) || 0);
  const status = q.get('status') || '', task_id = q.get('task_id') || '';
  const list = await api('GET', P() + '/runs' + qs({ status, task_id, limit, offset }));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs', onsubmit: (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    go('#/runs' + qs({ status: fd.get('status'), task_id: fd.get('task_id').trim() }));
  } },
  field('Status', select('status', STATUSES, status, { any: 'any', id: 'runs-status' })),
  field('Task id', h('input', { name: 'task_id', id: 'runs-task', value: task_id })),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply'), h('a', { class: 'btn secondary', href: '#/runs' }, 'Clear')));
  const rows = list.data.map((r) => h('tr', {},
    h('td', { 'data-label': 'Run' }, h('a', { href: `#/run/${r.task_id}/${r.id}`, class: 'mono' }, r.id)),
    h('td', { 'data-label': 'Task' }, h('a', { href: '#/task/' + r.task_id, class: 'mono' }, r.task_id)),
    h('td', { 'data-label': 'Status' }, badge(r.status)),
    h('td', { 'data-label': 'Attempt', class: 'num' }, String(r.attempt)),
    h('td', { 'data-label': 'Created' }, timeEl(r.created_at)),
    h('td', { 'data-label': 'Duration', class: 'num' }, fmtDur(r.duration_ms))));
  return h('section', {}, h('h1', {}, 'Runs'), form,
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack-sm' },
      h('caption', {}, `Runs, newest first (${list.total} matching)`),
      h('thead', {}, h('tr', {}, ['Run', 'Task', 'Status', 'Attempt', 'Created', 'Duration'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No runs match.')))),
    pager(list.total, offset, limit, (o) => '#/runs' + qs({ status, task_id, offset: o || '' }))));
}

/* ---------- run detail ---------- */

async function pageRun(parts) {
  const [tid, rid] = parts;
  const rp = runPath(tid, rid);
  const getRun = () => api('GET', rp + '?include=input');
  let run = await getRun();
  const summary = h('div');
  const logView = logPanel();
  let lastKey = '';

  const renderSummary = async () => {
    const key = run.status + '|' + run.updated_at;
    if (key === lastKey) return;
    lastKey = key;
    const [events, checkpoints] = await Promise.all([
      api('GET', rp + '/session_logs?exclude_types=task_run.log&limit=1000').catch(() => []),
      api('GET', rp + '/checkpoints').then((r) => r.data || []).catch(() => []),
    ]);
    summary.replaceChildren(runSummary(tid, run, events, checkpoints, reload));
  };
  const reload = async () => {
    try { run = await getRun(); } catch { return; }
    await renderSummary();
  };
  await renderSummary();

  // log: what is there now, then follow (SSE, or polling if there is no stream)
  const logs = await api('GET', rp + '/logs', undefined, { raw: true }).then((r) => r.text).catch(() => '');
  for (const line of logs.split('\n')) if (line.trim()) { try { logView.add(JSON.parse(line)); } catch { /* skip */ } }
  if (!TERMINAL.has(run.status)) follow(tid, rid, logView, reload);
  else logView.setMode('finished');

  return h('section', {},
    h('p', { class: 'muted' }, h('a', { href: '#/task/' + tid }, '← task ' + tid)),
    summary,
    h('h2', { id: 'log-heading' }, 'Log'), logView.el);
}

function follow(tid, rid, logView, reload) {
  const rp = runPath(tid, rid);
  let es = null, poll = null, statusPoll = null, stopped = false;
  const stop = () => {
    stopped = true;
    if (es) es.close();
    clearInterval(poll); clearInterval(statusPoll);
  };
  onLeave(stop);
  // the run has ended: the stream may still lag behind it (a burst of lines, or a status
  // poll that saw the end first), so what it has not delivered yet comes from the log
  const finish = async () => {
    if (stopped) return;
    stop();
    try {
      const r = await api('GET', rp + '/logs', undefined, { raw: true });
      for (const line of r.text.split('\n')) if (line.trim()) { try { logView.add(JSON.parse(line)); } catch { /* skip */ } }
    } catch { /* the lines shown stay */ }
    logView.setMode('finished');
  };
  const startPolling = () => {
    if (stopped) return;
    logView.setMode('polling every second');
    poll = setInterval(async () => {
      try {
        const r = await api('GET', rp + '/logs', undefined, { raw: true });
        for (const line of r.text.split('\n')) if (line.trim()) logView.add(JSON.parse(line));
        await reload();
        if (logView.terminal()) await finish();
      } catch { /* next tick */ }
    }, 1000);
  };
  (async () => {
    let token;
    try {
      token = (await api('GET', rp + '/connection_token')).token;
    } catch { startPolling(); return; }
    if (stopped) return;
    let opened = false;
    es = new EventSource(rp + '/stream?token=' + encodeURIComponent(token));
    es.onopen = () => { opened = true; logView.setMode('live'); };
    const onEvent = (ev) => {
      let e;
      try { e = JSON.parse(ev.data); } catch { return; }
      if (e.type === 'task_run.log' || ev.type === 'task_run.log') logView.add(e.data || e);
      else reload().then(() => (logView.terminal() ? finish() : null));
    };
    for (const t of EVENT_TYPES) es.addEventListener(t, onEvent);
    es.onmessage = onEvent;
    es.onerror = () => {
      if (!opened) { es.close(); es = null; startPolling(); }
      else logView.setMode('reconnecting…');
    };
    // the stream carries status events; a slow poll of the run also catches a missed end
    statusPoll = setInterval(() => reload().then(() => (logView.terminal() ? finish() : null)), 5000);
  })();
  logView.terminal = () => TERMINAL.has(($('#run-status') || {}).dataset?.status);
}

function logPanel() {
  const box = h('div', { class: 'log', id: 'log', role: 'log', 'aria-labelledby': 'log-heading', tabindex: 0 });
  const search = h('input', { type: 'search', id: 'log-search', placeholder: 'text in the log' });
  const count = h('span', { class: 'muted', 'aria-live': 'polite' });
  const mode = h('span', { class: 'muted', id: 'log-mode' });
  const followBox = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const streams = {};
  const streamBoxes = ['stdout', 'stderr', 'log'].map((t) => {
    const cb = h('input', { type: 'checkbox', checked: true, 'data-stream': t, onchange: () => applyFilter() });
    streams[t] = cb;
    return h('label', {}, cb, t);
  });
  const seen = new Set();
  let lines = 0;
  // reading scrollHeight lays the page out: once a frame, not once a line (a log of
  // 100 000 lines would otherwise be laid out 100 000 times)
  let scrollQueued = false;
  const scrollToEnd = () => {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => { scrollQueued = false; if (followBox.checked) box.scrollTop = box.scrollHeight; });
  };
  const matches = (line, needle) => !needle || line.dataset.text.includes(needle);
  const highlight = (line, needle) => {
    const msg = line.querySelector('.msg');
    const text = msg.dataset.raw;
    if (!needle) { msg.replaceChildren(text); return; }
    const low = text.toLowerCase(), parts = [];
    let i = 0, j;
    while ((j = low.indexOf(needle, i)) >= 0) { parts.push(text.slice(i, j), h('mark', {}, text.slice(j, j + needle.length))); i = j + needle.length; }
    parts.push(text.slice(i));
    msg.replaceChildren(...parts);
  };
  const visible = (line, needle) => {
    const st = line.dataset.stream;
    const streamOn = streams[st] ? streams[st].checked : streams.log.checked;
    return streamOn && matches(line, needle);
  };
  function applyFilter() {
    const needle = search.value.trim().toLowerCase();
    let n = 0;
    for (const line of box.children) {
      const v = visible(line, needle);
      line.hidden = !v;
      if (v) n++;
      highlight(line, needle);
    }
    count.textContent = needle ? `${n} of ${lines} lines match` : `${lines} lines`;
  }
  search.addEventListener('input', applyFilter);
  const api_ = {
    el: h('div', {},
      h('div', { class: 'log-tools' },
        field('Search the log', search),
        h('fieldset', {}, h('legend', {}, 'Streams'), h('div', { class: 'inline' }, streamBoxes)),
        h('label', { class: 'inline' }, followBox, 'Follow'), count, mode),
      box),
    add(entry) {
      const k = entry.seq != null ? 'seq' + entry.seq : JSON.stringify(entry);
      if (seen.has(k)) return;
      seen.add(k);
      const type = entry.type || 'log', level = entry.level || 'info';
      let text = entry.message ?? '';
      if (entry.data != null && entry.message == null) text = JSON.stringify(entry.data);
      if (entry.error != null) text += (text ? ' ' : '') + (typeof entry.error === 'string' ? entry.error : JSON.stringify(entry.error));
      const stream = type === 'stdout' || type === 'stderr' ? type : 'log';
      const ts = entry.ts ? new Date(entry.ts) : null;
      const msg = h('span', { class: 'msg' }, text);
      msg.dataset.raw = text;
      const line = h('div', { class: `line t-${type} l-${level}`, 'data-stream': stream, 'data-level': level, 'data-seq': entry.seq },
        h('span', { class: 'ts', title: entry.ts || '' }, ts && !isNaN(ts) ? clock(ts) : ''),
        h('span', { class: 'tag' }, stream === 'log' ? level : stream), msg);
      line.dataset.text = text.toLowerCase();
      const needle = search.value.trim().toLowerCase();
      line.hidden = !visible(line, needle);
      if (needle) highlight(line, needle);
      // keep sequence order even when the stream and a fetch interleave
      const seq = entry.seq;
      let before = null;
      if (seq != null) for (let c = box.lastElementChild; c && Number(c.dataset.seq) > seq; c = c.previousElementSibling) before = c;
      box.insertBefore(line, before);
      lines++;
      count.textContent = needle ? count.textContent : `${lines} lines`;
      if (followBox.checked) scrollToEnd();
    },
    setMode(m) { mode.textContent = '· ' + m; },
  };
  applyFilter();
  return api_;
}

function runSummary(tid, run, events, checkpoints, reload) {
  const rp = runPath(tid, run.id);
  const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
  const buttons = h('div', { class: 'actions' });
  if (!TERMINAL.has(run.status) && run.status !== 'canceling') {
    buttons.append(h('button', { type: 'button', class: 'danger', onclick: async (ev) => {
      if (!confirm('Cancel this run?')) return;
      ev.currentTarget.disabled = true;
      await act('Cancel requested.', () => api('POST', rp + '/cancel', {}));
      reload();
    } }, 'Cancel run'));
  }
  const sections = [];
  if (run.status === 'interaction_required') sections.push(interactionForm(rp, run, reload));
  if (run.status === 'review_required') sections.push(reviewForm(rp, reload));
  if (run.status === 'running') sections.push(messageForm(rp));
  const usage = kv([
    ['duration', fmtDur(run.duration_ms ?? (run.started_at ? Date.now() - Date.parse(run.started_at) : null))],
    ['iterations', String(run.iterations ?? 0)], ['tokens', String(run.tokens_used ?? 0)],
    ['cost', run.cost != null ? String(run.cost) : '—'], ['progress', Math.round((run.progress || 0) * 100) + '%'],
    ['exit code', run.exit_code != null ? String(run.exit_code) : '—'],
  ]);
  return h('div', {},
    h('div', { class: 'head' }, h('h1', {}, 'Run ', h('span', { class: 'mono' }, run.id)),
      h('span', { id: 'run-status', 'data-status': run.status }, badge(run.status))),
    buttons,
    sections,
    h('div', { class: 'grid', style: 'margin-top:1em' },
      h('div', { class: 'panel' }, h('h2', {}, 'Details'), kv([
        ['task', h('a', { href: '#/task/' + tid, class: 'mono' }, tid)], ['attempt', String(run.attempt)],
        ['runtime', run.runtime_id], ['agent', run.agent_id], ['worker', run.worker_id],
        run.stage && ['stage', run.stage], run.branch && ['branch', run.branch],
        (run.blocked_by || []).length && ['blocked by', (run.blocked_by || []).map((b) => h('a', { href: '#/task/' + b, class: 'mono' }, b, ' '))],
        ['created', timeEl(run.created_at)], ['started', timeEl(run.started_at)], ['finished', timeEl(run.completed_at)],
        run.lease_expires_at && !TERMINAL.has(run.status) && ['lease until', timeEl(run.lease_expires_at)],
      ])),
      h('div', { class: 'panel' }, h('h2', {}, 'Usage'), usage)),
    h('div', { class: 'panel' }, h('h2', {}, 'Status timeline'), timeline(run, events)),
    run.error ? h('div', { class: 'panel' }, h('h2', {}, 'Error'), h('p', { class: 'error-text' }, `${run.error.code || run.error.type}: ${run.error.message || ''}`),
      (run.errors || []).length > 1 ? jsonPre(run.errors, 'All errors') : null) : null,
    h('div', { class: 'grid' },
      h('div', { class: 'panel' }, h('h2', {}, 'Input'), jsonPre(run.input, 'Run input')),
      h('div', { class: 'panel' }, h('h2', {}, 'Output'), run.output != null ? jsonPre(run.output, 'Run output') : h('p', { class: 'muted' }, 'No output yet.'))),
    h('div', { class: 'grid' },
      h('div', { class: 'panel' }, h('h2', {}, `Checkpoints (${checkpoints.length})`),
        checkpoints.length ? h('ol', {}, checkpoints.map((c) => h('li', {}, timeEl(c.created_at), jsonPre(c.data, 'Checkpoint')))) : h('p', { class: 'muted' }, 'None.')),
      h('div', { class: 'panel' }, h('h2', {}, `Artifacts (${(run.artifacts || []).length})`), artifacts(rp, run.artifacts || []))),
    run.review ? h('div', { class: 'panel' }, h('h2', {}, 'Review'), kv([['decision', run.review.decision], ['comment', run.review.comment]])) : null,
    run.interaction_response != null ? h('div', { class: 'panel' }, h('h2', {}, 'Interaction response'), jsonPre(run.interaction_response, 'Interaction response')) : null);
}

function fmtBytes(n) {
  if (n == null || isNaN(n)) return '? bytes';
  if (n < 1024) return n + (n === 1 ? ' byte' : ' bytes');
  const u = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return v.toFixed(v < 10 ? 1 : 0) + ' ' + u[i];
}

function artifacts(rp, list) {
  // each link is a presigned URL (no API key needed, valid 1 h): the browser opens it in a new
  // tab like any link.  The first 50 are signed at once, the rest (or a stale link) on click.
  if (!list.length) return h('p', { class: 'muted' }, 'None.');
  const FRESH_MS = 50 * 60000;
  const items = list.map((a, i) => {
    const link = h('a', { href: '#', target: '_blank', rel: 'noopener', class: 'artifact', 'data-name': a.name },
      a.name, h('span', { class: 'sr-only' }, ' (opens in a new tab)'));
    let signedAt = 0;
    const sign = async () => {
      const r = await api('POST', rp + '/artifacts/presign', { storage_path: a.storage_path || a.name });
      link.href = r.url;
      signedAt = Date.now();
      link.dataset.signed = 'true';
      return r.url;
    };
    if (i < 50) sign().catch(() => {});
    link.addEventListener('click', async (ev) => {
      if (signedAt && Date.now() - signedAt < FRESH_MS) return; // a fresh link: the browser follows it
      ev.preventDefault();
      const w = window.open('', '_blank'); // opened within the click, so no popup blocker refuses it
      try {
        const url = await sign();
        if (w) { w.opener = null; w.location.href = url; } else window.open(url, '_blank', 'noopener');
      } catch (e) {
        if (w) w.close();
        toast('Download failed: ' + e.message, true);
      }
    });
    return h('li', {}, link, h('span', { class: 'muted' }, ` ${fmtBytes(a.size)}${a.content_type ? ', ' + a.content_type : ''}`));
  });
  return h('ul', { class: 'artifacts', id: 'artifacts' }, items);
}

function timeline(run, events) {
  const steps = [];
  for (const e of events) {
    const st = e.data && e.data.status;
    if (!st || !e.type.startsWith('task_run.')) continue;
    if (steps.length && steps[steps.length - 1].status === st) continue;
    steps.push({ status: st, at: Date.parse(e.created_at), ts: e.created_at, attempt: e.data.attempt });
  }
  if (!steps.length) steps.push({ status: run.status, at: Date.parse(run.created_at), ts: run.created_at });
  const end = TERMINAL.has(run.status) ? Date.parse(run.completed_at || run.updated_at) : Date.now();
  steps.forEach((st, i) => { st.dur = (i + 1 < steps.length ? steps[i + 1].at : end) - st.at; });
  const span = Math.max(1, steps.reduce((a, st) => a + (TERMINAL.has(st.status) ? 0 : st.dur), 0));
  return h('div', {},
    h('div', { class: 'timeline-bar', 'aria-hidden': 'true' }, steps.filter((st) => !TERMINAL.has(st.status)).map((st) =>
      h('span', { style: `flex:${Math.max(st.dur, 0) / span} 1 0;background:${BAR_COLOR[st.status] || '#94a3b8'}`, title: `${st.status} ${fmtDur(st.dur)}` }))),
    h('ol', { class: 'timeline', id: 'timeline' }, steps.map((st) => h('li', { 'data-status': st.status },
      badge(st.status), h('span', { class: 'when' }, timeEl(st.ts)),
      TERMINAL.has(st.status) ? null : h('span', {}, fmtDur(st.dur)),
      st.attempt > 1 ? h('span', { class: 'muted' }, 'attempt ' + st.attempt) : null))));
}

function schemaForm(schema) {
  // a form for a JSON Schema object: strings, numbers, booleans, enums; anything else as JSON
  const props = schema.properties || {};
  const req = new Set(schema.required || []);
  const getters = [];
  const fields = Object.entries(props).map(([name, ps]) => {
    const id = 'ia-' + name.replace(/[^\w-]/g, '_');
    const label = (ps.title || name) + (req.has(name) ? ' (required)' : '');
    let ctl, get;
    if (Array.isArray(ps.enum)) {
      ctl = h('select', { id, name, required: req.has(name) }, req.has(name) ? null : h('option', { value: '' }, '—'),
        ps.enum.map((v, i) => h('option', { value: String(i) }, String(v))));
      get = () => (ctl.value === '' ? undefined : ps.enum[Number(ctl.value)]);
    } else if (ps.type === 'boolean') {
      ctl = h('input', { type: 'checkbox', id, name, checked: ps.default === true });
      get = () => ctl.checked;
    } else if (ps.type === 'integer' || ps.type === 'number') {
      ctl = h('input', { type: 'number', id, name, required: req.has(name), step: ps.type === 'integer' ? 1 : 'any',
        min: ps.minimum, max: ps.maximum, value: ps.default });
      get = () => (ctl.value === '' ? undefined : Number(ctl.value));
    } else if (ps.type === 'string' || !ps.type) {
      const long = (ps.maxLength || 0) > 200 || ps.format === 'textarea';
      ctl = h(long ? 'textarea' : 'input', { id, name, required: req.has(name), minlength: ps.minLength, maxlength: ps.maxLength,
        pattern: ps.pattern, value: ps.default });
      get = () => (ctl.value === '' ? undefined : ctl.value);
    } else {
      ctl = h('textarea', { id, name, class: 'mono', required: req.has(name), value: ps.default !== undefined ? JSON.stringify(ps.default) : '' });
      get = () => {
        if (!ctl.value.trim()) return undefined;
        try { return JSON.parse(ctl.value); } catch { ctl.setAttribute('aria-invalid', 'true'); throw new Error(name + ' is not valid JSON'); }
      };
    }
    getters.push([name, get]);
    return field(label, ctl, ps.description);
  });
  return {
    fields,
    value() {
      const out = {};
      for (const [n, g] of getters) { const v = g(); if (v !== undefined) out[n] = v; }
      return out;
    },
  };
}

function interactionForm(rp, run, reload) {
  const inter = run.interaction || {};
  const err = h('div', { 'aria-live': 'assertive' });
  const send = async (response, btn) => {
    err.replaceChildren();
    if (btn) btn.disabled = true;
    try {
      await api('POST', rp + '/interaction', { response });
      toast('Answer sent.');
      reload();
    } catch (e) {
      err.replaceChildren(alertBox((e.param ? e.param + ': ' : '') + e.message));
      if (btn) btn.disabled = false;
    }
  };
  const heading = h('h2', {}, inter.kind === 'approval' ? 'Approval needed' : 'The run is waiting for an answer');
  const prompt = inter.message || inter.prompt || inter.question;
  if (inter.kind === 'approval') {
    return h('div', { class: 'panel', id: 'interaction' }, heading, prompt ? h('p', {}, prompt) : null,
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: (ev) => send({ approved: true }, ev.currentTarget) }, 'Approve'),
        h('button', { type: 'button', class: 'danger', onclick: (ev) => send({ approved: false }, ev.currentTarget) }, 'Deny')), err);
  }
  let form;
  if (inter.schema && typeof inter.schema === 'object' && inter.schema.properties) {
    const sf = schemaForm(inter.schema);
    form = h('form', { class: 'stack', id: 'interaction-form', onsubmit: (ev) => {
      ev.preventDefault();
      let v;
      try { v = sf.value(); } catch (e) { err.replaceChildren(alertBox(e.message)); return; }
      send(v, form.querySelector('button[type=submit]'));
    } }, sf.fields, err, h('div', {}, h('button', { type: 'submit' }, 'Send answer')));
  } else {
    const box = h('textarea', { id: 'interaction-json', class: 'mono', spellcheck: 'false', value: '{\n  \n}' });
    form = h('form', { class: 'stack', id: 'interaction-form', onsubmit: (ev) => {
      ev.preventDefault();
      let v;
      try { v = JSON.parse(box.value); box.removeAttribute('aria-invalid'); } catch (e) {
        box.setAttribute('aria-invalid', 'true');
        err.replaceChildren(alertBox('The answer is not valid JSON: ' + e.message));
        box.focus();
        return;
      }
      send(v, form.querySelector('button[type=submit]'));
    } }, field('Answer (JSON)', box, 'Sent as {"response": …}.'), err, h('div', {}, h('button', { type: 'submit' }, 'Send answer')));
  }
  return h('div', { class: 'panel', id: 'interaction' }, heading, prompt ? h('p', {}, prompt) : null, form);
}

function reviewForm(rp, reload) {
  const comment = h('textarea', { id: 'review-comment', maxlength: 4096 });
  const err = h('div', { 'aria-live': 'assertive' });
  const decide = async (decision, btn) => {
    btn.disabled = true;
    err.replaceChildren();
    try {
      await api('POST', rp + '/review', { decision, comment: comment.value.trim() || undefined });
      toast(decision === 'approve' ? 'Approved.' : 'Rejected.');
      reload();
    } catch (e) {
      err.replaceChildren(alertBox(e.message));
      btn.disabled = false;
    }
  };
  return h('div', { class: 'panel', id: 'review' }, h('h2', {}, 'Review needed'),
    h('p', {}, 'The run finished and waits for a review: approving completes it, rejecting fails it.'),
    field('Comment', comment), err,
    h('div', { class: 'actions', style: 'margin-top:.6em' },
      h('button', { type: 'button', onclick: (ev) => decide('approve', ev.currentTarget) }, 'Approve'),
      h('button', { type: 'button', class: 'danger', onclick: (ev) => decide('reject', ev.currentTarget) }, 'Reject')));
}

function messageForm(rp) {
  const text = h('input', { id: 'user-message', placeholder: 'a message to the running code' });
  const form = h('form', { class: 'inline', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!text.value.trim()) return;
    await act('Message sent.', () => api('POST', rp + '/command', { jsonrpc: '2.0', method: 'user_message', params: { text: text.value }, id: Date.now() }));
    text.value = '';
  } }, field('Send a user message', text), h('button', { type: 'submit', style: 'align-self:end' }, 'Send'));
  return h('div', { class: 'panel' }, form);
}

/* ---------- definitions ---------- */

async function pageDefinitions(parts, q) {
  const offset = Math.max(0, Number(q.get('offset')) || 0), limit = 50;
  const list = await api('GET', P() + '/definitions' + qs({ limit, offset }));
  const id = h('input', { id: 'def-id', name: 'id', placeholder: 'optional, e.g. def_resize' });
  const title = h('input', { id: 'def-title', name: 'title', required: true });
  const desc = h('input', { id: 'def-description' });
  const runtime = select('runtime_id', RUNTIMES, 'node', { id: 'def-runtime' });
  const code = codeEditor('def-code', '');
  const inSchema = h('textarea', { id: 'def-input-schema', class: 'mono', spellcheck: 'false' });
  const outSchema = h('textarea', { id: 'def-output-schema', class: 'mono', spellcheck: 'false' });
  const err = h('div', { 'aria-live': 'assertive' });
  const form = h('form', { class: 'stack', id: 'def-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const errors = [];
    const body = { title: title.value.trim(), runtime_id: runtime.value };
    if (id.value.trim()) body.id = id.value.trim();
    if (desc.value.trim()) body.description = desc.value.trim();
    if (code.value.trim()) body.code = code.value;
    const a = parseJsonField(inSchema, 'Input schema', errors), b = parseJsonField(outSchema, 'Output schema', errors);
    if (a) body.input_schema = a;
    if (b) body.output_schema = b;
    if (errors.length) { err.replaceChildren(alertBox(errors.join('; '))); return; }
    try {
      await api('POST', P() + '/definitions', body);
      toast('Definition created.');
      route();
    } catch (e) { err.replaceChildren(alertBox((e.param ? e.param + ': ' : '') + e.message)); }
  } },
  field('Id', id), field('Title', title), field('Description', desc), field('Runtime', runtime),
  field('Code', code, 'Leave empty for a type implemented by external workers (they lease its runs by definition id).'),
  field('Input schema (JSON Schema)', inSchema), field('Output schema (JSON Schema)', outSchema), err,
  h('div', {}, h('button', { type: 'submit' }, 'Create definition')));

  const rows = list.data.map((d) => {
    const trigInput = h('input', { class: 'mono', value: '{}', 'aria-label': `Input for ${d.title || d.id}` });
    return h('tr', { 'data-def-id': d.id },
      h('td', { 'data-label': 'Definition' }, h('strong', {}, d.title || d.id), h('div', { class: 'muted mono' }, d.id),
        d.description ? h('div', { class: 'muted' }, d.description) : null),
      h('td', { 'data-label': 'Runtime' }, d.runtime_id || '—'),
      h('td', { 'data-label': 'Runs by' }, d.code ? 'its code' : 'external workers'),
      h('td', { 'data-label': 'Tasks' }, h('a', { href: '#/tasks?definition_id=' + encodeURIComponent(d.id) }, 'tasks')),
      h('td', { 'data-label': 'Created' }, timeEl(d.created_at)),
      h('td', { 'data-label': 'Actions' }, h('form', { class: 'actions', onsubmit: async (ev) => {
        ev.preventDefault();
        let input;
        try { input = JSON.parse(trigInput.value || '{}'); } catch { toast('The input is not valid JSON.', true); return; }
        const t = await act('Triggered.', () => api('POST', P() + '/definitions/' + encodeURIComponent(d.id) + '/trigger', { input }));
        if (t) go('#/task/' + t.id);
      } }, trigInput, h('button', { type: 'submit', class: 'small' }, 'Trigger'),
      h('button', { type: 'button', class: 'small danger', onclick: async () => {
        if (!confirm(`Delete definition ${d.id}?`)) return;
        await act('Definition deleted.', () => api('DELETE', P() + '/definitions/' + encodeURIComponent(d.id)));
        route();
      } }, 'Delete'))));
  });
  return h('section', {}, h('h1', {}, 'Definitions'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack-sm', id: 'defs-table' },
      h('caption', {}, `Registered task types (${list.total})`),
      h('thead', {}, h('tr', {}, ['Definition', 'Runtime', 'Runs by', 'Tasks', 'Created', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No definitions yet.')))),
    pager(list.total, offset, limit, (o) => '#/definitions' + qs({ offset: o || '' }))),
    h('details', { class: 'panel', style: 'margin-top:1em', open: list.total === 0 },
      h('summary', {}, h('strong', {}, 'New definition')), form));
}

/* ---------- triggers (incoming signed webhooks that start a task's run) ---------- */

function copyButton(text, label) {
  return h('button', { type: 'button', class: 'small secondary', 'aria-label': label || 'Copy', onclick: () =>
    navigator.clipboard.writeText(text).then(() => toast('Copied.'), () => toast('Copy failed; select the text by hand.', true)) }, 'Copy');
}
function secretOnce(id, secret, what) {
  return [h('p', {}, h('strong', {}, `Copy the ${what} secret now: it is shown only once.`)),
    h('div', { class: 'secret' }, h('code', { id }, secret), copyButton(secret, `Copy the ${what} secret`))];
}
function adminOnly(title, e) {
  if (e.status === 403) return h('section', {}, h('h1', {}, title), alertBox(`Managing ${title.toLowerCase()} needs the admin scope.`));
  throw e;
}
const absUrl = (p) => location.origin + p;

function signingHelp(url) {
  const sh = [
    `SECRET='whsec_…'   # the secret shown above`,
    `body='{"key": "value"}'`,
    `t=$(date +%s)`,
    `sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.*= //')`,
    `curl -X POST -H "X-Quern-Signature: t=$t,sha256=$sig" \\`,
    `     -H 'Content-Type: application/json' -d "$body" ${url}`].join('\n');
  return h('div', { class: 'signing' },
    h('p', {}, 'Sign each request: send ', h('code', {}, 'X-Quern-Signature: t=<unix seconds>,sha256=<hex>'),
      ' where the hex is the HMAC-SHA256, under the secret, of ', h('code', {}, '"<t>.<raw body>"'),
      '. The body is a JSON object (or empty); its keys are merged over the task\'s input. ',
      'A t more than 5 minutes off is refused; the same signed request again within 10 minutes starts no second run.'),
    h('pre', { class: 'json', tabindex: 0, 'aria-label': 'Example: sign and send with openssl and curl' }, sh));
}

function taskPicker(id, initial) {
  // a text box with suggestions from the server-side name search (?q=); takes a name or a task id
  const list = h('datalist', { id: id + '-list' });
  const input = h('input', { id, name: 'task', list: list.id, required: true, autocomplete: 'off', value: initial || '', placeholder: 'task name or task_…' });
  let timer = null, seq = 0;
  const suggest = async () => {
    const mine = ++seq;
    const r = await api('GET', P() + '/tasks' + qs({ q: input.value.trim(), limit: 20 })).catch(() => null);
    if (!r || mine !== seq) return;
    list.replaceChildren(...r.data.map((t) => h('option', { value: t.id }, t.name || t.id)));
  };
  input.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(suggest, 200); });
  input.addEventListener('focus', () => { if (!list.children.length) suggest(); });
  onLeave(() => clearTimeout(timer));
  return {
    field: (label, hint) => { const f = field(label, input, hint); f.append(list); return f; },
    input,
    async resolve() {
      const v = input.value.trim();
      if (!v) throw new Error('Task: required');
      if (/^task_/.test(v)) {
        const t = await api('GET', taskPath(v)).catch(() => null);
        if (t) return t;
      }
      const r = await api('GET', P() + '/tasks' + qs({ q: v, limit: 50 }));
      const exact = r.data.filter((t) => t.name === v || t.id === v);
      if (exact.length === 1) return exact[0];
      if (!exact.length && r.data.length === 1) return r.data[0];
      throw new Error(r.data.length ? `Task: ${exact.length || r.data.length} tasks match "${v}"; pick one from the suggestions`
        : `Task: no task matches "${v}"`);
    },
  };
}

async function pageTriggers(parts, q) {
  const task_id = q.get('task_id') || '';
  const offset = Math.max(0, Number(q.get('offset')) || 0), limit = 50;
  let list;
  try { list = await api('GET', P() + '/triggers' + qs({ task_id, limit, offset })); } catch (e) { return adminOnly('Triggers', e); }
  const picker = taskPicker('trigger-task', task_id);
  const desc = h('input', { id: 'trigger-description', maxlength: 4096 });
  const out = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', id: 'trigger-form', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    picker.input.removeAttribute('aria-invalid');
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      let task;
      try { task = await picker.resolve(); } catch (e) { picker.input.setAttribute('aria-invalid', 'true'); throw e; }
      const body = { task_id: task.id };
      if (desc.value.trim()) body.description = desc.value.trim();
      const t = await api('POST', P() + '/triggers', body);
      const url = absUrl(t.url);
      out.replaceChildren(h('div', { class: 'notice', id: 'new-trigger' },
        h('p', {}, 'Trigger created for ', h('strong', {}, task.name || task.id), '. POST to:'),
        h('div', { class: 'secret' }, h('code', { id: 'new-trigger-url' }, url), copyButton(url, 'Copy the trigger URL')),
        secretOnce('new-trigger-secret', t.secret, 'trigger'),
        signingHelp(url),
        h('p', {}, h('button', { type: 'button', class: 'secondary', onclick: () => route() }, 'Done'))));
      desc.value = '';
      $('#new-trigger-secret').scrollIntoView({ block: 'nearest' });
    } catch (e) {
      out.replaceChildren(alertBox((e.param ? e.param + ': ' : '') + e.message));
    } finally { btn.disabled = false; }
  } },
  picker.field('Task', 'Each POST to the trigger\'s URL starts a run of this task. Type part of a name for suggestions.'),
  field('Description', desc), out,
  h('div', {}, h('button', { type: 'submit' }, 'Create trigger')));

  const rows = list.data.map((t) => h('tr', { 'data-trigger-id': t.id },
    h('td', { 'data-label': 'Task' }, h('div', {}, taskLink(t.task_id), t.description ? h('div', { class: 'muted' }, t.description) : null,
      h('div', { class: 'muted mono' }, t.id))),
    h('td', { 'data-label': 'URL' }, h('span', { class: 'secret' }, h('code', { class: 'url' }, absUrl(t.url)), copyButton(absUrl(t.url), 'Copy the URL of ' + t.id))),
    h('td', { 'data-label': 'Fired', class: 'num fires' }, String(t.fire_count ?? 0)),
    h('td', { 'data-label': 'Last fired' }, t.last_fired_at ? h('div', {}, timeEl(t.last_fired_at),
      t.last_run_id ? h('div', {}, h('a', { class: 'mono last-run', href: `#/run/${t.task_id}/${t.last_run_id}` }, t.last_run_id)) : null) : 'never'),
    h('td', { 'data-label': 'Created' }, timeEl(t.created_at)),
    h('td', { 'data-label': 'Actions' }, h('button', { type: 'button', class: 'small danger', 'aria-label': 'Delete trigger ' + t.id, onclick: async () => {
      if (!confirm(`Delete trigger ${t.id}? Requests to its URL are refused from now on.`)) return;
      await act('Trigger deleted.', () => api('DELETE', P() + '/triggers/' + encodeURIComponent(t.id)));
      route();
    } }, 'Delete'))));
  return h('section', {},
    h('div', { class: 'head' }, h('h1', {}, 'Triggers'), h('button', { type: 'button', class: 'secondary', onclick: () => route() }, 'Refresh')),
    h('p', { class: 'muted' }, 'A trigger is a URL that starts a run of a task when it receives a signed POST — no API key needed.'),
    task_id ? h('p', {}, 'Showing the triggers of task ', taskLink(task_id), '. ', h('a', { href: '#/triggers' }, 'Show all')) : null,
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack-sm', id: 'triggers-table' },
      h('caption', {}, `Triggers (${list.total ?? list.data.length})`),
      h('thead', {}, h('tr', {}, ['Task', 'URL', 'Fired', 'Last fired', 'Created', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No triggers yet.'))))),
    pager(list.total, offset, limit, (o) => '#/triggers' + qs({ task_id, offset: o || '' })),
    h('div', { class: 'panel', style: 'margin-top:1em' }, h('h2', {}, 'New trigger'), form));
}

/* ---------- webhooks (outgoing event deliveries) ---------- */

const HOOK_EVENTS = ['task.created', 'task.updated', 'task.deleted', 'task.completed', 'task.failed',
  'task_run.queued', 'task_run.started', 'task_run.paused', 'task_run.resumed', 'task_run.unblocked', 'task_run.log',
  'task_run.progress', 'task_run.checkpoint', 'task_run.output', 'task_run.artifact', 'task_run.interaction_required',
  'task_run.review_required', 'task_run.completed', 'task_run.failed', 'task_run.timed_out', 'task_run.denied',
  'task_run.canceling', 'task_run.canceled', 'task_run.retrying'];

async function pageWebhooks(parts, q) {
  if (parts[0]) return pageWebhook(parts[0], q);
  const offset = Math.max(0, Number(q.get('offset')) || 0), limit = 50;
  let list;
  try { list = await api('GET', P() + '/webhooks' + qs({ limit, offset })); } catch (e) { return adminOnly('Webhooks', e); }
  const url = h('input', { id: 'webhook-url', type: 'url', required: true, maxlength: 2048, placeholder: 'https://example.com/quern' });
  const desc = h('input', { id: 'webhook-description', maxlength: 4096 });
  const secret = h('input', { id: 'webhook-secret', type: 'password', autocomplete: 'new-password', spellcheck: 'false' });
  const box = (v, label) => h('label', {}, h('input', { type: 'checkbox', name: 'event', value: v, checked: v === '*' }), label);
  const groups = [box('*', 'All events (*)'), box('task.*', 'All task events (task.*)'), box('task_run.*', 'All run events (task_run.*)')];
  const singles = HOOK_EVENTS.map((v) => box(v, v));
  const out = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', id: 'webhook-form', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    const events = [...form.querySelectorAll('input[name=event]:checked')].map((c) => c.value);
    if (!events.length) { out.replaceChildren(alertBox('Events: pick at least one (All events for everything).')); return; }
    const body = { url: url.value.trim(), events };
    if (secret.value) body.secret = secret.value;
    if (desc.value.trim()) body.description = desc.value.trim();
    try {
      const w = await api('POST', P() + '/webhooks', body);
      out.replaceChildren(h('div', { class: 'notice', id: 'new-webhook' },
        h('p', {}, 'Webhook created: ', h('a', { href: '#/webhooks/' + w.id }, w.url), '.'),
        w.secret ? secretOnce('new-webhook-secret', w.secret, 'webhook') : h('p', {}, 'Requests are signed with the secret you gave.'),
        h('p', { class: 'muted' }, 'Check each request\'s X-Quern-Signature: t=<unix>,sha256=<hex HMAC-SHA256 of "<t>.<body>">; ',
          'dedupe on X-Quern-Delivery (deliveries are at least once).'),
        h('p', {}, h('button', { type: 'button', class: 'secondary', onclick: () => route() }, 'Done'))));
      url.value = ''; secret.value = ''; desc.value = '';
    } catch (e) {
      if (e.param === 'url') url.setAttribute('aria-invalid', 'true');
      out.replaceChildren(alertBox((e.param ? e.param + ': ' : '') + e.message));
    }
  } },
  field('URL', url, 'http or https; quern POSTs each matching event here.'),
  h('fieldset', {}, h('legend', {}, 'Events'), h('div', { class: 'inline' }, groups),
    h('details', { style: 'margin-top:.5em' }, h('summary', {}, 'Single event types'), h('div', { class: 'inline events' }, singles))),
  field('Secret (optional)', secret, 'Leave empty to get a generated one, shown once.'),
  field('Description', desc), out,
  h('div', {}, h('button', { type: 'submit' }, 'Create webhook')));

  const rows = list.data.map((w) => h('tr', { 'data-webhook-id': w.id },
    h('td', { 'data-label': 'URL' }, h('div', {}, h('a', { href: '#/webhooks/' + w.id, class: 'url' }, w.url),
      w.description ? h('div', { class: 'muted' }, w.description) : null, h('div', { class: 'muted mono' }, w.id))),
    h('td', { 'data-label': 'Events' }, (w.events || []).join(', ')),
    h('td', { 'data-label': 'Created' }, timeEl(w.created_at)),
    h('td', { 'data-label': 'Actions' }, h('div', { class: 'actions' },
      h('a', { class: 'btn small secondary', href: '#/webhooks/' + w.id, 'aria-label': 'Deliveries of ' + w.url }, 'Deliveries'),
      h('button', { type: 'button', class: 'small danger', 'aria-label': 'Delete webhook ' + w.url, onclick: async () => {
        if (!confirm(`Delete the webhook to ${w.url}? Its deliveries go with it.`)) return;
        await act('Webhook deleted.', () => api('DELETE', P() + '/webhooks/' + encodeURIComponent(w.id)));
        route();
      } }, 'Delete')))));
  return h('section', {},
    h('div', { class: 'head' }, h('h1', {}, 'Webhooks'), h('button', { type: 'button', class: 'secondary', onclick: () => route() }, 'Refresh')),
    h('p', { class: 'muted' }, 'Webhooks send this project\'s events to your URLs, signed, retried until they succeed (up to 24 h).'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack-sm', id: 'webhooks-table' },
      h('caption', {}, `Webhooks (${list.total ?? list.data.length})`),
      h('thead', {}, h('tr', {}, ['URL', 'Events', 'Created', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'No webhooks yet.'))))),
    pager(list.total, offset, limit, (o) => '#/webhooks' + qs({ offset: o || '' })),
    h('div', { class: 'panel', style: 'margin-top:1em' }, h('h2', {}, 'New webhook'), form));
}

async function pageWebhook(id, q) {
  const limit = 20, offset = Math.max(0, Number(q.get('offset')) || 0), status = q.get('status') || '';
  const wp = P() + '/webhooks/' + encodeURIComponent(id);
  let w, dl;
  try {
    [w, dl] = await Promise.all([
      id === 'relay' ? Promise.resolve({ id: 'relay', url: 'the policy\'s relay_webhook_url', events: ['relay_message'] }) : api('GET', wp),
      api('GET', wp + '/deliveries' + qs({ status, limit, offset }))]);
  } catch (e) { return adminOnly('Webhooks', e); }
  const hrefFor = (o, st = status) => `#/webhooks/${encodeURIComponent(id)}` + qs({ status: st, offset: o || '' });
  const filter = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter deliveries', onsubmit: (ev) => {
    ev.preventDefault();
    go(hrefFor(0, new FormData(filter).get('status')));
  } }, field('Status', select('status', ['pending', 'succeeded', 'failed'], status, { any: 'any', id: 'delivery-status' })),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply'), h('button', { type: 'button', class: 'secondary', onclick: () => route() }, 'Refresh')));

  const rows = dl.data.map((d) => {
    const attempts = d.attempts || [];
    // one tbody per delivery: its row, then a full-width row with the attempts
    return h('tbody', { 'data-delivery-id': d.id, 'data-status': d.status }, h('tr', {},
      h('td', { 'data-label': 'Event' }, h('div', {}, h('strong', {}, d.event_type), h('div', { class: 'muted mono' }, d.id),
        d.payload && d.payload.task_id ? h('div', {}, taskLink(d.payload.task_id)) : null)),
      h('td', { 'data-label': 'Status' }, badge(d.status)),
      h('td', { 'data-label': 'Attempts', class: 'num' }, String(d.attempt_count ?? attempts.length)),
      h('td', { 'data-label': 'Last answer' }, h('div', {}, d.last_status_code ? h('span', { class: 'mono' }, String(d.last_status_code)) : null,
        d.last_error ? h('div', { class: 'error-text' }, d.last_error) : d.last_status_code ? null : '—')),
      h('td', { 'data-label': 'Created' }, timeEl(d.created_at)),
      h('td', { 'data-label': d.status === 'pending' ? 'Next attempt' : 'Finished' }, timeEl(d.status === 'pending' ? d.next_attempt_at : d.completed_at))),
    h('tr', { class: 'sub' }, h('td', { colspan: 6, class: 'full' }, h('details', { class: 'attempts' },
        h('summary', {}, `${attempts.length} attempt${attempts.length === 1 ? '' : 's'}`, h('span', { class: 'sr-only' }, ' of ' + d.id)),
        attempts.length ? h('table', { class: 'mini' }, h('caption', { class: 'sr-only' }, 'Attempts of ' + d.id),
          h('thead', {}, h('tr', {}, ['#', 'Started', 'Took', 'Answer', 'Response'].map((x) => h('th', { scope: 'col' }, x)))),
          h('tbody', {}, attempts.map((a) => h('tr', { 'data-attempt': a.attempt },
            h('td', {}, String(a.attempt)), h('td', {}, timeEl(a.started_at)), h('td', {}, fmtDur(a.duration_ms)),
            h('td', { class: 'answer' }, a.status_code ? h('span', { class: a.status_code < 300 ? 'ok-code' : 'error-text' }, String(a.status_code)) : null,
              a.error ? h('div', { class: 'error-text' }, a.error) : null, !a.status_code && !a.error ? (a.completed_at ? '—' : 'in flight') : null),
            h('td', {}, a.response_body ? h('code', { class: 'resp' }, a.response_body) : '—'))))) : h('p', { class: 'muted' }, 'Not attempted yet.'),
        h('h3', { class: 'sub-h' }, 'Payload'), jsonPre(d.payload, 'Payload of ' + d.id)))));
  });
  // deliveries still pending: refresh quietly while the reader is not on a control
  if (dl.data.some((d) => d.status === 'pending')) {
    const idle = () => !document.hidden && [document.body, $('#main')].includes(document.activeElement) && !$('details.attempts[open]');
    const t = setInterval(() => { if (idle()) { route.focus = false; route().finally(() => { route.focus = true; }); } }, 3000);
    onLeave(() => clearInterval(t));
  }
  const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
  return h('section', {},
    h('p', { class: 'muted' }, h('a', { href: '#/webhooks' }, '← webhooks')),
    h('div', { class: 'head' }, h('h1', {}, 'Webhook ', h('span', { class: 'mono' }, w.id))),
    h('div', { class: 'panel' }, kv([['url', h('code', { class: 'url' }, w.url)], ['events', (w.events || []).join(', ')],
      w.description && ['description', w.description], w.created_at && ['created', timeEl(w.created_at)]])),
    h('h2', {}, 'Deliveries'), filter,
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack-sm', id: 'deliveries-table' },
      h('caption', {}, `Deliveries, newest first (${dl.total} ${status ? status : 'in all'})`),
      h('thead', {}, h('tr', {}, ['Event', 'Status', 'Attempts', 'Last answer', 'Created', 'Next / finished'].map((x) => h('th', { scope: 'col' }, x)))),
      rows.length ? rows : h('tbody', {}, h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No deliveries yet: only events after the webhook was created are sent.')))),
    pager(dl.total, offset, limit, hrefFor)));
}

/* ---------- API keys ---------- */

async function pageKeys(parts, q) {
  const offset = Math.max(0, Number(q.get('offset')) || 0), limit = 50;
  let list;
  try { list = await api('GET', P() + '/api_keys' + qs({ limit, offset })); } catch (e) {
    if (e.status === 403) return h('section', {}, h('h1', {}, 'API keys'), alertBox('Managing keys needs the admin scope.'));
    throw e;
  }
  const name = h('input', { id: 'key-name', required: true, maxlength: 256 });
  const boxes = SCOPES.map((sc) => h('label', {}, h('input', { type: 'checkbox', name: 'scope', value: sc, checked: sc.startsWith('task') }), sc));
  const out = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', id: 'key-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const scopes = boxes.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value);
    try {
      const k = await api('POST', P() + '/api_keys', { name: name.value.trim(), scopes });
      const code = h('code', { id: 'new-key' }, k.key);
      out.replaceChildren(h('div', { class: 'notice' }, h('p', {}, h('strong', {}, 'Copy this key now: it is shown only once.')),
        h('div', { class: 'secret' }, code, h('button', { type: 'button', class: 'small secondary', onclick: () =>
          navigator.clipboard.writeText(k.key).then(() => toast('Copied.'), () => toast('Copy failed; select the key by hand.', true)) }, 'Copy')),
        h('p', {}, h('button', { type: 'button', class: 'secondary', onclick: () => route() }, 'Done'))));
      name.value = '';
    } catch (e) { out.replaceChildren(alertBox((e.param ? e.param + ': ' : '') + e.message)); }
  } }, field('Name', name), h('fieldset', {}, h('legend', {}, 'Scopes'), h('div', { class: 'inline' }, boxes)), out,
  h('div', {}, h('button', { type: 'submit' }, 'Create key')));
  const rows = [...list.data].sort((a, b) => !!a.revoked - !!b.revoked).map((k) => h('tr', { 'data-key-id': k.id },
    h('td', { 'data-label': 'Name' }, k.name || '—', h('div', { class: 'muted mono' }, k.id)),
    h('td', { 'data-label': 'Scopes' }, (k.scopes || []).join(', ')),
    h('td', { 'data-label': 'Created' }, timeEl(k.created_at)),
    h('td', { 'data-label': 'State' }, k.revoked ? h('span', { class: 'badge s-failed' }, 'revoked ', k.revoked_at ? fmtTime(k.revoked_at) : '') : h('span', { class: 'badge s-completed' }, 'active')),
    h('td', { 'data-label': 'Actions' }, k.revoked ? '—' : h('button', { type: 'button', class: 'small danger', 'aria-label': 'Revoke ' + (k.name || k.id), onclick: async () => {
      if (!confirm(`Revoke key ${k.name || k.id}? It stops working at once.`)) return;
      await act('Key revoked.', () => api('DELETE', P() + '/api_keys/' + encodeURIComponent(k.id)));
      route();
    } }, 'Revoke'))));
  return h('section', {}, h('h1', {}, 'API keys'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'stack-sm', id: 'keys-table' },
      h('caption', {}, `Keys of project ${session.project} (${list.total ?? list.data.length}); the root key is not listed`),
      h('thead', {}, h('tr', {}, ['Name', 'Scopes', 'Created', 'State', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No project keys yet.'))))),
    pager(list.total, offset, limit, (o) => '#/keys' + qs({ offset: o || '' })),
    h('div', { class: 'panel', style: 'margin-top:1em' }, h('h2', {}, 'New key'), form));
}

/* ---------- start ---------- */

$('#signout').addEventListener('click', () => { session.clear(); go('#/signin'); });
$('#project-select').addEventListener('change', (ev) => {
  sessionStorage.setItem('quern.project', ev.target.value);
  go('#/');
});
window.addEventListener('hashchange', route);
if (session.key) loadProjects();
route();
