//! The real GGUF models the ignored tests run on: where they are, or a panic that says
//! how to get them. Never a silent skip: a test that asks for a model and finds none
//! fails.

use std::path::{Path, PathBuf};

/// A real model a test can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Real {
    /// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2, ChatML template with tools).
    Qwen,
    /// Gemma 3 270M (base), Q4_K_M (gemma3, no chat template).
    Gemma,
    /// all-MiniLM-L6-v2, f16 (BERT sentence embeddings).
    MiniLm,
}

/// What to run when a real model is missing.
pub const FETCH_HINT: &str = "run scripts/fetch-test-models";

impl Real {
    /// The file name `scripts/fetch-test-models` writes.
    pub fn file_name(self) -> &'static str {
        match self {
            Real::Qwen => "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            Real::Gemma => "gemma-3-270m-q4_k_m.gguf",
            Real::MiniLm => "all-minilm-l6-v2-f16.gguf",
        }
    }

    /// Places the file may be, in order.
    pub fn candidates(self) -> Vec<PathBuf> {
        let fetched = test_models_dir().join(self.file_name());
        match self {
            Real::Qwen | Real::Gemma => vec![fetched],
            // The fetch script converts it from PyPI's safetensors; the project's
            // neighbour folder holds the same file.
            Real::MiniLm => vec![
                fetched,
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../shared/models")
                    .join(self.file_name()),
            ],
        }
    }
}

/// `$ORCHESTRA_HOME/test-models` (default `~/.cache/orchestra/test-models`), where
/// `scripts/fetch-test-models` puts the models.
pub fn test_models_dir() -> PathBuf {
    orchestra::home::orchestra_home().join("test-models")
}

/// The path of a real model; panics with what to run when it is missing.
pub fn real_model(which: Real) -> PathBuf {
    let candidates = which.candidates();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return found.clone();
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect();
    panic!(
        "the real test model `{}` is missing (looked at {}): {FETCH_HINT}",
        which.file_name(),
        looked.join(", ")
    )
}
