"""API keys travel to the upstream but never into a span row."""

from __future__ import annotations

from anthropic import Anthropic
from openai import OpenAI

OPENAI_KEY = "sk-test-LEAKCANARY-openai-7f3a9c1e5d2b"
ANTHROPIC_KEY = "sk-ant-test-LEAKCANARY-anthropic-4e8b0a6f"


def test_api_keys_never_stored(stack, tap):
    oai = OpenAI(base_url=stack.openai_base, api_key=OPENAI_KEY, max_retries=0, timeout=10)
    ant = Anthropic(base_url=stack.anthropic_base, api_key=ANTHROPIC_KEY, max_retries=0, timeout=10)
    try:
        msgs = [{"role": "user", "content": "Hi"}]
        oai.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        stream = oai.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True)
        for _ in stream:
            pass
        oai.embeddings.create(model="text-embedding-3-small", input="hi")
        ant.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=msgs)
        with ant.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=msgs) as s:
            s.get_final_message()
    finally:
        oai.close()
        ant.close()
    new = tap.new_spans(5)
    # Every column of every row in the store, not only this test's.
    rows = stack.wait_spans(tap.before + len(new))
    assert len(rows) >= 5
    for row in rows:
        for col, value in row.items():
            text = str(value)
            assert "LEAKCANARY" not in text, f"key material in column {col!r}: {row}"
            assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
    # The key is identified only by a short salted hash: stable per key,
    # different between keys.
    hashes = [s["api_key_hash"] for s in new]
    assert all(h and len(h) == 16 for h in hashes), hashes
    assert len(set(hashes[:3])) == 1 and len(set(hashes[3:])) == 1, hashes
    assert hashes[0] != hashes[3]
    assert [s["provider"] for s in new] == ["openai"] * 3 + ["anthropic"] * 2
