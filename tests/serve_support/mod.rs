//! Shared fixtures of the `serve*` tests: a real server on 127.0.0.1 with an ephemeral
//! port, playing a score of rehearsal models (greedy, so every instrument's answer is
//! known) plus a tiny random-weights model for long generations.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{band_dir, real, runtime, scratch, script};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use orchestra::score::{Conductor, ScoreOptions, ScoreSource};
use orchestra::server::{AppState, ServeConfig};
use orchestra::synth::TensorType;

/// The band of the served score: the four rehearsal members and `drone`, a tiny
/// random model with a long context for generations that run as long as asked.
pub fn score_text(version: &str) -> String {
    format!(
        r#"local route = require("orchestra.route")
local arrange = require("orchestra.arrange")
local band = orchestra.band {{ memory = "2GiB",
  sections = {{ "code", "creative", "analysis", "review", "routing" }} }}
for _, m in ipairs(orchestra.rehearsal_band()) do
  band:add(m.name, {{
    model = orchestra.rehearsal_model(m.name),
    section = m.section,
    context = 512,
    slots = 2,
    sampling = {{ temperature = 0 }},
  }})
end
band:add("drone", {{ model = "{drone}", section = "analysis", context = 8192, slots = 2,
  sampling = {{ temperature = 0 }} }})
band:add("duke", {{ model = "{drone}", section = "routing", embeddings = true, context = 256,
  slots = 2 }})
local router = route.rules({{
  {{ name = "code words", when = route.keywords({{ "function", "code" }}), section = "code" }},
  {{ otherwise = "creative" }},
}}, {{ band = band }})
return {{
  perform = function(req)
    if req.prompt:find("hold") then
      -- Streams a marker, then plays a long generation: a request that stays in flight.
      req:write("{version}:")
      local text = band.drone:generate(req.prompt, {{ ignore_eos = true, max_tokens = req.max_tokens or 6000 }})
      return "{version}:" .. #text
    end
    return arrange.perform(band, req, {{ router = router, comp = false }})
  end,
}}
"#,
        drone = drone().display(),
    )
}

/// A tiny random-weights model, written once.
pub fn drone() -> PathBuf {
    common::tiny_random(TensorType::F32)
}

pub fn options() -> ScoreOptions {
    let _ = band_dir();
    ScoreOptions::default()
        .with_rehearsal_dir(band_dir())
        .with_printer(std::sync::Arc::new(|_: &str| {}))
}

/// A running server and what the test needs to reach it.
pub struct Served {
    pub url: String,
    pub addr: SocketAddr,
    pub conductor: Conductor,
    pub score: PathBuf,
    pub state: AppState,
}

/// Writes the score into a fresh folder for `test`.
pub fn write_score(test: &str, version: &str) -> PathBuf {
    let dir = scratch().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("score.lua");
    std::fs::write(&path, score_text(version)).unwrap();
    path
}

/// Starts a server on 127.0.0.1:0 playing the test score.
pub async fn serve(test: &str, config: ServeConfig) -> Served {
    let score = write_score(test, "v1");
    serve_file(&score, config).await
}

pub async fn serve_file(score: &Path, config: ServeConfig) -> Served {
    let conductor = Conductor::start(ScoreSource::file(score), options())
        .await
        .expect("the test score loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::with_conductor(&config, conductor.clone());
    let s = state.clone();
    tokio::spawn(async move {
        orchestra::server::serve(listener, s, &config, std::future::pending())
            .await
            .unwrap();
    });
    Served {
        url: format!("http://{addr}/v1"),
        addr,
        conductor,
        score: score.to_path_buf(),
        state,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Runs a Python check script of `tests/` (`script` relative to the project) with
/// `args`; fails the test with its output unless it exits 0. Prints its stdout.
pub fn run_python_checks(script: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    println!("{stdout}");
}
