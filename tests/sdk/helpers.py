"""Expected values and span assertions shared by the SDK tests."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

PRICING = Path(__file__).resolve().parents[2] / "config/pricing.toml"

_PRICES = tomllib.loads(PRICING.read_text())["models"]


def expected_cost(
    price_key: str,
    input: int = 0,
    output: int = 0,
    cached: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
) -> float:
    """USD for the token counts at config/pricing.toml's price of `price_key`
    (per million tokens; uncached input = input - cache reads - cache writes)."""
    p = _PRICES[price_key]
    uncached = max(input - cached - cache_write, 0)
    micro = (
        uncached * p["input"]
        + cached * p.get("cached_input", p["input"])
        + cache_write * p.get("cache_write", p["input"])
        + max(output - reasoning, 0) * p["output"]
        + reasoning * p.get("reasoning", p["output"])
    )
    return micro / 1e6


def assert_fields(span: dict, want: dict) -> None:
    for k, v in want.items():
        assert k in span, f"no column {k!r}"
        assert span[k] == v, f"span field {k!r}: {span[k]!r} != {v!r}\nspan: {span}"


def assert_cost(span: dict, want: float | None) -> None:
    if want is None:
        assert span["cost_usd"] is None, span
    else:
        assert span["cost_usd"] is not None, f"no cost: {span}"
        assert want > 0
        assert span["cost_usd"] == pytest.approx(want, rel=1e-9, abs=1e-15), span


def assert_ttft(span: dict, expected: bool) -> None:
    if expected:
        assert span["ttft_ms"] is not None, span
        assert 0 < span["ttft_ms"] <= span["duration_ms"], span
    else:
        assert span["ttft_ms"] is None, span
