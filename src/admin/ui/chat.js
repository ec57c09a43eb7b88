// The conversation of a span, as the admin API answers it: `messages:
// {input, output}` in the GenAI parts format, read from the captured bodies
// by llmtap's own format parsers (the ones the OTLP export uses; this file
// parses no body). Pure: API messages in, chat messages out — {role, text,
// reasoning, toolCalls: [{id, name, args}], toolCallId, name, isError,
// from: 'request' | 'response'}.

const PLACEHOLDERS = {
  image_url: '[image]', image: '[image]', input_image: '[image]',
  input_audio: '[audio]', audio: '[audio]',
  file: '[file]', input_file: '[file]', document: '[file]',
};

/** Text of a tool result's value: a string, parts/blocks, or JSON. */
function valueText(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) return typeof v === 'object' && v.text ? String(v.text) : JSON.stringify(v);
  return v.map((p) => {
    if (typeof p === 'string') return p;
    if (p && p.type in PLACEHOLDERS) return PLACEHOLDERS[p.type];
    return p && p.text ? String(p.text) : '';
  }).filter(Boolean).join('\n');
}

const blank = (role, from, extra = {}) => ({ role, text: '', toolCalls: [], toolCallId: null, name: null, from, ...extra });

/**
 * One API message as chat messages: the message itself (text, reasoning,
 * tool calls), then one `tool` message per tool result it carries.
 */
function chatMessages(m, from) {
  const main = blank(m.role || 'assistant', from, { name: m.name || null });
  const results = [];
  const texts = [];
  const reasoning = [];
  for (const p of m.parts || []) {
    switch (p.type) {
      case 'text':
        texts.push(p.content || '');
        break;
      case 'refusal':
        texts.push(`[refusal] ${p.content || ''}`);
        break;
      case 'reasoning': case 'thinking':
        reasoning.push(p.content || '');
        break;
      case 'redacted_thinking':
        reasoning.push('[redacted thinking]');
        break;
      case 'tool_call':
        main.toolCalls.push({ id: p.id || '', name: p.name || 'tool', args: p.arguments ?? '' });
        break;
      case 'tool_call_response':
        results.push(blank('tool', from, { text: valueText(p.response), toolCallId: p.id || null, isError: !!p.is_error, name: main.name }));
        break;
      default:
        texts.push(PLACEHOLDERS[p.type] || p.content || '');
    }
  }
  main.text = texts.filter(Boolean).join('\n');
  const r = reasoning.filter(Boolean).join('\n');
  if (r) main.reasoning = r;
  const shown = main.text || main.toolCalls.length || main.reasoning || !results.length;
  return shown ? [main, ...results] : results;
}

/** The conversation of a span: the request's messages then the response's. */
export function conversation(span) {
  const m = span.messages || {};
  return {
    messages: [
      ...(m.input || []).flatMap((x) => chatMessages(x, 'request')),
      ...(m.output || []).flatMap((x) => chatMessages(x, 'response')),
    ],
  };
}
