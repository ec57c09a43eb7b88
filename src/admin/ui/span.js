// Span page: the conversation as chat messages (the API reads them from the
// captured bodies: `messages`), the facts (model, tokens
// with estimates marked, cost, timings, error, properties, ids and links),
// and the raw request/response bodies, pretty-printed and collapsible.

import { get } from './api.js';
import { conversation } from './chat.js';
import { badge, fill, fmtCost, fmtMs, fmtNum, fmtTime, h, pretty } from './dom.js';

function argsText(args) {
  if (typeof args === 'string') return pretty(args);
  return JSON.stringify(args, null, 2);
}

function message(m) {
  const role = m.role || 'unknown';
  return h('article', { class: ['msg', `msg-${role}`, m.from === 'response' ? 'msg-response' : null], 'data-role': role },
    h('header', { class: 'msg-head' },
      h('span', { class: 'msg-role' }, role),
      m.name ? h('span', { class: 'muted small' }, ` ${m.name}`) : null,
      m.toolCallId ? h('span', { class: 'muted small mono' }, ` result of ${m.toolCallId}`) : null,
      m.from === 'response' ? h('span', { class: 'muted small' }, ' · response') : null),
    m.reasoning ? h('details', { class: 'reasoning' }, h('summary', null, 'Reasoning'), h('div', { class: 'msg-text' }, m.reasoning)) : null,
    m.text ? h('div', { class: 'msg-text' }, m.text) : null,
    m.toolCalls.map((tc) => h('div', { class: 'tool-call' },
      h('div', { class: 'tool-call-head' }, '→ ', h('strong', null, tc.name), tc.id ? h('span', { class: 'muted mono small' }, ` ${tc.id}`) : null),
      h('pre', { class: 'code' }, argsText(tc.args)))));
}

function fact(dl, label, value, cls) {
  if (value === null || value === undefined || value === '') return;
  dl.append(h('dt', null, label), h('dd', { class: cls }, value));
}

function raw(title, text, open) {
  if (!text) return h('p', { class: 'muted' }, `${title}: not captured.`);
  return h('details', { class: 'raw', open },
    h('summary', null, title, h('span', { class: 'muted small' }, ` (${fmtNum(text.length)} chars)`)),
    h('pre', { class: 'code' }, pretty(text)));
}

export function render(view, r, ctx) {
  fill(view, h('p', { class: 'muted' }, 'Loading span…'));
  get(`/api/spans/${encodeURIComponent(r.id)}`)
    .then((sp) => {
      if (!ctx.alive()) return;
      const dl = h('dl', { class: 'facts' });
      const est = sp.tokens_estimated ? ' (estimated)' : '';
      fact(dl, 'Operation', sp.operation_type);
      fact(dl, 'Provider', `${sp.provider} · ${sp.route}`);
      fact(dl, 'Request', `${sp.method} ${sp.path}${sp.stream ? ' · streamed' : ''}`, 'mono');
      fact(dl, 'Model', sp.model);
      if (sp.response_model && sp.response_model !== sp.model) fact(dl, 'Response model', sp.response_model);
      fact(dl, 'HTTP status', sp.http_status);
      fact(dl, 'Started', fmtTime(sp.start_time_us));
      fact(dl, 'Duration', fmtMs(sp.duration_ms));
      if (sp.ttft_ms !== null) fact(dl, 'Time to first token', fmtMs(sp.ttft_ms));
      if (sp.input_tokens !== null) fact(dl, 'Input tokens', `${fmtNum(sp.input_tokens)}${est}`, sp.tokens_estimated ? 'estimated' : null);
      if (sp.output_tokens !== null) fact(dl, 'Output tokens', `${fmtNum(sp.output_tokens)}${est}`, sp.tokens_estimated ? 'estimated' : null);
      if (sp.cached_input_tokens) fact(dl, 'Cached input tokens', fmtNum(sp.cached_input_tokens));
      if (sp.cache_write_tokens) fact(dl, 'Cache write tokens', fmtNum(sp.cache_write_tokens));
      if (sp.reasoning_tokens) fact(dl, 'Reasoning tokens', fmtNum(sp.reasoning_tokens));
      fact(dl, 'Cost', sp.cost_usd === null ? (sp.input_tokens !== null || sp.output_tokens !== null ? 'unknown (no price for this model)' : '–') : fmtCost(sp.cost_usd));
      fact(dl, 'Finish reason', sp.finish_reason);
      if (sp.response_id) fact(dl, 'Message id', h('a', { href: `#/traces?q=${encodeURIComponent(sp.response_id)}`, id: 'message-id', title: 'Traces with this message id' }, sp.response_id), 'mono');
      fact(dl, 'Trace', h('a', { href: `#/trace/${encodeURIComponent(sp.trace_id)}`, id: 'trace-link' }, sp.trace_id), 'mono');
      fact(dl, 'Span id', sp.span_id, 'mono');
      if (sp.parent_span_id) fact(dl, 'Parent span', h('a', { href: `#/span/${encodeURIComponent(sp.parent_span_id)}` }, sp.parent_span_id), 'mono');
      fact(dl, 'Conversation', sp.conversation_id);
      fact(dl, 'Session', sp.session_id);
      fact(dl, 'User', sp.user_id);
      fact(dl, 'API key hash', sp.api_key_hash, 'mono');

      let props = null;
      if (sp.properties) {
        let obj = null;
        try {
          obj = JSON.parse(sp.properties);
        } catch {
          obj = null;
        }
        props = obj && typeof obj === 'object'
          ? h('table', { class: 'props' }, h('tbody', null, Object.entries(obj).map(([k, v]) =>
            h('tr', null, h('th', { scope: 'row' }, k), h('td', null, typeof v === 'string' ? v : JSON.stringify(v))))))
          : h('pre', { class: 'code' }, sp.properties);
      }

      const conv = conversation(sp);
      fill(view,
        h('div', { class: 'page-head' },
          h('h1', null, sp.name || sp.operation_type),
          badge(sp.status)),
        h('p', null, h('a', { href: `#/trace/${encodeURIComponent(sp.trace_id)}` }, '⟵ Trace'),
          ' · ', h('a', { href: '#/traces' }, 'All traces')),
        sp.error_type || sp.error_message
          ? h('section', { class: 'error-box', role: 'alert', id: 'span-error' },
            h('strong', null, sp.error_type || 'error'), sp.error_message ? `: ${sp.error_message}` : '')
          : null,
        h('div', { class: 'span-grid' },
          h('section', { class: 'card conversation', 'aria-label': 'Conversation', id: 'conversation' },
            h('h2', null, 'Conversation'),
            conv.messages.length
              ? conv.messages.map(message)
              : h('p', { class: 'muted' }, sp.request_body || sp.response_body ? 'No messages recognised in the bodies.' : 'Bodies were not captured.')),
          h('aside', { class: 'card' },
            h('h2', null, 'Details'), dl,
            props ? [h('h3', null, 'Properties'), props] : null)),
        h('section', { class: 'card' },
          h('h2', null, 'Raw bodies'),
          raw('Request body', sp.request_body, false),
          raw('Response body', sp.response_body, false)));
      view.dataset.loaded = 'true';
    })
    .catch((err) => ctx.alive() && ctx.failed(view, err));
}
