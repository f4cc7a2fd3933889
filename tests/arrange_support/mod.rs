//! Shared fixtures of the arrangement and routing tests: scripted rehearsal models
//! written once per test binary, scores built from a band declaration and a `perform`
//! body, and the events a performance put on the bus.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{band_dir, real, scratch, script};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestra::events::{Event, EventKind};
use orchestra::score::{Answer, Conductor, Request, ScoreError, ScoreOptions, ScoreSource};
use orchestra::synth::TensorType;

static WRITING: Mutex<()> = Mutex::new(());

/// A rehearsal model that greedily replays `script`, written once per binary.
pub fn model(name: &str, script: &str) -> PathBuf {
    let _one_writer = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    if orchestra::synth::rehearsal_script(&path).as_deref() != Some(script) {
        let tmp = path.with_extension("part");
        orchestra::synth::write_rehearsal_model(name, script, &tmp, TensorType::Q8_0)
            .expect("the rehearsal model is written");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A copy of a model file that a test may delete (to make its load fail).
pub fn doomed_copy(name: &str, script: &str, test: &str) -> PathBuf {
    let src = model(name, script);
    let dst = test_dir(test).join(format!("{name}-doomed.gguf"));
    std::fs::copy(&src, &dst).unwrap();
    dst
}

/// A tiny random-weights llama model (it knows nothing; it babbles).
pub fn random_model() -> PathBuf {
    let _one_writer = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let path = scratch().join("tiny-random.gguf");
    if !path.exists() {
        let tmp = path.with_extension("part");
        orchestra::synth::write_model(&orchestra::synth::tiny_spec(), &tmp)
            .expect("the tiny model is written");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A reviewer verdict that approves.
pub const APPROVE: &str = r#"{"verdict":"approve"}"#;
/// A reviewer verdict that asks for a revision.
pub const REJECT: &str = r#"{"verdict":"revise","problems":["too short","no tests"]}"#;

/// Options for tests: quiet `print`, the shared rehearsal band, a generous CPU budget
/// (debug-free release builds are fast, but CI machines are busy).
pub fn options() -> ScoreOptions {
    ScoreOptions::default()
        .with_rehearsal_dir(band_dir())
        .with_printer(Arc::new(|_: &str| {}))
        .with_cpu_limit(std::time::Duration::from_secs(30))
}

/// A fresh folder for one test.
pub fn test_dir(test: &str) -> PathBuf {
    let dir = scratch().join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `model = "..."` as a Lua string literal.
pub fn lua_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// One `band:add` line for a scripted model.
pub fn member(name: &str, section: &str, path: &Path) -> String {
    format!(
        "band:add({name:?}, {{ model = {}, section = {section:?}, context = 1024, slots = 4, sampling = {{ temperature = 0 }} }})\n",
        lua_path(path)
    )
}

/// A score: the stdlib, a band (`sections` as declared), the members, and `perform`.
pub fn score(sections: &[&str], members: &str, perform: &str) -> String {
    let sections: Vec<String> = sections.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"local route = require("orchestra.route")
local arrange = require("orchestra.arrange")
local trace = require("orchestra.trace")
local band = orchestra.band {{ memory = "4GiB", sections = {{ {} }} }}
{members}
return {{ band = band, perform = function(req)
{perform}
end }}
"#,
        sections.join(", ")
    )
}

/// Writes the score into the test's folder and starts a conductor on it.
pub async fn start(test: &str, text: &str) -> Result<Conductor, ScoreError> {
    let path = test_dir(test).join("score.lua");
    std::fs::write(&path, text).unwrap();
    Conductor::start(ScoreSource::file(&path), options()).await
}

/// Plays one request and returns the answer with the events it put on the bus.
pub async fn perform(c: &Conductor, prompt: &str) -> (Answer, Vec<Event>) {
    let mut rx = c.events().subscribe();
    let answer = match c.perform(Request::prompt(prompt)).await {
        Ok(a) => a,
        Err(e) => panic!("the score failed:\n{e}"),
    };
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (answer, events)
}

/// Starts a score and plays one request.
pub async fn play(test: &str, text: &str, prompt: &str) -> (Answer, Vec<Event>) {
    let c = match start(test, text).await {
        Ok(c) => c,
        Err(e) => panic!("the score did not load:\n{e}"),
    };
    perform(&c, prompt).await
}

/// The arrangement events (custom events), as (name, data).
pub fn custom(events: &[Event]) -> Vec<(String, serde_json::Value)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Custom { name, data } => Some((name.clone(), data.clone())),
            _ => None,
        })
        .collect()
}

/// The narration lines of the events, in order.
pub fn narration(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(orchestra::narrate::line).collect()
}

/// (start, end) in milliseconds of each generation of `model`, from the bus.
pub fn spans(events: &[Event], model: &str) -> Vec<(f64, f64)> {
    let mut starts = Vec::new();
    let mut spans = Vec::new();
    for e in events {
        match &e.kind {
            EventKind::GenerationStarted { model: m, .. } if m == model => starts.push(e.at_ms),
            EventKind::GenerationFinished { model: m, .. } if m == model && !starts.is_empty() => {
                spans.push((starts.remove(0), e.at_ms))
            }
            _ => {}
        }
    }
    spans
}

/// The strings of a JSON list (empty when it is not one).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The length of a JSON list (0 when absent: empty lists are left out of traces).
pub fn len(v: &serde_json::Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or(0)
}
