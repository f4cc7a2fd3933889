//! The file watcher behind hot reload: a debounced `notify` watcher on the *folders* of
//! the score and every file it required (editors save by writing a temporary file and
//! renaming it over the old one, which a watch on the file itself would lose), filtered
//! to those files, and to changes of their contents (an editor's save often arrives as
//! several events — write, rename, attribute change — that must cause one reload).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::EventKind;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// Watches a set of files; calls back (from the watcher's thread) when any changes.
pub(crate) struct FileWatcher {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    /// The watched files and a fingerprint of the contents last seen of each.
    files: Arc<Mutex<HashMap<PathBuf, Option<u64>>>>,
    dirs: HashSet<PathBuf>,
}

impl FileWatcher {
    pub(crate) fn new(
        debounce: Duration,
        on_change: impl Fn(Vec<PathBuf>) + Send + 'static,
    ) -> notify::Result<FileWatcher> {
        let files: Arc<Mutex<HashMap<PathBuf, Option<u64>>>> = Arc::default();
        let watched = files.clone();
        let tick = (debounce / 4).max(Duration::from_millis(5));
        let debouncer =
            new_debouncer(
                debounce,
                Some(tick),
                move |res: DebounceEventResult| match res {
                    Ok(events) => {
                        let mut files = watched.lock().unwrap();
                        let mut changed: Vec<PathBuf> = events
                            .iter()
                            .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                            .flat_map(|e| e.event.paths.iter())
                            .filter(|p| files.contains_key(*p))
                            .cloned()
                            .collect();
                        changed.sort();
                        changed.dedup();
                        // Only files whose contents differ from what was last seen.
                        changed.retain(|p| {
                            let now = fingerprint(p);
                            files.insert(p.clone(), now) != Some(now)
                        });
                        drop(files);
                        if !changed.is_empty() {
                            on_change(changed);
                        }
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "file watcher");
                        }
                    }
                },
            )?;
        Ok(FileWatcher {
            debouncer,
            files,
            dirs: HashSet::new(),
        })
    }

    /// Watch these files too (a reloaded score keeps the files the old version
    /// required during requests: the new one will most likely require them again).
    pub(crate) fn add_files(&mut self, files: &[PathBuf]) -> notify::Result<()> {
        let mut all: Vec<PathBuf> = self.files.lock().unwrap().keys().cloned().collect();
        all.extend(files.iter().map(|f| canonical(f)));
        self.set_files(&all)
    }

    /// Watch exactly these files from now on.
    pub(crate) fn set_files(&mut self, files: &[PathBuf]) -> notify::Result<()> {
        let files: HashSet<PathBuf> = files.iter().map(|f| canonical(f)).collect();
        let dirs: HashSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for d in dirs.difference(&self.dirs) {
            self.debouncer.watch(d, RecursiveMode::NonRecursive)?;
        }
        for d in self.dirs.difference(&dirs) {
            let _ = self.debouncer.unwatch(d);
        }
        self.dirs = dirs;
        let mut seen = self.files.lock().unwrap();
        let known = std::mem::take(&mut *seen);
        *seen = files
            .into_iter()
            .map(|f| {
                let print = known.get(&f).copied().unwrap_or_else(|| fingerprint(&f));
                (f, print)
            })
            .collect();
        Ok(())
    }
}

/// A hash of a file's contents (`None` while it does not exist).
fn fingerprint(p: &Path) -> Option<u64> {
    let bytes = std::fs::read(p).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

fn canonical(p: &Path) -> PathBuf {
    // The folder resolves (the file may be mid-save); keep the file name as is.
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map(|d| d.join(name))
                .unwrap_or_else(|_| p.to_path_buf())
        }
        _ => p.to_path_buf(),
    }
}
