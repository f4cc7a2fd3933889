//! The orchestra on real models (Qwen2.5-Coder 0.5B and Gemma 3 270M, both Q4_K_M, and
//! all-MiniLM-L6-v2, all fetched by `scripts/fetch-test-models`):
//! real tokenizers, K-quants, real chat templates and real answers. Every test here is
//! ignored in a plain `cargo test` and runs with `-- --include-ignored`.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::real::{Real, real_model};
use orchestra::engine::{
    FinishReason, GenerateRequest, LoadOptions, Model, SamplingParams, StreamItem,
};
use orchestra::score::{Conductor, Request, ScoreOptions, ScoreSource};
use serde_json::Value;

fn options(slots: u32) -> LoadOptions {
    LoadOptions {
        context: 1024,
        slots,
        ..LoadOptions::default()
    }
}

/// Qwen loaded once per binary (two slots), shared by the tests that only generate.
fn qwen() -> &'static Model {
    static QWEN: OnceLock<Model> = OnceLock::new();
    QWEN.get_or_init(|| Model::load(real_model(Real::Qwen), &options(2)).expect("qwen loads"))
}

fn greedy(prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest::user(prompt)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(max_tokens)
}

fn answer(model: &Model, request: GenerateRequest) -> orchestra::engine::Completion {
    model
        .generate(request)
        .expect("the request is accepted")
        .blocking_finish_with(|_| {})
        .expect("the generation finishes")
}

/// `orchestra inspect --json FILE`, parsed.
fn inspect(path: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["inspect", "--json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn inspect_reports_architecture_file_type_tensor_mix_and_template_of_real_files() {
    let qwen = inspect(&real_model(Real::Qwen));
    assert_eq!(qwen["architecture"], "qwen2", "{qwen:#}");
    // llama.cpp's name for the file, although Q5_0 tensors hold the most parameters.
    assert_eq!(qwen["quantisation"], "Q4_K_M", "{qwen:#}");
    assert_eq!(qwen["file_type"], 15);
    let types: Vec<&str> = qwen["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    for want in ["Q4_K", "Q5_0", "F32"] {
        assert!(types.contains(&want), "{want} in {types:?}");
    }
    assert_eq!(qwen["vocab_size"], 151936);
    let template = qwen["chat_template"].as_str().expect("qwen has a template");
    assert!(template.contains("<|im_start|>"), "{template}");

    let gemma = inspect(&real_model(Real::Gemma));
    assert_eq!(gemma["architecture"], "gemma3", "{gemma:#}");
    assert_eq!(gemma["quantisation"], "Q4_K_M", "{gemma:#}");
    assert_eq!(gemma["vocab_size"], 262144);
    assert!(gemma["chat_template"].is_null(), "{gemma:#}");

    // The text form says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .arg("inspect")
        .arg(real_model(Real::Qwen))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("quantisation  Q4_K_M"), "{text}");
    assert!(text.contains("tensor types  "), "{text}");
    assert!(text.contains("template      ChatML"), "{text}");
}

/// The code of the first fenced block of `text` (any language tag), or all of it.
fn code_block(text: &str) -> &str {
    let Some(start) = text.find("```") else {
        return text;
    };
    let body = &text[start + 3..];
    let body = &body[body.find('\n').map_or(0, |i| i + 1)..];
    &body[..body.find("```").unwrap_or(body.len())]
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn qwen_answers_a_code_request_with_a_python_function_that_parses() {
    let c = answer(
        qwen(),
        greedy(
            "Write a Python function `is_palindrome(s)` that returns True when the string s \
             reads the same backwards. Reply with the code only.",
            256,
        ),
    );
    let code = code_block(&c.text);
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import ast, sys\n\
             tree = ast.parse(sys.stdin.read())\n\
             names = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]\n\
             print(' '.join(names))\n\
             sys.exit(0 if names else 3)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(code.as_bytes())
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not a parsing Python function ({}):\n{code}\n--- whole answer:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.text
    );
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.contains("is_palindrome"), "functions: {names}");
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn greedy_output_of_a_real_model_is_the_same_on_every_run() {
    let prompt = "Name three uses of a hash map.";
    let first = answer(qwen(), greedy(prompt, 40));
    let again = answer(qwen(), greedy(prompt, 40));
    assert!(first.completion_tokens > 0);
    assert_eq!(first.text, again.text, "two runs on one load");
    // A fresh load (another context) gives the same text too, and so does a SentencePiece
    // model without a chat template.
    let reloaded = Model::load(real_model(Real::Qwen), &options(1)).unwrap();
    assert_eq!(answer(&reloaded, greedy(prompt, 40)).text, first.text);
    drop(reloaded);
    let gemma = Model::load(real_model(Real::Gemma), &options(1)).unwrap();
    let raw = || {
        GenerateRequest::raw("The capital of France is")
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(24)
    };
    let a = answer(&gemma, raw());
    let b = answer(&gemma, raw());
    assert!(a.completion_tokens > 0);
    assert_eq!(a.text, b.text);
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn a_request_cancelled_mid_generation_frees_the_only_slot_of_a_real_model() {
    let model = Model::load(real_model(Real::Qwen), &options(1)).unwrap();
    let mut long = model
        .generate(greedy("Count from one to one thousand in words.", 100_000).with_ignore_eos(true))
        .unwrap();
    // Mid-generation: a few pieces are out.
    for _ in 0..3 {
        assert!(matches!(long.blocking_next(), Some(StreamItem::Text(_))));
    }
    assert_eq!(model.active_requests(), 1);
    drop(long);
    // One slot: the next request can only start once the cancelled one gave it back
    // (otherwise it would wait behind 100,000 tokens), and it decodes from position 0.
    let mut next = model.generate(greedy("Say hello.", 16)).unwrap();
    let mut text = String::new();
    let done = loop {
        match next.blocking_next().expect("the next request runs") {
            StreamItem::Text(t) => text.push_str(&t),
            StreamItem::Done(c) => break c,
            StreamItem::Failed(e) => panic!("the next request failed: {e}"),
        }
    };
    assert!(done.completion_tokens > 0, "{text:?}");
    assert!(
        matches!(
            done.finish_reason,
            FinishReason::Stop | FinishReason::Length
        ),
        "{:?}",
        done.finish_reason
    );
    assert_eq!(model.active_requests(), 0, "the cancelled request is gone");
    // The same answer as on a model that never saw the cancelled request.
    assert_eq!(
        done.text,
        answer(qwen(), greedy("Say hello.", 16)).text,
        "stale KV cells changed the answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
async fn the_pocket_band_routes_comps_solos_and_reviews_and_plays_code_alone_on_real_models() {
    let qwen = real_model(Real::Qwen);
    let score = Path::new(env!("CARGO_MANIFEST_DIR")).join("scores/pocket.lua");
    let options = ScoreOptions::default()
        .with_model_override("coltrane", &qwen)
        .with_model_override("monk", &qwen)
        .with_model_override("ella", &qwen)
        .with_model_override("mingus", real_model(Real::Gemma))
        .with_model_override("duke", real_model(Real::MiniLm))
        .with_printer(std::sync::Arc::new(|_: &str| {}));
    let conductor = Conductor::start(ScoreSource::file(&score), options)
        .await
        .expect("the pocket score loads on the fetched files");
    let info = conductor.info().await.unwrap();
    let coltrane = info
        .instruments
        .iter()
        .find(|i| i.name == "coltrane")
        .unwrap();
    assert_eq!(
        coltrane.path, qwen,
        "the override is played, not the hf: model"
    );

    // An analysis request: the others comp, Monk solos, Mingus reviews.
    let answer = conductor
        .perform(Request::prompt("explain how vaccines work"))
        .await
        .expect("the band plays");
    let trace = &answer.data["trace"];
    eprintln!("{}\n{}", answer.text, orchestra::trace::render_trace(trace));
    assert_eq!(trace["route"]["section"], "analysis", "{trace:#}");
    let mut comped: Vec<&str> = trace["comp"]["players"]
        .as_array()
        .expect("comp players")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    comped.sort();
    assert_eq!(comped, ["coltrane", "ella"], "{trace:#}");
    let notes = trace["comp"]["notes"].as_array().expect("comp notes");
    assert_eq!(notes.len(), 2, "both comped: {trace:#}");
    assert!(
        notes
            .iter()
            .all(|n| !n["text"].as_str().unwrap().is_empty())
    );
    assert_eq!(trace["solo"]["player"], "monk", "{trace:#}");
    let reviews = trace["reviews"].as_array().expect("reviews");
    let first = &reviews[0];
    assert_eq!(first["reviewer"], "mingus", "{trace:#}");
    assert_eq!(first["author"], "monk");
    // The verdict grammar holds even on a 270M base model: a readable verdict.
    assert!(
        ["approve", "revise"].contains(&first["verdict"].as_str().unwrap()),
        "{trace:#}"
    );
    assert!(first.get("unreadable").is_none(), "{trace:#}");
    assert_eq!(trace["answer"]["player"], "monk");
    assert!(!answer.text.trim().is_empty());

    // A code request: Coltrane alone, as the score decided from its HumanEval figures.
    let answer = conductor
        .perform(Request::prompt(
            "write a python function that reverses a list",
        ))
        .await
        .expect("the band plays");
    let trace = &answer.data["trace"];
    assert_eq!(trace["route"]["section"], "code", "{trace:#}");
    assert_eq!(trace["solo"]["player"], "coltrane", "{trace:#}");
    assert!(
        trace["comp"].is_null() && trace["reviews"].is_null(),
        "{trace:#}"
    );
    assert_eq!(trace["skipped"][0]["part"], "comp", "{trace:#}");
    assert!(answer.text.contains("def "), "{}", answer.text);
}
