#!/usr/bin/env python3
"""Checks that every relative link in the project's Markdown documents
resolves (standard library only; part of scripts/test.sh).

Documents: README.md, CONTRIBUTING.md, BENCHMARKS.md, ARCHITECTURE.md and
docs/**/*.md. For each inline link `[text](target)` outside code:

  * `http(s)://`, `mailto:` and other absolute links are skipped (no network);
  * a relative path must name an existing file or folder, relative to the
    document (a leading `/` means the repository root);
  * `#anchor` (alone, or after a path to a Markdown file) must be the
    GitHub-style slug of a heading in that file: lowercased, punctuation
    dropped, spaces turned into hyphens, `-1`, `-2`, … for repeats.

Prints one line per broken link (file:line: target: why) and exits 1 if there
is any; exits 0 and prints a count otherwise.

  python3 scripts/check_links.py           # the documents above
  python3 scripts/check_links.py FILE...   # just these files
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md", "CONTRIBUTING.md", "BENCHMARKS.md", "ARCHITECTURE.md"]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) with one level of nested brackets in the text (e.g. a
# link whose text is inline code that the code-span pass already blanked).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]+(?:\([^()\s]*\))?)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documents(args):
    if args:
        return [os.path.abspath(a) for a in args]
    files = [os.path.join(ROOT, d) for d in DOCUMENTS]
    files += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return [f for f in files if os.path.isfile(f)]


def lines_outside_code(text):
    """(line number, line) for every line not inside a fenced code block."""
    fenced = False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = CODE_SPAN.sub(lambda m: m.group(2), text)           # code: its content
    text = re.sub(r"<[^>]+>", "", text)                        # inline HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                       # punctuation (keeps letters, digits, _ and -)
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    """Every anchor a Markdown file's headings give, repeats numbered."""
    if path not in _anchors:
        seen, out = {}, set()
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for _, line in lines_outside_code(text):
            m = HEADING.match(line)
            if not m:
                continue
            s = slug(m.group(2))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
        for m in re.finditer(r"<a\s+(?:name|id)=\"([^\"]+)\"", text):
            out.add(m.group(1))
        _anchors[path] = out
    return _anchors[path]


def check(path):
    problems, count = [], 0
    with open(path, encoding="utf-8") as f:
        text = f.read()
    here = os.path.dirname(path)
    for n, line in lines_outside_code(text):
        bare = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for m in LINK.finditer(bare):
            target = m.group(1).strip("<>")
            if SCHEME.match(target):
                continue
            count += 1
            file_part, _, anchor = target.partition("#")
            if file_part:
                base = ROOT if file_part.startswith("/") else here
                dest = os.path.normpath(os.path.join(base, file_part.lstrip("/")))
                if not os.path.exists(dest):
                    problems.append((n, target, "no such file or folder"))
                    continue
            else:
                dest = path
            if anchor:
                if not dest.endswith(".md") or os.path.isdir(dest):
                    continue  # anchors into other kinds of files are not checked
                if anchor not in anchors(dest):
                    problems.append((n, target, f"no heading with anchor #{anchor} in "
                                     f"{os.path.relpath(dest, ROOT)}"))
    return problems, count


def main():
    files = documents(sys.argv[1:])
    bad = total = 0
    for path in files:
        problems, count = check(path)
        total += count
        for n, target, why in problems:
            print(f"{os.path.relpath(path, ROOT)}:{n}: {target}: {why}")
            bad += 1
    if bad:
        print(f"check_links: {bad} broken of {total} relative links in {len(files)} files",
              file=sys.stderr)
        sys.exit(1)
    print(f"check_links: {total} relative links in {len(files)} files, all resolve")


if __name__ == "__main__":
    main()
