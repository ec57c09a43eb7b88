// Browser tests of the web UI: playwright-core drives Debian's Chromium
// (headless) against a real llmtap (admin token set) fed with real traffic
// through the mock provider (traffic.mjs). Run by scripts/ui_test.sh, which
// starts both and passes ADMIN_URL, PROXY_URL, ADMIN_TOKEN, SCREENSHOTS.
// Every wait is bounded (Playwright's timeouts).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { FACTS, generate, waitForSpans } from './traffic.mjs';

const ADMIN = process.env.ADMIN_URL;
const PROXY = process.env.PROXY_URL;
const TOKEN = process.env.ADMIN_TOKEN;
const SHOTS = process.env.SCREENSHOTS || 'screenshots';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 10000;

let browser;
let page;
const problems = [];

function watch(p, label) {
  p.on('console', (m) => { if (m.type() === 'error') problems.push(`${label} console: ${m.text()}`); });
  p.on('pageerror', (e) => problems.push(`${label} page error: ${e.message}`));
}

async function shot(p, name) {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Goes to `#hash` and waits for the page to say it has loaded. */
let loads = 0;
async function open(p, hash, selector = '.page[data-loaded="true"]') {
  // A distinct query makes every call a full page load (a change of the
  // hash alone would keep the old page's DOM around for a moment).
  loads += 1;
  await p.goto(`${ADMIN}/?load=${loads}${hash}`);
  await p.waitForSelector(selector, { timeout: WAIT });
}

const rows = (p) => p.locator('#traces-table tbody tr');

before(async () => {
  assert.ok(ADMIN && PROXY && TOKEN, 'ADMIN_URL, PROXY_URL and ADMIN_TOKEN must be set');
  mkdirSync(SHOTS, { recursive: true });
  await generate(PROXY);
  await waitForSpans(ADMIN, TOKEN);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  watch(page, 'desktop');
});

after(async () => {
  if (browser) await browser.close();
});

test('the token gate: /api needs the token; pasting it shows the traces', async () => {
  await page.goto(`${ADMIN}/`);
  const alert = page.locator('[role="alert"]').first();
  await alert.waitFor({ timeout: WAIT });
  assert.match(await alert.textContent(), /admin token/i);
  await page.fill('#token-input', TOKEN);
  await page.click('#token-form button[type="submit"]');
  await page.waitForSelector('#traces-table tbody tr', { timeout: WAIT });
  assert.equal(await rows(page).count(), FACTS.traces);
  // The live section answered too (nothing in flight now).
  await page.locator('.live-body p').waitFor({ timeout: WAIT });
  // The 401 before the token was entered is the only console noise allowed.
  const unexpected = problems.splice(0).filter((p) => !/401/.test(p));
  assert.deepEqual(unexpected, []);
  await shot(page, 'traces');
});

test('filter failed spans: the URL keeps the filter and only failed traces show', async () => {
  await open(page, '#/traces');
  await page.selectOption('#f-status', 'failed');
  await page.click('form.filters button[type="submit"]');
  await page.waitForFunction(() => location.hash.includes('status=failed'), null, { timeout: WAIT });
  await page.waitForSelector('.page[data-loaded="true"] #traces-table', { timeout: WAIT });
  const statuses = await rows(page).evaluateAll((trs) => trs.map((tr) => tr.dataset.status));
  assert.deepEqual(statuses, ['failed']);
  assert.match(await rows(page).first().textContent(), new RegExp(FACTS.failedModel));
  // Reloading the shared URL gives the same view.
  await page.reload();
  await page.waitForSelector('.page[data-loaded="true"] #traces-table', { timeout: WAIT });
  assert.equal(await page.inputValue('#f-status'), 'failed');
  assert.equal(await rows(page).count(), 1);
  await shot(page, 'traces-failed');
  // The failed trace's waterfall bar is red.
  await rows(page).first().locator('td.name a').click();
  await page.waitForSelector('.page-trace[data-loaded="true"]', { timeout: WAIT });
  const bar = page.locator('.wf-row[data-status="failed"] .wf-bar');
  assert.equal(await bar.count(), 1);
  assert.equal(await bar.evaluate((b) => getComputedStyle(b).backgroundColor), 'rgb(198, 40, 40)');
});

test('export: downloads the current filter as JSON and it parses', async () => {
  await open(page, '#/traces?status=failed');
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: WAIT }),
    page.click('#export'),
  ]);
  assert.equal(download.suggestedFilename(), 'llmtap-export.json');
  const path = join(SHOTS, 'export-failed.json');
  await download.saveAs(path);
  const spans = JSON.parse(readFileSync(path, 'utf8'));
  assert.equal(spans.length, 1);
  assert.equal(spans[0].status, 'failed');
  assert.equal(spans[0].http_status, 500);
  assert.ok(spans[0].request_body.includes('This one fails.'), 'bodies are exported');
});

test('trace waterfall: nested LLM and tool spans on one time axis', async () => {
  await open(page, '#/traces?operation_type=tool_call');
  assert.equal(await rows(page).count(), 1);
  await rows(page).first().locator('td.name a').click();
  await page.waitForSelector('.page-trace[data-loaded="true"]', { timeout: WAIT });
  const wf = await page.$$eval('#waterfall a.wf-row', (els) => els.map((el) => {
    const bar = el.querySelector('.wf-bar').getBoundingClientRect();
    const track = el.querySelector('.wf-track').getBoundingClientRect();
    return {
      id: el.dataset.spanId,
      parent: el.dataset.parentId,
      depth: Number(el.dataset.depth),
      op: el.dataset.operation,
      tool: el.querySelector('.wf-bar').classList.contains('wf-tool'),
      left: bar.left - track.left,
      right: bar.right - track.left,
      width: bar.width,
      trackWidth: track.width,
      indent: parseFloat(getComputedStyle(el.querySelector('.wf-label')).paddingLeft),
    };
  }));
  assert.equal(wf.length, 3, JSON.stringify(wf));
  const [root, ...children] = wf;
  assert.equal(root.depth, 0);
  assert.equal(root.op, 'llm_call');
  assert.equal(root.parent, '');
  for (const c of children) {
    assert.equal(c.depth, 1, 'children sit one level under the root');
    assert.equal(c.parent, root.id);
    assert.ok(c.indent > root.indent, 'children are indented');
  }
  const tool = wf.find((r) => r.op === 'tool_call');
  const second = wf.find((r) => r.op === 'llm_call' && r !== root);
  assert.ok(tool && tool.tool, 'the tool span has its own style');
  assert.ok(second && !second.tool);
  // A shared time axis: the root starts at 0, the tool starts when the
  // root ends (the call was asked for) and the second call after the tool.
  assert.ok(root.left < 1, `root starts at the axis origin (${root.left})`);
  for (const r of wf) {
    assert.ok(r.width >= 1 && r.right <= r.trackWidth + 1, `bar within the track: ${JSON.stringify(r)}`);
  }
  assert.ok(tool.left > root.left, 'the tool starts after its asking call did');
  assert.ok(second.left >= tool.left, 'the second turn starts after the tool call');
  assert.ok(second.right >= r(wf).max - 1, 'the last span reaches the end of the axis');
  await shot(page, 'trace');
  function r(list) {
    return { max: Math.max(...list.map((x) => x.right)) };
  }
});

test('span page: the agent loop rendered as chat messages', async () => {
  // The second LLM turn: its request carries the user, the assistant's
  // tool call and the tool's result; its response is the final answer.
  const second = page.locator('#waterfall a.wf-row[data-operation="llm_call"][data-depth="1"]');
  await second.click();
  await page.waitForSelector('.page-span[data-loaded="true"]', { timeout: WAIT });
  const msgs = await page.$$eval('#conversation .msg', (els) => els.map((el) => ({ role: el.dataset.role, text: el.textContent })));
  assert.deepEqual(msgs.map((m) => m.role), ['user', 'assistant', 'tool', 'assistant'], JSON.stringify(msgs));
  assert.ok(msgs[0].text.includes(FACTS.userQuestion));
  assert.ok(msgs[1].text.includes(FACTS.toolName), 'the tool call is shown');
  assert.ok(msgs[2].text.includes(FACTS.toolResult), 'the tool result is shown');
  assert.ok(msgs[3].text.includes('w0 w1'), 'the final answer is shown');
  // Facts and links.
  const facts = await page.locator('dl.facts').textContent();
  assert.match(facts, /gpt-4o-mini/);
  assert.match(facts, /Message id/);
  const traceHref = await page.getAttribute('#trace-link', 'href');
  assert.match(traceHref, /^#\/trace\/[0-9a-f]{32}$/);
  // Raw bodies are there, pretty-printed and collapsed.
  const raw = page.locator('details.raw').first();
  assert.equal(await raw.getAttribute('open'), null);
  await raw.locator('summary').click();
  assert.match(await raw.locator('pre').textContent(), /\n {2}"model": "gpt-4o-mini"/);
  await shot(page, 'span');
  // Back to the trace through the link.
  await page.click('#trace-link');
  await page.waitForSelector('.page-trace[data-loaded="true"]', { timeout: WAIT });
  // The tool span's page.
  await page.locator('#waterfall a.wf-row[data-operation="tool_call"]').click();
  await page.waitForSelector('.page-span[data-loaded="true"]', { timeout: WAIT });
  const tool = await page.locator('#conversation').textContent();
  assert.ok(tool.includes(FACTS.toolName) && tool.includes(FACTS.toolResult), tool);
});

test('span page: streamed chat, Anthropic and Responses bodies become messages; TTFT is marked', async () => {
  // Streamed chat: the reply is the concatenated deltas.
  await open(page, `#/traces?q=${FACTS.streamId}`);
  assert.equal(await rows(page).count(), 1);
  await rows(page).first().locator('td.name a').click();
  await page.waitForSelector('.page-trace[data-loaded="true"]', { timeout: WAIT });
  assert.equal(await page.locator('.wf-bar.wf-stream .wf-ttft').count(), 1, 'TTFT marker inside the streamed bar');
  const marker = await page.locator('.wf-ttft').evaluate((m) => {
    const b = m.parentElement.getBoundingClientRect();
    const r = m.getBoundingClientRect();
    return { inside: r.left >= b.left - 2 && r.right <= b.right + 2 };
  });
  assert.ok(marker.inside);
  await page.locator('#waterfall a.wf-row').first().click();
  await page.waitForSelector('.page-span[data-loaded="true"]', { timeout: WAIT });
  const words = Array.from({ length: FACTS.streamWords }, (_, i) => `w${i}`).join(' ');
  const chat = await page.$$eval('#conversation .msg', (els) => els.map((el) => [el.dataset.role, el.querySelector('.msg-text')?.textContent]));
  assert.deepEqual(chat, [['user', 'Stream a short answer.'], ['assistant', words]]);
  assert.match(await page.locator('dl.facts').textContent(), /Time to first token/);
  // The message id links to the traces holding it.
  assert.equal(await page.textContent('#message-id'), FACTS.streamId);
  await page.click('#message-id');
  await page.waitForSelector('.page-traces[data-loaded="true"] #traces-table', { timeout: WAIT });
  assert.equal(await rows(page).count(), 1);

  for (const [provider, first] of [['anthropic', ['system', 'Be brief.']], ['openai', ['system', 'Answer in one line.']]]) {
    const path = provider === 'anthropic' ? '/v1/messages' : '/v1/responses';
    await open(page, `#/traces?provider=${provider}`);
    const links = await rows(page).locator('td.name a').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    let found = false;
    for (const href of links) {
      await open(page, href);
      const span = page.locator('#waterfall a.wf-row').first();
      await span.click();
      await page.waitForSelector('.page-span[data-loaded="true"]', { timeout: WAIT });
      if (!(await page.locator('dl.facts').textContent()).includes(path)) continue;
      found = true;
      const msgs = await page.$$eval('#conversation .msg', (els) => els.map((el) => [el.dataset.role, el.querySelector('.msg-text')?.textContent]));
      assert.deepEqual(msgs[0], first, `${provider}: ${JSON.stringify(msgs)}`);
      assert.equal(msgs.at(-1)[0], 'assistant');
      assert.ok(msgs.at(-1)[1].startsWith('w0 w1'), `${provider} streamed reply: ${JSON.stringify(msgs)}`);
      await shot(page, `span-${provider === 'anthropic' ? 'anthropic' : 'responses'}`);
      break;
    }
    assert.ok(found, `a ${path} span`);
  }
});

test('dashboard: SVG charts from /api/stats', async () => {
  await open(page, '#/dashboard');
  const bars = await page.locator('#chart-requests svg rect.bar-requests').count();
  assert.ok(bars >= 1, 'request bars');
  const errs = await page.locator('#chart-requests svg rect.bar-errors').count();
  assert.ok(errs >= 1, 'error bars');
  const latency = await page.locator('#chart-latency svg').textContent();
  assert.match(latency, /gpt-4o-mini/);
  assert.ok(await page.locator('#chart-latency rect.bar-p95').count() >= 1);
  assert.match(await page.locator('#chart-tokens svg').textContent(), /claude-3-5-haiku/);
  assert.ok(await page.locator('#chart-cost rect.bar-cost').count() >= 1);
  await shot(page, 'dashboard');
  // A range switch keeps working and lands in the URL.
  await page.click('.ranges a[href="#/dashboard?range=1h"]');
  await page.waitForFunction(() => location.hash === '#/dashboard?range=1h', null, { timeout: WAIT });
  await page.waitForSelector('.page-dashboard[data-loaded="true"] #chart-requests svg', { timeout: WAIT });
});

test('phone-sized window: every page fits without sideways scrolling', async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await context.addInitScript((t) => sessionStorage.setItem('llmtap.adminToken', t), TOKEN);
  const phone = await context.newPage();
  watch(phone, 'phone');
  const fits = () => phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
  await open(phone, '#/traces');
  assert.ok(await fits(), 'traces fit');
  assert.equal(await rows(phone).count(), FACTS.traces);
  await shot(phone, 'traces-phone');
  await open(phone, '#/traces?operation_type=tool_call');
  await rows(phone).first().locator('td.name a').click();
  await phone.waitForSelector('.page-trace[data-loaded="true"]', { timeout: WAIT });
  assert.ok(await fits(), 'trace fits');
  assert.equal(await phone.locator('#waterfall a.wf-row').count(), 3);
  await shot(phone, 'trace-phone');
  await phone.locator('#waterfall a.wf-row').first().click();
  await phone.waitForSelector('.page-span[data-loaded="true"]', { timeout: WAIT });
  assert.ok(await fits(), 'span fits');
  await shot(phone, 'span-phone');
  await open(phone, '#/dashboard');
  assert.ok(await fits(), 'dashboard fits');
  await shot(phone, 'dashboard-phone');
  await context.close();
});

test('no console errors or CSP violations on any page', () => {
  assert.deepEqual(problems, []);
});

test('HTML in captured data stays text', async () => {
  // A request whose content is markup: it must show as characters.
  const evil = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
  const res = await fetch(`${PROXY}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-mock-id': 'chatcmpl-ui-evil' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: evil }] }),
  });
  assert.equal(res.status, 200);
  await res.text();
  const deadline = Date.now() + WAIT;
  for (;;) {
    await open(page, '#/traces?q=chatcmpl-ui-evil');
    if (await rows(page).count() === 1 || Date.now() > deadline) break;
    await page.waitForTimeout(100);
  }
  await rows(page).first().locator('td.name a').click();
  await page.waitForSelector('.page-trace[data-loaded="true"]', { timeout: WAIT });
  await page.locator('#waterfall a.wf-row').first().click();
  await page.waitForSelector('.page-span[data-loaded="true"]', { timeout: WAIT });
  assert.equal(await page.locator('#conversation .msg-user .msg-text').textContent(), evil);
  assert.equal(await page.locator('#conversation img, #conversation b').count(), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
});
