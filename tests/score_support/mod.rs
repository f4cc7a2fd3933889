//! Shared fixtures of the `score_*` tests: the rehearsal band written once per test
//! binary, score files in per-test folders, and a conductor that plays one body.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{band_dir, scratch, script};

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestra::score::{Answer, Conductor, Request, ScoreError, ScoreOptions, ScoreSource};

/// Options for tests: the shared band, quiet `print`.
pub fn options() -> ScoreOptions {
    let _ = band_dir();
    ScoreOptions::default()
        .with_rehearsal_dir(band_dir())
        .with_printer(std::sync::Arc::new(|_: &str| {}))
}

/// Declares `band` with the four rehearsal members (greedy, small contexts).
pub const PREAMBLE: &str = r#"local band = orchestra.band { memory = "2GiB" }
for _, m in ipairs(orchestra.rehearsal_band()) do
  band:add(m.name, {
    model = orchestra.rehearsal_model(m.name),
    section = m.section,
    context = 512,
    slots = 2,
    sampling = { temperature = 0 },
  })
end
"#;

/// A fresh folder for one test.
pub fn test_dir(test: &str) -> PathBuf {
    let dir = scratch().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `score.lua` in the test's folder and returns its path.
pub fn write_score(test: &str, text: &str) -> PathBuf {
    let path = test_dir(test).join("score.lua");
    std::fs::write(&path, text).unwrap();
    path
}

/// A score: the preamble, then `perform` with `body` inside.
pub fn score_with(body: &str) -> String {
    format!("{PREAMBLE}\nreturn {{ perform = function(req)\n{body}\nend }}\n")
}

/// Starts a conductor on a score file.
pub async fn start(path: &Path) -> Result<Conductor, ScoreError> {
    Conductor::start(ScoreSource::file(path), options()).await
}

/// Plays `body` (inside `perform`, after the preamble) once.
pub async fn play(test: &str, body: &str) -> Result<Answer, ScoreError> {
    let path = write_score(test, &score_with(body));
    let c = start(&path).await?;
    c.perform(Request::prompt("write a function that reverses a string"))
        .await
}

/// Plays `body` and returns what `perform` returned as JSON; panics with the Lua error.
pub async fn play_json(test: &str, body: &str) -> serde_json::Value {
    match play(test, body).await {
        Ok(a) => a.data,
        Err(e) => panic!("the score failed:\n{e}"),
    }
}

/// Waits for a condition, polling.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
