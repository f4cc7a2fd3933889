//! Download progress: the [`ProgressEvent`]s a pull reports and the [`Progress`] handle
//! that receives them — any [`ProgressSink`]: a callback (tests, the event bus), nothing,
//! or the CLI's terminal bars (`cli::progress`; no terminal code here). Owns no download
//! logic.

use std::sync::Arc;

/// What a pull reports. `file` is always `org/repo/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The files to fetch are known: `files` downloads of `bytes` bytes in all (cached
    /// files excluded).
    Planned {
        /// Files still to download.
        files: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A file is already in the cache and verified; nothing to download.
    Cached {
        /// `org/repo/path`.
        file: String,
        /// Its size.
        size: u64,
    },
    /// A download starts; `from` is above 0 when it resumes a partial file.
    Started {
        /// `org/repo/path`.
        file: String,
        /// Bytes expected.
        size: u64,
        /// Bytes already on disk.
        from: u64,
    },
    /// `done` of `size` bytes are on disk.
    Advanced {
        /// `org/repo/path`.
        file: String,
        /// Bytes on disk.
        done: u64,
        /// Bytes expected.
        size: u64,
    },
    /// The connection dropped; the download continues from `at`.
    Retrying {
        /// `org/repo/path`.
        file: String,
        /// Bytes on disk.
        at: u64,
        /// The transport error.
        reason: String,
    },
    /// A cached or downloaded file failed verification and is fetched again.
    Refetching {
        /// `org/repo/path`.
        file: String,
        /// What check failed.
        reason: String,
    },
    /// Size and sha256 are being checked.
    Verifying {
        /// `org/repo/path`.
        file: String,
    },
    /// Something the user should know that is no failure, e.g. that the Hub could not be
    /// reached and the cached copy is used.
    Note(String),
    /// The download failed; the pull's error says why and what to do.
    Failed {
        /// `org/repo/path`.
        file: String,
        /// The error.
        reason: String,
    },
    /// The file is downloaded and verified.
    Finished {
        /// `org/repo/path`.
        file: String,
        /// Its size.
        size: u64,
    },
}

/// Receives [`ProgressEvent`]s. Must not block: it runs on the download path.
pub trait ProgressSink: Send + Sync {
    /// One event.
    fn event(&self, event: &ProgressEvent);
}

/// A cheap, clonable handle to where progress goes.
#[derive(Clone)]
pub struct Progress(Arc<dyn ProgressSink>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl Progress {
    /// Reports nothing.
    pub fn hidden() -> Progress {
        Progress::from_fn(|_| {})
    }

    /// Calls `f` with every event.
    pub fn from_fn(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Progress {
        struct Callback<F>(F);
        impl<F: Fn(&ProgressEvent) + Send + Sync> ProgressSink for Callback<F> {
            fn event(&self, event: &ProgressEvent) {
                (self.0)(event)
            }
        }
        Progress(Arc::new(Callback(f)))
    }

    /// Any sink.
    pub fn new(sink: Arc<dyn ProgressSink>) -> Progress {
        Progress(sink)
    }

    pub(crate) fn emit(&self, event: ProgressEvent) {
        self.0.event(&event)
    }
}
