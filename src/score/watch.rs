//! The file watcher behind hot reload: a debounced `notify` watcher on the *folders* of
//! the score and every file it required (editors save by writing a temporary file and
//! renaming it over the old one, which a watch on the file itself would lose), filtered
//! to those files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::EventKind;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// Watches a set of files; calls back (from the watcher's thread) when any changes.
pub(crate) struct FileWatcher {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    files: Arc<Mutex<HashSet<PathBuf>>>,
    dirs: HashSet<PathBuf>,
}

impl FileWatcher {
    pub(crate) fn new(
        debounce: Duration,
        on_change: impl Fn(Vec<PathBuf>) + Send + 'static,
    ) -> notify::Result<FileWatcher> {
        let files: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let watched = files.clone();
        let tick = (debounce / 4).max(Duration::from_millis(5));
        let debouncer =
            new_debouncer(
                debounce,
                Some(tick),
                move |res: DebounceEventResult| match res {
                    Ok(events) => {
                        let files = watched.lock().unwrap();
                        let mut changed: Vec<PathBuf> = events
                            .iter()
                            .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                            .flat_map(|e| e.event.paths.iter())
                            .filter(|p| files.contains(*p))
                            .cloned()
                            .collect();
                        drop(files);
                        changed.sort();
                        changed.dedup();
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
        let mut all: Vec<PathBuf> = self.files.lock().unwrap().iter().cloned().collect();
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
        *self.files.lock().unwrap() = files;
        Ok(())
    }
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
