// The conversation of a span, parsed from its captured bodies: OpenAI chat
// (and legacy completions, embeddings), the Responses API and Anthropic
// Messages, requests and responses, JSON or streamed (SSE text). Pure:
// text in, messages out — {role, text, toolCalls: [{id, name, args}],
// toolCallId, from: 'request' | 'response'}.

function tryJson(text) {
  if (typeof text !== 'string' || !text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** SSE text → [{event, data}] (data parsed as JSON when it is). */
export function parseSse(text) {
  const out = [];
  let event = null;
  let data = [];
  const flush = () => {
    if (data.length) {
      const raw = data.join('\n');
      out.push({ event, raw, data: tryJson(raw) });
    }
    event = null;
    data = [];
  };
  for (const line of text.split(/\r?\n/)) {
    if (line === '') flush();
    else if (line.startsWith(':')) continue;
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    else if (line.startsWith('event:')) event = line.slice(6).trim();
  }
  flush();
  return out;
}

function looksLikeSse(text) {
  return typeof text === 'string' && /^(data|event|:)/m.test(text.trimStart().slice(0, 200)) && !text.trimStart().startsWith('{');
}

/** Text of a content value: a string, or parts/blocks of any format. */
function contentText(c) {
  if (c === null || c === undefined) return '';
  if (typeof c === 'string') return c;
  if (!Array.isArray(c)) return typeof c === 'object' && c.text ? String(c.text) : JSON.stringify(c);
  return c.map((p) => {
    if (typeof p === 'string') return p;
    switch (p.type) {
      case 'text': case 'input_text': case 'output_text':
        return p.text || '';
      case 'refusal':
        return `[refusal] ${p.refusal || ''}`;
      case 'image_url': case 'image': case 'input_image':
        return '[image]';
      case 'input_audio': case 'audio':
        return '[audio]';
      case 'file': case 'input_file': case 'document':
        return '[file]';
      default:
        return p.text ? String(p.text) : '';
    }
  }).filter(Boolean).join('\n');
}

const msg = (role, text, extra = {}) => ({ role, text: text || '', toolCalls: [], toolCallId: null, ...extra });

// === OpenAI chat ===

function chatMessage(m, from) {
  const out = msg(m.role || 'assistant', contentText(m.content), { from, name: m.name || null });
  if (m.refusal) out.text = `${out.text}${out.text ? '\n' : ''}[refusal] ${m.refusal}`;
  if (m.reasoning_content) out.reasoning = m.reasoning_content;
  for (const tc of m.tool_calls || []) {
    out.toolCalls.push({ id: tc.id || '', name: tc.function?.name || tc.type || 'tool', args: tc.function?.arguments ?? '' });
  }
  if (m.function_call) out.toolCalls.push({ id: '', name: m.function_call.name, args: m.function_call.arguments ?? '' });
  if (m.tool_call_id) out.toolCallId = m.tool_call_id;
  return out;
}

function chatStream(events) {
  const choices = new Map();
  let usage = null;
  for (const { data } of events) {
    if (!data || typeof data !== 'object') continue;
    if (data.usage) usage = data.usage;
    for (const ch of data.choices || []) {
      const i = ch.index || 0;
      if (!choices.has(i)) choices.set(i, { role: 'assistant', content: '', refusal: '', tools: new Map(), text: '' });
      const acc = choices.get(i);
      if (typeof ch.text === 'string') acc.content += ch.text; // legacy completions
      const d = ch.delta || {};
      if (d.role) acc.role = d.role;
      if (typeof d.content === 'string') acc.content += d.content;
      if (typeof d.refusal === 'string') acc.refusal += d.refusal;
      for (const tc of d.tool_calls || []) {
        const k = tc.index ?? 0;
        if (!acc.tools.has(k)) acc.tools.set(k, { id: '', name: '', args: '' });
        const t = acc.tools.get(k);
        if (tc.id) t.id = tc.id;
        if (tc.function?.name) t.name += tc.function.name;
        if (tc.function?.arguments) t.args += tc.function.arguments;
      }
    }
  }
  const out = [];
  for (const acc of choices.values()) {
    const m = msg(acc.role, acc.content, { from: 'response' });
    if (acc.refusal) m.text += `${m.text ? '\n' : ''}[refusal] ${acc.refusal}`;
    m.toolCalls = [...acc.tools.values()];
    out.push(m);
  }
  return { messages: out, usage };
}

// === Anthropic ===

function anthropicBlocks(role, blocks, from) {
  if (typeof blocks === 'string') return [msg(role, blocks, { from })];
  const out = [];
  let cur = msg(role, '', { from });
  const texts = [];
  for (const b of blocks || []) {
    if (b.type === 'tool_result') {
      out.push(msg('tool', contentText(b.content), { from, toolCallId: b.tool_use_id || null, isError: !!b.is_error }));
    } else if (b.type === 'tool_use' || b.type === 'server_tool_use') {
      cur.toolCalls.push({ id: b.id || '', name: b.name || 'tool', args: b.input ?? b.partial ?? '' });
    } else if (b.type === 'thinking' || b.type === 'redacted_thinking') {
      cur.reasoning = (cur.reasoning ? `${cur.reasoning}\n` : '') + (b.thinking || '[redacted thinking]');
    } else {
      const t = contentText([b]);
      if (t) texts.push(t);
    }
  }
  cur.text = texts.join('\n');
  if (cur.text || cur.toolCalls.length || cur.reasoning) out.unshift(cur);
  return out;
}

function anthropicRequest(req) {
  const out = [];
  if (req.system) out.push(msg('system', contentText(req.system), { from: 'request' }));
  for (const m of req.messages || []) out.push(...anthropicBlocks(m.role, m.content, 'request'));
  return out;
}

function anthropicStream(events) {
  let role = 'assistant';
  const blocks = [];
  let usage = null;
  for (const { data } of events) {
    if (!data || typeof data !== 'object') continue;
    switch (data.type) {
      case 'message_start':
        role = data.message?.role || role;
        usage = data.message?.usage || usage;
        break;
      case 'content_block_start':
        blocks[data.index ?? blocks.length] = { ...data.content_block, partial: '' };
        break;
      case 'content_block_delta': {
        const b = blocks[data.index ?? 0] || (blocks[data.index ?? 0] = { type: 'text', text: '', partial: '' });
        const d = data.delta || {};
        if (d.type === 'text_delta') b.text = (b.text || '') + (d.text || '');
        else if (d.type === 'input_json_delta') b.partial += d.partial_json || '';
        else if (d.type === 'thinking_delta') b.thinking = (b.thinking || '') + (d.thinking || '');
        break;
      }
      case 'message_delta':
        if (data.usage) usage = { ...(usage || {}), ...data.usage };
        break;
      case 'error':
        return { messages: [msg('error', data.error?.message || 'stream error', { from: 'response' })], usage };
      default:
        break;
    }
  }
  for (const b of blocks) {
    if (b && b.type === 'tool_use') {
      const parsed = tryJson(b.partial);
      b.input = parsed !== undefined ? parsed : (b.partial || b.input);
    }
  }
  return { messages: anthropicBlocks(role, blocks.filter(Boolean), 'response'), usage };
}

// === Responses API ===

function responsesItems(items, from) {
  const out = [];
  for (const it of items || []) {
    if (typeof it === 'string') {
      out.push(msg('user', it, { from }));
    } else if (it.type === 'function_call' || it.type === 'custom_tool_call') {
      const m = msg('assistant', '', { from });
      m.toolCalls.push({ id: it.call_id || it.id || '', name: it.name || 'tool', args: it.arguments ?? it.input ?? '' });
      out.push(m);
    } else if (it.type === 'function_call_output' || it.type === 'custom_tool_call_output') {
      out.push(msg('tool', contentText(it.output), { from, toolCallId: it.call_id || null }));
    } else if (it.type === 'reasoning') {
      const t = (it.summary || []).map((s) => s.text || '').join('\n');
      out.push(msg('assistant', '', { from, reasoning: t || '[reasoning]' }));
    } else if (it.role || it.type === 'message') {
      out.push(msg(it.role || 'assistant', contentText(it.content), { from }));
    } else if (it.type) {
      out.push(msg('assistant', `[${it.type}]`, { from }));
    }
  }
  return out;
}

function responsesRequest(req) {
  const out = [];
  if (req.instructions) out.push(msg('system', contentText(req.instructions), { from: 'request' }));
  if (typeof req.input === 'string') out.push(msg('user', req.input, { from: 'request' }));
  else out.push(...responsesItems(req.input, 'request'));
  return out;
}

function responsesStream(events) {
  let final = null;
  let text = '';
  const done = [];
  for (const { data } of events) {
    if (!data || typeof data !== 'object') continue;
    const t = data.type || '';
    if ((t === 'response.completed' || t === 'response.incomplete' || t === 'response.failed' || t === 'response.done') && data.response) final = data.response;
    else if (t === 'response.output_text.delta') text += data.delta || '';
    else if (t === 'response.output_item.done' && data.item) done.push(data.item);
    else if (t === 'error') return { messages: [msg('error', data.message || data.error?.message || 'stream error', { from: 'response' })] };
  }
  if (final && Array.isArray(final.output) && final.output.length) return { messages: responsesItems(final.output, 'response'), usage: final.usage };
  if (done.length) return { messages: responsesItems(done, 'response') };
  return { messages: text ? [msg('assistant', text, { from: 'response' })] : [] };
}

// === dispatch ===

/** The format of a request body: 'anthropic' | 'responses' | 'chat' | 'completions' | 'embeddings' | null. */
function requestFormat(req, path) {
  if (!req || typeof req !== 'object') return null;
  if (/\/responses\b/.test(path || '') || (req.input !== undefined && !req.messages && !/embeddings/.test(path || ''))) {
    return /embeddings/.test(path || '') ? 'embeddings' : 'responses';
  }
  if (/\/messages\b/.test(path || '') || (req.messages && (req.system !== undefined || req.max_tokens !== undefined) && !/chat\/completions/.test(path || ''))) return 'anthropic';
  if (req.messages) return 'chat';
  if (req.prompt !== undefined) return 'completions';
  if (req.input !== undefined) return 'embeddings';
  return null;
}

function requestMessages(req, format) {
  switch (format) {
    case 'anthropic': return anthropicRequest(req);
    case 'responses': return responsesRequest(req);
    case 'chat': return (req.messages || []).map((m) => chatMessage(m, 'request'));
    case 'completions': return [msg('user', contentText(Array.isArray(req.prompt) ? req.prompt.join('\n') : req.prompt), { from: 'request' })];
    case 'embeddings': return [msg('user', Array.isArray(req.input) ? req.input.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join('\n') : String(req.input), { from: 'request' })];
    default: return [];
  }
}

function responseMessages(text, format) {
  if (looksLikeSse(text)) {
    const events = parseSse(text);
    const types = events.map((e) => e.data?.type || e.event || '');
    if (format === 'anthropic' || types.some((t) => t === 'message_start' || t === 'content_block_delta')) return anthropicStream(events).messages;
    if (format === 'responses' || types.some((t) => t.startsWith('response.'))) return responsesStream(events).messages;
    return chatStream(events).messages;
  }
  const res = tryJson(text);
  if (res === undefined) return text ? [msg('assistant', text, { from: 'response', raw: true })] : [];
  if (res.error) return [msg('error', res.error.message || JSON.stringify(res.error), { from: 'response' })];
  if (res.type === 'error') return [msg('error', res.error?.message || 'error', { from: 'response' })];
  if (res.type === 'message' && Array.isArray(res.content)) return anthropicBlocks(res.role || 'assistant', res.content, 'response');
  if (res.object === 'response' || Array.isArray(res.output)) return responsesItems(res.output, 'response');
  if (Array.isArray(res.choices)) {
    return res.choices.map((c) => (c.message ? chatMessage(c.message, 'response') : msg('assistant', c.text || '', { from: 'response' })));
  }
  if (Array.isArray(res.data) && res.object === 'list') return [msg('assistant', `[${res.data.length} embedding${res.data.length === 1 ? '' : 's'}]`, { from: 'response' })];
  return [];
}

/**
 * The conversation of a span: the request's messages then the response's.
 * `span` needs request_body, response_body, path and operation_type.
 */
export function conversation(span) {
  if (span.operation_type === 'tool_call') {
    const out = [];
    if (span.request_body) out.push(msg('assistant', '', { from: 'request', toolCalls: [{ id: '', name: span.name.replace(/^execute_tool /, ''), args: span.request_body }] }));
    if (span.response_body) out.push(msg('tool', span.response_body, { from: 'response' }));
    return { format: 'tool', messages: out };
  }
  const req = tryJson(span.request_body);
  const format = requestFormat(req, span.path);
  const messages = [...requestMessages(req, format)];
  if (span.response_body) messages.push(...responseMessages(span.response_body, format));
  return { format, messages };
}
