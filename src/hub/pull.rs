//! Getting models onto disk: planning a pull (which files a reference means, their ETags
//! and sizes), downloading into the shared cache with resume after a dropped connection,
//! verifying size and sha256 before a file is used, re-fetching damaged cached files, and
//! falling back to the cache offline or without network.
//!
//! `hf-hub` 1.0.0's `download_file` restarts interrupted downloads from zero and checks
//! nothing, so bytes come through its `download_file_stream` with a `Range`, appended to
//! `blobs/ETAG.incomplete` — the same partial file Python resumes from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::{self, RepoDir};
use super::config::HubConfig;
use super::error::HubError;
use super::progress::{Progress, ProgressEvent};
use super::reference::ModelRef;
use super::remote::{self, Remote};
use super::select::{self, Candidate};

/// A download stalls when no byte arrives for this long; it is then resumed.
const STALL: Duration = Duration::from_secs(60);

/// Bytes between two progress reports of one file (network chunks are ~16 KiB).
const REPORT_EVERY: u64 = 128 * 1024;

/// One file to have in the cache.
#[derive(Debug, Clone)]
struct Job {
    repo: String,
    commit: String,
    file: String,
    etag: String,
    size: u64,
}

impl Job {
    fn label(&self) -> String {
        format!("{}/{}", self.repo, self.file)
    }
}

/// A hub reference resolved against the Hub: the commit and every file of the model.
#[derive(Debug)]
struct Plan {
    repo: String,
    revision: String,
    commit: String,
    /// Part 1 first.
    jobs: Vec<Job>,
}

enum Prepared {
    /// Nothing to download: a local file, or the cache when offline.
    Ready(PathBuf),
    Plan(Plan),
}

/// The local path of a model — the file llama.cpp opens (part 1 of a split model, whose
/// other parts lie beside it) — downloading and verifying what the cache lacks.
pub async fn resolve(
    reference: &ModelRef,
    cfg: &HubConfig,
    progress: Progress,
) -> Result<PathBuf, HubError> {
    pull_each(std::slice::from_ref(reference), cfg, progress)
        .await
        .remove(0)
}

/// [`resolve`] for several references, downloading up to `cfg.parallel_downloads` files
/// at once and sharing files between references. All are attempted; the error lists
/// every one that failed.
pub async fn pull_all(
    refs: &[ModelRef],
    cfg: &HubConfig,
    progress: Progress,
) -> Result<Vec<PathBuf>, HubError> {
    let results = pull_each(refs, cfg, progress).await;
    let total = results.len();
    let mut paths = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(p) => paths.push(p),
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(paths),
        1 if total == 1 => Err(errors.remove(0)),
        _ => Err(HubError::Several { total, errors }),
    }
}

/// The cached, verified local path of a model, without network; `None` when any part is
/// missing or damaged (or a local file does not exist). May hash a file the first time.
pub fn cached_path(reference: &ModelRef, cfg: &HubConfig) -> Option<PathBuf> {
    match reference {
        ModelRef::Local(path) => path.is_file().then(|| path.clone()),
        ModelRef::Hub { .. } => cache::offline_resolve(cfg, reference).ok(),
    }
}

/// [`pull_all`] with one result per reference, in order.
pub async fn pull_each(
    refs: &[ModelRef],
    cfg: &HubConfig,
    progress: Progress,
) -> Vec<Result<PathBuf, HubError>> {
    let needs_network = !cfg.offline && refs.iter().any(ModelRef::is_hub);
    let (remote, endpoint_error) = match needs_network.then(|| Remote::new(cfg)) {
        Some(Ok(r)) => (Some(r), None),
        Some(Err(HubError::Endpoint { detail, .. })) => (None, Some(detail)),
        Some(Err(other)) => (None, Some(other.to_string())),
        None => (None, None),
    };

    let prepared: Vec<Result<Prepared, HubError>> = futures::stream::iter(refs)
        .map(|r| async {
            match &endpoint_error {
                Some(detail) if r.is_hub() => Err(HubError::Endpoint {
                    endpoint: cfg.endpoint.clone(),
                    detail: detail.clone(),
                }),
                _ => prepare(remote.as_ref(), cfg, r, &progress).await,
            }
        })
        .buffered(4)
        .collect()
        .await;

    // Which files must be downloaded; a file two references share is fetched once.
    let mut downloads: Vec<Job> = Vec::new();
    let mut cached = Vec::new();
    for plan in prepared.iter().filter_map(|p| match p {
        Ok(Prepared::Plan(plan)) => Some(plan),
        _ => None,
    }) {
        for job in &plan.jobs {
            if downloads
                .iter()
                .chain(&cached)
                .any(|j: &Job| j.repo == job.repo && j.etag == job.etag)
            {
                continue;
            }
            match check_cached(cfg, job).await {
                Ok(true) => cached.push(job.clone()),
                Ok(false) => downloads.push(job.clone()),
                Err(reason) => {
                    progress.emit(ProgressEvent::Refetching {
                        file: job.label(),
                        reason,
                    });
                    downloads.push(job.clone());
                }
            }
        }
    }
    progress.emit(ProgressEvent::Planned {
        files: downloads.len(),
        bytes: downloads.iter().map(|j| j.size).sum(),
    });
    for job in &cached {
        progress.emit(ProgressEvent::Cached {
            file: job.label(),
            size: job.size,
        });
    }

    let mut outcomes: Vec<(Job, Result<(), HubError>)> = match &remote {
        Some(remote) => {
            futures::stream::iter(downloads)
                .map(|job| async {
                    let result = download(remote, cfg, &job, &progress).await;
                    if let Err(e) = &result {
                        progress.emit(ProgressEvent::Failed {
                            file: job.label(),
                            reason: e.to_string(),
                        });
                    }
                    (job, result)
                })
                .buffer_unordered(cfg.parallel_downloads.max(1))
                .collect()
                .await
        }
        None => Vec::new(),
    };

    prepared
        .into_iter()
        .map(|p| match p? {
            Prepared::Ready(path) => Ok(path),
            Prepared::Plan(plan) => finish(cfg, plan, &mut outcomes),
        })
        .collect()
}

/// Links every file of a plan into its snapshot and records the revision, once all its
/// downloads succeeded.
fn finish(
    cfg: &HubConfig,
    plan: Plan,
    outcomes: &mut [(Job, Result<(), HubError>)],
) -> Result<PathBuf, HubError> {
    let dir = RepoDir::new(&cfg.cache_dir, &plan.repo);
    for job in &plan.jobs {
        if let Some((_, result)) = outcomes
            .iter_mut()
            .find(|(j, _)| j.repo == job.repo && j.etag == job.etag)
            && result.is_err()
        {
            return Err(std::mem::replace(
                result,
                Err(HubError::Hub {
                    repo: job.repo.clone(),
                    endpoint: cfg.endpoint.clone(),
                    detail: format!("`{}` could not be downloaded (see above)", job.file),
                }),
            )
            .unwrap_err());
        }
    }
    let mut first = None;
    for job in &plan.jobs {
        let pointer = dir.link(&plan.commit, &job.file, &job.etag)?;
        first.get_or_insert(pointer);
    }
    if !cache::is_commit_hash(&plan.revision) {
        dir.write_ref(&plan.revision, &plan.commit)?;
    }
    first.ok_or_else(|| HubError::NoGguf {
        repo: plan.repo.clone(),
    })
}

async fn prepare(
    remote: Option<&Remote>,
    cfg: &HubConfig,
    reference: &ModelRef,
    progress: &Progress,
) -> Result<Prepared, HubError> {
    let ModelRef::Hub {
        repo,
        file,
        quant,
        revision,
    } = reference
    else {
        let ModelRef::Local(path) = reference else {
            unreachable!()
        };
        return if path.is_file() {
            Ok(Prepared::Ready(path.clone()))
        } else {
            Err(HubError::LocalMissing { path: path.clone() })
        };
    };
    let Some(remote) = remote else {
        return offline(cfg, reference).await.map(Prepared::Ready);
    };
    match plan(
        remote,
        reference,
        repo,
        file.as_deref(),
        quant.as_deref(),
        revision.as_deref(),
    )
    .await
    {
        Ok(plan) => Ok(Prepared::Plan(plan)),
        Err(HubError::Unreachable {
            endpoint,
            detail,
            cache_dir,
            ..
        }) => match offline(cfg, reference).await {
            Ok(path) => {
                tracing::warn!(%endpoint, %detail, %reference, "hub unreachable, using the cached copy");
                progress.emit(ProgressEvent::Note(format!(
                    "could not reach {endpoint} ({detail}): using the cached copy of `{reference}`"
                )));
                Ok(Prepared::Ready(path))
            }
            Err(_) => Err(HubError::Unreachable {
                endpoint,
                reference: reference.to_string(),
                detail,
                cache_dir,
            }),
        },
        Err(e) => Err(e),
    }
}

async fn offline(cfg: &HubConfig, reference: &ModelRef) -> Result<PathBuf, HubError> {
    let (cfg, reference) = (cfg.clone(), reference.clone());
    tokio::task::spawn_blocking(move || cache::offline_resolve(&cfg, &reference))
        .await
        .unwrap_or_else(|e| Err(HubError::io(PathBuf::new(), std::io::Error::other(e))))
}

async fn plan(
    remote: &Remote,
    reference: &ModelRef,
    repo: &str,
    file: Option<&str>,
    quant: Option<&str>,
    revision: Option<&str>,
) -> Result<Plan, HubError> {
    let listing = remote.listing(repo, revision).await?;
    let candidate = match file {
        Some(file) => {
            if !listing.files.iter().any(|f| f == file) {
                return Err(HubError::FileNotFound {
                    repo: repo.into(),
                    file: file.into(),
                    available: select::available(repo, &select::models(&listing.files)),
                });
            }
            Candidate::for_file(file)
        }
        None => select::choose(&listing.files, repo, quant, &reference.to_string())?,
    };
    let missing = candidate.missing(&listing.files);
    if !missing.is_empty() {
        return Err(HubError::MissingParts {
            repo: repo.into(),
            file: candidate.first.clone(),
            missing: missing.join(", "),
        });
    }
    let metas = futures::future::try_join_all(
        candidate
            .parts
            .iter()
            .map(|part| remote.file_meta(repo, &listing.commit, part)),
    )
    .await?;
    let jobs = candidate
        .parts
        .iter()
        .zip(metas)
        .map(|(file, meta)| Job {
            repo: repo.into(),
            commit: listing.commit.clone(),
            file: file.clone(),
            etag: meta.etag,
            size: meta.size,
        })
        .collect();
    Ok(Plan {
        repo: repo.into(),
        revision: revision.unwrap_or("main").into(),
        commit: listing.commit,
        jobs,
    })
}

/// `Ok(true)`: the blob is there and verified; `Ok(false)`: not there; `Err(reason)`:
/// there but damaged — it has been deleted.
async fn check_cached(cfg: &HubConfig, job: &Job) -> Result<bool, String> {
    let dir = RepoDir::new(&cfg.cache_dir, &job.repo);
    let blob = dir.blob(&job.etag);
    if !blob.exists() {
        return Ok(false);
    }
    let (etag, size, gguf) = (job.etag.clone(), job.size, select::is_model_gguf(&job.file));
    let checked = {
        let (dir, blob) = (dir.clone(), blob.clone());
        tokio::task::spawn_blocking(move || dir.verify(&blob, Some(&etag), Some(size), gguf)).await
    };
    match checked {
        Ok(Ok(Ok(()))) => Ok(true),
        Ok(Ok(Err(reason))) => {
            let _ = std::fs::remove_file(&blob);
            dir.remove_stamp(&job.etag);
            Err(reason)
        }
        // Unreadable: let the download replace it.
        _ => Ok(false),
    }
}

/// Holds the cross-process lock on one blob (`.locks/.../ETAG.lock`, the file Python's
/// `huggingface_hub` locks too) while it is downloaded.
async fn lock(
    dir: &RepoDir,
    etag: &str,
    label: &str,
    progress: &Progress,
) -> Result<std::fs::File, HubError> {
    let path = dir.lock(etag);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HubError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            progress.emit(ProgressEvent::Note(format!(
                "waiting for another process downloading `{label}`"
            )));
            tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| HubError::io(&path, e))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(HubError::io(&path, e)),
    }
}

/// Downloads one blob: resumes `ETAG.incomplete`, retries dropped connections from where
/// they stopped, verifies size and sha256, then renames it into place.
async fn download(
    remote: &Remote,
    cfg: &HubConfig,
    job: &Job,
    progress: &Progress,
) -> Result<(), HubError> {
    let dir = RepoDir::new(&cfg.cache_dir, &job.repo);
    let label = job.label();
    let blob = dir.blob(&job.etag);
    let blobs = blob.parent().unwrap_or(&dir.root).to_path_buf();
    std::fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
    let _lock = lock(&dir, &job.etag, &label, progress).await?;
    // Another process may have finished it while we waited.
    if check_cached(cfg, job).await == Ok(true) {
        progress.emit(ProgressEvent::Cached {
            file: label,
            size: job.size,
        });
        return Ok(());
    }

    let incomplete = blobs.join(format!("{}.incomplete", job.etag));
    let mut failures = 0usize;
    let mut restarted = false;
    let mut started = false;
    loop {
        let mut from = std::fs::metadata(&incomplete).map(|m| m.len()).unwrap_or(0);
        if from > job.size {
            remove(&incomplete)?;
            from = 0;
        }
        if !started {
            progress.emit(ProgressEvent::Started {
                file: label.clone(),
                size: job.size,
                from,
            });
            started = true;
        }
        let mut hasher = if from > 0 {
            hash_prefix(&incomplete).await?
        } else {
            Sha256::new()
        };

        let mut done = from;
        let mut dropped: Option<String> = None;
        if done < job.size {
            match fetch_into(remote, job, &incomplete, &mut hasher, &mut done, progress).await {
                Ok(()) => {}
                Err(Fetch::Dropped(reason)) => dropped = Some(reason),
                Err(Fetch::Fatal(e)) => return Err(e),
            }
        }

        if let Some(reason) = dropped {
            failures += 1;
            if failures > cfg.retries {
                return Err(HubError::Interrupted {
                    file: label,
                    done,
                    size: job.size,
                    detail: reason,
                });
            }
            progress.emit(ProgressEvent::Retrying {
                file: label.clone(),
                at: done,
                reason,
            });
            tokio::time::sleep(remote::backoff(failures)).await;
            continue;
        }

        progress.emit(ProgressEvent::Verifying {
            file: label.clone(),
        });
        let problem = if done != job.size {
            Some(format!("{done} bytes instead of {}", job.size))
        } else {
            let digest = cache::hex(&hasher.finalize());
            (job.etag.len() == 64 && !digest.eq_ignore_ascii_case(&job.etag))
                .then(|| format!("sha256 {digest} instead of {}", job.etag))
        };
        if let Some(reason) = problem {
            remove(&incomplete)?;
            if restarted {
                return Err(HubError::Corrupt {
                    file: label,
                    reason,
                    endpoint: cfg.endpoint.clone(),
                });
            }
            restarted = true;
            progress.emit(ProgressEvent::Refetching {
                file: label.clone(),
                reason,
            });
            continue;
        }

        std::fs::rename(&incomplete, &blob).map_err(|e| HubError::io(&blob, e))?;
        if let Ok(meta) = std::fs::metadata(&blob) {
            dir.write_stamp(&job.etag, &meta);
        }
        progress.emit(ProgressEvent::Finished {
            file: label,
            size: job.size,
        });
        return Ok(());
    }
}

enum Fetch {
    /// The connection dropped or stalled; what arrived is on disk.
    Dropped(String),
    /// A refusal or a local failure; retrying will not help.
    Fatal(HubError),
}

/// Appends the bytes from `*done` on to `incomplete`, feeding `hasher`.
async fn fetch_into(
    remote: &Remote,
    job: &Job,
    incomplete: &Path,
    hasher: &mut Sha256,
    done: &mut u64,
    progress: &Progress,
) -> Result<(), Fetch> {
    let from = *done;
    let (announced, mut stream) = match remote
        .open(&job.repo, &job.commit, &job.file, from, job.size)
        .await
    {
        Ok(s) => s,
        Err(e) if e.is_unreachable() => return Err(Fetch::Dropped(e.to_string())),
        Err(e) => return Err(Fetch::Fatal(e)),
    };
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true);
    if from > 0 && announced == Some(job.size) {
        // The server ignored the Range and sends everything: start over.
        *done = 0;
        *hasher = Sha256::new();
        options.write(true).truncate(true);
    } else if from > 0 {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    let io_err = |e| Fetch::Fatal(HubError::io(incomplete, e));
    let mut out = options.open(incomplete).await.map_err(io_err)?;
    let label = job.label();
    let mut reported = *done;
    let mut result = Ok(());
    loop {
        let chunk = match tokio::time::timeout(STALL, stream.next()).await {
            Err(_) => {
                result = Err(Fetch::Dropped(format!("no data for {} s", STALL.as_secs())));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                result = Err(Fetch::Dropped(remote::hf_chain(&e)));
                break;
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        out.write_all(&chunk).await.map_err(io_err)?;
        hasher.update(&chunk);
        *done += chunk.len() as u64;
        if *done > job.size {
            // More than announced; verification rejects it.
            break;
        }
        if *done - reported >= REPORT_EVERY || *done == job.size {
            reported = *done;
            progress.emit(ProgressEvent::Advanced {
                file: label.clone(),
                done: *done,
                size: job.size,
            });
        }
    }
    out.flush().await.map_err(io_err)?;
    if result.is_ok() && *done < job.size {
        result = Err(Fetch::Dropped(format!(
            "the connection closed after {} of {} bytes",
            *done, job.size
        )));
    }
    result
}

async fn hash_prefix(path: &Path) -> Result<Sha256, HubError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || cache::hash_file_into(&owned, Sha256::new()))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| HubError::io(path, e))
}

fn remove(path: &Path) -> Result<(), HubError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HubError::io(path, e)),
        _ => Ok(()),
    }
}
