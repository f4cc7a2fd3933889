//! The Hugging Face cache on disk, in the layout Python's `huggingface_hub` and `hf-hub`
//! share — `models--ORG--REPO/{blobs/ETAG, snapshots/COMMIT/PATH -> ../../blobs/ETAG,
//! refs/REVISION}` and `.locks/models--ORG--REPO/ETAG.lock` — so a file is never
//! downloaded twice. Owns: offline lookups, integrity checks of cached blobs, listing
//! cached GGUF models and removing them. No network.
//!
//! Verified blobs get a stamp (`models--ORG--REPO/.orchestra/verified/ETAG`: length and
//! modification time) so a multi-gigabyte file is hashed once, not at every start; a blob
//! that changed since is hashed again. `huggingface_hub` ignores unknown folders there.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::config::HubConfig;
use super::error::HubError;
use super::reference::ModelRef;
use super::select::{self, Candidate};

/// The cache folder of one model repo.
#[derive(Debug, Clone)]
pub(crate) struct RepoDir {
    /// `<cache>/models--ORG--REPO`.
    pub root: PathBuf,
    /// `<cache>/.locks/models--ORG--REPO`.
    pub locks: PathBuf,
}

/// `models--ORG--REPO`.
pub(crate) fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

impl RepoDir {
    pub fn new(cache_dir: &Path, repo: &str) -> RepoDir {
        let folder = repo_folder(repo);
        RepoDir {
            root: cache_dir.join(&folder),
            locks: cache_dir.join(".locks").join(&folder),
        }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub fn pointer(&self, commit: &str, file: &str) -> PathBuf {
        let mut p = self.snapshot(commit);
        p.extend(file.split('/'));
        p
    }

    pub fn lock(&self, etag: &str) -> PathBuf {
        self.locks.join(format!("{etag}.lock"))
    }

    fn stamp(&self, etag: &str) -> PathBuf {
        self.root.join(".orchestra").join("verified").join(etag)
    }

    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let mut path = self.root.join("refs");
        path.extend(revision.split('/'));
        fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        let mut path = self.root.join("refs");
        path.extend(revision.split('/'));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        fs::write(&path, commit).map_err(|e| HubError::io(&path, e))
    }

    /// The commit a revision means in the cache: itself when it is a commit hash.
    pub fn commit_for(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            Some(revision.to_string())
        } else {
            self.read_ref(revision)
        }
    }

    /// Points `snapshots/COMMIT/FILE` at `blobs/ETAG` with a relative link, as Python does.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, HubError> {
        let pointer = self.pointer(commit, file);
        let parent = pointer.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        let depth = file.split('/').count() + 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let _ = fs::remove_file(&pointer);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &pointer).map_err(|e| HubError::io(&pointer, e))?;
        #[cfg(not(unix))]
        fs::copy(self.blob(etag), &pointer).map_err(|e| HubError::io(&pointer, e))?;
        Ok(pointer)
    }

    /// Files present under `snapshots/COMMIT`, as repo paths. Dangling links are left out.
    pub fn snapshot_files(&self, commit: &str) -> Vec<String> {
        let mut out: Vec<String> = files_under(&self.snapshot(commit))
            .map(|(rel, _)| rel)
            .collect();
        out.sort();
        out
    }

    /// The blob a snapshot pointer leads to and its ETag (the blob's name); for a copied
    /// file (Windows) the file itself and no ETag.
    pub fn blob_of(&self, pointer: &Path) -> (PathBuf, Option<String>) {
        match fs::read_link(pointer) {
            Ok(target) => {
                let etag = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string);
                let blob = pointer.parent().map(|p| p.join(&target)).unwrap_or(target);
                (blob, etag)
            }
            Err(_) => (pointer.to_path_buf(), None),
        }
    }

    /// Checks a blob: its length against `expected_size`, its sha256 against an LFS ETag
    /// (64 hex digits), and the GGUF magic when it is a `.gguf`. `Ok(Err(reason))` when it
    /// is damaged. Blocking: may hash the whole file.
    pub fn verify(
        &self,
        blob: &Path,
        etag: Option<&str>,
        expected_size: Option<u64>,
        gguf: bool,
    ) -> io::Result<Result<(), String>> {
        let meta = match fs::metadata(blob) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err("the blob is missing".into()));
            }
            Err(e) => return Err(e),
        };
        if let Some(size) = expected_size
            && meta.len() != size
        {
            return Ok(Err(format!("{} bytes instead of {size}", meta.len())));
        }
        if gguf {
            let mut magic = [0u8; 4];
            let read = fs::File::open(blob).and_then(|mut f| f.read_exact(&mut magic));
            if read.is_err() || &magic != b"GGUF" {
                return Ok(Err("no GGUF header".into()));
            }
        }
        let Some(etag) = etag.filter(|e| is_sha256(e)) else {
            return Ok(Ok(()));
        };
        let stamp = stamp_text(&meta);
        let stamp_path = self.stamp(etag);
        if fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
            return Ok(Ok(()));
        }
        let digest = sha256_file(blob, None)?;
        if digest != etag {
            return Ok(Err(format!("sha256 {digest} instead of {etag}")));
        }
        self.write_stamp(etag, &meta);
        Ok(Ok(()))
    }

    /// Records that the blob `etag` with this metadata was hashed and matched.
    pub fn write_stamp(&self, etag: &str, meta: &fs::Metadata) {
        let path = self.stamp(etag);
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        // A lost stamp only costs a re-hash later.
        let _ = fs::write(path, stamp_text(meta));
    }

    pub fn remove_stamp(&self, etag: &str) {
        let _ = fs::remove_file(self.stamp(etag));
    }
}

fn stamp_text(meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{} {}", meta.len(), mtime)
}

/// Every file under `dir` (links followed; dangling links and names that are not UTF-8
/// left out), as a `/`-separated path relative to `dir`, with its full path.
pub(crate) fn files_under(dir: &Path) -> impl Iterator<Item = (String, PathBuf)> + use<> {
    let root = dir.to_path_buf();
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(true)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .filter_map(move |e| Some((relative_name(&root, e.path())?, e.into_path())))
}

/// `path` relative to `root` with `/` between folders; `None` for a name that is not
/// UTF-8.
pub(crate) fn relative_name(root: &Path, path: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = path
        .strip_prefix(root)
        .ok()?
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    parts.map(|p| p.join("/"))
}

/// A 40-digit lowercase hex git commit id.
pub(crate) fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex sha256 of a file, optionally continuing `state`.
pub(crate) fn sha256_file(path: &Path, state: Option<Sha256>) -> io::Result<String> {
    let hasher = hash_file_into(path, state.unwrap_or_default())?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds a file's bytes into `hasher`.
pub(crate) fn hash_file_into(path: &Path, mut hasher: Sha256) -> io::Result<Sha256> {
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher);
        }
        hasher.update(&buf[..n]);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The result of looking a hub reference up in the cache.
pub(crate) enum Lookup {
    /// Every part is there.
    Found {
        dir: RepoDir,
        /// Snapshot pointers, part 1 first.
        pointers: Vec<PathBuf>,
        /// Their repo paths.
        files: Vec<String>,
    },
    /// What is not there, for the message.
    Missing(Vec<String>),
}

/// Finds a hub reference in the cache without hashing anything.
pub(crate) fn lookup(cfg: &HubConfig, reference: &ModelRef) -> Result<Lookup, HubError> {
    let ModelRef::Hub {
        repo,
        file,
        quant,
        revision,
    } = reference
    else {
        return Ok(Lookup::Missing(vec![format!("`{reference}`")]));
    };
    let dir = RepoDir::new(&cfg.cache_dir, repo);
    let revision = revision.as_deref().unwrap_or("main");
    if !dir.root.is_dir() {
        return Ok(Lookup::Missing(vec![format!("the repo `{repo}`")]));
    }
    let Some(commit) = dir.commit_for(revision) else {
        return Ok(Lookup::Missing(vec![format!(
            "revision `{revision}` of `{repo}`"
        )]));
    };
    let present = dir.snapshot_files(&commit);
    let candidate = match file {
        Some(file) => Candidate::for_file(file),
        None => match select::choose(&present, repo, quant.as_deref(), &reference.to_string()) {
            Ok(c) => c,
            Err(HubError::NoSuchQuant { .. }) | Err(HubError::NoGguf { .. }) => {
                let what = match quant {
                    Some(q) => format!("a {q} GGUF of `{repo}`"),
                    None => format!("a GGUF model of `{repo}`"),
                };
                return Ok(Lookup::Missing(vec![what]));
            }
            Err(e) => return Err(e),
        },
    };
    let missing: Vec<String> = candidate
        .missing(&present)
        .into_iter()
        .map(|f| format!("`{f}`"))
        .collect();
    if !missing.is_empty() {
        return Ok(Lookup::Missing(missing));
    }
    let pointers = candidate
        .parts
        .iter()
        .map(|f| dir.pointer(&commit, f))
        .collect();
    Ok(Lookup::Found {
        dir,
        pointers,
        files: candidate.parts,
    })
}

/// A hub reference from the cache only, every part verified; the error says what is
/// missing or damaged. Blocking: may hash files not verified before.
pub(crate) fn offline_resolve(cfg: &HubConfig, reference: &ModelRef) -> Result<PathBuf, HubError> {
    match lookup(cfg, reference)? {
        Lookup::Missing(missing) => Err(HubError::OfflineMissing {
            reference: reference.to_string(),
            missing: missing.join(", "),
            cache_dir: cfg.cache_dir.clone(),
        }),
        Lookup::Found {
            dir,
            pointers,
            files,
        } => {
            let repo = reference.repo().unwrap_or_default();
            for (pointer, file) in pointers.iter().zip(&files) {
                let (blob, etag) = dir.blob_of(pointer);
                let gguf = select::is_model_gguf(file);
                match dir.verify(&blob, etag.as_deref(), None, gguf) {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => {
                        return Err(HubError::CorruptOffline {
                            reference: reference.to_string(),
                            file: format!("{repo}/{file}"),
                            reason,
                        });
                    }
                    Err(e) => return Err(HubError::io(blob, e)),
                }
            }
            Ok(pointers.into_iter().next().unwrap_or_default())
        }
    }
}

/// A GGUF model in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// How to name it: `hf:org/repo/file.gguf`, with `@revision` unless it is `main`'s.
    pub reference: ModelRef,
    /// `org/repo`.
    pub repo: String,
    /// Path of the file llama.cpp opens (part 1 of a split model).
    pub file: String,
    /// Number of files (more than 1 for a split model).
    pub parts: usize,
    /// The commit it belongs to.
    pub commit: String,
    /// Branches and tags that point at the commit.
    pub refs: Vec<String>,
    /// The snapshot path to load.
    pub path: PathBuf,
    /// Bytes on disk, all parts.
    pub size: u64,
    /// Parts missing from the cache (an interrupted pull of a split model).
    pub missing_parts: usize,
}

/// The GGUF models in the cache, sorted by reference. Reads no file contents.
pub fn list_cached(cfg: &HubConfig) -> Vec<CachedModel> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(&cfg.cache_dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(folder) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some(repo) = folder
            .strip_prefix("models--")
            .map(|r| r.replacen("--", "/", 1))
        else {
            continue;
        };
        let dir = RepoDir::new(&cfg.cache_dir, &repo);
        let refs = read_refs(&dir.root.join("refs"));
        let Ok(snapshots) = fs::read_dir(dir.root.join("snapshots")) else {
            continue;
        };
        for snap in snapshots.flatten() {
            let Some(commit) = snap.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let files = dir.snapshot_files(&commit);
            let names: Vec<String> = refs
                .iter()
                .filter(|(_, c)| *c == commit)
                .map(|(n, _)| n.clone())
                .collect();
            for candidate in select::models(&files) {
                let present: Vec<&String> = candidate
                    .parts
                    .iter()
                    .filter(|p| files.contains(p))
                    .collect();
                let size = present
                    .iter()
                    .filter_map(|p| fs::metadata(dir.pointer(&commit, p)).ok())
                    .map(|m| m.len())
                    .sum();
                let revision = if names.iter().any(|n| n == "main") {
                    None
                } else {
                    Some(names.first().cloned().unwrap_or_else(|| commit.clone()))
                };
                out.push(CachedModel {
                    reference: ModelRef::Hub {
                        repo: repo.clone(),
                        file: Some(candidate.first.clone()),
                        quant: None,
                        revision,
                    },
                    repo: repo.clone(),
                    path: dir.pointer(&commit, &candidate.first),
                    file: candidate.first.clone(),
                    parts: candidate.parts.len(),
                    missing_parts: candidate.parts.len() - present.len(),
                    commit: commit.clone(),
                    refs: names.clone(),
                    size,
                });
            }
        }
    }
    out.sort_by_key(|m| m.reference.to_string());
    out
}

/// `(revision, commit)` for every file under `refs/` (a branch `a/b` is a nested file).
fn read_refs(dir: &Path) -> Vec<(String, String)> {
    files_under(dir)
        .filter_map(|(name, path)| {
            let commit = fs::read_to_string(path).ok()?;
            Some((name, commit.trim().to_string()))
        })
        .collect()
}

/// What [`remove`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// `org/repo/path` of each snapshot file removed (or `org/repo` for a whole repo).
    pub files: Vec<String>,
    /// Bytes of blobs deleted (blobs still used by another revision stay).
    pub bytes_freed: u64,
}

/// Removes a model from the cache. `hf:org/repo` removes the whole repo; a file or
/// quantisation removes that model (all parts) from every cached revision, or only from
/// `@revision` when given. Blobs no other snapshot uses are deleted. Local files are
/// refused.
pub fn remove(reference: &ModelRef, cfg: &HubConfig) -> Result<Removed, HubError> {
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
        return Err(HubError::LocalNotRemovable { path: path.clone() });
    };
    let dir = RepoDir::new(&cfg.cache_dir, repo);
    let not_cached = || HubError::NotCached {
        reference: reference.to_string(),
        cache_dir: cfg.cache_dir.clone(),
    };
    if !dir.root.is_dir() {
        return Err(not_cached());
    }
    if file.is_none() && quant.is_none() && revision.is_none() {
        let bytes_freed = dir_size(&dir.root.join("blobs"));
        fs::remove_dir_all(&dir.root).map_err(|e| HubError::io(&dir.root, e))?;
        let _ = fs::remove_dir_all(&dir.locks);
        return Ok(Removed {
            files: vec![repo.clone()],
            bytes_freed,
        });
    }

    let commits: Vec<String> = match revision {
        Some(rev) => dir.commit_for(rev).into_iter().collect(),
        None => fs::read_dir(dir.root.join("snapshots"))
            .map(|it| {
                it.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut removed = Removed::default();
    let mut touched_blobs = Vec::new();
    for commit in &commits {
        let present = dir.snapshot_files(commit);
        let parts: Vec<String> = match (file, quant) {
            (Some(f), _) => Candidate::for_file(f).parts,
            (None, q) => match select::choose(&present, repo, q.as_deref(), &reference.to_string())
            {
                Ok(c) => c.parts,
                Err(HubError::NoSuchQuant { .. }) | Err(HubError::NoGguf { .. }) => continue,
                Err(e) => return Err(e),
            },
        };
        for part in parts {
            let pointer = dir.pointer(commit, &part);
            if fs::symlink_metadata(&pointer).is_err() {
                continue;
            }
            let (blob, etag) = dir.blob_of(&pointer);
            fs::remove_file(&pointer).map_err(|e| HubError::io(&pointer, e))?;
            removed.files.push(format!("{repo}/{part}"));
            if let Some(etag) = etag {
                touched_blobs.push((blob, etag));
            }
        }
        prune_empty_dirs(&dir.snapshot(commit));
    }
    if removed.files.is_empty() {
        return Err(not_cached());
    }
    let still_used = linked_blobs(&dir);
    for (blob, etag) in touched_blobs {
        if still_used.contains(&etag) {
            continue;
        }
        if let Ok(meta) = fs::metadata(&blob) {
            fs::remove_file(&blob).map_err(|e| HubError::io(&blob, e))?;
            removed.bytes_freed += meta.len();
        }
        dir.remove_stamp(&etag);
    }
    // A repo with no snapshot left is gone entirely, as `huggingface-cli delete-cache` does.
    let snapshots_left = fs::read_dir(dir.root.join("snapshots"))
        .map(|mut it| it.next().is_some())
        .unwrap_or(false);
    if !snapshots_left {
        removed.bytes_freed += dir_size(&dir.root.join("blobs"));
        let _ = fs::remove_dir_all(&dir.root);
        let _ = fs::remove_dir_all(&dir.locks);
    }
    Ok(removed)
}

/// ETags every snapshot pointer of the repo leads to.
fn linked_blobs(dir: &RepoDir) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(snapshots) = fs::read_dir(dir.root.join("snapshots")) else {
        return out;
    };
    for snap in snapshots.flatten() {
        let Some(commit) = snap.file_name().to_str().map(str::to_string) else {
            continue;
        };
        for file in dir.snapshot_files(&commit) {
            if let (_, Some(etag)) = dir.blob_of(&dir.pointer(&commit, &file)) {
                out.push(etag);
            }
        }
    }
    out
}

/// Removes the empty folders under `dir`, and `dir` itself when that leaves it empty.
fn prune_empty_dirs(dir: &Path) {
    // Deepest first, links not followed: a folder whose contents were all removed is
    // empty by the time it comes up; `remove_dir` refuses any other.
    for entry in walkdir::WalkDir::new(dir)
        .contents_first(true)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
