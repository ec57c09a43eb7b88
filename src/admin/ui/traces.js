// Traces page: live spans (polled /api/live), the filter form (kept in the
// URL), the trace table with cursor pagination, and the export button.

import { download, get, query } from './api.js';
import { badge, fill, fmtAgo, fmtCost, fmtMs, fmtTime, fmtTokens, h } from './dom.js';

const LIVE_EVERY_MS = 2000;
const PAGE = 50;

/** [name, label, kind, extra]: every filter /api/traces knows. */
const FILTERS = [
  ['q', 'Search', 'search', 'response id or error text'],
  ['status', 'Status', 'select', ['', 'completed', 'failed', 'cancelled']],
  ['operation_type', 'Operation', 'select', ['', 'llm_call', 'tool_call', 'embedding', 'count_tokens']],
  ['model', 'Model', 'text', 'gpt-4o, claude-…'],
  ['provider', 'Provider', 'text', 'openai, anthropic, …'],
  ['from', 'From', 'datetime-local'],
  ['to', 'To', 'datetime-local'],
  ['min_duration_ms', 'Min duration (ms)', 'number'],
  ['max_duration_ms', 'Max duration (ms)', 'number'],
  ['session_id', 'Session', 'text'],
  ['user_id', 'User', 'text'],
  ['conversation_id', 'Conversation', 'text'],
  ['property', 'Property', 'text', 'key:value'],
];
const NAMES = FILTERS.map((f) => f[0]);

/** The filter entries of the URL, in API form. */
export function filterParams(params) {
  return NAMES.flatMap((n) => params.getAll(n).filter((v) => v !== '').map((v) => [n, v]));
}

const pad = (n) => String(n).padStart(2, '0');
function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function filterForm(params) {
  const fields = FILTERS.map(([name, label, kind, extra]) => {
    const id = `f-${name}`;
    const value = params.get(name) || '';
    let input;
    if (kind === 'select') {
      input = h('select', { id, name }, extra.map((o) => h('option', { value: o }, o || 'any')));
      input.value = value;
    } else {
      input = h('input', {
        id,
        name,
        type: kind,
        placeholder: typeof extra === 'string' ? extra : null,
        min: kind === 'number' ? '0' : null,
        step: kind === 'number' ? 'any' : null,
        autocomplete: 'off',
      });
      input.value = kind === 'datetime-local' ? (value ? toLocalInput(value) : '') : value;
    }
    return h('div', { class: 'field' }, h('label', { for: id }, label), input);
  });
  const form = h('form', { class: 'filters', 'aria-label': 'Filters' },
    fields,
    h('div', { class: 'actions' },
      h('button', { type: 'submit' }, 'Apply'),
      h('a', { class: 'button ghost', href: '#/traces' }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const out = new URLSearchParams();
    for (const [name, , kind] of FILTERS) {
      let v = form.elements[name].value.trim();
      if (v && kind === 'datetime-local') {
        const d = new Date(v);
        v = Number.isNaN(d.getTime()) ? '' : d.toISOString();
      }
      if (v) out.set(name, v);
    }
    const q = out.toString();
    location.hash = `#/traces${q ? `?${q}` : ''}`;
  });
  return form;
}

function liveSection(ctx) {
  const count = h('span', { class: 'muted', 'aria-live': 'polite' }, '');
  const body = h('div', { class: 'live-body' });
  const section = h('section', { class: 'card live', 'aria-label': 'Live spans' },
    h('h2', null, 'In flight ', count), body);
  let timer = null;
  let stopped = false;
  async function poll() {
    try {
      const live = await get('/api/live?limit=20');
      if (stopped || !ctx.alive()) return;
      count.textContent = `(${live.in_flight})`;
      if (!live.spans.length) {
        fill(body, h('p', { class: 'muted' }, 'No requests in flight.'));
      } else {
        fill(body, h('ul', { class: 'live-list' }, live.spans.map((sp) =>
          h('li', { class: 'live-item', 'data-span-id': sp.span_id },
            h('span', { class: 'badge badge-running' }, 'running'),
            h('span', { class: 'mono' }, `${sp.method} ${sp.path}`),
            h('span', null, sp.model || sp.operation_type),
            h('span', { class: 'muted' }, sp.provider),
            h('span', { class: 'num' }, fmtMs(sp.elapsed_ms))))));
      }
    } catch (err) {
      if (stopped) return;
      fill(body, h('p', { class: 'muted' }, `Live spans unavailable: ${err.message}`));
    }
    if (!stopped) timer = setTimeout(poll, LIVE_EVERY_MS);
  }
  poll();
  return { section, stop: () => { stopped = true; clearTimeout(timer); } };
}

function traceRow(t, nowUs) {
  const who = [t.conversation_id && `conv ${t.conversation_id}`, t.user_id && `user ${t.user_id}`, t.session_id && `session ${t.session_id}`].filter(Boolean);
  return h('tr', { 'data-trace-id': t.trace_id, 'data-status': t.status },
    h('td', { 'data-label': 'Status' }, badge(t.status)),
    h('td', { 'data-label': 'Trace', class: 'name' },
      h('a', { href: `#/trace/${encodeURIComponent(t.trace_id)}` }, t.name || t.trace_id)),
    h('td', { 'data-label': 'Model' }, t.models.join(', ') || '–'),
    h('td', { 'data-label': 'Spans', class: 'num' },
      `${t.span_count}`, t.tool_calls ? h('span', { class: 'muted' }, ` (${t.tool_calls} tool)`) : null),
    h('td', { 'data-label': 'Duration', class: 'num' }, fmtMs(t.duration_ms)),
    h('td', { 'data-label': 'Tokens', class: 'num', title: `${t.input_tokens} in / ${t.output_tokens} out` },
      fmtTokens(t.total_tokens, t.tokens_estimated)),
    h('td', { 'data-label': 'Cost', class: 'num' }, fmtCost(t.cost_usd, t.cost_incomplete)),
    h('td', { 'data-label': 'Started', title: fmtTime(t.start_time_us) }, fmtAgo(t.start_time_us, nowUs)),
    h('td', { 'data-label': 'Conversation / user', class: 'muted small' }, who.join(' · ') || '–'));
}

export function render(view, r, ctx) {
  const params = r.params;
  const filters = filterParams(params);
  const live = liveSection(ctx);
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading traces…');
  const table = h('div', { class: 'table-wrap' });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const exportButton = h('button', { type: 'button', id: 'export', class: 'ghost' }, 'Export JSON');
  exportButton.addEventListener('click', async () => {
    exportButton.disabled = true;
    try {
      await download(`/api/export${query([['format', 'json'], ...filters])}`, 'llmtap-export.json');
    } catch (err) {
      ctx.failed(status, err);
    } finally {
      exportButton.disabled = false;
    }
  });
  fill(view,
    h('div', { class: 'page-head' }, h('h1', null, 'Traces'), exportButton),
    live.section,
    h('details', { class: 'card filter-card', open: filters.length > 0 || window.innerWidth > 700 },
      h('summary', null, `Filters${filters.length ? ` (${filters.length})` : ''}`),
      filterForm(params)),
    status, table, pager);

  const started = performance.now();
  const cursor = params.get('cursor') || '';
  get(`/api/traces${query([...filters, ['limit', String(PAGE)], ['cursor', cursor]])}`)
    .then((page) => {
      if (!ctx.alive()) return;
      const nowUs = Date.now() * 1000;
      const ms = Math.round(performance.now() - started);
      status.textContent = page.traces.length
        ? `${page.traces.length} traces${page.next_cursor ? ' (more older)' : ''} · ${ms} ms`
        : 'No traces match.';
      fill(table, h('table', { class: 'traces', id: 'traces-table' },
        h('thead', null, h('tr', null,
          ['Status', 'Trace', 'Model', 'Spans', 'Duration', 'Tokens', 'Cost', 'Started', 'Conversation / user']
            .map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, page.traces.map((t) => traceRow(t, nowUs)))));
      const links = [];
      if (cursor) {
        const first = new URLSearchParams(params);
        first.delete('cursor');
        const q = first.toString();
        links.push(h('a', { class: 'button ghost', href: `#/traces${q ? `?${q}` : ''}` }, '⟵ Newest'));
      }
      if (page.next_cursor) {
        const next = new URLSearchParams(params);
        next.set('cursor', page.next_cursor);
        links.push(h('a', { class: 'button ghost', id: 'older', href: `#/traces?${next}` }, 'Older ⟶'));
      }
      fill(pager, links);
      view.dataset.loaded = 'true';
    })
    .catch((err) => ctx.alive() && ctx.failed(status, err));
  return live.stop;
}
