// Dashboard: /api/stats for a time range, drawn as inline SVG — requests
// and errors over time, latency p50/p95 by model, tokens and cost by model.

import { get, query } from './api.js';
import { fill, fmtCompact, fmtCost, fmtMs, fmtNum, h, s } from './dom.js';

const RANGES = [['1h', 3600], ['6h', 6 * 3600], ['24h', 86400], ['7d', 7 * 86400], ['30d', 30 * 86400]];
const W = 640;

function stat(label, value) {
  return h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value));
}

function chart(title, svg, id) {
  return h('figure', { class: 'card chart', id }, h('figcaption', null, title), svg);
}

function empty(svgH = 60) {
  return s('svg', { viewBox: `0 0 ${W} ${svgH}`, role: 'img', 'aria-label': 'no data' },
    s('text', { x: W / 2, y: svgH / 2, 'text-anchor': 'middle', class: 'axis-label' }, 'No data in this range'));
}

const pad2 = (n) => String(n).padStart(2, '0');
function tickLabel(us, bucketUs) {
  const d = new Date(us / 1000);
  if (bucketUs >= 86400e6) return `${d.getMonth() + 1}/${d.getDate()}`;
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

/** Requests (bars) and errors (red bars in front) per bucket. */
function timeSeries(stats) {
  const pts = stats.series;
  if (!pts.length || !pts.some((p) => p.requests > 0)) return empty();
  const H = 200; const L = 44; const B = 22; const T = 10;
  const max = Math.max(1, ...pts.map((p) => p.requests));
  const bw = (W - L - 4) / pts.length;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const g = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Requests and errors per ${stats.bucket}` },
    s('title', null, `Requests and errors per ${stats.bucket}`));
  for (const f of [0, 0.5, 1]) {
    g.append(s('line', { x1: L, x2: W, y1: y(max * f), y2: y(max * f), class: 'grid' }),
      s('text', { x: L - 6, y: y(max * f) + 4, 'text-anchor': 'end', class: 'axis-label' }, fmtCompact(max * f)));
  }
  pts.forEach((p, i) => {
    const x = L + i * bw;
    if (p.requests > 0) {
      g.append(s('rect', { x: x + bw * 0.1, y: y(p.requests), width: Math.max(1, bw * 0.8), height: y(0) - y(p.requests), class: 'bar bar-requests' },
        s('title', null, `${tickLabel(p.start_us, stats.bucket_us)}: ${p.requests} requests, ${p.errors} errors`)));
    }
    if (p.errors > 0) {
      g.append(s('rect', { x: x + bw * 0.1, y: y(p.errors), width: Math.max(1, bw * 0.8), height: y(0) - y(p.errors), class: 'bar bar-errors' }));
    }
  });
  const ticks = [[0, 'start', L], [Math.floor(pts.length / 2), 'middle', null], [pts.length - 1, 'end', W - 2]];
  for (const [i, anchor, x] of ticks) {
    g.append(s('text', { x: x ?? L + i * bw + bw / 2, y: H - 6, 'text-anchor': anchor, class: 'axis-label' }, tickLabel(pts[i].start_us, stats.bucket_us)));
  }
  return g;
}

/** Horizontal bars per model: `series` = [[label, class, valueOf]]. */
function byModel(models, series, fmt, title) {
  const rows = models.filter((m) => series.some(([, , f]) => (f(m) ?? 0) > 0));
  if (!rows.length) return empty();
  const L = 150; const bh = 14; const gap = 8; const T = 6;
  const rowH = series.length * bh + gap;
  const H = T + rows.length * rowH + 24;
  const max = Math.max(...rows.flatMap((m) => series.map(([, , f]) => f(m) ?? 0)), 1e-12);
  const scale = (v) => ((W - L - 70) * v) / max;
  const g = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title }, s('title', null, title));
  rows.forEach((m, i) => {
    const y0 = T + i * rowH;
    const name = m.model || '(none)';
    g.append(s('text', { x: L - 8, y: y0 + (series.length * bh) / 2 + 4, 'text-anchor': 'end', class: 'axis-label' }, name.length > 22 ? `${name.slice(0, 21)}…` : name));
    series.forEach(([label, cls, f], k) => {
      const v = f(m);
      if (v === null || v === undefined) return;
      const y = y0 + k * bh;
      g.append(
        s('rect', { x: L, y, width: Math.max(1, scale(v)), height: bh - 2, class: `bar ${cls}` }, s('title', null, `${name} ${label}: ${fmt(v)}`)),
        s('text', { x: L + scale(v) + 4, y: y + bh - 4, class: 'value-label' }, fmt(v)));
    });
  });
  let lx = L;
  for (const [label, cls] of series) {
    g.append(s('rect', { x: lx, y: H - 14, width: 10, height: 10, class: `bar ${cls}` }), s('text', { x: lx + 14, y: H - 5, class: 'axis-label' }, label));
    lx += 24 + label.length * 7;
  }
  return g;
}

export function render(view, r, ctx) {
  const range = RANGES.find(([k]) => k === r.params.get('range')) || RANGES[2];
  const picker = h('nav', { class: 'ranges', 'aria-label': 'Time range' },
    RANGES.map(([k]) => h('a', { class: ['button', k === range[0] ? null : 'ghost'], href: `#/dashboard?range=${k}`, 'aria-current': k === range[0] ? 'true' : null }, k)));
  const body = h('div', null, h('p', { class: 'muted' }, 'Loading stats…'));
  fill(view, h('div', { class: 'page-head' }, h('h1', null, 'Dashboard'), picker), body);
  const to = new Date();
  const from = new Date(to.getTime() - range[1] * 1000);
  get(`/api/stats${query([['from', from.toISOString()], ['to', to.toISOString()]])}`)
    .then((st) => {
      if (!ctx.alive()) return;
      const t = st.totals;
      const models = st.by_model;
      fill(body,
        h('section', { class: 'stats', 'aria-label': 'Totals' },
          stat('Requests', fmtNum(t.requests)),
          stat('Errors', `${fmtNum(t.errors)} (${(t.error_rate * 100).toFixed(1)}%)`),
          stat('Latency p50', fmtMs(t.latency_ms.p50)),
          stat('Latency p95', fmtMs(t.latency_ms.p95)),
          stat('TTFT p50', fmtMs(t.ttft_ms.p50)),
          stat('Tokens', fmtCompact(t.total_tokens)),
          stat('Cost', fmtCost(t.cost_usd, t.cost_incomplete)),
          stat('Tool calls', fmtNum(st.tool_calls))),
        h('div', { class: 'charts' },
          chart(`Requests and errors (per ${st.bucket})`, timeSeries(st), 'chart-requests'),
          chart('Latency by model', byModel(models, [['p50', 'bar-p50', (m) => m.latency_ms.p50], ['p95', 'bar-p95', (m) => m.latency_ms.p95]], fmtMs, 'Latency p50 and p95 by model'), 'chart-latency'),
          chart('Tokens by model', byModel(models, [['input', 'bar-in', (m) => m.input_tokens], ['output', 'bar-out', (m) => m.output_tokens]], fmtCompact, 'Input and output tokens by model'), 'chart-tokens'),
          chart('Cost by model', byModel(models, [['cost', 'bar-cost', (m) => m.cost_usd]], (v) => fmtCost(v), 'Cost by model (USD)'), 'chart-cost')),
        st.by_status.length
          ? h('p', { class: 'muted small' }, 'By status: ', st.by_status.map((b) => `${b.status} ${fmtNum(b.requests)} (${(b.share * 100).toFixed(1)}%)`).join(' · '))
          : null);
      view.dataset.loaded = 'true';
    })
    .catch((err) => ctx.alive() && ctx.failed(body, err));
}
