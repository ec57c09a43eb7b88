// Trace page: totals and the waterfall — one bar per span on the trace's
// time axis, indented under its parent, tool spans distinct, failed spans
// red, the time to first token marked inside streamed bars. A bar links to
// its span.

import { get } from './api.js';
import { badge, fill, fmtCost, fmtMs, fmtNum, fmtTime, fmtTokens, h } from './dom.js';

/** Depth-first rows of the tree: {span, depth, self}. */
export function flatten(roots) {
  const rows = [];
  const walk = (node, depth) => {
    rows.push({ span: node.span, depth, self: node.self_time_ms });
    for (const c of node.children || []) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  return rows;
}

function stat(label, value) {
  return h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value));
}

function axis(totalMs) {
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const t = h('span', { class: 'tick' }, fmtMs(totalMs * f));
    t.style.left = `${f * 100}%`;
    return t;
  });
  return h('div', { class: 'wf-row wf-axis', 'aria-hidden': 'true' },
    h('div', { class: 'wf-label' }, 'span'), h('div', { class: 'wf-track' }, ticks));
}

function bar(row, t0, totalUs) {
  const sp = row.span;
  const left = totalUs > 0 ? ((sp.start_time_us - t0) / totalUs) * 100 : 0;
  const width = totalUs > 0 ? ((sp.end_time_us - sp.start_time_us) / totalUs) * 100 : 100;
  const tool = sp.operation_type === 'tool_call';
  const b = h('div', {
    class: ['wf-bar', tool ? 'wf-tool' : 'wf-llm', `wf-${sp.status}`, sp.stream ? 'wf-stream' : null],
  });
  b.style.left = `${Math.min(100, Math.max(0, left))}%`;
  b.style.width = `${Math.max(0, Math.min(100 - left, width))}%`;
  if (sp.stream && sp.ttft_ms !== null && sp.ttft_ms !== undefined && sp.duration_ms > 0) {
    const m = h('span', { class: 'wf-ttft', title: `first token after ${fmtMs(sp.ttft_ms)}` });
    m.style.left = `${Math.min(100, (sp.ttft_ms / sp.duration_ms) * 100)}%`;
    b.appendChild(m);
  }
  const label = h('span', { class: 'wf-dur' }, fmtMs(sp.duration_ms));
  if (left > 60) label.classList.add('wf-dur-left');
  return [b, label];
}

export function render(view, r, ctx) {
  fill(view, h('p', { class: 'muted' }, 'Loading trace…'));
  get(`/api/traces/${encodeURIComponent(r.id)}`)
    .then((t) => {
      if (!ctx.alive()) return;
      const tot = t.totals;
      const rows = flatten(t.roots);
      const t0 = tot.start_time_us;
      const totalUs = Math.max(1, tot.end_time_us - t0);
      const failed = tot.error_count > 0;
      const waterfall = h('nav', { class: 'waterfall', id: 'waterfall', 'aria-label': 'Spans on a time axis' },
        axis(totalUs / 1000),
        rows.map((row) => {
          const sp = row.span;
          const tool = sp.operation_type === 'tool_call';
          const label = h('div', { class: 'wf-label' },
            h('span', { class: tool ? 'kind kind-tool' : 'kind kind-llm', 'aria-hidden': 'true' }, tool ? 'tool' : 'llm'),
            h('span', { class: 'wf-name' }, sp.name || sp.operation_type));
          label.style.paddingLeft = `${0.4 + row.depth * 1.1}rem`;
          return h('a', {
            class: ['wf-row', sp.status === 'failed' ? 'wf-row-failed' : null],
            'aria-label': `${sp.name || sp.operation_type}, ${sp.status}, ${fmtMs(sp.duration_ms)}, depth ${row.depth}`,
            href: `#/span/${encodeURIComponent(sp.span_id)}`,
            'data-span-id': sp.span_id,
            'data-parent-id': sp.parent_span_id || '',
            'data-depth': String(row.depth),
            'data-operation': sp.operation_type,
            'data-status': sp.status,
            title: `${sp.name} · ${sp.status} · ${fmtMs(sp.duration_ms)}${sp.ttft_ms != null ? ` · TTFT ${fmtMs(sp.ttft_ms)}` : ''}`,
          }, label, h('div', { class: 'wf-track' }, bar(row, t0, totalUs)));
        }));
      fill(view,
        h('div', { class: 'page-head' },
          h('h1', null, 'Trace ', h('span', { class: 'mono small' }, t.trace_id)),
          badge(failed ? 'failed' : 'completed')),
        h('p', null, h('a', { href: '#/traces' }, '⟵ All traces'), ' · started ', fmtTime(t0)),
        h('section', { class: 'stats', 'aria-label': 'Totals' },
          stat('Duration', fmtMs(tot.duration_ms)),
          stat('Spans', fmtNum(tot.span_count)),
          stat('LLM calls', fmtNum(tot.llm_calls)),
          stat('Tool calls', fmtNum(tot.tool_calls)),
          stat('Errors', fmtNum(tot.error_count)),
          stat('Input tokens', fmtTokens(tot.input_tokens, tot.tokens_estimated)),
          stat('Output tokens', fmtTokens(tot.output_tokens, tot.tokens_estimated)),
          stat('Cost', fmtCost(tot.cost_usd, tot.cost_incomplete))),
        h('section', { class: 'card' },
          h('h2', null, 'Waterfall'),
          h('p', { class: 'legend muted small' },
            h('span', { class: 'sw sw-llm' }), ' LLM call ',
            h('span', { class: 'sw sw-tool' }), ' tool call ',
            h('span', { class: 'sw sw-failed' }), ' failed ',
            h('span', { class: 'sw sw-ttft' }), ' first token'),
          waterfall));
      view.dataset.loaded = 'true';
    })
    .catch((err) => ctx.alive() && ctx.failed(view, err));
}
