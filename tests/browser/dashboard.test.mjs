// Browser tests of quern's dashboard: a real build/quernd on port 0, Debian's
// chromium (/usr/bin/chromium, never a downloaded browser) driven by
// playwright-core.  Each test is a step a new user would take; state built by
// one step (tasks, runs) is used by the next.  Screenshots go to
// build/screenshots/.  Prints "N passed, M failed" last; exits 1 on a failure.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BUILD = path.resolve(ROOT, process.env.QUERN_BUILD || 'build');
const SHOTS = path.join(ROOT, 'build', 'screenshots');
const CHROMIUM = process.env.QUERN_CHROMIUM || '/usr/bin/chromium';
const KEY = 'qk_browser_test_root_key_0123456789';
const TMP = fs.mkdtempSync(path.join(process.env.QUERN_TEST_TMP || os.tmpdir(), 'quern-browser-'));
const T = 15000; // per-wait limit (a bound, not a timing assertion)

fs.mkdirSync(SHOTS, { recursive: true });
for (const f of fs.readdirSync(SHOTS)) if (f.endsWith('.png')) fs.rmSync(path.join(SHOTS, f));

/* ---- quernd ---- */

function startQuernd() {
  return new Promise((resolve, reject) => {
    const data = path.join(TMP, 'data');
    fs.mkdirSync(data);
    const err = fs.openSync(path.join(TMP, 'quernd.stderr'), 'a');
    const proc = spawn(path.join(BUILD, 'quernd'), ['--listen', '127.0.0.1:0', '--data', data, '--fsync', 'off'],
      { env: { ...process.env, QUERN_BOOTSTRAP_KEY: KEY, QUERN_OUTBOUND_ALLOW_PRIVATE: '1', QUERN_WEBHOOK_RETRY_BASE_MS: '300' }, stdio: ['ignore', 'pipe', err] });
    let buf = '';
    const onData = (d) => {
      buf += d;
      const m = buf.match(/quernd listening on (http:\/\/\S+)/);
      if (m) { proc.stdout.off('data', onData); proc.stdout.resume(); resolve({ proc, url: m[1] }); }
    };
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', onData);
    proc.on('exit', (code) => reject(new Error('quernd exited ' + code + ' before listening; see ' + TMP)));
    setTimeout(() => reject(new Error('quernd did not print its listening line')), 20000);
  });
}

let BASE;
const PP = '/api/projects/default';
async function req(method, p, body) {
  const res = await fetch(BASE + p, {
    method, headers: { Authorization: 'Bearer ' + KEY, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) throw new Error(`${method} ${p} -> ${res.status} ${text.slice(0, 300)}`);
  return json;
}
// X-Quern-Signature: t=<unix>,sha256=<hex HMAC-SHA256 of "<t>.<body>">
function sign(secret, body, t = Math.floor(Date.now() / 1000)) {
  return `t=${t},sha256=` + crypto.createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
}
const TERMINAL_RUN = new Set(['completed', 'failed', 'timed_out', 'denied', 'canceled']);
const runUrl = (r) => `${PP}/tasks/${r.task_id}/runs/${r.id}`;
async function leaseOne(agent) {
  const r = await req('POST', PP + '/workers/lease', { worker_id: 'browser-test', agent_id: agent, wait_ms: 5000 });
  if (!r.data.length) throw new Error('nothing leased for agent ' + agent);
  return r.data[0];
}

/* ---- harness ---- */

const results = [];
const tests = [];
const test = (name, fn) => tests.push({ name, fn });
function assert(cond, msg) { if (!cond) throw new Error('assertion failed: ' + msg); }
async function shot(page, name, fullPage = true) {
  await page.screenshot({ path: path.join(SHOTS, name + '.png'), fullPage });
}
// goes to a dashboard route; a fresh load when the address would not change
async function open(p, hash) {
  const url = BASE + '/' + hash;
  if (p.url() === url) await p.reload(); else await p.goto(url);
}
async function waitFor(fn, what, timeout = T) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/* ---- the tests ---- */

let page, ctx;
const state = {};

test('sign in refuses a bad key, then accepts the root key', async () => {
  await page.goto(BASE + '/');
  await page.waitForSelector('#signin-key', { timeout: T });
  assert(await page.locator('#nav').isHidden(), 'navigation hidden before sign-in');
  await page.fill('#signin-key', 'qk_wrong');
  await page.click('button[type=submit]');
  await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor({ timeout: T });
  await shot(page, '01-signin-refused');
  await page.fill('#signin-key', KEY);
  await page.click('button[type=submit]');
  await page.getByRole('heading', { name: 'Overview', exact: true }).waitFor({ timeout: T });
  assert(await page.evaluate(() => sessionStorage.getItem('quern.key')) === KEY, 'key kept in sessionStorage');
  assert(await page.evaluate(() => localStorage.length) === 0, 'nothing in localStorage');
});

test('create a code task through the form', async () => {
  await page.click('#nav >> text=Tasks');
  await page.getByRole('heading', { name: 'Tasks', exact: true }).waitFor({ timeout: T });
  await page.click('text=New task');
  await page.waitForSelector('#task-form', { timeout: T });
  await page.fill('#task-name', 'hello-node');
  await page.selectOption('#task-runtime', 'node');
  await page.fill('#task-code', '');
  await page.focus('#task-code');
  await page.keyboard.type('console.log("hi");');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Tab'); // indents inside the editor
  await page.keyboard.type('process.exit(0);');
  await page.fill('#task-input', '{"n": 1}');
  await page.fill('#task-settings', '{"max_retries": 2}');
  await page.selectOption('#task-priority', 'high');
  await shot(page, '02-task-form');
  await page.click('button:has-text("Create task")');
  await page.getByRole('heading', { name: /hello-node/ }).waitFor({ timeout: T });
  const id = decodeURIComponent(page.url().split('#/task/')[1]);
  const t = await req('GET', PP + '/tasks/' + id);
  assert(t.code === 'console.log("hi");\n  process.exit(0);', 'code as typed, Tab indented: ' + JSON.stringify(t.code));
  assert(t.runtime_id === 'node' && t.input.n === 1 && t.settings.max_retries === 2 && t.priority === 'high', 'fields sent');
  state.codeTask = id;
});

test('a bad JSON input is refused in the form, naming the field', async () => {
  await open(page, '#/tasks/new');
  await page.waitForSelector('#task-form', { timeout: T });
  await page.fill('#task-name', 'broken');
  await page.fill('#task-input', '{nope');
  await page.click('button:has-text("Create task")');
  await page.getByRole('alert').filter({ hasText: 'Input' }).waitFor({ timeout: T });
  assert(await page.getAttribute('#task-input', 'aria-invalid') === 'true', 'input marked invalid');
  // a server-side refusal is shown with its param
  await page.fill('#task-input', '{}');
  await page.fill('#task-settings', '{"bogus": 1}');
  await page.click('button:has-text("Create task")');
  await page.getByRole('alert').filter({ hasText: 'settings.bogus' }).waitFor({ timeout: T });
});

test('create an agent task, see both in the table, filter by agent and status', async () => {
  await open(page, '#/tasks/new');
  await page.waitForSelector('#task-form', { timeout: T });
  await page.fill('#task-name', 'agent-job');
  await page.check('input[name=kind][value=agent]');
  await page.fill('#task-agent', 'bot');
  await page.fill('#task-input', '{"question": "size?"}');
  await page.click('button:has-text("Create task")');
  await page.getByRole('heading', { name: /agent-job/ }).waitFor({ timeout: T });
  state.agentTask = decodeURIComponent(page.url().split('#/task/')[1]);
  await page.click('#nav >> text=Tasks');
  await page.waitForSelector('#tasks-table', { timeout: T });
  const names = await page.locator('#tasks-table tbody tr td:first-child a').allTextContents();
  assert(names.includes('hello-node') && names.includes('agent-job'), 'both tasks listed: ' + names);
  await page.fill('#filter-agent', 'bot');
  await page.click('button:has-text("Apply")');
  await page.waitForFunction(() => location.hash.includes('assigned_agent_id=bot'));
  // the filtered list replaces the table once its answer is in: wait for
  // its rows, not for the table (the old one, or one still loading, was
  // read empty now and then)
  await page.waitForFunction(() => {
    const a = [...document.querySelectorAll('#tasks-table tbody tr td:first-child a')];
    return a.length === 1 && a[0].textContent === 'agent-job';
  }, null, { timeout: T }).catch(() => {});
  const only = await page.locator('#tasks-table tbody tr td:first-child a').allTextContents();
  assert(only.length === 1 && only[0] === 'agent-job', 'agent filter: ' + only);
  await open(page, '#/tasks?status=queued');
  await page.waitForSelector('#tasks-table caption:has-text("matching")', { timeout: T });
  const statuses = await page.locator('#tasks-table tbody .badge').allTextContents();
  assert(statuses.length >= 1 && statuses.every((s) => s === 'queued'), 'status filter: ' + statuses);
  await shot(page, '03-tasks');
});

test('tasks are paginated on the server', async () => {
  const tasks = Array.from({ length: 60 }, (_, i) => ({ name: `bulk-${String(i).padStart(2, '0')}`, assigned_agent_id: 'bulk', priority: 'low' }));
  await req('POST', PP + '/tasks/batch', { tasks });
  await open(page, '#/tasks?assigned_agent_id=bulk');
  await page.waitForSelector('.page-info', { timeout: T });
  assert((await page.textContent('.page-info')) === '1–50 of 60', 'first page: ' + await page.textContent('.page-info'));
  assert(await page.locator('#tasks-table tbody tr').count() === 50, '50 rows');
  await page.click('a[rel=next]');
  await page.waitForSelector('.page-info:has-text("51–60 of 60")', { timeout: T });
  assert(await page.locator('#tasks-table tbody tr').count() === 10, '10 rows on page 2');
  // search and sort on the page
  await page.fill('#task-search', 'bulk-05');
  await waitFor(async () => (await page.locator('#tasks-table tbody tr').count()) === 1 || null, 'search narrows');
});

test('a list read over the key\'s rate limit (429) is asked again after Retry-After', async () => {
  let calls = 0;
  const limited = (route) => (++calls === 1
    ? route.fulfill({ status: 429, contentType: 'application/json', headers: { 'Retry-After': '1' },
        body: JSON.stringify({ error: { type: 'rate_limited', code: 'rate_limited', message: 'slow down' } }) })
    : route.continue());
  const list = (u) => u.pathname === '/api/projects/default/tasks' && u.search.includes('assigned_agent_id=bulk');
  await page.route(list, limited);
  try {
    await open(page, '#/tasks?assigned_agent_id=bulk');
    await page.waitForSelector('.page-info', { timeout: T });
    assert(calls >= 2, 'asked again: ' + calls);
    assert(await page.locator('#tasks-table tbody tr').count() === 50, 'the page shown after the retry');
    assert(!(await page.locator('#main').textContent()).includes('slow down'), 'no error left on the page');
  } finally {
    await page.unroute(list, limited);
  }
});

test('task actions: pause, resume, cancel, retry, run, delete', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'actions-target', assigned_agent_id: 'nobody', run: true });
  await open(page, '#/task/' + t.id);
  await page.getByRole('heading', { name: /actions-target/ }).waitFor({ timeout: T });
  const click = async (label) => {
    await page.getByRole('button', { name: `${label} actions-target`, exact: true }).click();
    await page.getByRole('heading', { name: /actions-target/ }).waitFor({ timeout: T });
  };
  await click('Pause');
  await waitFor(async () => (await req('GET', PP + '/tasks/' + t.id)).paused, 'paused');
  await page.getByRole('button', { name: 'Resume actions-target' }).waitFor({ timeout: T });
  await click('Resume');
  await waitFor(async () => !(await req('GET', PP + '/tasks/' + t.id)).paused, 'resumed');
  await page.getByRole('button', { name: 'Cancel actions-target' }).waitFor({ timeout: T });
  await click('Cancel');
  await waitFor(async () => (await req('GET', PP + '/tasks/' + t.id)).status === 'canceled', 'canceled');
  await page.getByRole('button', { name: 'Retry actions-target' }).waitFor({ timeout: T });
  await click('Retry');
  await waitFor(async () => (await req('GET', PP + '/tasks/' + t.id)).run_count === 2, 'retried');
  await click('Run');
  await waitFor(async () => (await req('GET', PP + '/tasks/' + t.id)).run_count === 3, 'run');
  await page.waitForSelector('#runs-table tbody tr:nth-child(3)', { timeout: T });
  await shot(page, '04-task-detail');
  await page.getByRole('button', { name: 'Delete actions-target' }).click();
  await waitFor(async () => {
    try { await req('GET', PP + '/tasks/' + t.id); return false; } catch (e) { return String(e).includes('404'); }
  }, 'deleted');
});

test('a code task: its log streams live to completion', async () => {
  await open(page, '#/tasks/new');
  await page.waitForSelector('#task-form', { timeout: T });
  await page.fill('#task-name', 'live-node');
  await page.selectOption('#task-runtime', 'node');
  await page.fill('#task-code', [
    'console.log("first line");',
    'console.error("a warning on stderr");',
    'await new Promise((r) => setTimeout(r, 4000));',
    'console.log("last line");'].join('\n'));
  await page.click('button:has-text("Create task")');
  await page.getByRole('heading', { name: 'live-node', exact: true }).waitFor({ timeout: T });
  await page.click('#runs-table tbody a');
  await page.waitForSelector('#log .line:has-text("first line")', { timeout: T });
  const st = await page.getAttribute('#run-status', 'data-status');
  if (st === 'running') {
    // opened while the code still runs: the rest arrives over the stream (or polling)
    assert(!(await page.locator('#log .line:has-text("last line")').count()), 'not there yet');
    state.liveMode = await page.textContent('#log-mode');
  }
  await page.waitForSelector('#log .line:has-text("last line")', { timeout: 30000 });
  await page.waitForSelector('#run-status[data-status=completed]', { timeout: 30000 });
  assert(await page.locator('#log .line.t-stderr:has-text("a warning on stderr")').count() === 1, 'stderr line marked');
  await waitFor(async () => (await page.textContent('#log-mode')).includes('finished') || null, 'follow stops at the end');
  const steps = await page.locator('#timeline li').evaluateAll((els) => els.map((e) => e.dataset.status));
  assert(steps[0] === 'queued' && steps[steps.length - 1] === 'completed', 'timeline ' + steps);
  await shot(page, '05a-code-run-live');
});

test('run detail: log with stdout/stderr/levels, search, live follow', async () => {
  const run = await leaseOne('bot');
  assert(run.task_id === state.agentTask, 'leased the agent task');
  state.run = run;
  await req('POST', runUrl(run) + '/append_log', { entries: [
    { type: 'stdout', message: 'starting the job' }, { type: 'stderr', message: 'disk almost full', level: 'warn' },
    { type: 'log', message: 'could not reach cache', level: 'error' }, { type: 'log', message: 'debug detail', level: 'debug' }] });
  await open(page, '#/task/' + run.task_id);
  await page.click(`a:has-text("${run.id}")`);
  await page.waitForSelector('#log .line', { timeout: T });
  await page.waitForSelector('#run-status[data-status=running]', { timeout: T });
  assert(await page.locator('#log .line.t-stdout').count() === 1, 'one stdout line');
  assert(await page.locator('#log .line.t-stderr').count() === 1, 'one stderr line');
  assert(await page.locator('#log .line.l-error').count() === 1, 'one error-level line');
  // live: lines appended now show up without a reload (SSE, or the polling fallback)
  await page.waitForSelector('#log-mode:has-text("live"), #log-mode:has-text("polling")', { timeout: T });
  state.logMode = await page.textContent('#log-mode');
  await req('POST', runUrl(run) + '/append_log', { entries: [{ type: 'stdout', message: 'live line 42' }] });
  await page.waitForSelector('#log .line:has-text("live line 42")', { timeout: T });
  await page.fill('#log-search', 'cache');
  await waitFor(async () => (await page.locator('#log .line:visible').count()) === 1 || null, 'search narrows the log');
  assert(await page.locator('#log mark').textContent() === 'cache', 'match highlighted');
  await page.fill('#log-search', '');
  await page.uncheck('input[data-stream=stderr]');
  await waitFor(async () => (await page.locator('#log .line.t-stderr:visible').count()) === 0 || null, 'stderr hidden');
  await page.check('input[data-stream=stderr]');
  await shot(page, '05-run-log');
});

test('answer an interaction with the JSON box', async () => {
  const run = state.run;
  await req('PATCH', runUrl(run), { status: 'interaction_required' });
  // the page follows the run: the form appears without a reload
  await page.waitForSelector('#interaction-json', { timeout: T });
  await shot(page, '06-interaction');
  await page.fill('#interaction-json', '{"size": "large"}');
  await page.click('#interaction-form button[type=submit]');
  await page.waitForSelector('#run-status[data-status=running]', { timeout: T });
  const r = await req('GET', runUrl(run));
  assert(r.status === 'running', 'run resumed');
  assert(r.interaction_response.size === 'large', 'response kept');
  await page.waitForSelector('pre[aria-label="Interaction response"]:has-text("large")', { timeout: T });
  assert(await page.locator('pre[aria-label="Run input"]').textContent() === '{\n  "question": "size?"\n}', 'run input shown');
  // the timeline shows queued → running → interaction required → running
  const steps = await page.locator('#timeline li').evaluateAll((els) => els.map((e) => e.dataset.status));
  assert(steps.join(',') === 'queued,running,interaction_required,running', 'timeline: ' + steps);
});

test('an interaction with a schema gets a generated form', async () => {
  // quernd has no API yet for code to ask with a schema: the run's JSON is
  // decorated in the browser (route interception); the answer goes to the real server
  const t = await req('POST', PP + '/tasks', { name: 'schema-ask', assigned_agent_id: 'asker', run: true });
  const run = await leaseOne('asker');
  await req('PATCH', runUrl(run), { status: 'interaction_required' });
  const schema = { type: 'object', required: ['colour', 'count'], properties: {
    colour: { type: 'string', enum: ['red', 'green'], description: 'Pick one' },
    count: { type: 'integer', minimum: 1 }, urgent: { type: 'boolean' }, note: { type: 'string' } } };
  const isRun = (u) => u.pathname === runUrl(run);
  await page.route(isRun, async (route) => {
    try {
      const resp = await route.fetch();
      const js = await resp.json();
      if (js.status === 'interaction_required') js.interaction = { kind: 'input', message: 'How many and which colour?', schema };
      await route.fulfill({ response: resp, json: js });
    } catch { /* the page moved on, or the route was removed meanwhile */ }
  });
  await open(page, `#/run/${t.id}/${run.id}`);
  await page.waitForSelector('#interaction-form', { timeout: T });
  await page.getByLabel('colour (required)').selectOption({ label: 'green' });
  await page.getByLabel('count (required)').fill('3');
  await page.getByLabel('urgent').check();
  await shot(page, '07-interaction-schema');
  await page.click('#interaction-form button[type=submit]');
  await waitFor(async () => (await req('GET', runUrl(run))).status === 'running', 'answered');
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  const r = await req('GET', runUrl(run));
  assert(JSON.stringify(r.interaction_response) === '{"colour":"green","count":3,"urgent":true}', 'typed answer: ' + JSON.stringify(r.interaction_response));
});

test('approve a review', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'needs-review', assigned_agent_id: 'rev', run: true, settings: { require_review: true } });
  const run = await leaseOne('rev');
  // settings.require_review should turn this 'completed' into review_required; quernd
  // does not apply it yet (no settings_snapshot on runs), so the run is moved there directly
  await req('PATCH', runUrl(run), { output: { answer: 42 } });
  await req('PATCH', runUrl(run), { status: 'review_required' });
  assert((await req('GET', runUrl(run))).status === 'review_required', 'review_required');
  await open(page, `#/run/${t.id}/${run.id}`);
  await page.waitForSelector('#review', { timeout: T });
  await page.fill('#review-comment', 'looks right');
  await shot(page, '08-review');
  await page.click('#review button:has-text("Approve")');
  await page.waitForSelector('#run-status[data-status=completed]', { timeout: T });
  const r = await req('GET', runUrl(run));
  assert(r.status === 'completed', 'completed after approval');
  await shot(page, '09-run-completed');
});

test('reject a review', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'rejected', assigned_agent_id: 'rev2', run: true, settings: { require_review: true } });
  const run = await leaseOne('rev2');
  await req('PATCH', runUrl(run), { status: 'review_required' });
  await open(page, `#/run/${t.id}/${run.id}`);
  await page.waitForSelector('#review', { timeout: T });
  await page.click('#review button:has-text("Reject")');
  await page.waitForSelector('#run-status[data-status=failed]', { timeout: T });
  assert((await req('GET', runUrl(run))).error.code === 'review_rejected', 'rejected');
});

test('cancel a run from its page', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'to-cancel', assigned_agent_id: 'cx', run: true });
  const runs = await req('GET', PP + '/tasks/' + t.id + '/runs');
  await open(page, `#/run/${t.id}/${runs.data[0].id}`);
  await page.click('button:has-text("Cancel run")');
  await page.waitForSelector('#run-status[data-status=canceled]', { timeout: T });
});

test('a run that ends while its stream lags behind still shows its last lines', async () => {
  // the stream is held (it opens, delivers nothing, ends): the page learns of the end
  // from its status poll, before the stream has brought the last lines
  const t = await req('POST', PP + '/tasks', { name: 'lagging', assigned_agent_id: 'lag', run: true });
  const run = await leaseOne('lag');
  await page.route(/\/stream\?/, (r) => r.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream' }, body: ': held\n\n' }));
  try {
    await open(page, `#/run/${t.id}/${run.id}`);
    await page.waitForSelector('#run-status[data-status=running]', { timeout: T });
    await req('POST', runUrl(run) + '/append_log', { entries: [{ type: 'stdout', message: 'the last line' }] });
    await req('PATCH', runUrl(run), { status: 'completed' });
    await page.waitForSelector('#run-status[data-status=completed]', { timeout: T });
    await page.waitForSelector('#log-mode:has-text("finished")', { timeout: T });
    assert(await page.locator('#log .line:has-text("the last line")').count() === 1, 'the last line is shown');
  } finally {
    await page.unroute(/\/stream\?/);
  }
});

test('the DAG of a task with dependencies, coloured by status', async () => {
  const a = await req('POST', PP + '/tasks', { name: 'extract', assigned_agent_id: 'etl', run: true });
  const run = await leaseOne('etl');
  await req('PATCH', runUrl(run), { status: 'completed' });
  const b = await req('POST', PP + '/tasks', { name: 'transform', assigned_agent_id: 'etl2', run: true, dependencies: [a.id] });
  const c = await req('POST', PP + '/tasks', { name: 'validate', assigned_agent_id: 'etl3', dependencies: [a.id] });
  const d = await req('POST', PP + '/tasks', { name: 'load', assigned_agent_id: 'etl4', run: true, dependencies: [b.id, c.id] });
  state.dagTask = d.id;
  await open(page, '#/task/' + d.id);
  await page.waitForSelector('#dag svg.dag a.node', { timeout: T });
  const nodes = await page.locator('#dag a.node').evaluateAll((els) => els.map((e) => [e.dataset.taskId, e.dataset.status, e.querySelector('rect').getAttribute('fill')]));
  assert(nodes.length === 4, '4 nodes: ' + JSON.stringify(nodes));
  const byId = Object.fromEntries(nodes.map((n) => [n[0], n]));
  assert(byId[a.id][1] === 'completed' && byId[a.id][2] === '#dcfce7', 'extract completed, green');
  assert(byId[c.id][1] === 'pending', 'validate pending');
  assert(byId[d.id][1] === 'queued', 'load queued (blocked)');
  assert(await page.locator('#dag path.edge').count() === 4, '4 edges');
  // columns left to right follow the dependency order
  const x = async (id) => Number(await page.locator(`#dag a.node[data-task-id="${id}"] rect`).getAttribute('x'));
  assert(await x(a.id) < await x(b.id) && await x(b.id) < await x(d.id), 'layered left to right');
  await shot(page, '10-dag');
  await page.locator(`#dag a.node[data-task-id="${a.id}"]`).click();
  await page.getByRole('heading', { name: /extract/ }).waitFor({ timeout: T });
});

test('a scheduled task shows its next fire times', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'nightly', assigned_agent_id: 'cron', schedule: '0 3 * * *', timezone: 'Europe/Paris', run: false });
  await open(page, '#/task/' + t.id);
  await page.getByRole('heading', { name: /nightly/ }).waitFor({ timeout: T });
  const sched = await req('GET', PP + '/tasks/' + t.id + '/schedule?count=5');
  const text = await page.locator('.panel:has(h2:has-text("Schedule"))').textContent();
  assert(text.includes('Europe/Paris') && text.includes('0 3 * * *'), 'schedule shown: ' + text);
  if ((sched.next_run_times || []).length) assert(await page.locator('.panel:has(h2:has-text("Schedule")) tbody tr').count() === sched.next_run_times.length, 'fire times listed');
});

test('overview counts runs per status', async () => {
  await open(page, '#/');
  await page.getByRole('heading', { name: 'Overview', exact: true }).waitFor({ timeout: T });
  await page.waitForSelector('a.card[data-status=completed]', { timeout: T });
  const want = (await req('GET', PP + '/runs?status=completed&limit=1')).total;
  const got = Number(await page.locator('a.card[data-status=completed] .n').textContent());
  assert(got === want && want >= 2, `completed count ${got} == ${want}`);
  if (await page.locator('svg.chart').count() < 2) {
    // say what the page showed and what /metrics answers from the page, so a failure names its cause
    const shown = await page.locator('#main .grid').first().textContent();
    const probe = await page.evaluate(() => fetch('/metrics').then((r) => `${r.status} ${r.headers.get('content-type')}`, (e) => 'fetch failed: ' + e));
    assert(false, `charts drawn; the page shows "${shown}", /metrics now answers ${probe}`);
  }
  await shot(page, '11-overview');
});

test('overview: /metrics lost once on the network is asked again; an HTTP error is named', async () => {
  let calls = 0;
  const once = (route) => (++calls === 1 ? route.abort('connectionreset') : route.continue());
  await page.route('**/metrics', once);
  try {
    await open(page, '#/');
    await page.waitForSelector('a.card[data-status=completed]', { timeout: T });
    assert(calls === 2, 'asked twice: ' + calls);
    assert(await page.locator('svg.chart').count() >= 2, 'charts drawn after the second answer');
  } finally {
    await page.unroute('**/metrics', once);
  }
  const unavailable = (route) => route.fulfill({ status: 503, contentType: 'text/plain', body: 'down' });
  await page.route('**/metrics', unavailable);
  try {
    await open(page, '#/');
    await page.waitForSelector('a.card[data-status=completed]', { timeout: T });
    const text = await page.locator('#main .grid').first().textContent();
    assert(text.includes('No queue metrics from /metrics (HTTP 503)'), 'reason shown: ' + text);
  } finally {
    await page.unroute('**/metrics', unavailable);
  }
});

test('definitions: create through the form and trigger', async () => {
  await page.click('#nav >> text=Definitions');
  await page.getByRole('heading', { name: 'Definitions', exact: true }).waitFor({ timeout: T });
  if (!(await page.locator('details[open]').count())) await page.click('summary');
  await page.fill('#def-id', 'def_resize');
  await page.fill('#def-title', 'Resize image');
  await page.fill('#def-input-schema', '{"type":"object","properties":{"w":{"type":"integer"}}}');
  await page.click('button:has-text("Create definition")');
  await page.waitForSelector('#defs-table tr[data-def-id=def_resize]', { timeout: T });
  await shot(page, '12-definitions');
  await page.fill('#defs-table tr[data-def-id=def_resize] input', '{"w": 64}');
  await page.click('#defs-table tr[data-def-id=def_resize] button:has-text("Trigger")');
  await page.waitForFunction(() => location.hash.startsWith('#/task/'), null, { timeout: T });
  const id = decodeURIComponent(page.url().split('#/task/')[1]);
  const t = await req('GET', PP + '/tasks/' + id);
  assert(t.definition_id === 'def_resize' && t.input.w === 64, 'triggered task');
});

test('API keys: create (shown once), then revoke', async () => {
  await page.click('#nav >> text=API keys');
  await page.getByRole('heading', { name: 'API keys', exact: true }).waitFor({ timeout: T });
  await page.fill('#key-name', 'ci-reader');
  await page.uncheck('input[name=scope][value="task:write"]');
  await page.click('button:has-text("Create key")');
  const key = (await page.waitForSelector('#new-key', { timeout: T }).then((e) => e.textContent())).trim();
  assert(/^qk_[0-9a-f]{64}$/.test(key), 'a key: ' + key);
  await shot(page, '13-keys');
  await page.click('button:has-text("Done")');
  await page.waitForSelector('#keys-table td:has-text("ci-reader")', { timeout: T });
  const row = page.locator('#keys-table tr', { hasText: 'ci-reader' });
  assert((await row.textContent()).includes('task:read') && !(await row.textContent()).includes('task:write'), 'scopes');
  await row.getByRole('button', { name: /Revoke/ }).click();
  await page.waitForSelector('#keys-table tr:has-text("ci-reader") .badge:has-text("revoked")', { timeout: T });
  const res = await fetch(BASE + PP + '/tasks', { headers: { Authorization: 'Bearer ' + key } });
  assert(res.status === 401, 'revoked key refused');
});

test('triggers: create one for a task, fire it with a signed request, see the run', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'on-push', runtime_id: 'sh', code: 'echo "pushed: $(cat "$QUERN_INPUT")"', input: { ref: 'main', repo: 'quern' }, run: false });
  await page.click('#nav >> text=Triggers');
  await page.getByRole('heading', { name: 'Triggers', exact: true }).waitFor({ timeout: T });
  await page.fill('#trigger-task', 'on-push'); // a name: resolved through the server-side search
  await page.fill('#trigger-description', 'CI pushes');
  await page.click('button:has-text("Create trigger")');
  const secret = (await page.waitForSelector('#new-trigger-secret', { timeout: T }).then((e) => e.textContent())).trim();
  const url = (await page.textContent('#new-trigger-url')).trim();
  assert(/^whsec_[0-9a-f]{48}$/.test(secret), 'generated secret shown: ' + secret);
  assert(new RegExp('^' + BASE + '/hooks/trg_').test(url), 'absolute trigger URL: ' + url);
  assert((await page.textContent('#new-trigger')).includes('X-Quern-Signature'), 'signing explained');
  await shot(page, '18-trigger-created');
  const trg = (await req('GET', PP + '/triggers?task_id=' + t.id)).data;
  assert(trg.length === 1 && trg[0].description === 'CI pushes' && !('secret' in trg[0]), 'created for the task, secret not listed');
  // unsigned: refused; signed (HMAC-SHA256 of "<t>.<body>"): a run with the body merged over the input
  let res = await fetch(url, { method: 'POST', body: '{}' });
  assert(res.status === 401, 'unsigned request refused: ' + res.status);
  const body = JSON.stringify({ ref: 'v1.2' });
  res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Quern-Signature': sign(secret, body) }, body });
  const fired = await res.json();
  assert(res.status === 202 && fired.task_id === t.id && fired.run_id, 'fired: ' + res.status + ' ' + JSON.stringify(fired));
  await page.click('button:has-text("Done")');
  const row = `#triggers-table tr[data-trigger-id="${trg[0].id}"]`;
  await page.waitForSelector(`${row} .fires:has-text("1")`, { timeout: T });
  assert((await page.textContent(`${row} .last-run`)) === fired.run_id, 'last run linked');
  // the task's name replaces its id once fetched (a request of its own, after the row)
  await page.waitForSelector(`${row}:has-text("on-push")`, { timeout: T });
  await shot(page, '19-triggers');
  await page.click(`${row} .last-run`);
  await page.waitForSelector('#run-status[data-status=completed]', { timeout: 30000 });
  await page.waitForSelector('#log .line:has-text("v1.2")', { timeout: T });
  const input = JSON.parse(await page.locator('pre[aria-label="Run input"]').textContent());
  assert(input.ref === 'v1.2' && input.repo === 'quern', 'body merged over the input: ' + JSON.stringify(input));
  // delete (a second trigger) through the UI: its URL stops working
  const t2 = await req('POST', PP + '/triggers', { task_id: t.id, secret: 'given-secret' });
  assert(!('secret' in t2), 'a given secret is not returned');
  await open(page, '#/triggers?task_id=' + t.id);
  await page.getByRole('button', { name: 'Delete trigger ' + t2.id }).click();
  await waitFor(async () => (await req('GET', PP + '/triggers?task_id=' + t.id)).data.length === 1, 'trigger deleted');
  await page.waitForSelector('#triggers-table caption:has-text("(1)")', { timeout: T });
  assert(await page.locator(row).count() === 1 && !(await page.locator(`tr[data-trigger-id="${t2.id}"]`).count()), 'the other trigger stays');
  res = await fetch(BASE + t2.url, { method: 'POST', headers: { 'X-Quern-Signature': sign('given-secret', '{}') }, body: '{}' });
  assert(res.status === 404, 'deleted trigger: ' + res.status);
});

test('triggers, webhooks and keys are paginated (more than a page of triggers)', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'many-triggers', assigned_agent_id: 'nobody' });
  for (let i = 0; i < 55; i++) await req('POST', PP + '/triggers', { task_id: t.id, secret: 'many-triggers-secret', description: 'many ' + i });
  const total = (await req('GET', PP + '/triggers?limit=1')).total;
  await open(page, '#/triggers');
  await page.waitForSelector('#triggers-table', { timeout: T });
  assert(await page.locator('#triggers-table tbody tr').count() === 50, 'first page: 50 rows');
  assert((await page.textContent('.pager .page-info')) === `1–50 of ${total}`, 'pager: ' + await page.textContent('.pager .page-info'));
  await page.click('.pager a[rel=next]');
  await page.waitForSelector('.pager a[rel=prev]', { timeout: T });
  assert(await page.locator('#triggers-table tbody tr').count() === total - 50, 'second page: the rest');
  for (const hash of ['#/webhooks', '#/keys']) {
    await open(page, hash);
    await page.waitForSelector('main h1', { timeout: T });
    assert(await page.locator('.pager .page-info').count() === 1, hash + ': a pager');
  }
});

test('webhooks: deliveries to a local receiver, a retry, attempts, pages', async () => {
  const got = [];
  const recv = http.createServer((rq, rs) => {
    let b = '';
    rq.setEncoding('utf8');
    rq.on('data', (d) => { b += d; });
    rq.on('end', () => {
      got.push({ headers: rq.headers, body: b });
      // the first request is refused once: the delivery is retried
      if (got.length === 1) { rs.writeHead(503, { 'Content-Type': 'text/plain' }); rs.end('busy, try later'); } else { rs.writeHead(200); rs.end('ok'); }
    });
  });
  await new Promise((r) => recv.listen(0, '127.0.0.1', r));
  const hookUrl = `http://127.0.0.1:${recv.address().port}/quern`;
  try {
    await page.click('#nav >> text=Webhooks');
    await page.getByRole('heading', { name: 'Webhooks', exact: true }).waitFor({ timeout: T });
    await page.fill('#webhook-url', hookUrl);
    await page.uncheck('input[name=event][value="*"]');
    await page.click('summary:has-text("Single event types")');
    await page.check('input[name=event][value="task.created"]');
    await page.fill('#webhook-description', 'local receiver');
    await page.click('button:has-text("Create webhook")');
    const secret = (await page.waitForSelector('#new-webhook-secret', { timeout: T }).then((e) => e.textContent())).trim();
    assert(/^whsec_[0-9a-f]{48}$/.test(secret), 'generated secret shown once: ' + secret);
    await shot(page, '20-webhook-created');
    const hooks = (await req('GET', PP + '/webhooks')).data.filter((w) => w.url === hookUrl);
    assert(hooks.length === 1 && JSON.stringify(hooks[0].events) === '["task.created"]', 'webhook with its filter: ' + JSON.stringify(hooks));
    const wid = hooks[0].id;
    const t = await req('POST', PP + '/tasks', { name: 'hooked', assigned_agent_id: 'nobody', run: false });
    await waitFor(() => got.length >= 2, 'the delivery and its retry');
    // the receiver checks the signature with the secret shown once
    const [, ts, mac] = got[1].headers['x-quern-signature'].match(/^t=(\d+),sha256=([0-9a-f]{64})$/);
    assert(sign(secret, got[1].body, Number(ts)).endsWith(mac), 'signature verifies');
    const ev = JSON.parse(got[1].body);
    assert(ev.type === 'task.created' && ev.task_id === t.id, 'event: ' + got[1].body.slice(0, 200));
    assert(got[0].headers['x-quern-delivery'] === got[1].headers['x-quern-delivery'], 'the retry is the same delivery');
    const dpath = `${PP}/webhooks/${wid}/deliveries`;
    await waitFor(async () => (await req('GET', dpath)).data.some((d) => d.status === 'succeeded'), 'delivery succeeded');
    await open(page, '#/webhooks');
    await page.click(`#webhooks-table tr[data-webhook-id="${wid}"] a.url`);
    await page.getByRole('heading', { name: /Webhook/ }).waitFor({ timeout: T });
    const drow = page.locator('#deliveries-table tbody[data-status=succeeded]');
    await drow.first().waitFor({ timeout: T });
    assert(await drow.count() === 1, 'one succeeded delivery');
    assert((await drow.textContent()).includes('task.created'), 'event shown');
    // the task's name replaces its id once fetched (a request of its own)
    await page.locator('#deliveries-table tbody[data-status=succeeded]:has-text("hooked")').first().waitFor({ timeout: T });
    await drow.locator('summary').click();
    const answers = await drow.locator('table.mini tbody tr td.answer').allTextContents();
    assert(answers.length === 2 && answers[0].includes('503') && answers[1].includes('200'), 'attempts: ' + answers);
    assert((await drow.locator('table.mini').textContent()).includes('busy, try later'), 'response body of the failed attempt');
    await shot(page, '21-webhook-deliveries');
    // pages of 20
    await req('POST', PP + '/tasks/batch', { tasks: Array.from({ length: 21 }, (_, i) => ({ name: 'hooked-' + i, assigned_agent_id: 'nobody' })) });
    await waitFor(async () => { const d = await req('GET', dpath + '?status=succeeded&limit=1'); return d.total === 22; }, '22 deliveries succeeded');
    await open(page, `#/webhooks/${wid}`);
    await page.waitForSelector('.page-info:has-text("1–20 of 22")', { timeout: T });
    await page.click('a[rel=next]');
    await page.waitForSelector('.page-info:has-text("21–22 of 22")', { timeout: T });
    assert(await page.locator('#deliveries-table tbody[data-status]').count() === 2, '2 rows on page 2');
    await page.selectOption('#delivery-status', 'failed');
    await page.click('button:has-text("Apply")');
    await page.waitForSelector('#deliveries-table td.empty', { timeout: T });
    state.webhook = wid;
    // delete (another webhook) through the list
    const other = await req('POST', PP + '/webhooks', { url: 'https://example.invalid/other', events: ['task.deleted'], secret: 's3cret' });
    assert(!('secret' in other), 'a given secret is not returned');
    await open(page, '#/webhooks');
    await page.getByRole('button', { name: 'Delete webhook https://example.invalid/other' }).click();
    await waitFor(async () => !(await req('GET', PP + '/webhooks')).data.some((w) => w.id === other.id), 'webhook deleted');
    await page.waitForSelector('#webhooks-table caption:has-text("(1)")', { timeout: T });
    const left = (await req('GET', PP + '/webhooks')).data.map((w) => w.id);
    assert(!left.includes(other.id) && left.includes(wid), 'deleted the other one only');
  } finally {
    recv.close();
  }
});

test('artifacts: a file written by a code run opens through its presigned link', async () => {
  const t = await req('POST', PP + '/tasks', { name: 'makes-file', runtime_id: 'sh', run: true,
    code: 'printf "hello artifact\\n" > "$QUERN_ARTIFACTS/hello.txt"\necho wrote it' });
  const run = await waitFor(async () => (await req('GET', `${PP}/tasks/${t.id}/runs`)).data.find((r) => TERMINAL_RUN.has(r.status)), 'the run ends', 30000);
  assert(run.status === 'completed', 'run completed: ' + run.status);
  await open(page, `#/run/${t.id}/${run.id}`);
  const link = page.locator('#artifacts a.artifact[data-name="hello.txt"][data-signed]');
  await link.waitFor({ timeout: T });
  const href = await link.getAttribute('href');
  assert(href.startsWith('/artifacts/') && (await link.getAttribute('target')) === '_blank', 'presigned link in a new tab: ' + href);
  assert((await page.textContent('#artifacts')).includes('15 bytes'), 'size shown');
  await shot(page, '22-run-artifacts');
  // the link works without any key
  const res = await fetch(BASE + href);
  const bytes = Buffer.from(await res.arrayBuffer());
  assert(res.status === 200 && bytes.equals(Buffer.from('hello artifact\n')), `GET ${href} -> ${res.status} ${JSON.stringify(bytes.toString())}`);
  // clicked: a new tab, whose attachment arrives as a download with the same bytes
  const downloads = [];
  const onPage = (p) => p.on('download', (d) => downloads.push(d));
  ctx.on('page', onPage);
  page.on('download', (d) => downloads.push(d));
  try {
    await link.click();
    await waitFor(() => downloads.length > 0, 'the download');
    const file = await downloads[0].path();
    assert(fs.readFileSync(file).equals(Buffer.from('hello artifact\n')), 'downloaded bytes');
    assert(downloads[0].suggestedFilename().length > 0, 'a file name');
  } finally {
    ctx.off('page', onPage);
    page.removeAllListeners('download');
  }
  for (const p of ctx.pages()) if (p !== page) await p.close();
});

test('hostile data (task fields, logs, outputs, errors, prompts, names) is shown as text, never run', async () => {
  // each payload records its field in window.__pwned if it ever runs
  const P = (tag) => `<img src=x onerror="(window.__pwned=window.__pwned||[]).push('${tag}')"><script>(window.__pwned=window.__pwned||[]).push('${tag}')</script>`;
  const sq = (v) => "'" + v.replace(/'/g, "'\\''") + "'";
  const ctl = (obj) => `printf '%s\\n' ${sq(JSON.stringify(obj))} >&3`;
  await req('POST', '/api/projects', { name: P('project') });
  await req('POST', PP + '/api_keys', { name: P('key'), scopes: ['task:read'] });
  await req('POST', PP + '/definitions', { title: P('def-title'), description: P('def-desc'), runtime_id: 'sh', code: 'true' });
  const wh = await req('POST', PP + '/webhooks', { url: 'http://127.0.0.1:9/x?a=<b>', events: ['task.deleted'], description: P('webhook') });
  const code = [
    `printf '%s\\n' ${sq(P('stdout'))} 'javascript:(window.__pwned=window.__pwned||[]).push(1)'`,
    `printf '%s\\n' ${sq(P('stderr'))} >&2`,
    ctl({ type: 'log', level: 'error', message: P('ctl-log'), data: { x: P('ctl-data') } }),
    `printf x > "$QUERN_ARTIFACTS/"${sq(P('artifact').replace(/\//g, ''))}`,
    `printf '%s' ${sq(JSON.stringify({ o: P('output') }))} > "$QUERN_OUTPUT"`,
    ctl({ type: 'input_request', prompt: P('prompt'), schema: { type: 'object', title: P('schema-title'),
      properties: { [P('prop')]: { type: 'string', title: P('prop-title'), description: P('prop-desc'), enum: [P('enum'), 'b'] } } } }),
    'read line', 'exit 3'].join('\n');
  const t = await req('POST', PP + '/tasks', { name: P('task'), description: P('desc'), runtime_id: 'sh', code,
    metadata: { [P('meta-key')]: P('meta-value') }, input: { [P('input-key')]: P('input-value') } });
  const asked = await waitFor(async () => (await req('GET', `${PP}/tasks/${t.id}/runs`)).data.find((r) => r.status === 'interaction_required'), 'the run asks', 30000);
  const a = await req('POST', PP + '/tasks', { name: 'hostile-agent', assigned_agent_id: 'hostile', run: true });
  // started by hand, not leased (a lease could hand over another test's run)
  const ar = (await req('GET', `${PP}/tasks/${a.id}/runs`)).data[0];
  await req('PATCH', runUrl(ar), { status: 'running' });
  await req('POST', runUrl(ar) + '/append_log', { entries: [{ type: 'stdout', message: P('entry'), error: P('entry-error'), data: { a: P('entry-data') } }] });
  await req('POST', runUrl(ar) + '/artifacts', { artifacts: [{ name: 'page.html', content: '<script>window.__pwned=["artifact-html"]</script>', content_type: 'text/html' }] });
  await req('PATCH', runUrl(ar), { status: 'failed', error_message: P('error'), stage: P('stage').slice(0, 100), output: { x: P('agent-output') } });
  const pages = ['#/', '#/tasks', '#/runs', '#/definitions', '#/triggers', '#/webhooks', `#/webhooks/${wh.id}`, '#/keys',
    `#/task/${t.id}`, `#/run/${t.id}/${asked.id}`, `#/task/${a.id}`, `#/run/${a.id}/${ar.id}`];
  for (const hash of pages) {
    await open(page, hash);
    await page.waitForSelector('main h1', { timeout: T });
    await page.waitForTimeout(300); // lets an injected handler fire (onerror of a broken image) before the check
    const seen = await page.evaluate(() => ({ pwned: window.__pwned, imgs: document.querySelectorAll('img').length,
      scripts: document.querySelectorAll('script').length, text: document.body.textContent }));
    assert(!seen.pwned && !seen.imgs && seen.scripts === 1, `${hash}: injected markup ran or was added: ${JSON.stringify({ ...seen, text: undefined })}`);
    if (hash.startsWith('#/run/')) assert(seen.text.includes("push('" + (hash.includes(asked.id) ? 'stdout' : 'entry') + "')"), `${hash}: the payload shown as text`);
  }
  // the run page's links: only the dashboard's own routes and presigned artifact links
  await open(page, `#/run/${t.id}/${asked.id}`);
  await page.waitForSelector('#interaction-form', { timeout: T });
  const hrefs = await page.$$eval('a[href]', (els) => els.map((e) => e.getAttribute('href')));
  assert(hrefs.every((x) => x.startsWith('#') || x.startsWith('/artifacts/')), 'links: ' + hrefs);
  // the artifact of type text/html, opened by its link, does not run in quernd's origin
  await open(page, `#/run/${a.id}/${ar.id}`);
  const href = await page.locator('#artifacts a.artifact[data-name="page.html"][data-signed]').getAttribute('href', { timeout: T });
  const res = await fetch(BASE + href);
  assert(res.headers.get('content-security-policy') === 'sandbox' && /^attachment/.test(res.headers.get('content-disposition')),
    'an artifact is served inert: ' + [...res.headers].join('; '));
  await req('POST', runUrl(asked) + '/cancel', {});
});

test('the dashboard is served with CSP, no framing, no sniffing, no Referer', async () => {
  for (const p of ['/', '/index.html', '/app.js', '/style.css']) {
    const res = await fetch(BASE + p);
    const csp = res.headers.get('content-security-policy') || '';
    assert(res.status === 200, `${p}: ${res.status}`);
    assert(/script-src 'self'(;|$)/.test(csp) && /frame-ancestors 'none'/.test(csp) && /default-src 'none'/.test(csp), `${p}: CSP ${csp}`);
    assert(res.headers.get('x-frame-options') === 'DENY', `${p}: X-Frame-Options`);
    assert(res.headers.get('x-content-type-options') === 'nosniff', `${p}: nosniff`);
    assert(res.headers.get('referrer-policy') === 'no-referrer', `${p}: Referrer-Policy`);
  }
  // another origin cannot frame it: the frame stays empty
  const other = http.createServer((q, s) => { s.setHeader('Content-Type', 'text/html'); s.end(`<iframe src="${BASE}/"></iframe>`); });
  await new Promise((r) => other.listen(0, '127.0.0.1', r));
  const p2 = await ctx.newPage();
  try {
    await p2.goto(`http://127.0.0.1:${other.address().port}/`);
    await p2.waitForTimeout(500);
    const f = p2.frames().find((x) => x !== p2.mainFrame());
    const framed = f ? await f.evaluate(() => !!document.querySelector('#main')).catch(() => false) : false;
    assert(!framed, 'the dashboard loaded inside another origin\'s frame');
  } finally {
    await p2.close();
    other.close();
  }
});

test('every form control has a label; keyboard reaches the navigation', async () => {
  for (const hash of ['#/tasks', '#/tasks/new', '#/definitions', '#/keys', '#/runs', `#/run/${state.run.task_id}/${state.run.id}`,
    '#/triggers', '#/webhooks', `#/webhooks/${state.webhook}`]) {
    await open(page, hash);
    await page.waitForSelector('main h1', { timeout: T });
    await page.waitForTimeout(100);
    const unlabeled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')].filter((el) => {
      if (el.type === 'hidden' || el.closest('[hidden]')) return false;
      if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return false;
      if (el.id && document.querySelector(`label[for="${el.id}"]`)) return false;
      return !el.closest('label');
    }).map((el) => el.outerHTML.slice(0, 80)));
    assert(!unlabeled.length, `${hash}: unlabeled ${unlabeled}`);
  }
  await open(page, '#/');
  await page.waitForSelector('main h1', { timeout: T });
  await page.locator('.skip').focus(); // the skip link is the first stop of the page
  assert(await page.locator('.skip').isVisible(), 'skip link shown when focused');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.textContent) === 'Tasks', 'Tab reaches Tasks');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Tasks', exact: true }).waitFor({ timeout: T });
});

test('usable at phone width (no horizontal scrolling)', async () => {
  // the same tab (sessionStorage is per tab), narrowed to a phone's width
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    for (const [hash, name, h1] of [['#/tasks', '14-phone-tasks', 'Tasks'], [`#/run/${state.run.task_id}/${state.run.id}`, '15-phone-run', 'Run'],
      ['#/', '16-phone-overview', 'Overview'], [`#/task/${state.dagTask}`, '17-phone-dag', 'load'],
      ['#/triggers', '23-phone-triggers', 'Triggers'], [`#/webhooks/${state.webhook}`, '24-phone-webhook', 'Webhook']]) {
      await open(page, hash);
      await page.waitForSelector(`main h1:has-text("${h1}")`, { timeout: T });
      await page.waitForTimeout(300);
      const w = await page.evaluate(() => document.documentElement.scrollWidth);
      assert(w <= 391, `${hash}: page is ${w}px wide at 390px`);
      await shot(page, name, !['14-phone-tasks', '24-phone-webhook'].includes(name));
    }
  } finally {
    await page.setViewportSize({ width: 1280, height: 900 });
  }
});

test('sign out forgets the key', async () => {
  await open(page, '#/');
  await page.waitForSelector('main h1', { timeout: T });
  await page.click('#signout');
  await page.waitForSelector('#signin-key', { timeout: T });
  assert(await page.evaluate(() => sessionStorage.getItem('quern.key')) === null, 'key removed');
});

/* ---- main ---- */

let server;
const pageErrors = [];
const netLog = [];
try {
  server = await startQuernd();
  BASE = server.url;
  // never leave quernd behind, even if something throws outside a test
  process.on('exit', () => { if (server.proc.exitCode === null) server.proc.kill('SIGKILL'); });
  process.on('uncaughtException', (e) => { console.log('FAIL uncaught: ' + (e.stack || e)); console.log('0 passed, 1 failed'); process.exit(1); });
  ctx = await chromium.launchPersistentContext(path.join(TMP, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = ctx.pages()[0] || await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // requests that failed or got a 5xx: printed with a failing test, to name its cause
  page.on('requestfailed', (rq) => netLog.push(`${rq.method()} ${rq.url()}: ${rq.failure()?.errorText}`));
  page.on('response', (rs) => { if (rs.status() >= 500) netLog.push(`${rs.request().method()} ${rs.url()}: HTTP ${rs.status()}`); });
  page.on('dialog', (d) => d.accept()); // confirm() before destructive actions
  // the dashboard must not reach anywhere but quernd
  await ctx.route(/^(?!http:\/\/127\.0\.0\.1)/, (route) => {
    if (route.request().url().startsWith('data:')) return route.continue();
    pageErrors.push('request outside quernd: ' + route.request().url());
    return route.abort();
  });
  for (const t of tests) {
    const before = pageErrors.length, netBefore = netLog.length;
    try {
      await t.fn();
      if (pageErrors.length > before) throw new Error('page errors: ' + pageErrors.slice(before).join('; '));
      results.push([t.name, true]);
      console.log('ok   ' + t.name);
    } catch (e) {
      results.push([t.name, false]);
      console.log('FAIL ' + t.name + '\n     ' + String(e.stack || e).split('\n').slice(0, 4).join('\n     '));
      for (const line of netLog.slice(netBefore)) console.log('     request: ' + line);
      try { await shot(page, 'FAIL-' + t.name.replace(/\W+/g, '-').slice(0, 40)); } catch { /* ignore */ }
    }
  }
  if (state.logMode) console.log('log follow mode (agent run):', state.logMode.replace(/^· /, ''));
  if (state.liveMode) console.log('log follow mode (code run, while running):', state.liveMode.replace(/^· /, ''));
} catch (e) {
  console.log('FAIL setup: ' + (e.stack || e));
  results.push(['setup', false]);
} finally {
  if (ctx) await ctx.close().catch(() => {});
  if (server) {
    // quernd drains and exits 0 on SIGTERM; anything else (a sanitizer report) fails the run
    const code = await new Promise((resolve) => {
      if (server.proc.exitCode !== null) { resolve(server.proc.exitCode); return; }
      const timer = setTimeout(() => { server.proc.kill('SIGKILL'); resolve('killed after 60 s'); }, 60000);
      server.proc.on('exit', (c, sig) => { clearTimeout(timer); resolve(c ?? sig); });
      server.proc.kill('SIGTERM');
    });
    if (code !== 0) {
      results.push(['quernd exits 0 on SIGTERM', false]);
      console.log(`FAIL quernd exited ${code} on SIGTERM; its stderr:\n` + fs.readFileSync(path.join(TMP, 'quernd.stderr'), 'utf8').slice(-4000));
    }
  }
}
const passed = results.filter((r) => r[1]).length, failed = results.length - passed;
if (!failed) fs.rmSync(TMP, { recursive: true, force: true }); else console.log(`quernd data and stderr kept in ${TMP}`);
console.log(`screenshots in ${SHOTS}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
