//! Arrangement benchmarks, printed as a table of figures and ratios (no pass/fail):
//!
//! - comping: 3 background players writing their notes at the same time
//!   (`arrange.comp`) against the same 3 generations one after another, end to end
//!   through the Lua runtime, on the ~160M-parameter q8_0 benchmark model — once with
//!   the three players sharing one loaded model (continuous batching), once with three
//!   instruments of their own;
//! - routing decision latency: a rule list (keywords, patterns, a predicate) and the
//!   grammar-constrained classifier on a tiny and on the benchmark model (and the
//!   semantic router when `../shared/models` has the embedding model).
//!
//! ```sh
//! cargo bench --bench arrange
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orchestra::score::{Conductor, Request, ScoreOptions, ScoreSource};

const TOKENS: u32 = 64;
const REPEAT: usize = 3;

fn lua_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

async fn conductor(dir: &Path, name: &str, text: &str) -> Conductor {
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, text).unwrap();
    let options = ScoreOptions::default()
        .with_printer(Arc::new(|_: &str| {}))
        .with_cpu_limit(Duration::from_secs(120));
    Conductor::start(ScoreSource::file(&path), options)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn perform(c: &Conductor, prompt: &str) -> serde_json::Value {
    c.perform(Request::prompt(prompt))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .data
}

/// Comp (concurrent) against the same three generations in a row; best of `REPEAT`
/// each, after a warm-up. Returns (sequential ms, concurrent ms).
async fn comp_vs_sequential(dir: &Path, name: &str, members: &str, players: &str) -> (f64, f64) {
    let text = format!(
        r#"local arrange = require("orchestra.arrange")
local band = orchestra.band {{ memory = "8GiB" }}
{members}
local players = {players}
local opts = {{ max_tokens = {TOKENS}, generate = {{ ignore_eos = true }} }}
-- The same request either way (a plain table: `comp` only needs `prompt`).
local function request() return {{ prompt = "write a function that reverses a string, and explain it" }} end
return {{ perform = function(req)
  for _, m in ipairs(players) do assert(m:load()) end
  if req.prompt == "warm up" then
    arrange.comp(players, request(), opts)
    return {{}}
  end
  local t0 = orchestra.clock()
  if req.prompt == "comp" then
    local notes = arrange.comp(players, request(), opts)
    assert(#notes == #players, "every player comped")
  else
    -- The same three generations (same prompts, same budget), one after another.
    for _, m in ipairs(players) do
      local msgs = arrange.comp_messages(m, request(), {TOKENS})
      assert(m:generate({{ messages = msgs }}, {{ max_tokens = {TOKENS}, ignore_eos = true }}))
    end
  end
  return {{ ms = (orchestra.clock() - t0) * 1e3 }}
end }}
"#
    );
    let c = conductor(dir, name, &text).await;
    perform(&c, "warm up").await;
    let (mut seq, mut con) = (f64::MAX, f64::MAX);
    for _ in 0..REPEAT {
        let s = perform(&c, "sequential").await["ms"].as_f64().unwrap();
        let k = perform(&c, "comp").await["ms"].as_f64().unwrap();
        seq = seq.min(s);
        con = con.min(k);
    }
    (seq, con)
}

/// The same comparison on the engine alone (Rust, no Lua): three generations of one
/// model with the comp prompt, one after another and then submitted together. The
/// ceiling for the shared-model rows above. Returns (sequential ms, concurrent ms).
fn engine_reference(model: &Path) -> (f64, f64) {
    use orchestra::engine::{ChatMessage, GenerateRequest, LoadOptions, Model, SamplingParams};
    let m = Model::load(
        model,
        &LoadOptions {
            context: 512,
            slots: 4,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let system = format!(
        "You are Monk, the analysis player in a band of AI models. Another player will answer the request below; you are comping, so do not answer it yourself. In at most {} words, write notes that would help: key context, pitfalls to avoid, suggestions. Terse bullet points.",
        (TOKENS * 2 / 3).max(8)
    );
    let request = || {
        GenerateRequest::chat(vec![
            ChatMessage::system(system.clone()),
            ChatMessage::user("Request:\nwrite a function that reverses a string, and explain it"),
        ])
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(TOKENS)
        .with_ignore_eos(true)
    };
    let finish = |g: orchestra::engine::Generation| g.blocking_finish_with(|_| {}).unwrap();
    finish(m.generate(request()).unwrap());
    let (mut seq, mut con) = (f64::MAX, f64::MAX);
    for _ in 0..REPEAT {
        let t = std::time::Instant::now();
        for _ in 0..3 {
            finish(m.generate(request()).unwrap());
        }
        seq = seq.min(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let gens: Vec<_> = (0..3).map(|_| m.generate(request()).unwrap()).collect();
        for g in gens {
            finish(g);
        }
        con = con.min(t.elapsed().as_secs_f64() * 1e3);
    }
    (seq, con)
}

const RULES: &str = r#"local router = route.rules {
  { name = "code words", section = "code", when = route.keywords {
    "function", "compile", "stack trace", "bug", "regex", "python", "rust", "javascript", "sql" } },
  { name = "a code block", section = "code", when = route.pattern("```", "%f[%w]def%s+[%w_]+%(", "%f[%w]fn%s+[%w_]+%(") },
  { name = "creative words", section = "creative", when = route.keywords {
    "poem", "haiku", "lyrics", "limerick", "short story", "sonnet" } },
  { name = "long", section = "analysis", when = function(p) return #p > 2000 end },
  { otherwise = "analysis" },
}"#;

const REQUESTS: &[&str] = &[
    "write a function that reverses a string",
    "why is the sky blue?",
    "a haiku about autumn leaves",
    "compare renting and buying a house, with numbers, and tell me which one you would pick for a family of four in a big city",
    "def parse(line):\n    return line.split(',')",
    "my program crashes with a stack trace",
];

/// Mean microseconds of one rule-based decision.
async fn rule_latency(dir: &Path) -> (f64, f64) {
    let text = format!(
        r#"local route = require("orchestra.route")
{RULES}
return {{ perform = function(req)
  local requests = orchestra.json.decode(req.prompt)
  local n, us = 0, {{}}
  for _ = 1, 500 do
    for _, r in ipairs(requests) do router:explain(r) end
  end
  local t0 = orchestra.clock()
  for _ = 1, 2000 do
    for _, r in ipairs(requests) do
      local d = router:explain(r)
      n = n + 1
      us[#us + 1] = d.us
    end
  end
  local mean = (orchestra.clock() - t0) * 1e6 / n
  table.sort(us)
  return {{ mean_us = mean, median_us = us[#us // 2] }}
end }}
"#
    );
    let c = conductor(dir, "rules", &text).await;
    let out = perform(&c, &serde_json::to_string(REQUESTS).unwrap()).await;
    (
        out["mean_us"].as_f64().unwrap(),
        out["median_us"].as_f64().unwrap(),
    )
}

/// Mean milliseconds of one classifier decision on `model`.
async fn classifier_latency(dir: &Path, name: &str, model: &Path) -> f64 {
    let text = format!(
        r#"local route = require("orchestra.route")
local band = orchestra.band {{ memory = "4GiB", sections = {{ "code", "creative", "analysis", "routing" }} }}
band:add("basie", {{ model = {}, section = "routing", context = 1024, slots = 2 }})
local router = route.rules {{ {{ when = route.classifier(band.basie) }} }}
return {{ perform = function(req)
  local requests = orchestra.json.decode(req.prompt)
  assert(band.basie:load())
  router:explain(requests[1])
  local t0, n = orchestra.clock(), 0
  for _ = 1, 4 do
    for _, r in ipairs(requests) do
      local d = router:explain(r)
      assert(d.section, d.why)
      n = n + 1
    end
  end
  return {{ mean_ms = (orchestra.clock() - t0) * 1e3 / n }}
end }}
"#,
        lua_path(model)
    );
    let c = conductor(dir, name, &text).await;
    perform(&c, &serde_json::to_string(REQUESTS).unwrap()).await["mean_ms"]
        .as_f64()
        .unwrap()
}

/// Mean milliseconds of one semantic decision (the examples embedded beforehand).
async fn semantic_latency(dir: &Path, model: &Path) -> f64 {
    let text = format!(
        r#"local route = require("orchestra.route")
local band = orchestra.band {{ memory = "4GiB", sections = {{ "code", "creative", "analysis", "routing" }} }}
band:add("duke", {{ model = {}, section = "routing", embeddings = true, context = 512, slots = 4 }})
local router = route.rules {{ {{ when = route.semantic(band.duke, {{
  code = {{ "fix this stack trace", "write a function that reverses a string", "why does this code not compile" }},
  creative = {{ "write a poem about the rain", "tell me a story about a knight", "write lyrics for a jazz ballad" }},
  analysis = {{ "compare two options and recommend one", "explain the causes of climate change", "summarize this article" }},
}}) }} }}
return {{ perform = function(req)
  local requests = orchestra.json.decode(req.prompt)
  router:explain(requests[1])
  local t0, n = orchestra.clock(), 0
  for _ = 1, 10 do
    for _, r in ipairs(requests) do router:explain(r); n = n + 1 end
  end
  return {{ mean_ms = (orchestra.clock() - t0) * 1e3 / n }}
end }}
"#,
        lua_path(model)
    );
    let c = conductor(dir, "semantic", &text).await;
    perform(&c, &serde_json::to_string(REQUESTS).unwrap()).await["mean_ms"]
        .as_f64()
        .unwrap()
}

fn run() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Removed at the end, with the models written into it.
    let scratch = tempfile::Builder::new()
        .prefix("orchestra-bench-arrange-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let bench = orchestra::cli::bench::bench_model().expect("the benchmark model is written");
    // A smaller model, where a decode step is cheap and batching pays off more.
    let small = dir.join("bench-40m-q8_0.gguf");
    let spec = orchestra::synth::LlamaSpec {
        n_vocab: 32_000,
        seed: 40,
        ..orchestra::synth::LlamaSpec::new(
            "bench-40m",
            384,
            6,
            6,
            6,
            1536,
            orchestra::synth::TensorType::Q8_0,
        )
    };
    orchestra::synth::write_model(&spec, &small).unwrap();
    let tiny = dir.join("tiny-random.gguf");
    orchestra::synth::write_model(&orchestra::synth::tiny_spec(), &tiny).unwrap();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    rt.block_on(async {
        println!(
            "arrangement benchmarks — {cores} cores, {TOKENS} tokens per note, best of {REPEAT}"
        );
        println!("models: {} (~160M), a ~40M one like it", bench.display());
        println!();
        println!("comping, 3 background players          one after another   together   speed-up");
        let shared = format!(
            "band:add(\"monk\", {{ model = {}, section = \"analysis\", context = 512, slots = 4, sampling = {{ temperature = 0 }} }})",
            lua_path(&bench)
        );
        let (s, c) = comp_vs_sequential(dir, "shared", &shared, "{ band.monk, band.monk, band.monk }").await;
        println!(
            "  sharing one ~160M model (batched)     {:>10.0} ms   {:>7.0} ms   {:>6.2}x",
            s, c, s / c
        );
        let bench_path = bench.clone();
        let (s, c) = tokio::task::spawn_blocking(move || engine_reference(&bench_path))
            .await
            .unwrap();
        println!(
            "  the engine alone, ~160M (no Lua)      {:>10.0} ms   {:>7.0} ms   {:>6.2}x",
            s, c, s / c
        );
        let small_member = format!(
            "band:add(\"monk\", {{ model = {}, section = \"analysis\", context = 512, slots = 4, sampling = {{ temperature = 0 }} }})",
            lua_path(&small)
        );
        let (s, c) = comp_vs_sequential(dir, "small", &small_member, "{ band.monk, band.monk, band.monk }").await;
        println!(
            "  sharing one ~40M model (batched)      {:>10.0} ms   {:>7.0} ms   {:>6.2}x",
            s, c, s / c
        );
        let three = ["monk", "ella", "bird"]
            .iter()
            .map(|n| {
                format!(
                    "band:add(\"{n}\", {{ model = {}, section = \"analysis\", context = 512, slots = 2, sampling = {{ temperature = 0 }} }})\n",
                    lua_path(&bench)
                )
            })
            .collect::<String>();
        let (s, c) = comp_vs_sequential(dir, "three", &three, "{ band.monk, band.ella, band.bird }").await;
        println!(
            "  three ~160M instruments of their own  {:>10.0} ms   {:>7.0} ms   {:>6.2}x",
            s, c, s / c
        );
        let solo_threads = ["monk", "ella", "bird"]
            .iter()
            .map(|n| {
                format!(
                    "band:add(\"{n}\", {{ model = {}, section = \"analysis\", context = 512, slots = 2, threads = 1, sampling = {{ temperature = 0 }} }})\n",
                    lua_path(&bench)
                )
            })
            .collect::<String>();
        let (s, c) = comp_vs_sequential(dir, "three_single", &solo_threads, "{ band.monk, band.ella, band.bird }").await;
        println!(
            "  three ~160M instruments, 1 thread each {:>9.0} ms   {:>7.0} ms   {:>6.2}x",
            s, c, s / c
        );
        println!();
        println!("routing decision latency");
        let (mean, median) = rule_latency(dir).await;
        println!(
            "  rules (keywords, patterns, predicate)  mean {mean:.1} µs, median {median:.1} µs ({} requests)",
            REQUESTS.len()
        );
        let ms = classifier_latency(dir, "classifier_tiny", &tiny).await;
        println!("  classifier, tiny random model (~170K)  mean {ms:.2} ms");
        let ms = classifier_latency(dir, "classifier_bench", &bench).await;
        println!("  classifier, benchmark model (~160M)    mean {ms:.2} ms");
        let minilm = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/models/all-minilm-l6-v2-f16.gguf");
        if minilm.is_file() {
            let ms = semantic_latency(dir, &minilm).await;
            println!("  semantic, all-MiniLM-L6-v2 f16        mean {ms:.2} ms");
        } else {
            println!("  semantic: skipped (../shared/models/all-minilm-l6-v2-f16.gguf is not here)");
        }
    });
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    run();
}
