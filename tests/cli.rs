//! The `orchestra` binary as users run it: generate with stats and `hf:` references,
//! inspect, play flags (`--trace`, `--model-file`), plain logs, errors.

mod common;

use std::process::Command;

use common::{ALPHA, BETA, rehearsal};
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

/// `orchestra` with its own `ORCHESTRA_HOME`: tests that write the rehearsal band there
/// run at the same time.
fn orchestra_home(home: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(args)
        .env("ORCHESTRA_HOME", common::scratch().join(home))
        .env_remove("RUST_LOG")
        .output()
        .expect("the orchestra binary runs")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn play_trace_is_a_flag_that_leaves_the_prompt_alone() {
    let out = orchestra_home(
        "home-trace",
        &[
            "play",
            "scores/rehearsal.lua",
            "--trace",
            "write a rust function",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(common::script("coltrane")),
        "the prompt was routed to code: {}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("arrangement ("), "{}", stderr(&out));

    let out = orchestra_home(
        "home-trace",
        &[
            "play",
            "scores/rehearsal.lua",
            "--trace=json",
            "write a rust function",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // stdout is one JSON document (`| jq` works); the answer streams on stderr.
    let trace: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", stdout(&out)));
    assert_eq!(trace["route"]["section"], "code", "{trace:#}");
    assert!(stderr(&out).contains(common::script("coltrane")));

    // `--json` with `--trace=json`: still one document, the answer with its trace.
    let out = orchestra_home(
        "home-trace",
        &[
            "play",
            "scores/rehearsal.lua",
            "--json",
            "--trace=json",
            "write a rust function",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["text"], common::script("coltrane"));
    assert_eq!(answer["data"]["trace"]["route"]["section"], "code");

    // `--events`: one JSON object per line on stderr.
    let out = orchestra_home(
        "home-trace",
        &[
            "play",
            "scores/rehearsal.lua",
            "--events",
            "write a rust function",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "generation_started"),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["seq"].is_u64()), "{events:?}");
}

#[test]
fn model_file_plays_a_local_file_as_an_instrument_of_the_score() {
    let beta = rehearsal("beta", BETA, TensorType::Q8_0);
    let flag = format!("coltrane={}", beta.display());
    let out = orchestra_home(
        "home-model-file",
        &[
            "play",
            "scores/rehearsal.lua",
            "--model-file",
            &flag,
            "write a rust function",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(BETA), "{}", stdout(&out));
    assert!(!stdout(&out).contains(common::script("coltrane")));

    let out = orchestra_home(
        "home-model-file",
        &[
            "check",
            "scores/rehearsal.lua",
            "--json",
            "--model-file",
            &flag,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let coltrane = reports[0]["bands"][0]["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "coltrane")
        .unwrap()
        .clone();
    assert_eq!(coltrane["path"], beta.display().to_string());

    // A typo is an error, never the score's own model played without a word.
    let typo = format!("coltrain={}", beta.display());
    let out = orchestra_home(
        "home-model-file",
        &["check", "scores/rehearsal.lua", "--model-file", &typo],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`--model-file coltrain=...` names no instrument"),
        "{}",
        stderr(&out)
    );
    let out = orchestra_home(
        "home-model-file",
        &["check", "scores/rehearsal.lua", "--model-file", "coltrane"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NAME=PATH"), "{}", stderr(&out));
}

/// A Hugging Face cache as `huggingface_hub` leaves it, holding `file` of `org/repo`.
fn hub_cache_with(dir: &std::path::Path, repo: &str, file: &str, model: &std::path::Path) {
    use sha2::Digest as _;
    let bytes = std::fs::read(model).unwrap();
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = dir.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("blobs").join(&sha), &bytes).unwrap();
    let _ = std::fs::remove_file(snapshot.join(file));
    std::os::unix::fs::symlink(
        std::path::Path::new("../../blobs").join(&sha),
        snapshot.join(file),
    )
    .unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
}

#[test]
fn generate_and_inspect_take_an_hf_reference_like_a_score_does() {
    let cache = common::scratch().join("hf-cache");
    let alpha = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    hub_cache_with(&cache, "org/alpha-GGUF", "alpha-Q8_0.gguf", &alpha);
    let orchestra_hub = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(args)
            .env("ORCHESTRA_HOME", common::scratch().join("home"))
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let run = |reference: &str| orchestra_hub(&["generate", "-m", reference, "-t", "0", "play"]);
    let out = run("hf:org/alpha-GGUF/alpha-Q8_0.gguf");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), ALPHA);

    let out = run("hf:org/alpha-GGUF/missing-Q8_0.gguf");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains("does not exist"), "{err}");
    assert!(err.contains("missing-Q8_0.gguf"), "{err}");

    let out = orchestra_hub(&["inspect", "hf:org/alpha-GGUF/alpha-Q8_0.gguf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("quantisation  Q8_0"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_command_that_takes_a_model_takes_a_reference_and_pull() {
    let cache = common::scratch().join("hf-cache-every");
    let alpha = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    hub_cache_with(&cache, "org/alpha-GGUF", "alpha-Q8_0.gguf", &alpha);
    let orchestra_hub = |args: &[&str], offline: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestra"));
        cmd.args(args)
            .env("ORCHESTRA_HOME", common::scratch().join("home"))
            .env("HF_HUB_CACHE", &cache)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        cmd.output().unwrap()
    };
    let cached = "hf:org/alpha-GGUF/alpha-Q8_0.gguf";
    let bench = format!("bench --model {cached} --tokens 4 --streams 1 --repeat 1");
    let out = orchestra_hub(&bench.split(' ').collect::<Vec<_>>(), true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("alpha"), "{}", stdout(&out));

    let missing = "hf:org/alpha-GGUF/missing-Q8_0.gguf";
    let commands: [&[&str]; 4] = [
        &["generate", "-m", missing, "x"],
        &["inspect", missing],
        &["bench", "--model", missing],
        &["bench-score", "--model", missing],
    ];
    for args in commands {
        // Without a terminal to ask on, a missing model is refused with the way out...
        let out = orchestra_hub(args, false);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("orchestra pull hf:org/alpha-GGUF/missing-Q8_0.gguf"),
            "{args:?}: {err}"
        );
        assert!(err.contains("pass --pull"), "{args:?}: {err}");
        // ...and the `--pull` it names is there: offline, the pull says what is missing.
        let out = orchestra_hub(&[args, &["--pull"]].concat(), true);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("HF_HUB_OFFLINE is set"),
            "{args:?} --pull: {err}"
        );
    }
}

#[test]
fn inspect_reports_the_file_type_and_the_tensor_type_mix() {
    let model = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let out = orchestra(&["inspect", model.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("quantisation  Q8_0"), "{text}");
    let mix = text
        .lines()
        .find(|l| l.starts_with("tensor types  "))
        .unwrap_or_else(|| panic!("no tensor types in:\n{text}"));
    assert!(mix.contains("Q8_0") && mix.contains("F32"), "{mix}");
    let out = orchestra(&["inspect", "--json", model.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["file_type"], 7, "llama.cpp's MOSTLY_Q8_0");
    assert_eq!(v["tensor_types"][0]["type"], "Q8_0", "{v:#}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let model = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["generate", "-m", model.to_str().unwrap(), "-n", "1", "x"])
        .env("ORCHESTRA_HOME", common::scratch().join("home"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("INFO"), "some log lines: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in: {err:?}");
}
