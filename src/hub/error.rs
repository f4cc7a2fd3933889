//! [`HubError`]: everything that can go wrong getting a model, each message naming the
//! repo or file and saying what to do. Only types; the mapping from HTTP answers lives in
//! `remote.rs`.

use std::path::PathBuf;

use super::reference::RefError;

/// A model could not be found, fetched, verified or removed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The reference text is malformed.
    #[error(transparent)]
    Ref(#[from] RefError),

    /// 401/403 from the Hub: gated, private, or the token was refused.
    #[error("access to `{repo}` was refused ({status}): {advice}")]
    AccessRefused {
        /// `org/repo`.
        repo: String,
        /// HTTP status.
        status: u16,
        /// What to do about it.
        advice: String,
    },

    /// The repo does not exist on the endpoint (or is private and no token was sent).
    #[error("`{repo}` was not found on {endpoint}: check the spelling{advice}")]
    RepoNotFound {
        /// `org/repo`.
        repo: String,
        /// The Hub asked.
        endpoint: String,
        /// Extra hint, empty or starting with a separator.
        advice: String,
    },

    /// The `@revision` does not exist.
    #[error(
        "revision `{revision}` of `{repo}` was not found: check the `@{revision}` part of the reference"
    )]
    RevisionNotFound {
        /// `org/repo`.
        repo: String,
        /// Branch, tag or commit as given.
        revision: String,
    },

    /// The file named in the reference is not in the repo.
    #[error("`{file}` is not in `{repo}`: {available}")]
    FileNotFound {
        /// `org/repo`.
        repo: String,
        /// Path inside the repo.
        file: String,
        /// What the repo has instead.
        available: String,
    },

    /// The repo has no GGUF file of the requested quantisation.
    #[error("`{repo}` has no GGUF model of quantisation `{quant}`: {available}")]
    NoSuchQuant {
        /// `org/repo`.
        repo: String,
        /// Quantisation as given.
        quant: String,
        /// What the repo has instead.
        available: String,
    },

    /// More than one GGUF model matches; the user has to name one.
    #[error("`{reference}` matches several GGUF models ({candidates}): {advice}")]
    Ambiguous {
        /// The reference as written.
        reference: String,
        /// The matching files or quantisations.
        candidates: String,
        /// How to name one.
        advice: String,
    },

    /// The repo holds no GGUF model at all.
    #[error(
        "`{repo}` has no GGUF files: orchestra runs GGUF models — find a `-GGUF` repo with `orchestra search`"
    )]
    NoGguf {
        /// `org/repo`.
        repo: String,
    },

    /// Parts of a split GGUF are missing from the repo.
    #[error(
        "`{repo}` lacks {missing} of the split model `{file}`: the upload is incomplete — pick another quantisation"
    )]
    MissingParts {
        /// `org/repo`.
        repo: String,
        /// First part.
        file: String,
        /// The missing part names.
        missing: String,
    },

    /// `HF_HUB_OFFLINE` is set and the cache lacks files.
    #[error(
        "HF_HUB_OFFLINE is set and `{reference}` is not in the cache at {}: missing {missing}; run `orchestra pull {reference}` while online",
        cache_dir.display()
    )]
    OfflineMissing {
        /// The reference as written.
        reference: String,
        /// The files (or the repo) that are not there.
        missing: String,
        /// The cache that was searched.
        cache_dir: PathBuf,
    },

    /// The Hub could not be reached and the cache lacks the model.
    #[error(
        "could not reach {endpoint} ({detail}) and `{reference}` is not in the cache at {}: check the network and HF_ENDPOINT, or pull it while online",
        cache_dir.display()
    )]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The reference as written.
        reference: String,
        /// The transport error.
        detail: String,
        /// The cache that was searched.
        cache_dir: PathBuf,
    },

    /// A cached file is damaged and cannot be fetched again because the Hub is off limits.
    #[error(
        "`{file}` in the cache is corrupt ({reason}) and cannot be fetched again offline: run `orchestra pull {reference}` while online"
    )]
    CorruptOffline {
        /// The reference as written.
        reference: String,
        /// `org/repo/path`.
        file: String,
        /// What check failed.
        reason: String,
    },

    /// A freshly downloaded file does not match what the Hub announced.
    #[error(
        "`{file}` failed verification after download ({reason}): the bytes differ from what {endpoint} announced — try again later"
    )]
    Corrupt {
        /// `org/repo/path`.
        file: String,
        /// What check failed.
        reason: String,
        /// Where it came from.
        endpoint: String,
    },

    /// The connection dropped too often; what arrived is kept for the next attempt.
    #[error(
        "download of `{file}` stopped at {done} of {size} bytes ({detail}): run the same command again to resume"
    )]
    Interrupted {
        /// `org/repo/path`.
        file: String,
        /// Bytes on disk.
        done: u64,
        /// Bytes expected.
        size: u64,
        /// The last transport error.
        detail: String,
    },

    /// The Hub asked us to slow down.
    #[error(
        "{endpoint} rate-limited requests for `{repo}`: wait a minute and retry, or set HF_TOKEN (signed-in users get higher limits)"
    )]
    RateLimited {
        /// `org/repo`.
        repo: String,
        /// The endpoint.
        endpoint: String,
    },

    /// `HF_ENDPOINT` cannot be used.
    #[error(
        "HF_ENDPOINT `{endpoint}` cannot be used ({detail}): set it to a URL like https://huggingface.co, or unset it"
    )]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why.
        detail: String,
    },

    /// A Hub search failed.
    #[error(
        "searching {endpoint} for `{query}` failed ({detail}): check the network and HF_ENDPOINT"
    )]
    SearchFailed {
        /// The endpoint.
        endpoint: String,
        /// The query.
        query: String,
        /// What the client or server said.
        detail: String,
    },

    /// `HF_HUB_OFFLINE` is set and the command needs the network.
    #[error("HF_HUB_OFFLINE is set and `{what}` needs the network: unset HF_HUB_OFFLINE to run it")]
    Offline {
        /// The command.
        what: String,
    },

    /// A request failed in a way not listed above.
    #[error("request to {endpoint} for `{repo}` failed: {detail}")]
    Hub {
        /// `org/repo`, or the search query.
        repo: String,
        /// The endpoint.
        endpoint: String,
        /// What the client or server said.
        detail: String,
    },

    /// A local model file does not exist.
    #[error("local model `{}` does not exist: check the path, or use `hf:ORG/REPO/FILE.gguf` for a Hugging Face model", path.display())]
    LocalMissing {
        /// The path as given.
        path: PathBuf,
    },

    /// `models rm` of a local file: orchestra deletes only what it downloaded.
    #[error("`{}` is a local file, not a cached download: delete it yourself if you mean to", path.display())]
    LocalNotRemovable {
        /// The path as given.
        path: PathBuf,
    },

    /// `models rm` of something that is not cached.
    #[error("`{reference}` is not in the cache at {}: nothing to remove — `orchestra models` lists what is there", cache_dir.display())]
    NotCached {
        /// The reference as written.
        reference: String,
        /// The cache searched.
        cache_dir: PathBuf,
    },

    /// The cache could not be read or written.
    #[error("cannot use `{}` ({source}): check that the cache is writable, or point HF_HUB_CACHE elsewhere", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// Several references failed; each error is listed.
    #[error("{} of {total} models could not be fetched:\n{}", errors.len(), list(errors))]
    Several {
        /// How many references were asked for.
        total: usize,
        /// One error per failed reference.
        errors: Vec<HubError>,
    },
}

fn list(errors: &[HubError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the network, not the request, failed — then the cache may stand in.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, HubError::Unreachable { .. })
    }
}
