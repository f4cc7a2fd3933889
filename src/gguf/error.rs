//! Errors of GGUF files: [`GgufError`] for reading, validating and writing the
//! container.

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
    /// The header parses but declares something llama.cpp cannot load — and on some
    /// of these it aborts the whole process instead of returning an error.
    #[error("`{path}` is damaged: {reason}; download it again or re-convert it")]
    Damaged { path: PathBuf, reason: String },
    #[error("tensor `{name}` cannot be written: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor `{0}` is added twice: tensor names must be unique")]
    DuplicateTensor(String),
}
