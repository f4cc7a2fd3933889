//! The commands behind `main.rs`: each parses nothing itself (clap did) and calls the
//! library the same way a Rust user would.

pub mod bench;
pub mod check;
pub mod generate;
pub mod inspect;
pub mod play;
pub mod rehearse;
pub mod repl;
pub mod score_bench;
pub mod trace;

use std::path::PathBuf;

/// Where orchestra keeps what it writes itself (rehearsal and benchmark models):
/// `$ORCHESTRA_HOME`, else the user's cache dir (`~/.cache/orchestra`).
pub fn orchestra_home() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCHESTRA_HOME") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("orchestra")
}

/// Set up `tracing` from `RUST_LOG`; quiet by default (warnings only, llama.cpp's own
/// chatter off unless asked for).
pub fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        "info,llama-cpp-2=warn"
    } else {
        // llama.cpp's own log arrives under the `llama-cpp-2` target; hf-hub logs its
        // retries as errors, which our own error message already explains.
        "warn,llama-cpp-2=error,hf_hub=off"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
