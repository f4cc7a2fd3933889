//! Prefix snapshots: the KV cells of a long prompt prefix, copied out of a slot after
//! its prefill and copied back into a slot when a later request starts with the same
//! tokens and the slot's own cache cannot help (a new session, another slot, a model
//! evicted and reloaded, a restart). Two tiers: a bounded host-RAM LRU per loaded model,
//! and a folder of checksummed files (`$ORCHESTRA_HOME/cache/prefix/`) with a size limit
//! and LRU cleanup, shared by every model of the process and written off the decode
//! thread. Bytes go into a slot only when llama.cpp produced them for the same model
//! file and context layout: the key says so and the checksum proves the file intact.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::SystemTime;

use llama_cpp_2::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First bytes of every snapshot file.
const MAGIC: &[u8; 8] = b"ORCHPFX\n";
/// Bumped whenever the file layout changes; older files are then deleted as unreadable.
const VERSION: u32 = 1;
/// Snapshot files end in this; anything else in the folder is left alone.
const EXTENSION: &str = "kv";
/// Bytes of the fixed header before the label, the tokens and the payload.
const FIXED_HEADER: usize = 8 + 4 + 32 + 32 + 4 + 8 + 32 + 2;

type Hash = [u8; 32];

/// When and where prompt prefixes are snapshotted (a model's [`LoadOptions`]).
///
/// [`LoadOptions`]: super::LoadOptions
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotOptions {
    /// Prompts shorter than this are never snapshotted or looked up; a snapshot is
    /// saved only when it spares at least this many tokens of prefill. 0 turns
    /// snapshots off.
    pub min_tokens: u32,
    /// The folder of snapshot files; `None`: `$ORCHESTRA_HOME/cache/prefix`.
    pub dir: Option<PathBuf>,
    /// Host memory for snapshots of this model (0: none kept in RAM).
    pub ram_bytes: u64,
    /// Size limit of the folder (0: no files written).
    pub disk_bytes: u64,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            min_tokens: 2048,
            dir: None,
            ram_bytes: 512 << 20,
            disk_bytes: 8 << 30,
        }
    }
}

impl SnapshotOptions {
    /// Snapshots off.
    pub fn off() -> Self {
        Self {
            min_tokens: 0,
            ..Self::default()
        }
    }

    /// The folder of snapshot files.
    pub fn folder(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_dir)
    }
}

/// `$ORCHESTRA_HOME/cache/prefix` (`~/.cache/orchestra/cache/prefix` by default).
pub fn default_dir() -> PathBuf {
    crate::home::orchestra_home().join("cache").join("prefix")
}

/// What a KV snapshot depends on besides its tokens: the model file and the context
/// settings that shape the KV cells. A snapshot is only ever used under the same layout.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    hash: Hash,
}

impl Layout {
    /// `settings` names every context setting that changes the KV layout (cells per
    /// slot, slots, cache types, flash attention, sliding window).
    pub fn new(model_path: &Path, settings: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"orchestra kv layout\0");
        h.update(model_identity(model_path));
        h.update(settings.as_bytes());
        // The serialised state's format belongs to the llama.cpp inside the binding.
        h.update(b"\0llama-cpp-2 0.1.160");
        Self {
            hash: h.finalize().into(),
        }
    }
}

/// The model file's identity: its canonical path, size, modification time and first
/// 64 KiB (the GGUF header), hashed. Another file, or the same file rewritten, differs.
fn model_identity(path: &Path) -> Hash {
    let mut h = Sha256::new();
    let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    h.update(canonical.to_string_lossy().as_bytes());
    if let Ok(meta) = fs::metadata(path) {
        h.update(meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(mtime.to_le_bytes());
    }
    if let Ok(f) = fs::File::open(path) {
        let mut head = Vec::with_capacity(64 << 10);
        if f.take(64 << 10).read_to_end(&mut head).is_ok() {
            h.update(&head);
        }
    }
    h.finalize().into()
}

fn token_bytes(tokens: &[LlamaToken]) -> Vec<u8> {
    tokens.iter().flat_map(|t| t.0.to_le_bytes()).collect()
}

/// The keys of `tokens[..n]` for each `n` in `lengths` (ascending), hashed in one pass.
fn prefix_keys(layout: &Layout, tokens: &[LlamaToken], lengths: &[usize]) -> Vec<(usize, Hash)> {
    let mut h = Sha256::new();
    h.update(b"orchestra kv prefix\0");
    h.update(layout.hash);
    let mut done = 0;
    let mut out = Vec::with_capacity(lengths.len());
    for &n in lengths {
        if n > tokens.len() || n < done {
            continue;
        }
        h.update(token_bytes(&tokens[done..n]));
        done = n;
        out.push((n, h.clone().finalize().into()));
    }
    out
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a snapshot was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Ram,
    Disk,
}

/// A snapshot ready to go into a slot.
pub(crate) struct Found {
    pub tokens: usize,
    pub tier: Tier,
    key: Hash,
    payload: Arc<Vec<u8>>,
}

struct RamEntry {
    key: Hash,
    tokens: usize,
    payload: Arc<Vec<u8>>,
    last_used: u64,
}

/// A loaded model's snapshots: its RAM tier and the shared folder. Owned by the
/// model's worker thread, so the RAM tier needs no lock.
pub(crate) struct Snapshots {
    min_tokens: usize,
    layout: Layout,
    /// The model's name, written into each file for `orchestra cache list`.
    label: String,
    ram: Vec<RamEntry>,
    ram_limit: u64,
    ram_used: u64,
    uses: u64,
    disk: Option<Arc<DiskCache>>,
}

impl Snapshots {
    /// `None` when the options turn snapshots off.
    pub fn new(options: &SnapshotOptions, layout: Layout, label: &str) -> Option<Self> {
        if options.min_tokens == 0 {
            return None;
        }
        let disk = (options.disk_bytes > 0)
            .then(|| DiskCache::shared(&options.folder(), options.disk_bytes));
        Some(Self {
            min_tokens: options.min_tokens as usize,
            layout,
            label: label.to_owned(),
            ram: Vec::new(),
            ram_limit: options.ram_bytes,
            ram_used: 0,
            uses: 0,
            disk,
        })
    }

    /// The longest snapshot of a prefix of `tokens` holding more than `reused` and at
    /// most `tokens.len() - 1` tokens (the last one is always decoded for its logits).
    /// RAM first; a corrupt file is deleted and reported as a miss.
    pub fn find(&mut self, tokens: &[LlamaToken], reused: usize) -> Option<Found> {
        if tokens.len() < self.min_tokens {
            return None;
        }
        let max = tokens.len() - 1;
        let mut lengths: Vec<usize> = self
            .ram
            .iter()
            .map(|e| e.tokens)
            .chain(
                self.disk
                    .iter()
                    .flat_map(|d| d.lengths(&self.layout.hash).into_iter()),
            )
            .filter(|&n| n > reused && n <= max)
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        for (n, key) in prefix_keys(&self.layout, tokens, &lengths)
            .into_iter()
            .rev()
        {
            if let Some(e) = self.ram.iter_mut().find(|e| e.key == key) {
                self.uses += 1;
                e.last_used = self.uses;
                return Some(Found {
                    tokens: n,
                    tier: Tier::Ram,
                    key,
                    payload: e.payload.clone(),
                });
            }
            if let Some(disk) = &self.disk
                && let Some(payload) = disk.load(&key, &tokens[..n])
            {
                let payload = Arc::new(payload);
                self.keep_in_ram(key, n, payload.clone());
                return Some(Found {
                    tokens: n,
                    tier: Tier::Disk,
                    key,
                    payload,
                });
            }
        }
        None
    }

    /// Where this request's prefill should stop to be snapshotted: the end of its
    /// `hint` (the prompt before its last message) when that is long enough, else the
    /// last block boundary before the prompt's end. `None` unless it spares at least
    /// `min_tokens` of prefill beyond the `reused` tokens.
    pub fn point(
        &self,
        tokens: &[LlamaToken],
        hint: Option<usize>,
        reused: usize,
    ) -> Option<usize> {
        let last = tokens.len().checked_sub(1)?;
        let block = (self.min_tokens / 4).clamp(16, 1024);
        let p = match hint {
            Some(h) if h >= self.min_tokens && h <= last => h,
            _ => last / block * block,
        };
        (p >= self.min_tokens && p >= reused + self.min_tokens).then_some(p)
    }

    /// Keep a snapshot of `tokens` (the exact tokens in its cells): in RAM, and written
    /// to the folder by the writer thread.
    pub fn store(&mut self, tokens: &[LlamaToken], payload: Vec<u8>) {
        let key = prefix_keys(&self.layout, tokens, &[tokens.len()])[0].1;
        if self.ram.iter().any(|e| e.key == key) {
            // Another slot prefilled the same prefix at the same time and kept it.
            return;
        }
        let payload = Arc::new(payload);
        self.keep_in_ram(key, tokens.len(), payload.clone());
        if let Some(disk) = &self.disk {
            disk.write(Pending {
                key,
                layout: self.layout.hash,
                label: self.label.clone(),
                tokens: tokens.to_vec(),
                payload,
            });
        }
    }

    /// A snapshot llama.cpp refused although its checksum held: never offer it again.
    pub fn reject(&mut self, found: &Found) {
        self.forget_ram(&found.key);
        if let Some(disk) = &self.disk {
            disk.remove(&found.key);
        }
    }

    fn keep_in_ram(&mut self, key: Hash, tokens: usize, payload: Arc<Vec<u8>>) {
        let size = payload.len() as u64;
        if size > self.ram_limit {
            return;
        }
        self.forget_ram(&key);
        while self.ram_used + size > self.ram_limit {
            let Some(oldest) = (0..self.ram.len()).min_by_key(|&i| self.ram[i].last_used) else {
                break;
            };
            let e = self.ram.swap_remove(oldest);
            self.ram_used -= e.payload.len() as u64;
        }
        self.uses += 1;
        self.ram_used += size;
        self.ram.push(RamEntry {
            key,
            tokens,
            payload,
            last_used: self.uses,
        });
    }

    fn forget_ram(&mut self, key: &Hash) {
        if let Some(i) = self.ram.iter().position(|e| &e.key == key) {
            let e = self.ram.swap_remove(i);
            self.ram_used -= e.payload.len() as u64;
        }
    }
}

/// Copy slot `seq`'s KV cells out of the context.
pub(crate) fn capture(ctx: &LlamaContext<'_>, seq: i32) -> Option<Vec<u8>> {
    let flags = LlamaStateSeqFlags::empty();
    let size = ctx.state_seq_get_size_ext(seq, flags);
    if size == 0 {
        return None;
    }
    let mut bytes = vec![0u8; size];
    // SAFETY: `bytes` holds the `size` bytes llama.cpp just said this state needs.
    let written = unsafe { ctx.state_seq_get_data_ext(bytes.as_mut_ptr(), seq, flags) };
    (written == size).then_some(bytes)
}

/// Put a snapshot into slot `seq` (whose cells are cleared first). On failure the slot
/// is left empty.
pub(crate) fn restore(ctx: &mut LlamaContext<'_>, seq: i32, found: &Found) -> bool {
    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    // SAFETY: the bytes came from `capture` under the same layout (a RAM entry), or
    // from a file whose key names this layout and whose checksum matched, so they are
    // llama.cpp's own serialisation for this context; llama.cpp checks the shape too.
    let ok =
        unsafe { ctx.state_seq_set_data_ext(&found.payload, seq, LlamaStateSeqFlags::empty()) };
    let whole = ok
        && ctx.kv_cache_seq_pos_min(seq) == 0
        && ctx.kv_cache_seq_pos_max(seq) == found.tokens as i32 - 1;
    if !whole {
        let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    }
    whole
}

/// A snapshot on its way to disk.
struct Pending {
    key: Hash,
    layout: Hash,
    label: String,
    tokens: Vec<LlamaToken>,
    payload: Arc<Vec<u8>>,
}

enum ToWriter {
    Save(Pending),
    Flush(mpsc::Sender<()>),
}

/// Every snapshot folder this process uses, by path.
fn caches() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Arc<DiskCache>>> {
    static CACHES: OnceLock<Mutex<HashMap<PathBuf, Arc<DiskCache>>>> = OnceLock::new();
    CACHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Wait until every snapshot queued for `dir` is written (or dropped over the limit).
pub(crate) fn flush(dir: &Path) {
    let cache = caches().get(dir).cloned();
    if let Some(c) = cache {
        c.flush();
    }
}

/// One snapshot file, as the folder's index knows it.
#[derive(Debug, Clone)]
struct DiskEntry {
    path: PathBuf,
    layout: Hash,
    tokens: usize,
    bytes: u64,
    last_used: SystemTime,
}

/// The snapshot folder: an index of its files (read from their headers once), the size
/// limit, and a writer thread so that hashing and writing hundreds of megabytes never
/// holds up a decode step.
struct DiskCache {
    dir: PathBuf,
    limit: AtomicU64,
    /// A std `Mutex`: held for map look-ups only, never across file I/O of a payload.
    index: Mutex<HashMap<Hash, DiskEntry>>,
    writer: Mutex<mpsc::Sender<ToWriter>>,
}

impl DiskCache {
    /// The process's one cache of `dir` (models sharing a folder share its size limit).
    fn shared(dir: &Path, limit: u64) -> Arc<DiskCache> {
        let mut caches = caches();
        if let Some(c) = caches.get(dir) {
            c.limit.store(limit, Ordering::Relaxed);
            return c.clone();
        }
        let (tx, rx) = mpsc::channel();
        let index = scan(dir, true)
            .into_iter()
            .map(|f| (f.key, f.entry))
            .collect();
        let cache = Arc::new(DiskCache {
            dir: dir.to_path_buf(),
            limit: AtomicU64::new(limit),
            index: Mutex::new(index),
            writer: Mutex::new(tx),
        });
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("prefix-snapshots".into())
            .spawn(move || {
                for w in rx {
                    let Some(cache) = weak.upgrade() else { break };
                    match w {
                        ToWriter::Save(p) => cache.save(p),
                        ToWriter::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("spawning the snapshot writer thread");
        caches.insert(dir.to_path_buf(), cache.clone());
        cache
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, DiskEntry>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lengths(&self, layout: &Hash) -> Vec<usize> {
        self.index()
            .values()
            .filter(|e| &e.layout == layout)
            .map(|e| e.tokens)
            .collect()
    }

    fn write(&self, p: Pending) {
        let _ = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(ToWriter::Save(p));
    }

    fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(ToWriter::Flush(tx));
        if sent.is_ok() {
            let _ = rx.recv();
        }
    }

    fn remove(&self, key: &Hash) {
        if let Some(e) = self.index().remove(key) {
            let _ = fs::remove_file(&e.path);
        }
    }

    /// Read, check and return the payload of `key`, whose tokens must be `tokens`. A
    /// file that fails any check is deleted.
    fn load(&self, key: &Hash, tokens: &[LlamaToken]) -> Option<Vec<u8>> {
        let entry = self.index().get(key).cloned()?;
        match read_file(&entry.path, Some(key), Some(tokens)) {
            Ok(payload) => {
                let now = SystemTime::now();
                if let Ok(f) = fs::File::options().write(true).open(&entry.path) {
                    let _ = f.set_modified(now);
                }
                if let Some(e) = self.index().get_mut(key) {
                    e.last_used = now;
                }
                Some(payload)
            }
            Err(reason) => {
                tracing::warn!(file = %entry.path.display(), %reason, "prefix snapshot rejected and deleted; its prefix is computed again");
                self.remove(key);
                None
            }
        }
    }

    fn save(&self, p: Pending) {
        let limit = self.limit.load(Ordering::Relaxed);
        let head = header_bytes(&p);
        let size = (head.len() + p.payload.len()) as u64;
        if size > limit {
            tracing::debug!(
                size,
                limit,
                "prefix snapshot larger than the cache limit; not written"
            );
            return;
        }
        if let Err(e) = fs::create_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot create the prefix snapshot folder");
            return;
        }
        let path = self.dir.join(format!("{}.{EXTENSION}", hex(&p.key)));
        let tmp = path.with_extension("part");
        let written = fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&head)?;
            f.write_all(&p.payload)?;
            f.sync_data()
        });
        if let Err(e) = written.and_then(|_| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(file = %path.display(), error = %e, "cannot write a prefix snapshot");
            return;
        }
        let mut index = self.index();
        index.insert(
            p.key,
            DiskEntry {
                path,
                layout: p.layout,
                tokens: p.tokens.len(),
                bytes: size,
                last_used: SystemTime::now(),
            },
        );
        let mut total: u64 = index.values().map(|e| e.bytes).sum();
        while total > limit {
            let Some(oldest) = index
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = index.remove(&oldest) {
                let _ = fs::remove_file(&e.path);
                total -= e.bytes;
            }
        }
    }
}

/// A snapshot file up to its payload: fixed header, label, tokens.
fn header_bytes(p: &Pending) -> Vec<u8> {
    let tokens = token_bytes(&p.tokens);
    let mut sum = Sha256::new();
    sum.update(&tokens);
    sum.update(p.payload.as_slice());
    let sum: Hash = sum.finalize().into();
    let label = &p.label.as_bytes()[..p.label.len().min(u16::MAX as usize)];
    let mut head = Vec::with_capacity(FIXED_HEADER + label.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&p.layout);
    head.extend_from_slice(&p.key);
    head.extend_from_slice(&(p.tokens.len() as u32).to_le_bytes());
    head.extend_from_slice(&(p.payload.len() as u64).to_le_bytes());
    head.extend_from_slice(&sum);
    head.extend_from_slice(&(label.len() as u16).to_le_bytes());
    head.extend_from_slice(label);
    head.extend_from_slice(&tokens);
    head
}

/// The fixed header of a snapshot file.
struct Header {
    layout: Hash,
    key: Hash,
    tokens: usize,
    payload: u64,
    sum: Hash,
    label: String,
    /// Bytes before the tokens.
    len: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < FIXED_HEADER {
        return Err("shorter than a header".into());
    }
    if &bytes[..8] != MAGIC {
        return Err("not a prefix snapshot (bad magic)".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
    let version = u32_at(8);
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    let hash_at = |i: usize| -> Hash { bytes[i..i + 32].try_into().unwrap_or_default() };
    let tokens = u32_at(76) as usize;
    let payload = u64::from_le_bytes(bytes[80..88].try_into().unwrap_or_default());
    let label_len = u16::from_le_bytes(bytes[120..122].try_into().unwrap_or_default()) as usize;
    let label = bytes
        .get(FIXED_HEADER..FIXED_HEADER + label_len)
        .ok_or("truncated label")?;
    Ok(Header {
        layout: hash_at(12),
        key: hash_at(44),
        tokens,
        payload,
        sum: hash_at(88),
        label: String::from_utf8_lossy(label).into_owned(),
        len: FIXED_HEADER + label_len,
    })
}

/// Read a whole snapshot file and check it: magic, version, key, length, checksum and
/// (when given) its tokens. Returns the payload.
fn read_file(
    path: &Path,
    key: Option<&Hash>,
    tokens: Option<&[LlamaToken]>,
) -> Result<Vec<u8>, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let h = parse_header(&bytes)?;
    if key.is_some_and(|k| k != &h.key) {
        return Err("its key does not match its name".into());
    }
    let token_end = h.len + h.tokens * 4;
    let expected = token_end as u64 + h.payload;
    if bytes.len() as u64 != expected {
        return Err(format!("{} bytes, its header says {expected}", bytes.len()));
    }
    let mut sum = Sha256::new();
    sum.update(&bytes[h.len..]);
    let sum: Hash = sum.finalize().into();
    if sum != h.sum {
        return Err("checksum mismatch".into());
    }
    if let Some(t) = tokens
        && bytes[h.len..token_end] != token_bytes(t)[..]
    {
        return Err("its tokens differ from the prompt's".into());
    }
    let mut bytes = bytes;
    bytes.drain(..token_end);
    Ok(bytes)
}

/// One file of a snapshot folder, as `scan` finds it.
struct Scanned {
    key: Hash,
    entry: DiskEntry,
    label: String,
}

/// The snapshot files in `dir`, from their headers. With `tidy` (the process opening
/// the folder for its models), files whose header is unreadable and unfinished writes
/// are deleted; a full check happens when a file is loaded.
fn scan(dir: &Path, tidy: bool) -> Vec<Scanned> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in read.flatten() {
        let path = f.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if ext == Some("part") && tidy {
            // A write that never finished (a crash): nobody will finish it.
            let _ = fs::remove_file(&path);
            continue;
        }
        if ext != Some(EXTENSION) {
            continue;
        }
        let Ok(meta) = f.metadata() else { continue };
        let mut head = vec![0u8; FIXED_HEADER + u16::MAX as usize];
        let n = fs::File::open(&path)
            .and_then(|mut file| read_up_to(&mut file, &mut head))
            .unwrap_or(0);
        head.truncate(n);
        match parse_header(&head) {
            Ok(h) => out.push(Scanned {
                key: h.key,
                label: h.label,
                entry: DiskEntry {
                    path,
                    layout: h.layout,
                    tokens: h.tokens,
                    bytes: meta.len(),
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                },
            }),
            Err(reason) if tidy => {
                tracing::warn!(file = %path.display(), %reason, "unreadable prefix snapshot deleted");
                let _ = fs::remove_file(&path);
            }
            Err(_) => {}
        }
    }
    out
}

fn read_up_to(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One snapshot file, for `orchestra cache list`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFile {
    pub path: PathBuf,
    /// The model it was made with (its file stem).
    pub model: String,
    /// Prompt tokens it holds.
    pub tokens: usize,
    pub bytes: u64,
    pub last_used: SystemTime,
}

/// The snapshot files in `dir`, most recently used first.
pub fn list_snapshots(dir: &Path) -> Vec<SnapshotFile> {
    let mut files: Vec<SnapshotFile> = scan(dir, false)
        .into_iter()
        .map(|s| SnapshotFile {
            path: s.entry.path,
            model: s.label,
            tokens: s.entry.tokens,
            bytes: s.entry.bytes,
            last_used: s.entry.last_used,
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.last_used));
    files
}

/// Delete every snapshot file in `dir`; returns how many files and bytes went.
pub fn clear_snapshots(dir: &Path) -> std::io::Result<(usize, u64)> {
    let mut count = 0;
    let mut bytes = 0;
    for f in list_snapshots(dir) {
        fs::remove_file(&f.path)?;
        count += 1;
        bytes += f.bytes;
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(tokens: &[i32], payload: &[u8]) -> Pending {
        let layout = Layout { hash: [7; 32] };
        let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t)).collect();
        Pending {
            key: prefix_keys(&layout, &tokens, &[tokens.len()])[0].1,
            layout: layout.hash,
            label: "tiny".into(),
            tokens,
            payload: Arc::new(payload.to_vec()),
        }
    }

    fn write(dir: &Path, p: &Pending) -> PathBuf {
        let path = dir.join(format!("{}.{EXTENSION}", hex(&p.key)));
        fs::create_dir_all(dir).unwrap();
        let mut bytes = header_bytes(p);
        bytes.extend_from_slice(&p.payload);
        fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_file_reads_back_its_payload_and_any_damage_is_caught() {
        let dir = std::env::temp_dir().join(format!("orchestra-snap-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let p = pending(&[1, 2, 3], b"kv cells");
        let path = write(&dir, &p);
        let toks = p.tokens.clone();
        assert_eq!(
            read_file(&path, Some(&p.key), Some(&toks)).unwrap(),
            b"kv cells"
        );
        // Other tokens, a flipped payload byte, a truncation: all refused.
        let other = [LlamaToken(1), LlamaToken(2), LlamaToken(4)];
        assert!(read_file(&path, Some(&p.key), Some(&other)).is_err());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(
            read_file(&path, None, None)
                .unwrap_err()
                .contains("checksum")
        );
        bytes.truncate(last);
        fs::write(&path, &bytes).unwrap();
        assert!(read_file(&path, None, None).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn prefix_keys_are_the_keys_of_each_prefix() {
        let layout = Layout { hash: [1; 32] };
        let toks: Vec<LlamaToken> = (0..10).map(LlamaToken).collect();
        let all = prefix_keys(&layout, &toks, &[3, 7]);
        assert_eq!(all[0], prefix_keys(&layout, &toks[..3], &[3])[0]);
        assert_eq!(all[1], prefix_keys(&layout, &toks[..7], &[7])[0]);
        assert_ne!(
            all[0].1,
            prefix_keys(&Layout { hash: [2; 32] }, &toks, &[3])[0].1
        );
    }
}
