//! The commands behind `main.rs`: each parses nothing itself (clap did) and calls the
//! library the same way a Rust user would.

pub mod bench;
pub mod cache;
pub mod check;
pub mod console;
pub mod eval;
pub mod generate;
pub mod hub;
pub mod inspect;
pub mod openclaw;
pub mod play;
pub mod probe;
pub mod progress;
pub mod rehearse;
pub mod repl;
pub mod score_bench;
pub mod serve;
pub mod serve_bench;
pub mod soak;
pub mod status;
pub mod voice;

use std::path::PathBuf;

use clap::Args;

use crate::score::ScoreOptions;

/// `--model-file NAME=PATH`: play a local GGUF file as the instrument `NAME` whatever
/// the score's `model = ...` says. Part of [`play::LimitArgs`], so every command that
/// runs a score (play, check, repl, serve) takes it; flatten it alone where a command
/// has no limits.
#[derive(Debug, Clone, Default, Args)]
pub struct ModelFileArgs {
    /// Play this GGUF file as the instrument NAME instead of the score's `model = ...`
    /// (repeatable): `--model-file coltrane=~/models/other.gguf`.
    #[arg(long = "model-file", value_name = "NAME=PATH", value_parser = parse_model_file)]
    pub model_files: Vec<(String, PathBuf)>,
}

impl ModelFileArgs {
    /// `options` with every override added.
    pub fn apply(&self, options: ScoreOptions) -> ScoreOptions {
        self.model_files
            .iter()
            .fold(options, |o, (name, path)| o.with_model_override(name, path))
    }

    /// The instruments overridden.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.model_files.iter().map(|(n, _)| n.as_str())
    }

    /// Fails when an override names no instrument of the loaded score (a typo would
    /// otherwise play the score's own model without a word).
    pub fn check_names(&self, instruments: &[String]) -> anyhow::Result<()> {
        for name in self.names() {
            if !instruments.iter().any(|i| i == name) {
                anyhow::bail!(
                    "`--model-file {name}=...` names no instrument of this score; its instruments are {}",
                    instruments
                        .iter()
                        .map(|i| format!("`{i}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Ok(())
    }
}

/// The file a command's model argument names: a path, or an `hf:` reference resolved
/// the way a score resolves it (the cache, `HF_HUB_OFFLINE`, and a pull when missing:
/// `--pull` downloads, otherwise it is offered on a terminal).
pub fn model_file(reference: &str, pull: hub::PullFlag) -> anyhow::Result<PathBuf> {
    let parsed = crate::hub::ModelRef::parse(reference)?;
    match parsed {
        crate::hub::ModelRef::Local(path) => {
            if !path.is_file() {
                anyhow::bail!(
                    "model file `{}` does not exist: give a GGUF path or an `hf:ORG/REPO/FILE.gguf` reference",
                    path.display()
                );
            }
            Ok(path)
        }
        hub => {
            // Downloads need a multi-thread runtime (xet transfers).
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let found = rt.block_on(hub::ensure_models(std::slice::from_ref(&hub), pull.into()))?;
            found
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("model `{reference}` resolved to no file"))
        }
    }
}

fn parse_model_file(s: &str) -> Result<(String, PathBuf), String> {
    let Some((name, path)) = s.split_once('=') else {
        return Err(format!(
            "`{s}` needs the form NAME=PATH, e.g. `coltrane=models/qwen.gguf`"
        ));
    };
    let name = name.trim();
    if name.is_empty() || path.is_empty() {
        return Err(format!(
            "`{s}` needs both an instrument name and a file: NAME=PATH"
        ));
    }
    let path = match path.strip_prefix("~/") {
        Some(rest) => dirs::home_dir().map_or_else(|| PathBuf::from(path), |h| h.join(rest)),
        None => PathBuf::from(path),
    };
    Ok((name.to_owned(), path))
}

/// Caps glibc's malloc arenas at 2 (unless `MALLOC_ARENA_MAX` says otherwise) for
/// long-running commands. Every model load starts worker threads, and glibc gives
/// threads arenas of their own (up to 8 per core) whose freed memory it keeps: a
/// server that loads and evicts models all day grew by about 8 MiB a minute in
/// `orchestra soak`, and stayed flat with the cap.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's tuning; it is thread-safe.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
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
    // Colour only for a person at a terminal: redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
