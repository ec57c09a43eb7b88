// Real traffic through llmtap to the in-repo mock provider: a chat with
// context headers, a streamed chat (TTFT), a failed request (upstream 500),
// a streamed Anthropic message, a streamed Responses call, and an agent
// loop (LLM asks for a tool, the tool's result comes back: a trace with
// nested LLM + tool spans). Then waits (bounded) until every span is stored.

const SPANS = 8;
const TRACES = 6;

async function post(proxy, path, body, headers = {}) {
  const res = await fetch(`${proxy}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-ui-test', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, text };
}

function expectStatus(got, status, what) {
  if (got.status !== status) throw new Error(`${what}: status ${got.status}, want ${status}: ${got.text.slice(0, 300)}`);
}

export const FACTS = {
  chatId: 'chatcmpl-ui-alpha',
  streamId: 'chatcmpl-ui-stream',
  streamWords: 6,
  failedModel: 'gpt-4o',
  toolName: 'get_weather',
  toolResult: '18 C in Paris',
  userQuestion: 'What is the weather in Paris? (ui loop)',
  spans: SPANS,
  traces: TRACES,
};

export async function generate(proxy) {
  expectStatus(await post(proxy, '/v1/chat/completions', {
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Tell me about alpha.' },
    ],
  }, {
    'x-mock-id': FACTS.chatId,
    'x-llmtap-session-id': 'sess-ui',
    'x-llmtap-user-id': 'user-ui',
    'x-llmtap-conversation-id': 'conv-ui',
    'x-llmtap-property-team': 'search',
  }), 200, 'chat');

  expectStatus(await post(proxy, '/v1/chat/completions', {
    model: 'gpt-4o-mini',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Stream a short answer.' }],
  }, { 'x-mock-id': FACTS.streamId, 'x-mock-delay-ms': '25', 'x-mock-words': String(FACTS.streamWords) }), 200, 'stream');

  expectStatus(await post(proxy, '/v1/chat/completions', {
    model: FACTS.failedModel,
    messages: [{ role: 'user', content: 'This one fails.' }],
  }, { 'x-mock-scenario': 'error:500' }), 500, 'failed');

  expectStatus(await post(proxy, '/anthropic/v1/messages', {
    model: 'claude-3-5-haiku-latest',
    max_tokens: 64,
    stream: true,
    system: 'Be brief.',
    messages: [{ role: 'user', content: 'Hi, Claude.' }],
  }, { 'x-api-key': 'sk-ant-ui', 'anthropic-version': '2023-06-01' }), 200, 'anthropic');

  expectStatus(await post(proxy, '/v1/responses', {
    model: 'gpt-4o-mini',
    stream: true,
    instructions: 'Answer in one line.',
    input: 'What is llmtap?',
  }), 200, 'responses');

  // The agent loop: the model asks for a tool; the next request carries
  // the assistant's tool call and the tool's result.
  const messages = [{ role: 'user', content: FACTS.userQuestion }];
  const first = await post(proxy, '/v1/chat/completions', { model: 'gpt-4o-mini', messages },
    { 'x-mock-tool-call': FACTS.toolName, 'x-mock-call-id': 'call_ui_1' });
  expectStatus(first, 200, 'agent turn 1');
  messages.push(JSON.parse(first.text).choices[0].message);
  await new Promise((r) => setTimeout(r, 40));
  messages.push({ role: 'tool', tool_call_id: 'call_ui_1', content: FACTS.toolResult });
  expectStatus(await post(proxy, '/v1/chat/completions', { model: 'gpt-4o-mini', messages }), 200, 'agent turn 2');
}

/** Waits (at most `timeoutMs`) until the export holds `SPANS` spans. */
export async function waitForSpans(admin, token, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let n = -1;
  while (Date.now() < deadline) {
    const res = await fetch(`${admin}/api/export?format=json&bodies=false`, { headers: { authorization: `Bearer ${token}` } });
    if (res.ok) {
      n = (await res.json()).length;
      if (n >= SPANS) return n;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`only ${n} of ${SPANS} spans stored within ${timeoutMs} ms`);
}
