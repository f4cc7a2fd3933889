//! `orchestra __probe-model FILE` (hidden): the child process the engine starts to
//! test-load a GGUF file it has not seen before (see `engine::probe`). Exits 0 when the
//! file loads and runs, [`PROBE_CLEAN_FAILURE`] when llama.cpp refuses it cleanly; an
//! abort inside llama.cpp ends this process, not the one that asked.

use std::path::PathBuf;

use clap::Args;

use crate::engine::{PROBE_CLEAN_FAILURE, probe_child};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The GGUF file to load.
    pub path: PathBuf,
    /// Load it for embeddings, as the instrument that asked will.
    #[arg(long)]
    pub embeddings: bool,
    /// Skip the Rust validation and hand the file to llama.cpp as it is (tests use it
    /// to show the aborts validation prevents).
    #[arg(long, hide = true)]
    pub unvalidated: bool,
}

/// Loads the file once; never returns on failure (the exit code is the verdict).
pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    if let Err(e) = probe_child(&args.path, args.embeddings, !args.unvalidated) {
        eprintln!("probe-error: {e}");
        std::process::exit(PROBE_CLEAN_FAILURE);
    }
    Ok(())
}
