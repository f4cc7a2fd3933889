#!/usr/bin/env python3
"""Side-by-side benchmark: orchestra against llama.cpp's own tools, same model, one run.

    benches/peers/run.py [--model synthetic|qwen|PATH ...] [--quick]

For each model it starts `orchestra serve` and `llama-server` (built by build.sh from
the llama.cpp in llama-cpp-python's source distribution) with the same slots and
context, and measures both with the same client code:
  * prompt processing of a 512-token prompt and single-stream decode (HTTP, both);
  * 1/4/8/16 concurrent streaming clients (`orchestra bench-serve --url`, both);
  * a 10-turn agent conversation (2,000-token system prompt, ~200 tokens added per
    turn): time to first token per turn, prompt caches on both sides;
  * the engine without HTTP (`orchestra bench`): single-stream decode against
    llama-bench tg128, prompt processing against pp512;
  * load time (`orchestra bench`'s warm load) and swap time (the score unloads and
    reloads its instrument) against llama-server's start-to-healthy time;
  * a full arrangement (route + 2 comping + solo + 1 review, `arrange.perform`) against
    the solo alone, both through `orchestra serve`.
Writes BENCHMARKS.md (ratios first).
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOME = os.environ.get("ORCHESTRA_HOME", os.path.expanduser("~/.cache/orchestra"))
ORCHESTRA = os.path.join(ROOT, "target", "release", "orchestra")
SLOTS = 16
CTX = 6144  # per slot on both sides (the agent conversation grows to ~4.5k tokens)
ARRANGE_COMP_TOKENS = 48


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=600):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_health(url, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited early: {proc.args}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit(f"server not healthy after {timeout}s: {proc.args}")


def start_orchestra(model):
    port = free_port()
    score = os.path.join(HOME, "bench", "peers-score.lua")
    os.makedirs(os.path.dirname(score), exist_ok=True)
    with open(score, "w") as f:
        f.write(
            "-- written by benches/peers/run.py\n"
            'local band = orchestra.band { memory = "16GiB" }\n'
            'local arrange = require("orchestra.arrange")\n'
            'local route = require("orchestra.route")\n'
            f'band:add("bench", {{ model = {json.dumps(model)}, section = "code", context = {CTX}, slots = {SLOTS} }})\n'
            # The arrangement's other players: same GGUF, their own contexts.
            f'band:add("comp1", {{ model = {json.dumps(model)}, section = "creative", context = 2048, slots = 2 }})\n'
            f'band:add("comp2", {{ model = {json.dumps(model)}, section = "analysis", context = 2048, slots = 2 }})\n'
            f'band:add("critic", {{ model = {json.dumps(model)}, section = "review", context = 4096, slots = 2 }})\n'
            'local router = route.rules({ { when = route.keywords({ "function" }), section = "code" }, { otherwise = "code" } }, { band = band })\n'
            "return { perform = function(req)\n"
            # Swap: evict the soloist and load it again (what the stage does under memory pressure).
            '  if req.prompt == "__swap__" then\n'
            '    band.bench:unload(); assert(band.bench:load()); return tostring(band.bench:info().load_ms)\n'
            '  end\n'
            f"  return arrange.perform(band, req, {{ router = router, comp = {{ max_tokens = {ARRANGE_COMP_TOKENS} }}, review = {{ rounds = 1, max_tokens = {ARRANGE_COMP_TOKENS} }} }})\n"
            "end }\n"
        )
    proc = subprocess.Popen(
        [ORCHESTRA, "serve", score, "--port", str(port), "--max-in-flight", str(SLOTS), "--no-watch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_health(base, proc)
    return proc, base


def start_llama_server(bindir, model):
    port = free_port()
    proc = subprocess.Popen(
        [os.path.join(bindir, "llama-server"), "-m", model, "--port", str(port), "-np", str(SLOTS),
         "-c", str(CTX * SLOTS), "-t", str(os.cpu_count()), "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_health(base, proc)
    return proc, base


def words(n):
    base = "the quick brown fox jumps over the lazy dog while the band plays a slow blues in b flat".split()
    return " ".join(base[i % len(base)] + str(i % 7) for i in range(n))


def prompt_speed(base, model, ours):
    """Prompt tok/s on a long prompt (max_tokens 1), best of 3; a fresh prompt each time."""
    best = 0.0
    for i in range(3):
        r = post(base + "/v1/chat/completions", {
            "model": model, "max_tokens": 1, "temperature": 0, "cache_prompt": False,
            "messages": [{"role": "user", "content": f"{i} " + words(380)}]})
        tps = r["orchestra"]["timings"]["prompt_tok_s"] if ours else r["timings"]["prompt_per_second"]
        best = max(best, tps)
    return best


def concurrency(base, model, clients, tokens):
    out = subprocess.run(
        [ORCHESTRA, "bench-serve", "--url", base + "/v1", "--model", model,
         "--clients", ",".join(map(str, clients)), "--tokens", str(tokens)],
        capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            rows[int(cells[0])] = (float(cells[2]), float(cells[3]), float(cells[4]))
    return rows


def stream_ttft(base, model, messages):
    body = {"model": model, "messages": messages, "max_tokens": 16, "temperature": 0, "stream": True}
    req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    t0 = time.time()
    first, text = None, ""
    try:
        r = urllib.request.urlopen(req, timeout=600)
    except urllib.error.HTTPError as e:
        sys.exit(f"{base} answered {e.code}: {e.read().decode()[:400]}")
    with r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            d = json.loads(line[5:])
            for c in d.get("choices", []):
                piece = (c.get("delta") or {}).get("content") or ""
                if piece and first is None:
                    first = time.time() - t0
                text += piece
    return first or (time.time() - t0), text


def agent_turns(base, model, turns, system_words, turn_words):
    messages = [{"role": "system", "content": "You are a coding agent. Tools and rules follow. " + words(system_words)}]
    out = []
    for t in range(turns):
        messages.append({"role": "user", "content": f"turn {t}: " + words(turn_words)})
        ttft, text = stream_ttft(base, model, messages)
        messages.append({"role": "assistant", "content": text})
        out.append(ttft * 1000)
    return out


def llama_bench(bindir, model, repeat):
    out = subprocess.run(
        [os.path.join(bindir, "llama-bench"), "-m", model, "-p", "512", "-n", "128", "-t",
         str(os.cpu_count()), "-r", str(repeat), "-o", "json"], capture_output=True, text=True, check=True).stdout
    res = {}
    for r in json.loads(out):
        res["pp512" if r["n_prompt"] else "tg128"] = r["avg_ts"]
    return res


def engine_bench(path, repeat):
    """`orchestra bench` on one stream: (decode tok/s, prompt tok/s of ~512 tokens,
    cold load ms, warm load ms), the engine without HTTP."""
    out = subprocess.run(
        [ORCHESTRA, "bench", "--model", path, "--streams", "1", "--tokens", "128", "--prompt", "512",
         "--repeat", str(repeat)], capture_output=True, text=True, check=True).stdout
    decode = prompt = cold = warm = 0.0
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] == "1":
            decode = float(cells[2])
        if line.startswith("prompt processing:"):
            prompt = float(line.split(" at ")[1].split()[0])
        if line.startswith("load:"):
            cold = float(line.split("cold ")[1].split()[0])
            warm = float(line.split("warm ")[1].split()[0])
    return decode, prompt, cold, warm


def llama_server_load_ms(bindir, model, tries):
    """llama-server's start to its first healthy answer (it answers 503 while loading),
    best of `tries`, with the same slots and context as the benchmark."""
    best = float("inf")
    for _ in range(tries):
        port = free_port()
        t0 = time.time()
        proc = subprocess.Popen(
            [os.path.join(bindir, "llama-server"), "-m", model, "--port", str(port), "-np", str(SLOTS),
             "-c", str(CTX * SLOTS), "-t", str(os.cpu_count()), "--no-webui"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    sys.exit(f"llama-server exited while loading {model}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
                time.sleep(0.01)
            best = min(best, (time.time() - t0) * 1000)
        finally:
            proc.terminate()
            proc.wait()
    return best


def timed_post(base, body):
    t0 = time.time()
    r = post(base + "/v1/chat/completions", body)
    return (time.time() - t0) * 1000, r


def swap_ms(base, tries):
    """The score unloads its instrument and loads it again: (the swap's wall ms through
    HTTP, the raw load's ms as the engine timed it), best of `tries`."""
    body = {"model": "orchestra", "max_tokens": 1, "messages": [{"role": "user", "content": "__swap__"}]}
    runs = []
    for _ in range(tries):
        ms, r = timed_post(base, body)
        runs.append((ms, float(r["choices"][0]["message"]["content"])))
    return min(runs)


def arrangement_vs_solo(base, tokens, tries):
    """Wall ms of the solo alone (the instrument) and of the full arrangement (route, two
    comping, the solo, one review) for the same request; best of `tries` each."""
    def body(model, i):
        return {"model": model, "max_tokens": tokens, "temperature": 0,
                "messages": [{"role": "user", "content": f"{i}: write a function that reverses a string"}]}
    solo = min(timed_post(base, body("bench", i))[0] for i in range(tries))
    full = min((timed_post(base, body("orchestra", i)) for i in range(tries)), key=lambda x: x[0])
    return solo, full[0], phases(full[1])


def phases(r):
    """Where the arrangement's time went, from its trace: each player's role, wall ms,
    prompt tokens computed (not from a cache) and tokens generated."""
    plays = r.get("orchestra", {}).get("trace", {}).get("plays", [])
    return "; ".join(
        f"{p['role']} {p['player']} {p['ms']:.0f} ms ({p['prompt_sources'].get('computed', 0)} prompt tokens computed, "
        f"{p['tokens']} generated)" for p in plays)


def model_path(name):
    if name == "synthetic":
        path = os.path.join(HOME, "bench", "bench-150m-q8_0.gguf")
        if not os.path.exists(path):
            subprocess.run([ORCHESTRA, "bench", "--streams", "1", "--tokens", "4", "--repeat", "1"],
                           check=True, capture_output=True)
        return path
    if name == "qwen":
        path = os.path.join(HOME, "test-models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
        if not os.path.exists(path):
            subprocess.run([os.path.join(ROOT, "scripts", "fetch-test-models")], check=True)
        return path
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="synthetic, qwen or a GGUF path (repeatable)")
    ap.add_argument("--quick", action="store_true", help="fewer clients, turns and tokens (CI)")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = ap.parse_args()
    models = args.model or ["synthetic", "qwen"]
    clients = [1, 4] if args.quick else [1, 4, 8, 16]
    tokens = 32 if args.quick else 128
    turns = 3 if args.quick else 10
    bindir = subprocess.run([os.path.join(ROOT, "benches", "peers", "build.sh")],
                            capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.exists(ORCHESTRA):
        subprocess.run(["cargo", "build", "--release", "--bin", "orchestra"], cwd=ROOT, check=True)
    # llama-cpp-sys-2 configures llama.cpp's CMake build once per target folder: a folder
    # built before GGML_LLAMAFILE changed keeps the old kernels, and the comparison lies.
    peer_llamafile = "build-llamafile" in bindir
    with open(ORCHESTRA, "rb") as f:
        ours_llamafile = b"tinyBLAS" in f.read()
    if ours_llamafile != peer_llamafile:
        sys.exit(f"{ORCHESTRA} was built with llamafile {'ON' if ours_llamafile else 'OFF'} but the peers with "
                 f"{'ON' if peer_llamafile else 'OFF'}: its target folder predates the setting in .cargo/config.toml. "
                 "Fix: rm target/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt && "
                 "GGML_LLAMAFILE=on cargo build --release --bin orchestra")
    lines = ["# Benchmarks: orchestra vs llama.cpp's own tools", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}. "
             f"Peers: llama-server/llama-bench from llama-cpp-python 0.3.36's llama.cpp (build.sh), "
             f"same CPU flags, llamafile {'ON' if 'build-llamafile' in bindir else 'OFF'} (.cargo/config.toml). "
             f"Slots {SLOTS}, {CTX} tokens per slot on both servers. "
             f"Command: `benches/peers/run.py{' --quick' if args.quick else ''}`. "
             "Ratios are orchestra / llama.cpp (higher is better for tok/s, lower for TTFT).", ""]
    for name in models:
        path = model_path(name)
        print(f"== {name}: {path}", flush=True)
        lb = llama_bench(bindir, path, 2 if args.quick else 5)
        eng = engine_bench(path, 1 if args.quick else 3)
        peer_load = llama_server_load_ms(bindir, path, 1 if args.quick else 3)
        ours_proc, ours = start_orchestra(path)
        peer_proc, peer = start_llama_server(bindir, path)
        try:
            pp = (prompt_speed(ours, "bench", True), prompt_speed(peer, "bench", False))
            conc = (concurrency(ours, "bench", clients, tokens), concurrency(peer, "bench", clients, tokens))
            # ~2,000-token system prompt and ~200 tokens a turn with a real tokenizer (these
            # numbered words take ~2 tokens each: ~4,300 tokens by turn 10); the synthetic
            # model's tokenizer spends ~3 tokens a word and llama-server caps a slot at its
            # 2,048-token training context, so it gets a shorter conversation.
            sizes = (60, 10) if name == "synthetic" else (1000, 100)
            agent = (agent_turns(ours, "bench", turns, *sizes), agent_turns(peer, "bench", turns, *sizes))
            swap = swap_ms(ours, 2 if args.quick else 5)
            arr = arrangement_vs_solo(ours, tokens, 1 if args.quick else 3)
        finally:
            ours_proc.terminate()
            peer_proc.terminate()
        lines += [f"## {name} (`{os.path.basename(path)}`)", "",
                  "| measure | orchestra | llama.cpp | ratio |", "|---|---|---|---|",
                  f"| single-stream decode tok/s (engine vs llama-bench tg128) | {eng[0]:.1f} | {lb.get('tg128', 0):.1f} | {eng[0] / max(lb.get('tg128', 0), 1e-9):.2f}x |",
                  f"| prompt tok/s, 512 tokens (engine vs llama-bench pp512) | {eng[1]:.1f} | {lb.get('pp512', 0):.1f} | {eng[1] / max(lb.get('pp512', 0), 1e-9):.2f}x |",
                  f"| load ms, {SLOTS} slots x {CTX} (engine load vs llama-server start to healthy) | {swap[1]:.0f} | {peer_load:.0f} | {swap[1] / peer_load:.2f}x |",
                  f"| swap ms, evict + reload through the score (vs llama-server start to healthy) | {swap[0]:.0f} | {peer_load:.0f} | {swap[0] / peer_load:.2f}x |",
                  f"| swap ms vs the engine's own raw load | {swap[0]:.0f} | {swap[1]:.0f} | {swap[0] / swap[1]:.2f}x |",
                  f"| prompt tok/s (~500-token prompt, HTTP) | {pp[0]:.1f} | {pp[1]:.1f} | {pp[0] / pp[1]:.2f}x |"]
        for n in clients:
            o, p = conc[0][n], conc[1][n]
            lines.append(f"| {n} streaming clients: aggregate tok/s | {o[0]:.1f} | {p[0]:.1f} | {o[0] / p[0]:.2f}x |")
            lines.append(f"| {n} streaming clients: TTFT p50 / p99 ms | {o[1]:.0f} / {o[2]:.0f} | {p[1]:.0f} / {p[2]:.0f} | {o[1] / max(p[1], 1e-9):.2f}x |")
        for t in range(turns):
            a, b = agent[0][t], agent[1][t]
            lines.append(f"| agent turn {t + 1}: TTFT ms | {a:.0f} | {b:.0f} | {a / max(b, 1e-9):.2f}x |")
        lines += ["", f"Arrangement (route + 2 comping of {ARRANGE_COMP_TOKENS} tokens + solo of {tokens} tokens + 1 review of at most {ARRANGE_COMP_TOKENS}, "
                  f"`arrange.perform`) against the solo alone, through `orchestra serve`: {arr[1]:.0f} ms vs {arr[0]:.0f} ms, "
                  f"**{arr[1] / arr[0]:.2f}x**. Its parts (comping players run at once): {arr[2]}. `orchestra bench` load of one slot x 1024: cold (page cache dropped) {eng[2]:.0f} ms, warm {eng[3]:.0f} ms.", ""]
        print("\n".join(lines[-(13 + 2 * len(clients) + turns):]), flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
