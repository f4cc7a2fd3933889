//! The `orchestra` binary as users run it: generate with stats, inspect, errors.

mod common;

use std::process::Command;

use common::{ALPHA, rehearsal};
use orchestra::synth::TensorType;

fn orchestra(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(args)
        .env("ORCHESTRA_HOME", common::scratch().join("home"))
        .env_remove("RUST_LOG")
        .output()
        .expect("the orchestra binary runs")
}

#[test]
fn generate_streams_the_answer_and_stats_end_with_decode_speed() {
    let model = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let out = orchestra(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--temperature",
        "0",
        "--stats",
        "play",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), ALPHA);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("decode: ") && last.ends_with(" tok/s"),
        "{stderr}"
    );
    let n: f64 = last["decode: ".len()..last.len() - " tok/s".len()]
        .parse()
        .unwrap();
    assert!(n > 0.0);
}

#[test]
fn generate_honours_max_tokens_and_stop() {
    let model = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let path = model.to_str().unwrap();
    let out = orchestra(&["generate", "-m", path, "-t", "0", "--stop", "blues", "x"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "Alpha plays the"
    );
    let out = orchestra(&["generate", "-m", path, "-t", "0", "--max-tokens", "1", "x"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), "Alpha");
}

#[test]
fn inspect_describes_a_model_without_loading_it() {
    let model = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let out = orchestra(&["inspect", model.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "architecture  llama",
        "quantisation  Q8_0",
        "template      ChatML",
        "footprint",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let out = orchestra(&["inspect", "--json", model.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert!(v["parameters"].as_u64().unwrap() > 0);
    assert!(v["footprint_total"].as_u64().unwrap() > v["file_bytes"].as_u64().unwrap() / 2);
}

#[test]
fn a_missing_model_fails_with_a_clear_message_and_exit_code() {
    let out = orchestra(&["generate", "--model", "/nonexistent/model.gguf", "hi"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/model.gguf") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn help_teaches_the_commands() {
    let out = orchestra(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["generate", "inspect", "rehearse", "bench"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = orchestra(&["generate", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--max-tokens",
        "--temperature",
        "--seed",
        "--ignore-eos",
        "--stats",
    ] {
        assert!(text.contains(flag), "{text}");
    }
}
