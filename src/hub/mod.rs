//! Model sources: references (`hf:org/repo/file.gguf`, `hf:org/repo:Q4_K_M`, `@revision`,
//! local paths) and Hugging Face downloads through `hf-hub` into the cache Python's
//! `huggingface_hub` shares — progress bars, resume, verification, offline mode, search.
//! Loading models is `engine/`'s business; this module only hands out paths.
//!
//! # Layout
//! - `reference`: [`ModelRef`] parsing and display.
//! - `config`: [`HubConfig`] from `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`,
//!   `HF_HUB_OFFLINE`.
//! - `select`: which files a reference means — quantisation picks, split GGUF parts.
//! - `remote`: HTTP — listings, file metadata, byte streams, refusals as [`HubError`]s.
//! - `pull`: [`resolve`], [`pull_all`], [`cached_path`] — download, resume, verify.
//! - `cache`: the on-disk cache — lookups, [`list_cached`], [`remove`].
//! - `progress`: [`Progress`] events and sinks (the terminal bars are `cli::progress`).
//! - `search`: [`search`] for GGUF repos.
//! - `gguf`: header facts for `orchestra models`.
//! - `scan`: the models a score file names (static scan).
//!
//! The `pull`, `models`, `search` commands and the missing-model check of `play`/`serve`
//! are `cli::hub`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), orchestra::hub::HubError> {
//! use orchestra::hub::{HubConfig, ModelRef, Progress, resolve};
//! let model = ModelRef::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M")?;
//! let progress = Progress::from_fn(|event| eprintln!("{event:?}"));
//! let path = resolve(&model, &HubConfig::from_env(), progress).await?;
//! # let _ = path; Ok(()) }
//! ```

pub(crate) mod cache;
mod config;
mod error;
pub mod gguf;
mod progress;
pub(crate) mod pull;
mod reference;
mod remote;
pub mod scan;
pub(crate) mod search;
pub(crate) mod select;

pub use cache::{CachedModel, Removed, list_cached, remove};
pub use config::{DEFAULT_ENDPOINT, HubConfig};
pub use error::HubError;
pub use progress::{Progress, ProgressEvent, ProgressSink};
pub use pull::{cached_path, pull_all, pull_each, resolve};
pub use reference::{ACCEPTED_FORMS, ModelRef, RefError};
pub use search::{SearchHit, search};
pub use select::{DEFAULT_QUANT, quant_label};
