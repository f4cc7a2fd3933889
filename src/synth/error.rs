//! Errors of the synth module: [`SynthError`] for building models (specs, vocabularies,
//! rehearsal scripts); the container's own errors are [`GgufError`].

use std::io;
use std::path::PathBuf;

pub use crate::gguf::GgufError;

/// A synthetic model could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("model spec `{name}` is invalid: {reason}")]
    BadSpec { name: String, reason: String },
    #[error("vocabulary token `{0}` appears twice: token strings must be unique")]
    DuplicateToken(String),
    #[error("rehearsal script for `{name}` cannot be compiled: {reason}")]
    BadScript { name: String, reason: String },
    #[error("could not create directory `{path}`: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
