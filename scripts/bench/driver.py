#!/usr/bin/env python3
"""Measurement driver for scripts/bench.sh (standard library only).

bench.sh starts the servers (mock provider, llmtap, nginx) and calls this
with their addresses and PIDs. This runs every case, alternating targets
and rotating their order each round, and writes one Markdown results file
into --runs-dir, named by the run's UTC time and commit
(YYYY-MM-DDTHHMMZ-<git describe>.md, e.g. 2026-12-07T1803Z-9ee1e44.md),
then prints that file's path on stdout (the only thing printed there).
Progress goes to stderr. scripts/bench/summary.py then rebuilds the summary
in BENCHMARKS.md from the runs folder.

Every external command is bounded: wrk by -d (and a subprocess timeout),
the Python load client by its own timeouts (and a subprocess timeout).
"""
import argparse
import json
import os
import platform
import re
import shlex
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "httpclient.py")
LUA = os.path.join(HERE, "chat.lua")
TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc

def children(pid):
    """PIDs whose parent is `pid` (nginx workers)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0
    fields = s[s.rfind(")") + 2:].split()
    # fields[0] is field 3 (state); utime/stime are fields 14/15.
    return int(fields[11]) + int(fields[12])


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return 0


def clear_hwm(pid):
    """Reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Proc:
    """A server under test: a PID plus, for nginx, its worker processes."""

    def __init__(self, name, pid, with_children=False):
        self.name = name
        self.pid = pid
        self.with_children = with_children

    def pids(self):
        return [self.pid] + (children(self.pid) if self.with_children else [])

    def cpu(self):
        return sum(cpu_ticks(p) for p in self.pids())

    def rss_kb(self):
        return sum(status_kb(p, "VmRSS") for p in self.pids())

    def hwm_kb(self):
        return sum(status_kb(p, "VmHWM") for p in self.pids())

    def clear_hwm(self):
        return all([clear_hwm(p) for p in self.pids()])


class RssSampler:
    """Samples a Proc's RSS every `period` s in a thread; keeps the max."""

    def __init__(self, proc, period=0.05):
        self.proc, self.period = proc, period
        self.max_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.max_kb = max(self.max_kb, self.proc.rss_kb())
            self._stop.wait(self.period)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(2)
        self.max_kb = max(self.max_kb, self.proc.rss_kb())


# ---------------------------------------------------------------- helpers

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=2, unit=""):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}{unit}"


def ratio(a, b):
    return a / b if a is not None and b else None


def sign(x, nd=3):
    if x is None:
        return "–"
    return f"{x:+.{nd}f}"


def ok(cond):
    if cond is None:
        return "n/a"
    return "**met**" if cond else "**NOT met**"


def rotate(xs, r):
    r %= len(xs)
    return xs[r:] + xs[:r]


def run_wrk(url, conns, secs, threads=1):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency",
           "-s", LUA, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30)
    m = re.search(r"^WRKJSON (\{.*\})$", p.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no result: {p.stdout}\n{p.stderr}")
    return json.loads(m.group(1))


def run_client(args, timeout):
    cmd = [sys.executable, CLIENT] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"client failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def count_spans(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("select count(*) from spans").fetchone()[0]
    finally:
        con.close()


def drain(db, expected, limit=60.0):
    """Waits (bounded) until the store holds `expected` span rows, then until
    the count is stable for 1.2 s (spans of requests wrk cut off at the end
    of a run arrive too). Returns (backlog at call, seconds to catch up,
    final row count)."""
    t0 = time.time()
    n = count_spans(db)
    backlog = max(0, expected - n)
    while n < expected and time.time() - t0 < limit:
        time.sleep(0.1)
        n = count_spans(db)
    caught = time.time() - t0
    last, since = n, time.time()
    while time.time() - since < 1.2 and time.time() - t0 < limit:
        time.sleep(0.2)
        n = count_spans(db)
        if n != last:
            last, since = n, time.time()
    return backlog, caught, n


def sh(cmd):
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except Exception as e:  # noqa: BLE001
        return f"({e})"


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mock", required=True)
    ap.add_argument("--llmtap", required=True)
    ap.add_argument("--nginx", required=True)
    ap.add_argument("--mock-pid", type=int, required=True)
    ap.add_argument("--llmtap-pid", type=int, required=True)
    ap.add_argument("--nginx-pid", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--runs-dir", required=True,
                    help="folder the run's own file is written to (docs/benchmarks/runs)")
    ap.add_argument("--llmtap-config", required=True)
    ap.add_argument("--nginx-workers", required=True)
    ap.add_argument("--nofile", required=True)
    ap.add_argument("--cmdline", required=True)
    ap.add_argument("--idle-rss-kb", type=int, default=0)
    ap.add_argument("--plain", default=None,
                    help="llmtap with ENABLE_TRACING=false (case 1 only)")
    ap.add_argument("--plain-pid", type=int, default=0)
    ap.add_argument("--bare", default=None,
                    help="examples/bare_proxy: a hyper proxy doing nothing else (case 1 only)")
    ap.add_argument("--bare-pid", type=int, default=0)
    a = ap.parse_args()

    quick = a.quick
    rounds = 1 if quick else 3
    secs = 3 if quick else 5
    stream_conns = int(os.environ.get("BENCH_STREAMS", "1000"))
    stream_delays = [int(x) for x in os.environ.get("BENCH_STREAM_DELAYS", "5,20").split(",")]
    mixed_secs = 20 if quick else 60
    mixed_rate = float(os.environ.get("BENCH_MIXED_RATE", "400"))
    solo_streams = 300

    t_start = time.time()
    mock = Proc("mock", a.mock_pid)
    llm = Proc("llmtap", a.llmtap_pid)
    ngx = Proc("nginx", a.nginx_pid, with_children=True)
    targets = [
        ("direct", a.mock, None),
        ("llmtap", a.llmtap, llm),
        ("nginx", a.nginx, ngx),
    ]
    # Case 1 also measures llmtap as a plain proxy (tracing off), when given.
    case1_targets = list(targets)
    if a.plain:
        case1_targets.append(("llmtap, tracing off", a.plain, Proc("plain", a.plain_pid)))
    if a.bare:
        case1_targets.append(("bare hyper proxy", a.bare, Proc("bare", a.bare_pid)))
    load_before = open("/proc/loadavg").read().split()[:3]

    # Case 2 runs first, on a fresh llmtap, so the peak RSS of the
    # 1,000-stream runs is not inflated by what case 1 left behind.
    timeline = [("idle after start", a.idle_rss_kb)]
    rows = count_spans(a.db)
    # ---------------- case 2a: solo TTFB (c=1)
    log("case 2: solo TTFB")
    solo = {name: [] for name, _, _ in targets}
    for r in range(rounds):
        for name, addr, _ in rotate(targets, r):
            res = run_client(["streams", "--addr", addr, "--conns", 1, "--per-conn",
                              solo_streams, "--stagger-ms", 0, "--words", 50,
                              "--delay-ms", 0], timeout=120)
            solo[name].append(res)
            if name == "llmtap":
                rows = drain(a.db, rows + res["requests_ok"])[2]
            log(f"  solo round {r + 1} {name}: ttfb p50 {res['ttfb_ms']['p50']:.3f} ms")

    # ---------------- case 2b: c=1000 streams
    case2 = {}
    for delay in stream_delays:
        res = {name: [] for name, _, _ in targets}
        for r in range(rounds):
            for name, addr, proc in rotate(targets, r):
                rss_before = proc.rss_kb() if proc else None
                reset = proc.clear_hwm() if proc else False
                p0 = proc.cpu() if proc else 0
                if proc:
                    with RssSampler(proc) as s:
                        out = run_client(["streams", "--addr", addr, "--conns", stream_conns,
                                          "--per-conn", 2, "--stagger-ms", 300, "--words", 50,
                                          "--delay-ms", delay], timeout=300)
                    out["rss_peak_kb"] = max(s.max_kb, proc.hwm_kb() if reset else 0)
                    out["hwm_reset"] = reset
                else:
                    out = run_client(["streams", "--addr", addr, "--conns", stream_conns,
                                      "--per-conn", 2, "--stagger-ms", 300, "--words", 50,
                                      "--delay-ms", delay], timeout=300)
                    out["rss_peak_kb"] = None
                out["rss_before_kb"] = rss_before
                if proc is llm:
                    timeline.append((f"{stream_conns} streams delay {delay} round {r + 1}: "
                                     "before / peak", (rss_before, out["rss_peak_kb"])))
                    rows = drain(a.db, rows + out["requests_ok"])[2]
                p1 = proc.cpu() if proc else 0
                out["proxy_cpu_ms"] = ((p1 - p0) / TCK * 1000 / max(1, out["requests_ok"])
                                       if proc else None)
                res[name].append(out)
                log(f"  streams delay={delay} round {r + 1} {name}: ok {out['requests_ok']} "
                    f"ttfb p50 {out['ttfb_ms']['p50']} ms rss {out['rss_peak_kb']}")
                time.sleep(0.5)  # let closed sockets and timers settle
        case2[delay] = res

    # ---------------- case 1: non-streamed chat completions (wrk)
    case1 = {}
    concs = [1, 32, 256]
    for c in concs:
        log(f"case 1: c={c}: warm-up")
        for name, addr, _ in case1_targets:
            wu = run_wrk(f"http://{addr}/v1/chat/completions", c, 1)
            if name == "llmtap":
                rows += wu["requests"]
        rows = drain(a.db, rows)[2]
        res = {name: [] for name, _, _ in case1_targets}
        for r in range(rounds):
            for name, addr, proc in rotate(case1_targets, r):
                m0, p0 = mock.cpu(), proc.cpu() if proc else 0
                w = run_wrk(f"http://{addr}/v1/chat/completions", c, secs)
                m1, p1 = mock.cpu(), proc.cpu() if proc else 0
                n = max(1, w["requests"])
                if proc is llm:
                    # The span writer may still be behind: wait for it, and
                    # count the CPU it spends catching up.
                    w["rss_end_kb"] = llm.rss_kb()
                    w["backlog"], w["drain_s"], rows = drain(a.db, rows + w["requests"])
                    w["proxy_cpu_run_ms"] = (p1 - p0) / TCK * 1000 / n
                    p1 = proc.cpu()
                w["rps"] = w["requests"] / (w["duration_us"] / 1e6)
                w["proxy_cpu_ms"] = (p1 - p0) / TCK * 1000 / n if proc else None
                w["mock_cpu_ms"] = (m1 - m0) / TCK * 1000 / n
                w["errors"] = sum(w[k] for k in w if k.startswith("err_"))
                res[name].append(w)
                if proc is llm:
                    timeline.append((f"after wrk c={c} round {r + 1}", w["rss_end_kb"]))
                log(f"  c={c} round {r + 1} {name}: {w['rps']:,.0f} req/s "
                    f"p50 {w['p50_us']} us p99 {w['p99_us']} us errors {w['errors']}")
        case1[c] = res

    def c1(c, name, key):
        return med([w[key] for w in case1[c][name]])

    # ---------------- case 3: mixed fixed-rate run through llmtap
    log("case 3: mixed run; waiting 2 s for the batcher before counting spans")
    time.sleep(2)
    spans_before = count_spans(a.db)
    samples = []
    box = {}

    def client():
        box["res"] = run_client(["mixed", "--addr", a.llmtap, "--rate", mixed_rate,
                                 "--duration", mixed_secs], timeout=mixed_secs + 120)

    th = threading.Thread(target=client)
    t0 = time.time()
    prev = llm.cpu()
    rss0 = llm.rss_kb()
    th.start()
    # Sample once a second while the client runs (bounded by its timeout).
    deadline = t0 + mixed_secs + 120
    prev_t = t0
    while th.is_alive() and time.time() < deadline:
        th.join(1.0)
        now_cpu, now_t = llm.cpu(), time.time()
        if now_t - prev_t < 0.5:
            break  # the client ended just now: skip a partial interval
        samples.append((now_t - t0, llm.rss_kb(), (now_cpu - prev) / TCK * 100 / (now_t - prev_t)))
        prev, prev_t = now_cpu, now_t
    th.join(5)
    mixed = box.get("res")
    time.sleep(2)  # the batcher writes at least every batch_interval_ms (1 s)
    spans_after = count_spans(a.db)
    spans_new = spans_after - spans_before
    log(f"  mixed: sent {mixed['sent']} ok {mixed['ok']} spans {spans_new}")

    elapsed = time.time() - t_start
    load_after = open("/proc/loadavg").read().split()[:3]

    # ---------------------------------------------------------- report
    L = []
    w = L.append
    label = "Quick run (`--quick`)" if quick else "Full run"
    now = time.gmtime()
    w(f"# {label}: {time.strftime('%Y-%m-%d %H:%M UTC', now)}\n")

    cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem_kb = status_like("/proc/meminfo", "MemTotal")
    w("**Machine.** " + f"{os.cpu_count()} CPUs (`nproc` = {sh('nproc')}), {cpu_model}, "
      f"{mem_kb / 1024 / 1024:.1f} GiB RAM, Linux {platform.release()}; "
      f"load average before/after: {' '.join(load_before)} / {' '.join(load_after)}. "
      "Every process (load generator, mock provider, proxy) shares the same "
      "cores over loopback.\n")
    commit = sh("git -C " + shlex.quote(os.path.dirname(os.path.dirname(HERE)))
                + " describe --always --dirty 2>/dev/null || echo unknown")
    commit = re.sub(r"[^A-Za-z0-9._-]", "_", commit) or "unknown"
    w("**Versions.** " + "; ".join([
        sh("wrk -v 2>&1 | head -1 | cut -d' ' -f1,2"),
        sh("nginx -v 2>&1"),
        "Python " + platform.python_version(),
        sh("rustc --version"),
        "llmtap " + commit,
    ]) + ".\n")
    w(f"**Command.** `{a.cmdline}` — {rounds} round(s), wrk runs of {secs} s, "
      f"targets alternated and their order rotated each round; figures are medians "
      f"over rounds, *added* = median(proxy) − median(direct). Run order: case 2 "
      f"(on a fresh llmtap), case 1, case 3; after every llmtap run the harness waits "
      f"until all its spans are in SQLite before the next run. Total time of the "
      f"measurements: {elapsed / 60:.1f} min. Open files limit: {a.nofile}.\n")
    w("**Set-up.** mock provider `" + a.mock + "` (tokio, 2 worker threads); llmtap `"
      + a.llmtap + "` with tracing on (defaults: batch_size 10, batch_interval_ms 1000, "
      "capture_bodies true, stitching on; SQLite in a temp dir); nginx `" + a.nginx
      + f"` with `worker_processes auto` (= {a.nginx_workers} here), `proxy_buffering off`, "
      "`proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, upstream "
      "`keepalive 64`, `keepalive_requests 100000`, `access_log off`. llmtap idle RSS "
      f"after start: {a.idle_rss_kb / 1024:.1f} MB."
      + (" Case 1 also runs llmtap with `ENABLE_TRACING=false`." if a.plain else "")
      + (" *bare hyper proxy* is `examples/bare_proxy.rs`: hyper's HTTP/1 server and "
         "hyper-util's pooled client (the crates llmtap forwards with) and nothing else, "
         "so its CPU per request is the floor under any hyper-based proxy." if a.bare else "")
      + "\n")

    # verdicts
    r32 = ratio(c1(32, "llmtap", "rps"), c1(32, "nginx", "rps"))
    r256 = ratio(c1(256, "llmtap", "rps"), c1(256, "nginx", "rps"))
    r1 = ratio(c1(1, "llmtap", "rps"), c1(1, "nginx", "rps"))
    cpu32 = c1(32, "llmtap", "proxy_cpu_ms")
    cpu256 = c1(256, "llmtap", "proxy_cpu_ms")
    add_solo_p50 = (c1(1, "llmtap", "p50_us") - c1(1, "direct", "p50_us")) / 1000
    add32_p99 = (c1(32, "llmtap", "p99_us") - c1(32, "direct", "p99_us")) / 1000

    def solo_m(name, key, p):
        return med([x[key][p] for x in solo[name]])

    add_ttfb = solo_m("llmtap", "ttfb_ms", "p50") - solo_m("direct", "ttfb_ms", "p50")
    rss_peak_mb = max(x["rss_peak_kb"] for d in case2.values() for x in d["llmtap"]) / 1024
    all_ok_streams = all(x["requests_ok"] == 2 * stream_conns
                         for d in case2.values() for x in d["llmtap"])
    # RSS flatness: after a 5 s warm-up, compare the first and last 10 s means
    # and fit a line through every sample.
    steady = [s for s in samples if s[0] >= 5]
    flat = None
    slope = growth = None
    if len(steady) >= 10:
        k = min(10, len(steady) // 2)
        first = statistics.mean(s[1] for s in steady[:k]) / 1024
        last = statistics.mean(s[1] for s in steady[-k:]) / 1024
        growth = last - first
        xs = [s[0] for s in steady]
        ys = [s[1] / 1024 for s in steady]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs) * 60
        flat = abs(growth) <= max(2.0, 0.05 * first)
    lost = mixed["sent"] - spans_new

    w("## Targets\n")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    w(f"| throughput ≥ 1.0× nginx while tracing every request | c=1: {fmt(r1)}×, c=32: "
      f"{fmt(r32)}×, c=256: {fmt(r256)}× | {ok(min(r32, r256) >= 1.0)} |")
    w(f"| proxy CPU per request ≤ 0.03 ms | c=32: {fmt(cpu32, 4)} ms, c=256: "
      f"{fmt(cpu256, 4)} ms (c=1: {fmt(c1(1, 'llmtap', 'proxy_cpu_ms'), 4)} ms) | "
      f"{ok(max(cpu32, cpu256) <= 0.03)} |")
    w(f"| added latency, solo (c=1) p50 ≤ 0.1 ms | {sign(add_solo_p50)} ms | {ok(add_solo_p50 <= 0.1)} |")
    w(f"| added latency, c=32 p99 ≤ 1 ms | {sign(add32_p99)} ms | {ok(add32_p99 <= 1.0)} |")
    w(f"| streaming added TTFB ≤ 0.2 ms (solo, p50) | {sign(add_ttfb)} ms | {ok(add_ttfb <= 0.2)} |")
    w(f"| {stream_conns:,} concurrent streams, RSS ≤ 100 MB | peak {fmt(rss_peak_mb, 1)} MB, "
      f"all streams complete: {'yes' if all_ok_streams else 'NO'} | "
      f"{ok(rss_peak_mb <= 100 and all_ok_streams)} |")
    w(f"| RSS flat over the mixed run | {sign(growth, 1)} MB first→last 10 s, slope "
      f"{sign(slope, 2)} MB/min | {ok(flat)} |")
    w(f"| 0 spans lost | {spans_new:,} spans for {mixed['sent']:,} requests sent → "
      f"{lost:,} lost | {ok(lost == 0)} |")
    w("")

    # case 1
    w("## 1. Non-streamed chat completions (wrk, 8-word replies)\n")
    w(f"`wrk -t1 -c{{1,32,256}} -d{secs}s --latency -s scripts/bench/chat.lua "
      "http://ADDR/v1/chat/completions` (POST, 118-byte body). CPU per request = "
      "(utime+stime of the process from /proc/PID/stat, after − before) ÷ completed "
      "requests; for nginx the master plus its workers.\n")
    for c in concs:
        w(f"**c = {c}**\n")
        w("| target | req/s | × direct | × nginx | p50 ms | p99 ms | added p50 ms | "
          "added p99 ms | proxy CPU ms/req | mock CPU ms/req | errors |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        d_rps, n_rps = c1(c, "direct", "rps"), c1(c, "nginx", "rps")
        d50, d99 = c1(c, "direct", "p50_us"), c1(c, "direct", "p99_us")
        for name, _, proc in case1_targets:
            rps = c1(c, name, "rps")
            p50, p99 = c1(c, name, "p50_us"), c1(c, name, "p99_us")
            errs = sum(x["errors"] for x in case1[c][name])
            w(f"| {name} | {fmt(rps, 0)} | {fmt(ratio(rps, d_rps))} | {fmt(ratio(rps, n_rps))} | "
              f"{fmt(p50 / 1000, 3)} | {fmt(p99 / 1000, 3)} | "
              f"{'–' if name == 'direct' else sign((p50 - d50) / 1000)} | "
              f"{'–' if name == 'direct' else sign((p99 - d99) / 1000)} | "
              f"{fmt(c1(c, name, 'proxy_cpu_ms'), 4)} | {fmt(c1(c, name, 'mock_cpu_ms'), 4)} | {errs} |")
        w("")
    w("llmtap's span writer after each run (medians): spans still queued when wrk "
      "stopped, seconds until all were in SQLite, and llmtap CPU per request counted "
      "during the run only vs. including that catch-up (the CPU column above includes it). "
      "While the writer is behind, the queued spans (with their captured bodies) are "
      "held in memory, up to `queue_max_bytes` (64 MiB).\n")
    w("| c | llmtap req/s | spans queued at run end | catch-up s | CPU ms/req during run | CPU ms/req incl. catch-up | RSS at run end MB |")
    w("|---:|---:|---:|---:|---:|---:|---:|")
    for c in concs:
        w(f"| {c} | {fmt(c1(c, 'llmtap', 'rps'), 0)} | {fmt(c1(c, 'llmtap', 'backlog'), 0)} | "
          f"{fmt(c1(c, 'llmtap', 'drain_s'), 1)} | {fmt(c1(c, 'llmtap', 'proxy_cpu_run_ms'), 4)} | "
          f"{fmt(c1(c, 'llmtap', 'proxy_cpu_ms'), 4)} | {fmt(c1(c, 'llmtap', 'rss_end_kb') / 1024, 1)} |")
    w("")
    w("Per-round req/s: " + "; ".join(
        f"c={c} " + ", ".join(f"{n} " + "/".join(f"{x['rps']:,.0f}" for x in case1[c][n])
                              for n, _, _ in case1_targets) for c in concs) + ".\n")

    # case 2
    w("## 2. Streaming\n")
    w(f"**Solo time to first byte** (`python3 scripts/bench/httpclient.py streams --addr ADDR "
      f"--conns 1 --per-conn {solo_streams} --stagger-ms 0 --words 50 --delay-ms 0`: one "
      "keep-alive connection, streams one after another, `stream_options.include_usage`; "
      "TTFB = request written → first body byte).\n")
    w("| target | TTFB p50 ms | TTFB p99 ms | added TTFB p50 ms | added TTFB p99 ms | total p50 ms | streams ok |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in targets:
        t50, t99 = solo_m(name, "ttfb_ms", "p50"), solo_m(name, "ttfb_ms", "p99")
        dd50, dd99 = solo_m("direct", "ttfb_ms", "p50"), solo_m("direct", "ttfb_ms", "p99")
        w(f"| {name} | {fmt(t50, 3)} | {fmt(t99, 3)} | "
          f"{'–' if name == 'direct' else sign(t50 - dd50)} | "
          f"{'–' if name == 'direct' else sign(t99 - dd99)} | "
          f"{fmt(solo_m(name, 'total_ms', 'p50'), 3)} | "
          f"{sum(x['requests_ok'] for x in solo[name])}/{solo_streams * rounds} |")
    w("")
    for delay in stream_delays:
        ideal = 53 * delay
        w(f"**{stream_conns:,} concurrent streams, 50 words, x-mock-delay-ms {delay}** "
          f"(`python3 scripts/bench/httpclient.py streams --addr ADDR --conns {stream_conns} "
          f"--per-conn 2 --stagger-ms 300 --words 50 --delay-ms {delay}`: {stream_conns:,} "
          "connections opened first, then started over 300 ms, each sending 2 streams "
          f"back to back; 54 SSE frames per stream, so ≥ {ideal} ms per stream from "
          "the mock's sleeps alone). Peak RSS: VmHWM reset through /proc/PID/clear_refs "
          "before the run, read after, and VmRSS sampled every 50 ms (nginx: master + workers).\n")
        w("| target | streams ok | errors | TTFB p50 ms | TTFB p99 ms | added TTFB p50 ms | "
          "total p50 ms | total p99 ms | wall s | proxy CPU ms/stream | proxy RSS before → peak MB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        res = case2[delay]

        def m2(name, key, p=None):
            return med([(x[key][p] if p else x[key]) for x in res[name]])

        for name, _, proc in targets:
            errs = sum(sum(x["errors"].values()) + x["connect_errors"] for x in res[name])
            okn = sum(x["requests_ok"] for x in res[name])
            peak = (max(x["rss_peak_kb"] for x in res[name]) / 1024) if proc else None
            before = (min(x["rss_before_kb"] for x in res[name]) / 1024) if proc else None
            w(f"| {name} | {okn:,}/{2 * stream_conns * rounds:,} | {errs} | "
              f"{fmt(m2(name, 'ttfb_ms', 'p50'), 1)} | {fmt(m2(name, 'ttfb_ms', 'p99'), 1)} | "
              f"{'–' if name == 'direct' else sign(m2(name, 'ttfb_ms', 'p50') - m2('direct', 'ttfb_ms', 'p50'), 1)} | "
              f"{fmt(m2(name, 'total_ms', 'p50'), 0)} | {fmt(m2(name, 'total_ms', 'p99'), 0)} | "
              f"{fmt(m2(name, 'wall_s'), 2)} | {fmt(m2(name, 'proxy_cpu_ms'), 3)} | "
              f"{'–' if peak is None else f'{before:.1f} → {peak:.1f}'} |")
        w("")

    # case 3
    w("## 3. Mixed fixed-rate run through llmtap\n")
    pk = mixed["per_kind"]
    w(f"`python3 scripts/bench/httpclient.py mixed --addr {a.llmtap} --rate {mixed_rate:g} "
      f"--duration {mixed_secs}`: open loop, one request every 1/{mixed_rate:g} s over a "
      "keep-alive pool, every request a new conversation; mix by weight: 45% chat "
      "(8/32/128 words), 25% streamed chat with include_usage, 15% streamed chat without "
      "usage (llmtap estimates tokens), 10% embeddings, 5% upstream 429; streams are 50 "
      "words with x-mock-delay-ms 2. llmtap RSS and CPU sampled every second.\n")
    w(f"Sent {mixed['sent']:,} requests in {mixed['send_window_s']:.1f} s = "
      f"**{mixed['rate_achieved']:.1f} req/s achieved** (target {mixed_rate:g}; the "
      f"sender was at most {mixed['max_late_ms']:.1f} ms behind schedule); "
      f"{mixed['ok']:,} answered as expected, errors {mixed['errors']}; peak in flight "
      f"{mixed['peak_in_flight']}, {mixed['conns_opened']} connections opened. Latency "
      f"p50/p99 over all: {fmt(mixed['all_ms']['p50'], 2)}/{fmt(mixed['all_ms']['p99'], 2)} ms.\n")
    w("| kind | n | p50 ms | p99 ms |")
    w("|---|---:|---:|---:|")
    for k, s in pk.items():
        w(f"| {k} | {s['n']:,} | {fmt(s['p50'], 2)} | {fmt(s['p99'], 2)} |")
    w("")
    w(f"Spans: {spans_before:,} rows before the run, {spans_after:,} two seconds after "
      f"the last response → **{spans_new:,} new spans for {mixed['sent']:,} requests "
      f"({lost:,} lost)**.\n")
    rss_mb = [s[1] / 1024 for s in samples]
    cpu_pct = [s[2] for s in samples]
    w(f"llmtap RSS: {rss0 / 1024:.1f} MB before the run; during it min "
      f"{min(rss_mb):.1f}, max {max(rss_mb):.1f} MB; after 5 s warm-up, first-10 s mean → "
      f"last-10 s mean {sign(growth, 1)} MB, least-squares slope {sign(slope, 2)} MB/min. "
      f"llmtap CPU: mean {statistics.mean(cpu_pct):.1f}% of one core, max {max(cpu_pct):.1f}%.\n")
    w("| t (s) | llmtap RSS MB | llmtap CPU % | requests sent in that second |")
    w("|---:|---:|---:|---:|")
    per_sec = mixed["sent_per_sec"]
    step = 5 if len(samples) > 30 else 2
    for i, (t, rss, cpu) in enumerate(samples):
        if i % step == 0 or i == len(samples) - 1:
            sec = int(round(t)) - 1
            sent = per_sec[sec] if 0 <= sec < len(per_sec) else "–"
            w(f"| {t:.0f} | {rss / 1024:.1f} | {cpu:.0f} | {sent} |")
    w("")
    w("<details><summary>Every 1 s sample (t s: RSS MB / CPU %)</summary>\n")
    w(", ".join(f"{t:.0f}: {r / 1024:.1f}/{c:.0f}" for t, r, c in samples))
    w("\n</details>\n")

    w("## llmtap memory over the whole run\n")
    w("| point | llmtap RSS MB |")
    w("|---|---:|")
    for lbl, v in timeline:
        if isinstance(v, tuple):
            w(f"| {lbl} | {v[0] / 1024:.1f} / {v[1] / 1024:.1f} |")
        else:
            w(f"| {lbl} | {v / 1024:.1f} |")
    w(f"| before the mixed run | {rss0 / 1024:.1f} |")
    w(f"| end of the mixed run | {samples[-1][1] / 1024:.1f} |")
    w("")
    w("<details><summary>Generated configs</summary>\n")
    w("llmtap:\n\n```toml\n" + open(a.llmtap_config).read().strip() + "\n```\n")
    w(nginx_line(a.mock, a.nginx, a.nofile) + "\n")
    w("</details>\n")

    os.makedirs(a.runs_dir, exist_ok=True)
    path = os.path.join(a.runs_dir, f"{time.strftime('%Y-%m-%dT%H%MZ', now)}-{commit}.md")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    log(f"done in {elapsed / 60:.1f} min")
    print(path)


def nginx_line(mock, listen, nofile):
    """The nginx config of a run, said once: the template and its values
    (the template is scripts/bench/nginx.conf.in; bench.sh fills it in)."""
    return ("nginx: [`scripts/bench/nginx.conf.in`](../../../scripts/bench/nginx.conf.in) "
            f"with `@MOCK@` = `{mock}`, `@LISTEN@` = `{listen}`, `@NOFILE@` = `{nofile}`.")


def status_like(path, key):
    with open(path) as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return int(ln.split()[1])
    return 0


if __name__ == "__main__":
    main()
