// "Loads in under a second with 100,000 spans in the store": llmtap runs
// on a SQLite file filled by examples/gen_spans.rs (scripts/ui_test.sh);
// this times the trace list API and the traces page in Chromium from
// navigation to the rendered table (a fresh browser context each run, so
// no cache), and the dashboard. Figures go to stdout and PERF_OUT.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const ADMIN = process.env.PERF_ADMIN_URL;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const RUNS = Number(process.env.PERF_RUNS || 5);
const BUDGET_MS = 1000;
const figures = {};
let browser;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x) => Math.round(x * 10) / 10;

before(async () => {
  assert.ok(ADMIN, 'PERF_ADMIN_URL must be set');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (process.env.PERF_OUT) writeFileSync(process.env.PERF_OUT, `${JSON.stringify(figures, null, 2)}\n`);
  console.log(`ui perf: ${JSON.stringify(figures)}`);
});

test('the trace list API answers a page quickly', async () => {
  const times = [];
  let count = 0;
  for (let i = 0; i < 10; i += 1) {
    const t0 = performance.now();
    const res = await fetch(`${ADMIN}/api/traces?limit=50`);
    const body = await res.json();
    times.push(performance.now() - t0);
    count = body.traces.length;
  }
  assert.equal(count, 50);
  figures.api_traces_ms = { median: round(median(times)), max: round(Math.max(...times)), runs: times.length };
  assert.ok(median(times) < BUDGET_MS);
});

async function timePage(hash, selector) {
  const runs = [];
  for (let i = 0; i < RUNS; i += 1) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const t0 = performance.now();
    await page.goto(`${ADMIN}/${hash}`);
    await page.waitForSelector(selector, { timeout: 10000 });
    const wall = performance.now() - t0;
    // The page's own clock: navigation start → table in the DOM.
    const inPage = await page.evaluate(() => performance.now());
    runs.push({ wall, inPage });
    await context.close();
  }
  return {
    wall_median: round(median(runs.map((r) => r.wall))),
    wall_max: round(Math.max(...runs.map((r) => r.wall))),
    in_page_median: round(median(runs.map((r) => r.inPage))),
    runs: runs.length,
  };
}

test('the traces page renders its table in under a second', async () => {
  const f = await timePage('#/traces', '#traces-table tbody tr:nth-child(50)');
  figures.traces_page_ms = f;
  assert.ok(f.wall_median < BUDGET_MS, `median ${f.wall_median} ms`);
});

test('the dashboard draws its charts in under a second', async () => {
  const f = await timePage('#/dashboard', '.page-dashboard[data-loaded="true"] #chart-requests svg rect.bar-requests');
  figures.dashboard_page_ms = f;
  assert.ok(f.wall_median < BUDGET_MS, `median ${f.wall_median} ms`);
});
