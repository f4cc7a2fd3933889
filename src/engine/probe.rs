//! A GGUF file never takes the process down: before llama.cpp loads a file in this
//! process, [`check`] validates its header in Rust ([`crate::gguf::validate`]) and, the
//! first time a file is seen, loads it once in a short-lived child process (`orchestra
//! __probe-model FILE`, see [`probe_child`]). An abort that validation missed kills
//! only the child and becomes [`EngineError::Damaged`] naming the file and llama.cpp's
//! last words. A file the child loaded is remembered — keyed by path, size, mtime and a
//! hash of its header, in `$ORCHESTRA_HOME/probed-models.json` — so later loads stay
//! in-process and as fast as before.
//!
//! The child is the orchestra binary itself: `ORCHESTRA_PROBE_BIN`, else
//! `CARGO_BIN_EXE_orchestra` (integration tests), else the running executable when it
//! is `orchestra`, else an `orchestra` next to it or one folder up (a test binary in
//! `target/*/deps/`). With none of these — a program embedding the library — loads
//! are validated only, and a warning says so once. `ORCHESTRA_PROBE=off` turns the
//! child off the same way (the child itself runs with it, so it never probes again).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::EngineError;
use super::model::{LoadOptions, Model};
use super::request::{GenerateRequest, SamplingParams};
use crate::gguf::{self, GgufError, GgufHeader};

/// The hidden subcommand the child runs.
pub const PROBE_COMMAND: &str = "__probe-model";
/// Exit code of a child whose load failed cleanly (llama.cpp returned an error).
pub const PROBE_CLEAN_FAILURE: i32 = 3;
/// Remembered files; the oldest are forgotten first.
const CACHE_ENTRIES: usize = 512;
const CACHE_FILE: &str = "probed-models.json";
/// Header bytes hashed into the key (a header is kilobytes to a few megabytes).
const HASHED_HEADER_BYTES: u64 = 64 << 20;
/// A probe that takes longer is killed and the file refused: a load that hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);

/// Set only in a probe child started with `--unvalidated` (tests showing the aborts
/// validation prevents); never in a process that serves.
static UNVALIDATED: AtomicBool = AtomicBool::new(false);

/// Validates `path` and, for a file not seen before, test-loads it in a child process.
/// Called before every load; a known-good file costs a header read and a hash of the
/// header's bytes (validation and the probe are skipped for it).
pub(crate) fn check(path: &Path, options: &LoadOptions) -> Result<(), EngineError> {
    if !path.exists() {
        return Err(EngineError::MissingFile(path.to_path_buf()));
    }
    let header = gguf::read_header(path).map_err(|e| gguf_error(path, e))?;
    let validate = || {
        if UNVALIDATED.load(Ordering::Relaxed) {
            return Ok(());
        }
        gguf::validate(&header).map_err(|e| gguf_error(path, e))
    };
    let Some(binary) = probe_binary() else {
        return validate();
    };
    let key = FileKey::of(path, &header, options.embeddings).map_err(|e| gguf_error(path, e))?;
    // The same bytes already loaded in a probe: nothing to check again.
    if known_good(&key) {
        return Ok(());
    }
    validate()?;
    // One probe per file at a time: a second load of the same new file waits for the
    // first probe's verdict instead of starting its own.
    let lock = probe_lock(&key.path);
    let _one_probe = lock.lock().unwrap_or_else(|e| e.into_inner());
    if known_good(&key) {
        return Ok(());
    }
    let started = Instant::now();
    match run_probe(&binary, path, options.embeddings)? {
        Verdict::Loaded => {
            tracing::info!(
                file = %path.display(),
                ms = started.elapsed().as_millis() as u64,
                "probe: the file loads; remembered as known good"
            );
            remember(key);
        }
        // llama.cpp refused the file without crashing: loading it here fails the same
        // clean way, with the engine's own error.
        Verdict::Refused(reason) => {
            tracing::info!(file = %path.display(), %reason, "probe: llama.cpp refused the file");
        }
        Verdict::Unavailable => {}
    }
    Ok(())
}

fn gguf_error(path: &Path, e: GgufError) -> EngineError {
    match e {
        GgufError::Missing(p) => EngineError::MissingFile(p),
        GgufError::Damaged { path, reason } => EngineError::Damaged { path, reason },
        other => EngineError::BadModel {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// What the child's exit says.
enum Verdict {
    Loaded,
    Refused(String),
    /// The binary could not probe (not started, or an orchestra without the probe
    /// command): the file is loaded as without a probe, and not remembered.
    Unavailable,
}

fn run_probe(binary: &Path, path: &Path, embeddings: bool) -> Result<Verdict, EngineError> {
    let mut cmd = Command::new(binary);
    cmd.arg(PROBE_COMMAND)
        .arg(path)
        .env("ORCHESTRA_PROBE", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if embeddings {
        cmd.arg("--embeddings");
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(binary = %binary.display(), error = %e, "probe: could not start the probe process; loading without it");
            return Ok(Verdict::Unavailable);
        }
    };
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let pid = child.id();
    // The child is waited for on a thread so a hung load can be killed at the timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        let _ = tx.send((child.wait(), text));
    });
    let (status, stderr) = match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok((status, text)) => (status, String::from_utf8_lossy(&text).into_owned()),
        Err(_) => {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return Err(EngineError::Damaged {
                path: path.to_path_buf(),
                reason: format!(
                    "loading it did not finish within {} s in a probe process",
                    PROBE_TIMEOUT.as_secs()
                ),
            });
        }
    };
    let status = status.map_err(|e| EngineError::Damaged {
        path: path.to_path_buf(),
        reason: format!("the probe process was lost: {e}"),
    })?;
    if status.success() {
        return Ok(Verdict::Loaded);
    }
    if status.code() == Some(PROBE_CLEAN_FAILURE) {
        return Ok(Verdict::Refused(last_words(&stderr).unwrap_or_default()));
    }
    if status.code() == Some(2) && stderr.contains(PROBE_COMMAND) {
        // clap's usage error: a binary from before the probe command.
        tracing::warn!(binary = %binary.display(), "probe: this orchestra binary has no probe command; loading without it");
        return Ok(Verdict::Unavailable);
    }
    let how = exit_description(&status);
    let reason = match last_words(&stderr) {
        Some(words) => format!("loading it crashed a probe process ({how}): {words}"),
        None => format!("loading it crashed a probe process ({how})"),
    };
    Err(EngineError::Damaged {
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(unix)]
fn exit_description(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGABRT) => "SIGABRT".into(),
        Some(libc::SIGSEGV) => "SIGSEGV".into(),
        Some(libc::SIGFPE) => "SIGFPE".into(),
        Some(libc::SIGBUS) => "SIGBUS".into(),
        Some(libc::SIGILL) => "SIGILL".into(),
        Some(libc::SIGKILL) => "SIGKILL, out of memory?".into(),
        Some(s) => format!("signal {s}"),
        None => format!("exit code {}", status.code().unwrap_or(-1)),
    }
}

#[cfg(not(unix))]
fn exit_description(status: &std::process::ExitStatus) -> String {
    format!("exit code {}", status.code().unwrap_or(-1))
}

/// The line of the child's stderr that says why it died: a ggml assertion, an
/// uncaught exception, a Rust panic, else its last line.
fn last_words(stderr: &str) -> Option<String> {
    const MARKERS: &[&str] = &[
        "GGML_ASSERT",
        "GGML_ABORT",
        "fatal error",
        "terminate called",
        "what():",
        "fatal runtime error",
        "panicked at",
        "probe-error:",
    ];
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .find(|l| MARKERS.iter().any(|m| l.contains(m)))
        .or(lines.last())?;
    let line = line.trim_start_matches("probe-error:").trim();
    let cut: String = line.chars().take(300).collect();
    Some(cut)
}

/// The probe binary, or `None` when probing is off or no binary is found (warned once).
fn probe_binary() -> Option<PathBuf> {
    if std::env::var("ORCHESTRA_PROBE").is_ok_and(|v| v == "off" || v == "0") {
        return None;
    }
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let found = find_probe_binary();
            match &found {
                Some(p) => tracing::debug!(binary = %p.display(), "probe binary"),
                None => tracing::warn!(
                    "no `orchestra` binary found to test-load new model files in a child process: \
                     they are validated only, and a file llama.cpp aborts on would end this process; \
                     set ORCHESTRA_PROBE_BIN to the orchestra binary"
                ),
            }
            found
        })
        .clone()
}

fn find_probe_binary() -> Option<PathBuf> {
    for var in ["ORCHESTRA_PROBE_BIN", "CARGO_BIN_EXE_orchestra"] {
        if let Some(p) = std::env::var_os(var).map(PathBuf::from)
            && p.is_file()
        {
            return Some(p);
        }
    }
    let exe = std::env::current_exe().ok()?;
    let name = format!("orchestra{}", std::env::consts::EXE_SUFFIX);
    if exe.file_name().is_some_and(|n| n == name.as_str()) {
        return Some(exe);
    }
    let dir = exe.parent()?;
    [dir.join(&name), dir.parent()?.join(&name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// What identifies a probed file: a file replaced or rewritten under the same path
/// changes its size, mtime or header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct FileKey {
    path: PathBuf,
    size: u64,
    mtime_ns: u128,
    header_sha256: String,
    embeddings: bool,
}

impl FileKey {
    fn of(path: &Path, header: &GgufHeader, embeddings: bool) -> Result<FileKey, GgufError> {
        let io = |source| GgufError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut hasher = Sha256::new();
        let mut file = std::fs::File::open(path)
            .map_err(io)?
            .take(header.data_offset.min(HASHED_HEADER_BYTES));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let header_sha256 = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(FileKey {
            path: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
            size: meta.len(),
            mtime_ns,
            header_sha256,
            embeddings,
        })
    }
}

/// Files known to load, shared by every load in this process; mirrored to the cache
/// file so the next process knows them too.
fn known() -> &'static Mutex<HashSet<FileKey>> {
    static KNOWN: OnceLock<Mutex<HashSet<FileKey>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(read_cache().into_iter().collect()))
}

fn known_good(key: &FileKey) -> bool {
    known()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(key)
}

fn probe_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks.entry(path.to_path_buf()).or_default().clone()
}

fn cache_path() -> PathBuf {
    crate::home::orchestra_home().join(CACHE_FILE)
}

/// The remembered files, oldest first; an unreadable cache is an empty one (the files
/// are probed again).
fn read_cache() -> Vec<FileKey> {
    std::fs::read(cache_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds `key` to this process's set and to the cache file (merged with what other
/// processes wrote meanwhile, written through a temporary file renamed into place).
fn remember(key: FileKey) {
    known()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone());
    let mut entries = read_cache();
    // An older entry for the same file is stale: the file changed since.
    entries.retain(|k| k.path != key.path || k.embeddings != key.embeddings);
    entries.push(key);
    if entries.len() > CACHE_ENTRIES {
        entries.drain(..entries.len() - CACHE_ENTRIES);
    }
    let path = cache_path();
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&entries)?)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        // Only costs a probe next time.
        tracing::debug!(file = %path.display(), error = %e, "probe: could not write the cache");
    }
}

/// The child's side (`orchestra __probe-model FILE`): load the file the way the engine
/// does and use it once — tokenize text that needs byte tokens, detokenize it, decode
/// one token (or embed a sentence) — so that any abort happens here. Exits non-zero on a clean failure; an abort ends the process.
///
/// `validate = false` skips [`crate::gguf::validate`] for the rest of this process.
pub fn probe_child(path: &Path, embeddings: bool, validate: bool) -> Result<(), EngineError> {
    if !validate {
        UNVALIDATED.store(true, Ordering::Relaxed);
    }
    let options = LoadOptions {
        context: 256,
        slots: 1,
        batch: 256,
        embeddings,
        ..LoadOptions::default()
    };
    let model = Model::load(path, &options)?;
    let text = "<|im_start|>user\nProbe: ASCII, café, 東京, 🎷, tabs\tand\nnewlines.<|im_end|>";
    let tokens = model.tokenize(text, true);
    let _ = model.detokenize(&tokens);
    if embeddings {
        futures::executor::block_on(model.embed(vec![text.to_owned()]))?;
        return Ok(());
    }
    // Chat templates are rendered in Rust (minijinja), never by llama.cpp: the probe
    // needs one short decode (ggml asserts on some hyperparameters only when it
    // computes), not a chat prompt, which would cost a prefill on a big model.
    let request = GenerateRequest::raw("Hi")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(1)
        .with_ignore_eos(true);
    model.generate(request)?.blocking_finish_with(|_| {})?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_words_pick_the_assertion_over_the_backtrace() {
        let stderr = "llama_model_loader: loaded meta data\n\
            /src/llama-vocab.cpp:2578: GGML_ASSERT(id_to_token.size() == token_to_id.size()) failed\n\
            #0 0x7f ggml_abort\n#1 0x7f llama_vocab::impl::load\n";
        assert_eq!(
            last_words(stderr).unwrap(),
            "/src/llama-vocab.cpp:2578: GGML_ASSERT(id_to_token.size() == token_to_id.size()) failed"
        );
        assert_eq!(
            last_words("fatal runtime error: Rust cannot catch foreign exceptions, aborting\n")
                .unwrap(),
            "fatal runtime error: Rust cannot catch foreign exceptions, aborting"
        );
        assert_eq!(
            last_words("probe-error: llama.cpp could not load\n").unwrap(),
            "llama.cpp could not load"
        );
        assert_eq!(last_words("one\ntwo\n").unwrap(), "two");
        assert_eq!(last_words("\n \n"), None);
    }
}
