//! Shared fixtures for integration tests: a scratch folder per test binary, synthetic
//! models written once into it, the rehearsal band, a tokio runtime helper, and the
//! real models of the ignored tests ([`real`]).
#![allow(dead_code)]

pub mod real;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use orchestra::synth::TensorType;

/// A folder for this test binary's files, removed at the start of the next run.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = std::env::temp_dir().join(format!("orchestra-test-{stem}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The rehearsal band (coltrane, ella, monk, mingus), written once per binary.
pub fn band_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("band");
        orchestra::synth::write_rehearsal_band(&dir).expect("the rehearsal band is written");
        dir
    })
}

/// What a rehearsal band member says under greedy decoding.
pub fn script(name: &str) -> &'static str {
    orchestra::synth::rehearsal_band()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.script)
        .expect("a rehearsal member")
}

/// Tests run in parallel threads: one writes a model while the others wait for it.
static WRITING: Mutex<()> = Mutex::new(());

/// A rehearsal model that greedily replays `script`; returns its path.
pub fn rehearsal(name: &str, script: &str, dtype: TensorType) -> PathBuf {
    let _one_writer = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let path = scratch().join(format!("{name}-{}.gguf", dtype.name()));
    if !path.exists() {
        let tmp = path.with_extension("part");
        orchestra::synth::write_rehearsal_model(name, script, &tmp, dtype)
            .expect("rehearsal model is written");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A tiny random-weights llama model.
pub fn tiny_random(dtype: TensorType) -> PathBuf {
    let _one_writer = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let path = scratch().join(format!("tiny-random-{}.gguf", dtype.name()));
    if !path.exists() {
        let mut spec = orchestra::synth::tiny_spec();
        spec.dtype = dtype;
        let tmp = path.with_extension("part");
        orchestra::synth::write_model(&spec, &tmp).expect("tiny model is written");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

pub const ALPHA: &str = "Alpha plays the blues in B flat tonight.";
pub const BETA: &str = "Beta answers with a bright bossa nova line.";
pub const UNICODE: &str = "Café au lait ☕ — naïve jazz, 東京 nights 🎷!";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
