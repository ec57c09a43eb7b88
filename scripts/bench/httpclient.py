#!/usr/bin/env python3
"""Tiny HTTP/1.1 load client for scripts/bench.sh (standard library only).

Two modes, both print one JSON object on stdout:

  streams  C connections, each sending K requests one after another
           (keep-alive); the connections are opened first, then started
           over a stagger window so that ~C streams are in flight at once.
           Measures per request: time to first body byte (TTFB: from
           writing the request to the first byte after the response headers)
           and total time (to the last byte).

  mixed    open-loop fixed request rate for D seconds over a keep-alive
           connection pool; a mix of streamed / non-streamed chat
           completions, embeddings and upstream errors, every request with a
           unique conversation. Reports achieved rate, latency per kind, and
           requests sent per second.

The response parser is deliberately minimal: status line and headers are
parsed; a chunked body ends at "\\r\\n0\\r\\n\\r\\n" (no chunk extensions or
trailers, which none of the servers under test send); otherwise
Content-Length is honoured. Asyncio Protocols (no streams) keep per-read
cost O(1) so that one Python process can follow 1,000 SSE streams.
"""
import argparse
import asyncio
import json
import random
import socket
import sys
import time

perf = time.perf_counter

BODY_TEMPLATE = (
    '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
    '{"role":"user","content":"%s"}]%s}'
)


def build_request(host, path, headers, body):
    b = body.encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        "Authorization: Bearer sk-bench-0000",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(b)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self):
        self.transport = None
        self.fut = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc):
        self.closed = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection closed mid-response"))

    def request(self, data):
        self.head = b""
        self.in_body = False
        self.t_first = None
        self.body_len = 0
        self.tail = b""
        self.status = 0
        self.fut = asyncio.get_running_loop().create_future()
        self.t_send = perf()
        self.transport.write(data)
        return self.fut

    def data_received(self, data):
        now = perf()
        if self.fut is None or self.fut.done():
            return
        if not self.in_body:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return
            head = self.head[:i].decode("latin-1")
            body = self.head[i + 4:]
            self.head = b""
            lines = head.split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            self.chunked = False
            self.clen = None
            self.close_after = False
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                k = k.strip().lower()
                v = v.strip().lower()
                if k == "transfer-encoding" and "chunked" in v:
                    self.chunked = True
                elif k == "content-length":
                    self.clen = int(v)
                elif k == "connection" and "close" in v:
                    self.close_after = True
            self.in_body = True
            if not self.chunked and self.clen == 0:
                self._finish(now)
                return
            data = body
            if not data:
                return
        if self.t_first is None:
            self.t_first = now
        self.body_len += len(data)
        if self.chunked:
            self.tail = (self.tail + data)[-96:]
            if self.tail.endswith(b"\r\n0\r\n\r\n") or (
                self.body_len == 5 and self.tail == b"0\r\n\r\n"
            ):
                self._finish(now)
        elif self.clen is not None and self.body_len >= self.clen:
            self.tail = (self.tail + data)[-96:]
            self._finish(now)
        else:
            self.tail = (self.tail + data)[-96:]

    def _finish(self, now):
        t_first = self.t_first if self.t_first is not None else now
        self.fut.set_result(
            (self.status, t_first - self.t_send, now - self.t_send, self.tail)
        )


async def connect(host, port):
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(Conn, host, port)
    return proto


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary_ms(xs):
    return {
        "n": len(xs),
        "p50": pct(xs, 50) * 1e3 if xs else None,
        "p90": pct(xs, 90) * 1e3 if xs else None,
        "p99": pct(xs, 99) * 1e3 if xs else None,
        "max": max(xs) * 1e3 if xs else None,
    }


async def run_streams(a):
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    extra = ',"stream":true,"stream_options":{"include_usage":true}' if a.stream else ""
    body = BODY_TEMPLATE % ("Tell me a story.", extra)
    hdrs = {"x-mock-words": str(a.words)}
    if a.delay_ms > 0:
        hdrs["x-mock-delay-ms"] = str(a.delay_ms)
    req = build_request(a.addr, "/v1/chat/completions", hdrs, body)

    # Open every connection first (bounded parallelism), so connect time and
    # listen backlogs stay out of the measurement.
    sem = asyncio.Semaphore(256)
    conn_errors = 0

    async def open_one():
        nonlocal conn_errors
        async with sem:
            for _ in range(3):
                try:
                    return await asyncio.wait_for(connect(host, port), 10)
                except (OSError, asyncio.TimeoutError):
                    await asyncio.sleep(0.05)
            conn_errors += 1
            return None

    t_c0 = perf()
    conns = [c for c in await asyncio.gather(*(open_one() for _ in range(a.conns))) if c]
    connect_s = perf() - t_c0

    ttfb, total = [], []
    errors = {"status": 0, "incomplete": 0, "io": 0, "timeout": 0}
    active = 0
    peak_active = 0

    async def worker(i, c):
        nonlocal active, peak_active
        await asyncio.sleep(a.stagger_ms / 1000.0 * i / max(1, len(conns)))
        for _ in range(a.per_conn):
            if c.closed:
                errors["io"] += 1
                return
            active += 1
            peak_active = max(peak_active, active)
            try:
                status, tf, tt, tail = await asyncio.wait_for(c.request(req), a.timeout)
            except asyncio.TimeoutError:
                errors["timeout"] += 1
                c.transport.close()
                return
            except (OSError, ConnectionError):
                errors["io"] += 1
                return
            finally:
                active -= 1
            if status != 200:
                errors["status"] += 1
            elif a.stream and b"[DONE]" not in tail:
                errors["incomplete"] += 1
            else:
                ttfb.append(tf)
                total.append(tt)

    t0 = perf()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    wall = perf() - t0
    for c in conns:
        c.transport.close()
    return {
        "mode": "streams",
        "conns_requested": a.conns,
        "conns_open": len(conns),
        "connect_errors": conn_errors,
        "connect_s": connect_s,
        "requests_ok": len(ttfb),
        "errors": errors,
        "peak_in_flight": peak_active,
        "wall_s": wall,
        "ttfb_ms": summary_ms(ttfb),
        "total_ms": summary_ms(total),
    }


# (kind, weight, path, headers, body suffix, is_stream)
MIX = [
    ("chat", 45, "/v1/chat/completions", {"x-mock-words": "W"}, "", False),
    ("chat_stream_usage", 25, "/v1/chat/completions",
     {"x-mock-words": "50", "x-mock-delay-ms": "2"},
     ',"stream":true,"stream_options":{"include_usage":true}', True),
    ("chat_stream_estimated", 15, "/v1/chat/completions",
     {"x-mock-words": "50", "x-mock-delay-ms": "2"}, ',"stream":true', True),
    ("embeddings", 10, "/v1/embeddings", {}, None, False),
    ("error_429", 5, "/v1/chat/completions", {"x-mock-scenario": "error:429"}, "", False),
]


async def run_mixed(a):
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    rnd = random.Random(a.seed)
    weights = [m[1] for m in MIX]
    idle = []
    stats = {m[0]: [] for m in MIX}
    errors = {"status": 0, "io": 0, "timeout": 0, "incomplete": 0}
    per_sec = [0] * (int(a.duration) + 1)
    conns_opened = 0
    in_flight = 0
    peak = 0
    run_id = f"{time.time_ns():x}"

    def make(i):
        kind, _, path, hdrs, suffix, is_stream = rnd.choices(MIX, weights)[0]
        hdrs = dict(hdrs)
        if hdrs.get("x-mock-words") == "W":
            hdrs["x-mock-words"] = str(rnd.choice((8, 32, 128)))
        if kind == "embeddings":
            body = '{"model":"text-embedding-3-small","input":"bench %s %d"}' % (run_id, i)
        else:
            body = BODY_TEMPLATE % (f"Question {run_id}-{i}: say something.", suffix)
        return kind, is_stream, build_request(a.addr, path, hdrs, body)

    async def one(i, kind, is_stream, req):
        nonlocal conns_opened, in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            c = None
            while idle:
                c = idle.pop()
                if not c.closed:
                    break
                c = None
            if c is None:
                c = await connect(host, port)
                conns_opened += 1
            try:
                status, tf, tt, tail = await asyncio.wait_for(c.request(req), a.timeout)
            except asyncio.TimeoutError:
                errors["timeout"] += 1
                c.transport.close()
                return
            expected = 429 if kind == "error_429" else 200
            if status != expected:
                errors["status"] += 1
            elif is_stream and b"[DONE]" not in tail:
                errors["incomplete"] += 1
            else:
                stats[kind].append(tt)
            if not c.close_after and not c.closed:
                idle.append(c)
            else:
                c.transport.close()
        except (OSError, ConnectionError):
            errors["io"] += 1
        finally:
            in_flight -= 1

    tasks = set()
    t0 = perf()
    interval = 1.0 / a.rate
    n = int(a.rate * a.duration)
    max_late = 0.0
    for i in range(n):
        due = t0 + i * interval
        now = perf()
        if due > now:
            await asyncio.sleep(due - now)
        else:
            max_late = max(max_late, now - due)
            if i % 64 == 0:
                await asyncio.sleep(0)
        kind, is_stream, req = make(i)
        t = asyncio.ensure_future(one(i, kind, is_stream, req))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        per_sec[min(int(perf() - t0), len(per_sec) - 1)] += 1
    send_s = perf() - t0
    if tasks:
        await asyncio.wait(tasks, timeout=a.timeout + 5)
    for c in idle:
        c.transport.close()
    all_lat = [x for v in stats.values() for x in v]
    ok = len(all_lat)
    return {
        "mode": "mixed",
        "rate_target": a.rate,
        "duration_s": a.duration,
        "sent": n,
        "ok": ok,
        "errors": errors,
        "send_window_s": send_s,
        "rate_achieved": n / send_s,
        "max_late_ms": max_late * 1e3,
        "peak_in_flight": peak,
        "conns_opened": conns_opened,
        "per_kind": {k: {"n": len(v), **summary_ms(v)} for k, v in stats.items()},
        "all_ms": summary_ms(all_lat),
        "sent_per_sec": per_sec[: int(a.duration)],
    }


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("streams")
    s.add_argument("--addr", required=True)
    s.add_argument("--conns", type=int, default=1000)
    s.add_argument("--per-conn", type=int, default=2)
    s.add_argument("--stagger-ms", type=float, default=300)
    s.add_argument("--words", type=int, default=50)
    s.add_argument("--delay-ms", type=int, default=5)
    s.add_argument("--no-stream", dest="stream", action="store_false")
    s.add_argument("--timeout", type=float, default=30)
    m = sub.add_parser("mixed")
    m.add_argument("--addr", required=True)
    m.add_argument("--rate", type=float, default=300)
    m.add_argument("--duration", type=float, default=60)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    res = asyncio.run(run_streams(a) if a.mode == "streams" else run_mixed(a))
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
