#!/usr/bin/env python3
"""Rebuilds the summary of BENCHMARKS.md from the runs folder (standard
library only).

Every run of scripts/bench.sh is its own file in docs/benchmarks/runs/,
named YYYY-MM-DDTHHMMZ-<commit>.md, so names sort by time. This reads each
run's "Targets" table and rewrites what lies between the two marker comments
of BENCHMARKS.md:

  * the newest full run's targets table (a newer quick run is named, but a
    quick run's figures are not the reference);
  * a table of recent runs, newest first, one line each.

Nothing else in BENCHMARKS.md is touched, and the output depends only on the
run files, so running it twice changes nothing. bench.sh calls it after each
run; run it by hand after adding or removing a run file.

  python3 scripts/bench/summary.py            # rewrite BENCHMARKS.md
  python3 scripts/bench/summary.py --check    # exit 1 if it is out of date
"""
import argparse
import os
import re
import sys

BEGIN = "<!-- bench-summary:begin (written by scripts/bench/summary.py from the runs folder; do not edit by hand) -->"
END = "<!-- bench-summary:end -->"
RECENT = 12
NAME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d)(\d\d)Z-(.+)\.md$")
HEADING = re.compile(r"^# (Full run|Quick run \(`--quick`\)): (.+)$")

# Columns of the recent-runs table: (title, a word the target's row starts
# with or contains, a pattern picking the figure out of the "measured" cell).
COLUMNS = [
    ("× nginx, c=32", "throughput", r"c=32: ([0-9.]+×)"),
    ("CPU ms/req, c=32", "CPU per request", r"c=32: ([0-9.]+) ms"),
    ("solo added p50 ms", "solo (c=1) p50", r"^([+-][0-9.]+) ms"),
    ("c=32 added p99 ms", "c=32 p99", r"^([+-][0-9.]+) ms"),
    ("stream added TTFB ms", "streaming added TTFB", r"^([+-][0-9.]+) ms"),
    ("streams peak RSS MB", "concurrent streams", r"peak ([0-9.]+) MB"),
    ("RSS first→last 10 s MB", "RSS flat", r"^([+-]?[0-9.]+) MB"),
    ("spans lost", "spans lost", r"→ ([0-9,]+) lost"),
]


class Run:
    def __init__(self, folder, name):
        m = NAME.match(name)
        self.name = name
        self.path = os.path.join(folder, name)
        self.when = f"{m.group(1)} {m.group(2)}:{m.group(3)} UTC"
        self.commit = m.group(4)
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        h = HEADING.match(lines[0]) if lines else None
        if not h:
            raise SystemExit(f"{self.path}: the first line is not a run heading (# Full run: …)")
        self.quick = h.group(1).startswith("Quick")
        self.rows = targets(lines)
        if not self.rows:
            raise SystemExit(f"{self.path}: no '## Targets' table")

    def row(self, key):
        for r in self.rows:
            if key in r[0]:
                return r
        return None


def targets(lines):
    """The rows (target, measured, verdict) of the run's Targets table."""
    rows, inside = [], False
    for ln in lines:
        if ln.strip() == "## Targets":
            inside = True
            continue
        if inside:
            if ln.startswith("## "):
                break
            if ln.startswith("|") and not ln.startswith("|---") and not ln.startswith("| target |"):
                cells = [c.strip() for c in ln.strip().strip("|").split("|")]
                if len(cells) == 3:
                    rows.append(cells)
    return rows


def met(verdict):
    return "NOT" not in verdict and "met" in verdict


def load(folder):
    names = sorted(n for n in os.listdir(folder) if NAME.match(n))
    return [Run(folder, n) for n in names]


def render(runs, summary_dir):
    def link(r):
        rel = os.path.relpath(r.path, summary_dir).replace(os.sep, "/")
        return f"[{r.when}]({rel})"

    full = [r for r in runs if not r.quick]
    newest = full[-1] if full else runs[-1]
    out = [BEGIN, "", "## Newest figures", ""]
    n_met = sum(met(r[2]) for r in newest.rows)
    kind = "quick run" if newest.quick else "full run"
    out.append(f"The newest {kind}: {link(newest)}, commit `{newest.commit}`: "
               f"{n_met} of {len(newest.rows)} targets met.")
    later = [r for r in runs if r.name > newest.name]
    if later:
        out.append("Newer quick runs (not the reference: fewer rounds, shorter runs): "
                   + ", ".join(link(r) for r in later) + ".")
    out += ["", "| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {t} | {m} | {v} |" for t, m, v in newest.rows]
    folder = os.path.relpath(os.path.dirname(newest.path), summary_dir).replace(os.sep, "/")
    shown = f"the last {RECENT} of {len(runs)} runs" if len(runs) > RECENT else f"all {len(runs)} runs"
    out += ["", "## Recent runs", "",
            f"Newest first, {shown} (every file: [{folder}/]({folder}/)); "
            "✓ a target met, ✗ missed.", ""]
    out.append("| run | commit | kind | " + " | ".join(c[0] for c in COLUMNS) + " | met |")
    out.append("|---|---|---|" + "---:|" * len(COLUMNS) + "---:|")
    for r in reversed(runs[-RECENT:]):
        cells = []
        for _, key, pat in COLUMNS:
            row = r.row(key)
            m = re.search(pat, row[1]) if row else None
            cells.append(f"{m.group(1)} {'✓' if met(row[2]) else '✗'}" if m else "–")
        n = sum(met(x[2]) for x in r.rows)
        out.append(f"| {link(r)} | `{r.commit}` | {'quick' if r.quick else 'full'} | "
                   + " | ".join(cells) + f" | {n}/{len(r.rows)} |")
    out += ["", END]
    return "\n".join(out)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=os.path.join(root, "docs", "benchmarks", "runs"))
    ap.add_argument("--summary", default=os.path.join(root, "BENCHMARKS.md"))
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if the summary is not what the runs give")
    a = ap.parse_args()

    runs = load(a.runs)
    if not runs:
        raise SystemExit(f"no run files in {a.runs}")
    with open(a.summary, encoding="utf-8") as f:
        text = f.read()
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise SystemExit(f"{a.summary}: the markers are missing; put these two lines where "
                         f"the summary goes:\n{BEGIN}\n{END}")
    new = text[:i] + render(runs, os.path.dirname(os.path.abspath(a.summary))) + text[j + len(END):]
    if a.check:
        if new != text:
            print(f"{a.summary}: the summary is out of date; run python3 scripts/bench/summary.py",
                  file=sys.stderr)
            sys.exit(1)
        return
    if new != text:
        with open(a.summary, "w", encoding="utf-8") as f:
            f.write(new)
    print(f"{a.summary}: summary of {len(runs)} runs", file=sys.stderr)


if __name__ == "__main__":
    main()
