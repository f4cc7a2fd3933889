//! `orchestra serve` checked by the official `openai` Python client (a client nobody
//! here wrote): chat, streaming, usage, `response_format`, embeddings, legacy
//! completions, error codes — on the synthetic band, then on a real model. The checks
//! themselves are in `tests/openai/client_checks.py`.

mod serve_support;

use orchestra::server::ServeConfig;
use serve_support::*;

fn run_checks(mode: &str, url: &str, expected: serde_json::Value) {
    run_python_checks(
        "tests/openai/client_checks.py",
        &[mode, url, &expected.to_string()],
    );
}

#[test]
#[ignore = "needs the openai Python package: pip install openai, then cargo test --release --test serve_openai -- --include-ignored"]
fn the_openai_python_client_works_unchanged() {
    runtime().block_on(async {
        let s = serve("openai", ServeConfig::default()).await;
        let keyed = serve_file(
            &s.score,
            ServeConfig {
                api_key: Some("sesame".into()),
                ..ServeConfig::default()
            },
        )
        .await;
        let expected = serde_json::json!({
            "coltrane": script("coltrane"),
            "monk": script("monk"),
            "keyed_url": keyed.url,
        });
        let url = s.url.clone();
        tokio::task::spawn_blocking(move || run_checks("synthetic", &url, expected))
            .await
            .unwrap();
    });
}

/// A score with Qwen2.5-Coder-0.5B-Instruct as the instrument `qwen`.
fn qwen_score(test: &str) -> std::path::PathBuf {
    let qwen = real::real_model(real::Real::Qwen);
    let dir = scratch().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let score = dir.join("score.lua");
    std::fs::write(
        &score,
        format!(
            r#"local band = orchestra.band {{ memory = "4GiB" }}
band:add("qwen", {{ model = "{}", section = "code", context = 2048, slots = 2 }})
return {{ perform = function(req) return band.qwen:chat(req) end }}
"#,
            qwen.display()
        ),
    )
    .unwrap();
    score
}

#[test]
#[ignore = "needs the openai Python package and the real test models: pip install openai; scripts/fetch-test-models"]
fn a_real_model_serves_the_openai_python_client() {
    let score = qwen_score("openai-real");
    runtime().block_on(async {
        let s = serve_file(&score, ServeConfig::default()).await;
        let url = s.url.clone();
        let expected = serde_json::json!({ "json_model": "qwen" });
        tokio::task::spawn_blocking(move || run_checks("real", &url, expected))
            .await
            .unwrap();
    });
}

#[test]
#[ignore = "needs the openai Python package and the real test models: pip install openai; scripts/fetch-test-models"]
fn a_real_model_calls_tools_through_the_openai_python_client() {
    let score = qwen_score("openai-tools");
    runtime().block_on(async {
        let s = serve_file(&score, ServeConfig::default()).await;
        let url = s.url.clone();
        tokio::task::spawn_blocking(move || run_checks("tools", &url, serde_json::json!({})))
            .await
            .unwrap();
    });
}
