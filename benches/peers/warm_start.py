#!/usr/bin/env python3
"""Warm starts for agents: an OpenClaw-sized prompt after a server restart.

    benches/peers/warm_start.py [--model qwen|PATH] [--chars N] [--no-peer]

The prompt (benches/peers/data/openclaw_prompt.json) is an agent's fixed preamble —
rules, a tool catalogue with JSON schemas, injected workspace files — about 12,000
Qwen tokens, followed by a short user turn. For `orchestra serve` and for
`llama-server` (built by build.sh) it measures, with the same client code:
  1. the first request ever (cold: the whole prompt is prefilled);
  2. a new session (another user turn) after the server was stopped and started again.
Time to first token is the wall clock of a `max_tokens: 1` request. The orchestra starts
with an empty snapshot folder (its own ORCHESTRA_HOME) and says where its prompt
tokens came from (`orchestra.prompt_sources`); llama-server keeps nothing across a
restart without `--slot-save-path` and explicit save/restore calls per slot, so it
prefills the whole prompt again. `--chars N` cuts the preamble to N characters for a
quicker run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as peers  # noqa: E402  (free_port, post, wait_health, model_path, ORCHESTRA)

CTX = 16384


def start_orchestra(model, home):
    port = peers.free_port()
    score = os.path.join(home, "warm-start-score.lua")
    with open(score, "w") as f:
        f.write(
            "-- written by benches/peers/warm_start.py\n"
            'local band = orchestra.band { memory = "16GiB" }\n'
            f'band:add("bench", {{ model = {json.dumps(model)}, section = "analysis", context = {CTX}, slots = 1 }})\n'
            "return { perform = function(req) return band.bench:chat(req) end }\n"
        )
    env = dict(os.environ, ORCHESTRA_HOME=home)
    proc = subprocess.Popen(
        [peers.ORCHESTRA, "serve", score, "--port", str(port), "--no-watch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    peers.wait_health(base, proc)
    return proc, base


def start_llama_server(bindir, model):
    port = peers.free_port()
    proc = subprocess.Popen(
        [os.path.join(bindir, "llama-server"), "-m", model, "--port", str(port), "-np", "1",
         "-c", str(CTX), "-t", str(os.cpu_count()), "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    peers.wait_health(base, proc)
    return proc, base


def ask(base, system, question):
    """Wall-clock seconds to a one-token answer, prompt tokens, and the source split."""
    t0 = time.time()
    r = peers.post(base + "/v1/chat/completions", {
        "model": "bench", "max_tokens": 1, "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]},
        timeout=3600)
    seconds = time.time() - t0
    usage = r.get("usage", {})
    sources = (r.get("orchestra") or {}).get("prompt_sources")
    if sources is None and "timings" in r:
        n = r["timings"].get("prompt_n", 0)
        sources = {"slot": usage.get("prompt_tokens", n) - n, "computed": n}
    return seconds, usage.get("prompt_tokens", 0), sources


def wait_for_snapshot(home, proc, timeout=600):
    """The snapshot is written off the decode thread: wait for its file before a restart."""
    folder = os.path.join(home, "cache", "prefix")
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isdir(folder) and any(f.endswith(".kv") for f in os.listdir(folder)):
            return
        if proc.poll() is not None:
            sys.exit("orchestra exited before writing its snapshot")
        time.sleep(0.2)
    sys.exit(f"no snapshot in {folder} after {timeout}s")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen", help="qwen (default) or a GGUF path")
    ap.add_argument("--chars", type=int, default=0, help="cut the preamble to this many characters")
    ap.add_argument("--no-peer", action="store_true", help="measure the orchestra only")
    args = ap.parse_args()
    with open(os.path.join(HERE, "data", "openclaw_prompt.json")) as f:
        data = json.load(f)
    system = data["system"][: args.chars] if args.chars else data["system"]
    first_q, second_q = data["questions"][0], data["questions"][1]
    model = peers.model_path(args.model)
    if not os.path.exists(peers.ORCHESTRA):
        subprocess.run(["cargo", "build", "--release", "--bin", "orchestra"], cwd=peers.ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="orchestra-warm-start-") as home:
        proc, base = start_orchestra(model, home)
        try:
            cold = ask(base, system, first_q)
            wait_for_snapshot(home, proc)
        finally:
            stop(proc)
        proc, base = start_orchestra(model, home)
        try:
            warm = ask(base, system, second_q)
        finally:
            stop(proc)
        rows.append(("orchestra", cold, warm))
    if not args.no_peer:
        bindir = subprocess.run([os.path.join(HERE, "build.sh")], capture_output=True, text=True,
                                check=True).stdout.strip()
        results = []
        for q in (first_q, second_q):
            proc, base = start_llama_server(bindir, model)
            try:
                results.append(ask(base, system, q))
            finally:
                stop(proc)
        rows.append(("llama-server", results[0], results[1]))
    print(f"model {os.path.basename(model)}, preamble {len(system)} characters, 1 slot, {os.cpu_count()} cores")
    print("| server | prompt tokens | first request TTFT s | new session after restart TTFT s | restart / cold | restart prompt sources |")
    print("|---|---|---|---|---|---|")
    for name, cold, warm in rows:
        print(f"| {name} | {warm[1]} | {cold[0]:.2f} | {warm[0]:.2f} | {warm[0] / cold[0] * 100:.1f}% | {json.dumps(warm[2])} |")


if __name__ == "__main__":
    main()
