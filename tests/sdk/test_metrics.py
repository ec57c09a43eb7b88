"""`/metrics` read by a real Prometheus exposition parser (prometheus_client),
after traffic sent with the official OpenAI SDK."""

from __future__ import annotations

import urllib.request

from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

MODEL = "metrics-probe-model"


def scrape(stack) -> dict:
    with urllib.request.urlopen(f"{stack.admin_url}/metrics", timeout=5) as r:
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    # The parser raises on anything that is not valid exposition format.
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, **labels):
    return [
        s for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_metrics_parse_and_count_this_traffic(stack, tap):
    client = OpenAI(base_url=stack.openai_base, api_key="sk-test-metrics", max_retries=0, timeout=10)
    for _ in range(3):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "count me"}],
            extra_headers={"x-mock-words": "5"},
        )
    # Spans are counted when they are finished; wait until the writer has them.
    rows = tap.new_spans(3)
    assert [r["model"] for r in rows] == [MODEL] * 3
    families = scrape(stack)

    # prometheus_client strips the _total suffix from counter family names.
    requests = families["llmtap_requests"]
    assert requests.type == "counter"
    done = samples(requests, gen_ai_request_model=MODEL, status="completed")
    assert [s.value for s in done] == [3.0]

    duration = families["gen_ai_client_operation_duration_seconds"]
    assert duration.type == "histogram"
    count = samples(duration, gen_ai_request_model=MODEL)
    by_name = {s.name: s.value for s in count if "le" not in s.labels}
    assert by_name["gen_ai_client_operation_duration_seconds_count"] == 3.0
    buckets = [s for s in count if s.name.endswith("_bucket")]
    values = [s.value for s in buckets]
    assert values == sorted(values), "buckets are cumulative"
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 3.0

    tokens = families["gen_ai_client_token_usage"]
    out = samples(tokens, gen_ai_request_model=MODEL, gen_ai_token_type="output")
    total = {s.name: s.value for s in out if "le" not in s.labels}
    assert total["gen_ai_client_token_usage_sum"] == 15.0

    # The model has no price: counted.
    assert families["llmtap_unknown_price"].samples[0].value >= 3.0
    assert families["llmtap_spans_dropped"].samples[0].value == 0.0
