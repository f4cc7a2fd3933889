//! Errors of the synth module: [`GgufError`] for reading and writing the GGUF container,
//! [`SynthError`] for building models (specs, vocabularies, rehearsal scripts).

use std::io;
use std::path::PathBuf;

/// A GGUF file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("model file `{0}` does not exist: check the path")]
    Missing(PathBuf),
    #[error("could not read `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not write `{path}`: {source}; check the directory exists and has free space")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` is not a GGUF file (it starts with {start}); expected a .gguf model")]
    NotGguf { path: PathBuf, start: String },
    #[error(
        "`{path}` is GGUF version {version}, which is not supported: only versions 2 and 3 are read; re-convert it with a current llama.cpp"
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "`{path}` is truncated: its header needs more bytes than the file's {size}; download it again"
    )]
    TruncatedHeader { path: PathBuf, size: u64 },
    #[error(
        "`{path}` is truncated: tensor `{tensor}` ends at byte {needed} but the file has {size}; download it again"
    )]
    TruncatedData {
        path: PathBuf,
        tensor: String,
        needed: u64,
        size: u64,
    },
    #[error("`{path}` has a malformed GGUF header: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("tensor `{name}` cannot be written: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor `{0}` is added twice: tensor names must be unique")]
    DuplicateTensor(String),
}

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
