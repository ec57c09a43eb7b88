#!/usr/bin/env python3
"""The container image's runtime stage, checked without a container engine.

CI machines have no Docker engine, so `docker build` cannot run there. This
script reads the Dockerfile's last stage and lays it out in a temp dir the
way the image would: the release binary where `COPY --from=build` puts it,
`config/` copied where the stage copies it, the data directory created and
owned by the image's user, `WORKDIR` as the working directory, the stage's
`ENV`. It then runs llmtap from there as that user (uid from the `useradd`
line; only when this script runs as root, else as the current user) and
checks:

  1. the stage is consistent (and the volume is the user's only if a RUN
     line chowns it, as in the image): `EXPOSE` names the ports of the `ENV` listen
     addresses, the baked config's SQLite file lies in the `VOLUME`;
  2. llmtap starts with that environment (listen addresses moved to free
     127.0.0.1 ports: tests use loopback only) and runs as the image's uid;
  3. the `HEALTHCHECK` command, run the same way, exits 0;
  4. a chat completion through the baked config's `/vllm` route (upstream
     127.0.0.1:8000, where this script starts the in-repo mock provider)
     is answered 200, and its span lands in the SQLite file the baked
     config names, created by the image's user inside the volume;
  5. SIGTERM ends it with exit code 0.

Usage: python3 scripts/image_check.py  (after `cargo build --release --bin
llmtap --example mock_provider`; scripts/test.sh runs it).
"""

import json
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
MOCK_PORT = 8000  # the baked config's /vllm upstream


def fail(msg):
    print(f"image_check: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def last_stage(path):
    """The Dockerfile's last stage as (instruction, argument) pairs, with
    continuation lines joined and comments dropped."""
    lines, cur = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not cur and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            if cur.strip():
                lines.append(cur.strip())
            cur = ""
    stage = []
    for line in lines:
        word, _, arg = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage = []
        stage.append((word, arg.strip()))
    return stage


def parse_env(arg):
    """`ENV A=1 B=2` (the only form the Dockerfile uses)."""
    out = {}
    for item in shlex.split(arg):
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"ENV without '=': {arg!r}")
        out[key] = value
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_port(port, deadline, proc=None):
    while time.time() < deadline and (proc is None or proc.poll() is None):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def main():
    stage = last_stage(os.path.join(ROOT, "Dockerfile"))
    env, expose, volumes, workdir, user, health, bin_dest = {}, [], [], "/", None, None, None
    config_dest, uid, chowned = None, None, set()
    for word, arg in stage:
        if word == "ENV":
            env.update(parse_env(arg))
        elif word == "EXPOSE":
            expose += [int(p.split("/")[0]) for p in arg.split()]
        elif word == "VOLUME":
            volumes += json.loads(arg) if arg.startswith("[") else arg.split()
        elif word == "WORKDIR":
            workdir = os.path.join(workdir, arg)
        elif word == "USER":
            user = arg
        elif word == "HEALTHCHECK":
            cmd = arg.split(" CMD ", 1)
            if len(cmd) != 2:
                fail(f"HEALTHCHECK without CMD: {arg!r}")
            health = json.loads(cmd[1])
        elif word == "COPY":
            parts = [p for p in arg.split() if not p.startswith("--")]
            if arg.startswith("--from=") and parts[0].endswith("/llmtap"):
                bin_dest = parts[1]
            elif parts[0].rstrip("/") == "config":
                config_dest = parts[1]
        elif word == "RUN":
            words = arg.split()
            if "useradd" in words:
                uid = int(words[words.index("--uid") + 1])
            # `chown user:group PATH...` up to the next `&&`.
            for i, w in enumerate(words):
                if w == "chown":
                    for path in words[i + 2:]:
                        if path in ("&&", ";"):
                            break
                        chowned.add(path.rstrip("/"))
    for name, value in [("USER", user), ("HEALTHCHECK", health), ("binary COPY", bin_dest),
                        ("config COPY", config_dest), ("useradd --uid", uid)]:
        if value is None:
            fail(f"the runtime stage has no {name}")

    # 1. Consistency of the stage.
    listen_ports = sorted(int(env[k].rsplit(":", 1)[1]) for k in ("LLMTAP_LISTEN", "LLMTAP_ADMIN_LISTEN"))
    if sorted(expose) != listen_ports:
        fail(f"EXPOSE {expose} but the ENV listen ports are {listen_ports}")
    baked = open(os.path.join(ROOT, "config", "llmtap.toml")).read()
    db_url = next(line.split("=", 1)[1].strip().strip('"') for line in baked.splitlines()
                  if line.startswith("database_url"))
    if not db_url.startswith("sqlite://"):
        fail(f"baked database_url is not SQLite: {db_url}")
    db_rel = db_url[len("sqlite://"):]
    db_abs = os.path.normpath(os.path.join(workdir, db_rel))
    if not any(db_abs.startswith(v.rstrip("/") + "/") for v in volumes):
        fail(f"the SQLite file {db_abs} is outside the volumes {volumes}")
    print(f"image_check: stage ok: user {user} (uid {uid}), workdir {workdir}, "
          f"ports {expose}, store {db_abs} in volume {volumes}")

    if not port_free(MOCK_PORT):
        fail(f"127.0.0.1:{MOCK_PORT} (the baked /vllm upstream) is in use")
    as_root = os.geteuid() == 0
    run_uid = uid if as_root else os.geteuid()
    if not as_root:
        print(f"image_check: not root: running as uid {run_uid} instead of {uid}")

    tmp = tempfile.mkdtemp(prefix="llmtap-image-")
    procs = []
    try:
        os.chmod(tmp, 0o755)
        root = lambda p: os.path.join(tmp, p.lstrip("/"))  # noqa: E731
        # The image's file system: binary, config (root's), volume (the user's).
        os.makedirs(os.path.dirname(root(bin_dest)), exist_ok=True)
        shutil.copy(os.path.join(TARGET, "release", "llmtap"), root(bin_dest))
        os.chmod(root(bin_dest), 0o755)
        shutil.copytree(os.path.join(ROOT, "config"), root(config_dest))
        os.makedirs(root(workdir), exist_ok=True)
        for v in volumes:
            os.makedirs(root(v), exist_ok=True)
            # A volume starts with the image's content at its path: owned
            # by the user only if a RUN line chowned it.
            if as_root and v.rstrip("/") in chowned:
                os.chown(root(v), uid, uid)
        for d, _, files in os.walk(tmp):
            os.chmod(d, 0o755)
            for f in files:
                if not f.endswith("llmtap"):
                    os.chmod(os.path.join(d, f), 0o644)

        proxy_port, admin_port = free_port(), free_port()
        run_env = {
            "PATH": os.path.dirname(root(bin_dest)) + ":/usr/bin:/bin",
            "HOME": root(workdir),
            **env,
            "LLMTAP_LISTEN": f"127.0.0.1:{proxy_port}",
            "LLMTAP_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
            "LLMTAP_ADMIN_TOKEN": "image-check-token",
            "NO_COLOR": "1",
        }

        def demote():
            if as_root:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        mock = subprocess.Popen(
            [os.path.join(TARGET, "release", "examples", "mock_provider"), f"127.0.0.1:{MOCK_PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(mock)
        log = open(os.path.join(tmp, "llmtap.log"), "wb")
        proc = subprocess.Popen([os.path.basename(bin_dest)], cwd=root(workdir), env=run_env,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=demote,
                                executable=root(bin_dest))
        procs.append(proc)
        deadline = time.time() + 60
        if not (wait_port(MOCK_PORT, deadline, mock) and wait_port(admin_port, deadline, proc)):
            fail("llmtap or the mock did not start: " + open(log.name, errors="replace").read()[-2000:])

        # 2. Runs as the image's user.
        status = open(f"/proc/{proc.pid}/status").read()
        real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if real_uid != run_uid:
            fail(f"llmtap runs as uid {real_uid}, expected {run_uid}")

        # 3. The HEALTHCHECK command.
        hc = subprocess.run(health, cwd=root(workdir), env=run_env, preexec_fn=demote,
                            capture_output=True, timeout=30)
        if hc.returncode != 0:
            fail(f"HEALTHCHECK {health} exited {hc.returncode}: {hc.stderr.decode(errors='replace')}")

        # 4. Traffic through the baked config, recorded in the volume.
        body = json.dumps({"model": "mock-image", "messages": [{"role": "user", "content": "hi"}]})
        req = urllib.request.Request(f"http://127.0.0.1:{proxy_port}/vllm/v1/chat/completions",
                                     data=body.encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            if resp.status != 200:
                fail(f"/vllm chat completion answered {resp.status}")
            reply = json.loads(resp.read())
        db_file = root(db_abs)
        rows = []
        while time.time() < deadline and not rows:
            if os.path.exists(db_file):
                con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5)
                try:
                    rows = con.execute("SELECT model, provider, http_status, response_id FROM spans").fetchall()
                except sqlite3.OperationalError:
                    rows = []
                con.close()
            time.sleep(0.2)
        if rows != [("mock-image", "vllm", 200, reply.get("id"))]:
            fail(f"spans in {db_abs}: {rows}")
        owner = os.stat(db_file).st_uid
        if owner != run_uid:
            fail(f"{db_abs} is owned by uid {owner}, expected {run_uid}")

        # 5. Clean stop.
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        if code != 0:
            fail(f"llmtap exited {code} after SIGTERM")
        print(f"image_check: ok: ran as uid {run_uid} from {workdir}, healthcheck ok, "
              f"1 exchange through /vllm recorded in {db_abs}, SIGTERM exit 0")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
