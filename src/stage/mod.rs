//! The stage: which models are resident, under one memory budget.
//!
//! A model's footprint is weights + KV cache + compute buffers, estimated from the GGUF
//! header before loading and replaced by what the load really took. Loading a model
//! that does not fit evicts idle models, least recently used first; a model that is
//! playing (it holds a [`Lease`]) is never evicted, pinned models stay, idle models
//! unload after a TTL, and concurrent requests for a model that is loading share one
//! load.
//!
//! Memory is never lost: bytes reserved for a load come back however the load ends
//! (`Reservation`); a model removed or pointed at another file while it plays stays
//! counted as a retired copy until its last lease ends, while new requests get the new
//! file; instruments loaded from the same file share its weights ([`Model::weights_id`])
//! and the stage counts them once.
//!
//! The stage is also where loads, evictions and tokens are counted ([`Metrics`]) and
//! where each instrument's state and last tempo and swing are kept ([`Stage::status`]):
//! every generation goes through [`Lease::generate`].

mod footprint;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::engine::{
    EngineError, GenerateRequest, Generation, GenerationObserver, LoadOptions, Model, StreamItem,
};
use crate::events::{EventBus, EventContext, EventKind};
use crate::metrics::Metrics;
pub use footprint::{Footprint, estimate};

/// A model the stage may load.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Unique name on this stage (an instrument name).
    pub name: String,
    pub path: PathBuf,
    pub options: LoadOptions,
    /// Never evicted for room nor unloaded when idle.
    pub pinned: bool,
}

impl ModelSpec {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            options: LoadOptions::default(),
            pinned: false,
        }
    }

    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }
}

/// Stage settings.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// Bytes all resident models may use together.
    pub budget: u64,
    /// Unload a model idle for this long (`None`: never).
    pub idle_ttl: Option<Duration>,
    /// How long a load waits for playing models to finish before giving up.
    pub wait_for_room: Duration,
}

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            budget: 8 << 30,
            idle_ttl: None,
            wait_for_room: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StageError {
    #[error("no model named `{name}` on the stage (known: {known})")]
    Unknown { name: String, known: String },
    #[error(
        "model `{name}` needs {} (weights {} + KV cache {} + compute {}) but the memory budget is {}: raise the budget (`memory = ...`), lower `context` or `slots`, or pick a smaller quantisation",
        human_bytes(*need), human_bytes(*weights), human_bytes(*kv), human_bytes(*compute), human_bytes(*budget)
    )]
    TooLarge {
        name: String,
        need: u64,
        weights: u64,
        kv: u64,
        compute: u64,
        budget: u64,
    },
    #[error(
        "no room for `{name}` ({}) after waiting {waited_s}s: {} of {} is held by {holders}; raise the budget or wait for them to finish",
        human_bytes(*need), human_bytes(*used), human_bytes(*budget)
    )]
    BudgetFull {
        name: String,
        need: u64,
        used: u64,
        budget: u64,
        holders: String,
        waited_s: u64,
    },
    #[error("model `{0}` is playing and cannot be evicted now")]
    Playing(String),
    #[error("loading `{name}` failed: {reason}")]
    Load { name: String, reason: String },
}

/// A resident model as reported to users.
#[derive(Debug, Clone, Serialize)]
pub struct ResidentInfo {
    pub name: String,
    pub footprint_bytes: u64,
    pub pinned: bool,
    pub playing: usize,
    pub idle_ms: u64,
}

/// Every model registered on a stage, loaded or not, and the stage's memory: what a
/// status page shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageStatus {
    pub budget: u64,
    /// Resident models plus loads in progress.
    pub used: u64,
    pub models: Vec<ModelStatus>,
    pub idle_ttl_ms: Option<u64>,
}

/// One registered model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    pub path: PathBuf,
    pub resident: bool,
    /// Real bytes when resident. Weights shared with other instruments (the same
    /// file) are counted once, with the one that loaded them first.
    pub footprint_bytes: Option<u64>,
    /// Resident instruments that use the same loaded weights as this one.
    #[serde(default)]
    pub weights_shared_with: Vec<String>,
    pub pinned: bool,
    /// Leases held now (requests playing it).
    pub playing: usize,
    pub state: ModelState,
    /// 0.0 to 1.0 while loading.
    pub load_progress: Option<f32>,
    /// What it would take, estimated from the GGUF header when registered.
    pub estimate_bytes: Option<u64>,
    /// Milliseconds since it last played (resident and idle only).
    pub idle_ms: Option<u64>,
    pub stats: PlayStats,
}

/// Where a model is, as the stage page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Never loaded.
    Offstage,
    Loading,
    /// Loaded and idle.
    Resident,
    /// Loaded and held by at least one request.
    Playing,
    /// Was loaded, then unloaded (for room, idle, asked).
    Evicted,
}

/// How an instrument has been playing: its last finished generation and the ones
/// running now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlayStats {
    /// Finished generations since the stage started.
    pub generations: u64,
    /// Tokens those generations produced.
    pub tokens: u64,
    /// Decode speed of the last finished generation, tokens per second.
    pub tempo: Option<f64>,
    /// Timing steadiness of the last finished generation: `1 / (1 + cv)` of the gaps
    /// between tokens (1.0 = a metronome); see `stdlib/trace.lua`.
    pub swing: Option<f64>,
    /// Time to first token of the last finished generation.
    pub ttft_ms: Option<f64>,
    /// Generations running now.
    pub live: usize,
    /// Tokens those running generations produced so far (updated a few times a second).
    pub live_tokens: usize,
}

struct Resident {
    model: Model,
    /// Weights + KV cache + compute buffers.
    footprint: u64,
    /// Of which the weights: shared by residents loaded from the same file, counted
    /// once among them.
    weights: u64,
    /// Which loaded copy of the weights ([`Model::weights_id`]).
    weights_id: usize,
    /// The file (canonical) and GPU layers, what decides whether a load can share.
    weights_key: (PathBuf, u32),
    /// Tells this copy apart from earlier or later ones of the same name: a lease
    /// gives back the copy it holds.
    copy: u64,
}

/// A copy that still plays after its instrument was removed or pointed at another
/// file: its memory stays counted until its last lease ends.
struct Retired {
    name: String,
    resident: Resident,
    leases: usize,
    /// Why it left, for the eviction event sent when it really goes.
    reason: &'static str,
}

struct Entry {
    spec: ModelSpec,
    resident: Option<Resident>,
    /// The footprint estimated from the header when registered.
    estimate: Option<u64>,
    /// Some while a load runs: its progress, 0.0 to 1.0.
    load_progress: Option<f32>,
    /// Whether it was ever loaded (offstage vs evicted).
    loaded_once: bool,
    stats: PlayStats,
    /// Serialises loads of this model: the second caller waits and finds it resident.
    loading: Arc<tokio::sync::Mutex<()>>,
    leases: usize,
    last_used: Instant,
}

struct State {
    entries: HashMap<String, Entry>,
    /// Copies still playing that no entry owns any more.
    retired: Vec<Retired>,
    /// Bytes promised to loads in progress.
    reserved: u64,
    /// The next [`Resident::copy`].
    next_copy: u64,
}

struct Shared {
    config: StageConfig,
    events: EventBus,
    /// Loads, failures, evictions and resident bytes, counted where they happen.
    metrics: Metrics,
    state: Mutex<State>,
    /// Signalled whenever a lease ends or a model leaves, so waiting loads re-check.
    room: Notify,
    /// This stage's [`LoadOptions::batch_group`]: its instruments on one GGUF batch
    /// each other's requests.
    batch_group: u64,
}

/// The memory-budgeted set of models. Cheap to clone.
#[derive(Clone)]
pub struct Stage {
    shared: Arc<Shared>,
}

/// The right to use a resident model; while any lease is alive the model is not
/// evicted. Dropping it marks the model idle (and most recently used).
pub struct Lease {
    model: Model,
    name: String,
    /// The [`Resident::copy`] it holds.
    copy: u64,
    shared: Arc<Shared>,
}

impl Lease {
    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for Lease {
    type Target = Model;
    fn deref(&self) -> &Model {
        &self.model
    }
}

impl Lease {
    /// Starts a generation on the leased model (see [`Model::generate`]), counted on
    /// the stage: tokens per instrument, tempo and swing, coalesced progress events.
    pub fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let generation = self.model.generate(request)?;
        if let Some(e) = self
            .shared
            .state
            .lock()
            .unwrap()
            .entries
            .get_mut(&self.name)
        {
            e.stats.live += 1;
        }
        let watch = Watch {
            shared: self.shared.clone(),
            name: self.name.clone(),
            id: generation.id(),
            ctx: crate::events::current().unwrap_or_default(),
            started: Instant::now(),
            first: None,
            tokens: 0,
            reported: 0,
            last_report: Instant::now(),
            ended: false,
        };
        Ok(generation.observed(watch))
    }
}

/// How often a running generation reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Counts one generation as it is read (see [`Lease::generate`]).
struct Watch {
    shared: Arc<Shared>,
    name: String,
    id: u64,
    /// The request that started it: progress reports go out on the reader's thread,
    /// which may not be inside that request's task.
    ctx: EventContext,
    started: Instant,
    first: Option<Instant>,
    tokens: usize,
    /// Tokens already added to the entry's `live_tokens`.
    reported: usize,
    last_report: Instant,
    ended: bool,
}

impl Watch {
    fn tok_s(&self) -> f64 {
        match self.first {
            Some(f) if self.tokens > 1 => {
                let s = f.elapsed().as_secs_f64();
                if s > 0.0 {
                    (self.tokens - 1) as f64 / s
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }

    /// Moves this generation's new tokens into the entry's live count; `end` also
    /// takes the generation out of it. `then` sees the entry under the same lock.
    fn settle(&mut self, end: bool, then: impl FnOnce(&mut PlayStats)) {
        let shared = self.shared.clone();
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = st.entries.get_mut(&self.name) else {
            return;
        };
        e.stats.live_tokens = e.stats.live_tokens + self.tokens - self.reported;
        self.reported = self.tokens;
        if end {
            e.stats.live = e.stats.live.saturating_sub(1);
            e.stats.live_tokens = e.stats.live_tokens.saturating_sub(self.tokens);
        }
        then(&mut e.stats);
    }
}

impl GenerationObserver for Watch {
    fn item(&mut self, item: &StreamItem) {
        match item {
            StreamItem::Text(_) => {
                self.tokens += 1;
                let now = Instant::now();
                self.first.get_or_insert(now);
                if self.tokens == 1 || now - self.last_report >= PROGRESS_EVERY {
                    self.last_report = now;
                    self.settle(false, |_| {});
                    let ttft = self.first.map(|f| (f - self.started).as_secs_f64() * 1e3);
                    self.shared.events.emit_in(
                        self.ctx,
                        EventKind::GenerationProgress {
                            model: self.name.clone(),
                            generation: self.id,
                            tokens: self.tokens,
                            tok_s: self.tok_s(),
                            ttft_ms: ttft.unwrap_or(0.0),
                        },
                    );
                }
            }
            StreamItem::Done(c) => {
                self.ended = true;
                self.shared.metrics.generation(
                    &self.name,
                    "finished",
                    c.prompt_tokens,
                    c.completion_tokens,
                );
                self.shared
                    .metrics
                    .prompt_sources(&self.name, &c.prompt_sources);
                let t = &c.timings;
                let swing = (t.gap_mean_ms > 0.0 && t.gap_std_ms.is_finite())
                    .then(|| 1.0 / (1.0 + t.gap_std_ms / t.gap_mean_ms));
                self.shared.events.emit_in(
                    self.ctx,
                    EventKind::Played {
                        model: self.name.clone(),
                        generation: self.id,
                        tokens: c.completion_tokens,
                        tok_s: t.decode_tok_s,
                        swing,
                        ttft_ms: t.ttft_ms,
                    },
                );
                self.settle(true, |s| {
                    s.generations += 1;
                    s.tokens += c.completion_tokens as u64;
                    if c.completion_tokens > 1 && t.decode_tok_s > 0.0 {
                        s.tempo = Some(t.decode_tok_s);
                        s.swing = swing;
                    }
                    s.ttft_ms = Some(t.ttft_ms);
                });
            }
            StreamItem::Failed(_) => {
                self.ended = true;
                self.shared
                    .metrics
                    .generation(&self.name, "failed", 0, self.tokens);
                self.settle(true, |_| {});
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.shared
            .metrics
            .generation(&self.name, "cancelled", 0, self.tokens);
        self.settle(true, |_| {});
    }
}

/// Marks a model as loading while alive: a load whose request was dropped leaves no
/// "loading" state behind.
struct LoadingMark {
    shared: Arc<Shared>,
    name: String,
}

impl Drop for LoadingMark {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = st.entries.get_mut(&self.name) {
            e.load_progress = None;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = None;
        match st.entries.get_mut(&self.name) {
            Some(e) if e.resident.as_ref().is_some_and(|r| r.copy == self.copy) => {
                e.leases = e.leases.saturating_sub(1);
                e.last_used = Instant::now();
            }
            _ => {
                // A retired copy: it leaves with its last lease.
                if let Some(i) = st.retired.iter().position(|r| r.resident.copy == self.copy) {
                    let r = &mut st.retired[i];
                    r.leases = r.leases.saturating_sub(1);
                    if r.leases == 0 {
                        gone = Some(st.retired.swap_remove(i));
                    }
                }
            }
        }
        drop(st);
        if let Some(r) = gone {
            self.shared.metrics.model_evicted(&r.name);
            publish_resident(&self.shared);
            self.shared.events.emit(EventKind::ModelEvicted {
                model: r.name,
                reason: format!("{}, after its last request", r.reason),
            });
        }
        self.shared.room.notify_waiters();
    }
}

/// `512 B`, `1.5 GiB` (binary units, one decimal).
pub fn human_bytes(b: u64) -> String {
    bytesize::ByteSize::b(b).to_string()
}

/// Parse "12GiB", "512 MB", "1.5G", "800000" into bytes (`k`, `M`, `G` are powers of
/// 1000, `KiB`, `MiB`, `GiB` of 1024, case-insensitive).
pub fn parse_bytes(s: &str) -> Option<u64> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|b| b.as_u64())
}

impl Stage {
    pub fn new(config: StageConfig, events: EventBus) -> Self {
        Self::with_metrics(config, events, Metrics::new())
    }

    /// A stage that counts into `metrics` (the conductor's, which the server exports).
    pub fn with_metrics(config: StageConfig, events: EventBus, metrics: Metrics) -> Self {
        metrics.set_budget(config.budget);
        Self {
            shared: Arc::new(Shared {
                config,
                events,
                metrics,
                state: Mutex::new(State {
                    entries: HashMap::new(),
                    retired: Vec::new(),
                    reserved: 0,
                    next_copy: 1,
                }),
                room: Notify::new(),
                batch_group: {
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(1);
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                },
            }),
        }
    }

    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    pub fn budget(&self) -> u64 {
        self.shared.config.budget
    }

    /// Register a model. A name already registered with another file or other load
    /// options plays the new one from its next request on: the old copy leaves now
    /// when idle, else when its last lease ends (counted until then).
    pub fn add(&self, spec: ModelSpec) {
        let estimate = estimate(&spec.path, &spec.options).ok().map(|f| f.total());
        let mut st = self.shared.state.lock().unwrap();
        let name = spec.name.clone();
        let State {
            entries, retired, ..
        } = &mut *st;
        let mut unloaded = false;
        match entries.get_mut(&name) {
            Some(e) => {
                if !same_model(&e.spec, &spec)
                    && let Some(old) = e.resident.take()
                {
                    if e.leases > 0 {
                        retired.push(Retired {
                            name: name.clone(),
                            resident: old,
                            leases: e.leases,
                            reason: "replaced by another file or other options",
                        });
                        e.leases = 0;
                    } else {
                        unloaded = true;
                    }
                }
                e.spec = spec;
                e.estimate = estimate;
                drop(st);
                if unloaded {
                    self.shared.room.notify_waiters();
                    self.shared.metrics.model_evicted(&name);
                    publish_resident(&self.shared);
                    self.shared.events.emit(EventKind::ModelEvicted {
                        model: name,
                        reason: "replaced by another file or other options".into(),
                    });
                }
            }
            None => {
                entries.insert(
                    name,
                    Entry {
                        spec,
                        resident: None,
                        estimate,
                        load_progress: None,
                        loaded_once: false,
                        stats: PlayStats::default(),
                        loading: Arc::new(tokio::sync::Mutex::new(())),
                        leases: 0,
                        last_used: Instant::now(),
                    },
                );
            }
        }
    }

    /// The spec a name is registered with.
    pub fn spec(&self, name: &str) -> Option<ModelSpec> {
        let st = self.shared.state.lock().unwrap();
        st.entries.get(name).map(|e| e.spec.clone())
    }

    /// Names of registered models.
    pub fn names(&self) -> Vec<String> {
        let st = self.shared.state.lock().unwrap();
        let mut v: Vec<_> = st.entries.keys().cloned().collect();
        v.sort();
        v
    }

    fn unknown(&self, st: &State, name: &str) -> StageError {
        let mut known: Vec<_> = st.entries.keys().map(|k| format!("`{k}`")).collect();
        known.sort();
        StageError::Unknown {
            name: name.into(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        }
    }

    /// Bytes held by resident models plus loads in progress.
    pub fn used(&self) -> u64 {
        let st = self.shared.state.lock().unwrap();
        used_bytes(&st)
    }

    /// Bytes promised to loads in progress: zero whenever no load runs (a soak checks
    /// that no failed or cancelled load leaves its reservation behind).
    pub fn reserved(&self) -> u64 {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserved
    }

    /// The model, loaded if needed; the lease keeps it resident while held.
    pub async fn acquire(&self, name: &str) -> Result<Lease, StageError> {
        let loading = {
            let mut st = self.shared.state.lock().unwrap();
            let Some(e) = st.entries.get_mut(name) else {
                return Err(self.unknown(&st, name));
            };
            if let Some(lease) = self.lease_if_resident(e, name) {
                return Ok(lease);
            }
            e.loading.clone()
        };
        let _one_load = loading.lock().await;
        let spec = {
            let mut st = self.shared.state.lock().unwrap();
            let Some(e) = st.entries.get_mut(name) else {
                return Err(self.unknown(&st, name));
            };
            if let Some(lease) = self.lease_if_resident(e, name) {
                return Ok(lease);
            }
            e.spec.clone()
        };
        let fp = match estimate(&spec.path, &spec.options) {
            Ok(fp) => fp,
            Err(e) => {
                // A file that is missing or broken fails its load here, before
                // llama.cpp sees it: counted and announced like any failed load.
                self.shared.metrics.model_load_failed(name);
                self.shared.events.emit(EventKind::ModelLoadFailed {
                    model: name.into(),
                    error: e.to_string(),
                });
                return Err(StageError::Load {
                    name: name.into(),
                    reason: e.to_string(),
                });
            }
        };
        // Weights another resident of this stage already holds are not loaded again.
        let weights_key = (
            spec.path
                .canonicalize()
                .unwrap_or_else(|_| spec.path.clone()),
            spec.options.gpu_layers,
        );
        let shared_weights = {
            let st = self.shared.state.lock().unwrap();
            residents(&st).any(|(_, r)| r.weights_key == weights_key)
        };
        let need = fp.total();
        if need > self.shared.config.budget {
            return Err(StageError::TooLarge {
                name: name.into(),
                need,
                weights: fp.weights,
                kv: fp.kv,
                compute: fp.compute,
                budget: self.shared.config.budget,
            });
        }
        let reserve = if shared_weights {
            need - fp.weights
        } else {
            need
        };
        let reservation = self.make_room(name, reserve).await?;
        self.shared.events.emit(EventKind::ModelLoading {
            model: name.into(),
            estimate_bytes: need,
        });
        // The load runs to its end even when the request waiting for it is dropped
        // (cancelled, timed out); the reservation travels with it, so its bytes come
        // back when the load really ends, whoever is still waiting.
        let (path, mut options) = (spec.path.clone(), spec.options.clone());
        options.batch_group = Some(self.shared.batch_group);
        let progress = self.load_progress(name);
        let (loaded, reservation) = tokio::task::spawn_blocking(move || {
            (
                Model::load_with_progress(&path, &options, progress),
                reservation,
            )
        })
        .await
        .map_err(|e| StageError::Load {
            name: name.into(),
            reason: e.to_string(),
        })?;
        let mut st = self.shared.state.lock().unwrap();
        reservation.release(&mut st);
        if let Some(e) = st.entries.get_mut(name) {
            e.load_progress = None;
        }
        let model = match loaded {
            Ok(m) => m,
            Err(e) => {
                drop(st);
                self.shared.room.notify_waiters();
                self.shared.metrics.model_load_failed(name);
                self.shared.events.emit(EventKind::ModelLoadFailed {
                    model: name.into(),
                    error: e.to_string(),
                });
                return Err(StageError::Load {
                    name: name.into(),
                    reason: e.to_string(),
                });
            }
        };
        let footprint = model.info().footprint();
        let load_ms = model.info().load_ms;
        let copy = st.next_copy;
        st.next_copy += 1;
        let resident = Resident {
            model: model.clone(),
            footprint,
            weights: model.info().weight_bytes.min(footprint),
            weights_id: model.weights_id(),
            weights_key,
            copy,
        };
        let State {
            entries, retired, ..
        } = &mut *st;
        match entries.get_mut(name) {
            Some(e) if same_model(&e.spec, &spec) && e.resident.is_none() => {
                e.resident = Some(resident);
                e.loaded_once = true;
                e.leases += 1;
                e.last_used = Instant::now();
            }
            // Removed or pointed at another file while it loaded: this request plays
            // what it asked for, and the copy leaves when it is done.
            _ => retired.push(Retired {
                name: name.into(),
                resident,
                leases: 1,
                reason: "replaced or removed while it loaded",
            }),
        }
        // The real footprint may exceed the estimate: evict idle models to get back
        // under the budget.
        let budget = self.shared.config.budget;
        let evicted = if used_bytes(&st) > budget {
            evict_lru(&mut st, budget, name)
        } else {
            Vec::new()
        };
        drop(st);
        for (m, _) in evicted {
            self.shared.metrics.model_evicted(&m);
            self.shared.events.emit(EventKind::ModelEvicted {
                model: m,
                reason: "footprint correction after a load".into(),
            });
        }
        self.shared.metrics.model_loaded(name, footprint);
        publish_resident(&self.shared);
        self.shared.events.emit(EventKind::ModelLoaded {
            model: name.into(),
            footprint_bytes: footprint,
            load_ms,
        });
        Ok(Lease {
            model,
            name: name.into(),
            copy,
            shared: self.shared.clone(),
        })
    }

    /// Marks `name` loading and returns llama.cpp's progress callback for its load:
    /// the entry's progress and an event per tenth, tagged with the calling request.
    fn load_progress(&self, name: &str) -> impl FnMut(f32) + Send + 'static {
        if let Some(e) = self.shared.state.lock().unwrap().entries.get_mut(name) {
            e.load_progress = Some(0.0);
        }
        let mark = LoadingMark {
            shared: self.shared.clone(),
            name: name.to_string(),
        };
        let ctx = crate::events::current().unwrap_or_default();
        let mut tenth = 0;
        move |p: f32| {
            let now = (p * 10.0).floor() as i32;
            if now <= tenth {
                return;
            }
            tenth = now;
            let shared = &mark.shared;
            if let Some(e) = shared.state.lock().unwrap().entries.get_mut(&mark.name) {
                e.load_progress = Some(p);
            }
            shared.events.emit_in(
                ctx,
                EventKind::ModelLoadProgress {
                    model: mark.name.clone(),
                    progress: p,
                },
            );
        }
    }

    fn lease_if_resident(&self, e: &mut Entry, name: &str) -> Option<Lease> {
        let r = e.resident.as_ref()?;
        e.leases += 1;
        e.last_used = Instant::now();
        Some(Lease {
            model: r.model.clone(),
            name: name.into(),
            copy: r.copy,
            shared: self.shared.clone(),
        })
    }

    /// Evict idle models (LRU first) until `need` more bytes fit, waiting for playing
    /// models to finish when that is not enough. Reserves the bytes on success.
    async fn make_room(&self, name: &str, need: u64) -> Result<Reservation, StageError> {
        let deadline = Instant::now() + self.shared.config.wait_for_room;
        let budget = self.shared.config.budget;
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let outcome = {
                let mut st = self.shared.state.lock().unwrap();
                let evicted = if used_bytes(&st) + need > budget {
                    evict_lru(&mut st, budget.saturating_sub(need), name)
                } else {
                    Vec::new()
                };
                let used = used_bytes(&st);
                if used + need <= budget {
                    st.reserved += need;
                    Ok(evicted)
                } else {
                    Err((evicted, used, holders(&st)))
                }
            };
            match outcome {
                Ok(evicted) => {
                    if !evicted.is_empty() {
                        publish_resident(&self.shared);
                    }
                    for (m, _) in evicted {
                        self.shared.metrics.model_evicted(&m);
                        self.shared.events.emit(EventKind::ModelEvicted {
                            model: m,
                            reason: format!("making room for {name}"),
                        });
                    }
                    return Ok(Reservation {
                        shared: self.shared.clone(),
                        bytes: need,
                        released: false,
                    });
                }
                Err((evicted, used, holders)) => {
                    if !evicted.is_empty() {
                        publish_resident(&self.shared);
                    }
                    for (m, _) in evicted {
                        self.shared.metrics.model_evicted(&m);
                        self.shared.events.emit(EventKind::ModelEvicted {
                            model: m,
                            reason: format!("making room for {name}"),
                        });
                    }
                    let now = Instant::now();
                    if now >= deadline
                        || tokio::time::timeout(deadline - now, notified)
                            .await
                            .is_err()
                    {
                        return Err(StageError::BudgetFull {
                            name: name.into(),
                            need,
                            used,
                            budget,
                            holders,
                            waited_s: self.shared.config.wait_for_room.as_secs(),
                        });
                    }
                }
            }
        }
    }

    /// Forget a model (a score no longer names it). It is unloaded now when idle, or
    /// when its last lease ends: its memory stays counted until then.
    pub fn remove(&self, name: &str) -> bool {
        let mut st = self.shared.state.lock().unwrap();
        let Some(mut e) = st.entries.remove(name) else {
            return false;
        };
        let unloaded = match e.resident.take() {
            Some(r) if e.leases > 0 => {
                st.retired.push(Retired {
                    name: name.into(),
                    resident: r,
                    leases: e.leases,
                    reason: "removed from the score",
                });
                false
            }
            Some(_) => true,
            None => false,
        };
        drop(st);
        if unloaded {
            self.shared.room.notify_waiters();
            self.shared.metrics.model_evicted(name);
            publish_resident(&self.shared);
            self.shared.events.emit(EventKind::ModelEvicted {
                model: name.into(),
                reason: "removed from the score".into(),
            });
        }
        true
    }

    /// Keep a model resident (or let it go again).
    pub fn pin(&self, name: &str, pinned: bool) -> Result<(), StageError> {
        let mut st = self.shared.state.lock().unwrap();
        match st.entries.get_mut(name) {
            Some(e) => {
                e.spec.pinned = pinned;
                Ok(())
            }
            None => Err(self.unknown(&st, name)),
        }
    }

    /// Unload a model now. Returns whether it was resident; refuses while it plays.
    pub fn evict(&self, name: &str) -> Result<bool, StageError> {
        let mut st = self.shared.state.lock().unwrap();
        let Some(e) = st.entries.get_mut(name) else {
            return Err(self.unknown(&st, name));
        };
        if e.resident.is_none() {
            return Ok(false);
        }
        if e.leases > 0 {
            return Err(StageError::Playing(name.into()));
        }
        e.resident = None;
        drop(st);
        self.shared.room.notify_waiters();
        self.shared.metrics.model_evicted(name);
        publish_resident(&self.shared);
        self.shared.events.emit(EventKind::ModelEvicted {
            model: name.into(),
            reason: "asked to".into(),
        });
        Ok(true)
    }

    /// Resident models, most recently used first.
    pub fn resident(&self) -> Vec<ResidentInfo> {
        let st = self.shared.state.lock().unwrap();
        let now = Instant::now();
        let carriers = weight_carriers(&st);
        let mut v: Vec<_> = st
            .entries
            .iter()
            .filter_map(|(name, e)| {
                e.resident.as_ref().map(|r| ResidentInfo {
                    name: name.clone(),
                    footprint_bytes: own_bytes(r, &carriers),
                    pinned: e.spec.pinned,
                    playing: e.leases,
                    idle_ms: if e.leases > 0 {
                        0
                    } else {
                        (now - e.last_used).as_millis() as u64
                    },
                })
            })
            .collect();
        v.sort_by_key(|r| r.idle_ms);
        v
    }

    /// The stage's memory and every registered model, sorted by name.
    pub fn status(&self) -> StageStatus {
        let st = self.shared.state.lock().unwrap();
        let now = Instant::now();
        let carriers = weight_carriers(&st);
        let mut models: Vec<ModelStatus> = st
            .entries
            .iter()
            .map(|(name, e)| ModelStatus {
                name: name.clone(),
                path: e.spec.path.clone(),
                resident: e.resident.is_some(),
                footprint_bytes: e.resident.as_ref().map(|r| own_bytes(r, &carriers)),
                weights_shared_with: e
                    .resident
                    .as_ref()
                    .map(|r| {
                        let mut v: Vec<String> = st
                            .entries
                            .iter()
                            .filter(|(n, o)| {
                                *n != name
                                    && o.resident
                                        .as_ref()
                                        .is_some_and(|o| o.weights_id == r.weights_id)
                            })
                            .map(|(n, _)| n.clone())
                            .collect();
                        v.sort();
                        v
                    })
                    .unwrap_or_default(),
                pinned: e.spec.pinned,
                playing: e.leases,
                state: match (&e.resident, e.load_progress) {
                    (Some(_), _) if e.leases > 0 => ModelState::Playing,
                    (Some(_), _) => ModelState::Resident,
                    (None, Some(_)) => ModelState::Loading,
                    (None, None) if e.loaded_once => ModelState::Evicted,
                    (None, None) => ModelState::Offstage,
                },
                load_progress: e.load_progress,
                estimate_bytes: e.estimate,
                idle_ms: (e.resident.is_some() && e.leases == 0)
                    .then(|| (now - e.last_used).as_millis() as u64),
                stats: e.stats.clone(),
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        StageStatus {
            budget: self.shared.config.budget,
            used: used_bytes(&st),
            models,
            idle_ttl_ms: self.shared.config.idle_ttl.map(|t| t.as_millis() as u64),
        }
    }

    /// Whether a model is loaded right now.
    pub fn is_resident(&self, name: &str) -> bool {
        let st = self.shared.state.lock().unwrap();
        st.entries.get(name).is_some_and(|e| e.resident.is_some())
    }

    /// Unload models idle longer than the TTL. Returns their names.
    pub fn unload_idle(&self) -> Vec<String> {
        let Some(ttl) = self.shared.config.idle_ttl else {
            return Vec::new();
        };
        let mut st = self.shared.state.lock().unwrap();
        let now = Instant::now();
        let mut gone = Vec::new();
        for (name, e) in st.entries.iter_mut() {
            if e.resident.is_some() && e.leases == 0 && !e.spec.pinned && now - e.last_used >= ttl {
                e.resident = None;
                gone.push(name.clone());
            }
        }
        drop(st);
        if !gone.is_empty() {
            self.shared.room.notify_waiters();
            publish_resident(&self.shared);
        }
        for name in &gone {
            self.shared.metrics.model_evicted(name);
            self.shared.events.emit(EventKind::ModelEvicted {
                model: name.clone(),
                reason: format!("idle for {}s", ttl.as_secs()),
            });
        }
        gone
    }

    /// Run the idle-unload sweep in the background (needs a tokio runtime).
    pub fn spawn_idle_sweeper(&self) -> Option<tokio::task::JoinHandle<()>> {
        let ttl = self.shared.config.idle_ttl?;
        let weak = Arc::downgrade(&self.shared);
        let period = (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                Stage { shared }.unload_idle();
            }
        }))
    }
}

/// Bytes promised to one load in progress (counted in `State::reserved`). Dropping it
/// gives them back and wakes waiting loads, so a load that fails, panics or outlives a
/// cancelled request never shrinks the budget for good.
struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
    released: bool,
}

impl Reservation {
    /// Gives the bytes back under a lock the caller already holds (the loaded model's
    /// real footprint takes their place in the same critical section).
    fn release(mut self, st: &mut State) {
        st.reserved = st.reserved.saturating_sub(self.bytes);
        self.released = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.reserved = st.reserved.saturating_sub(self.bytes);
        }
        self.shared.room.notify_waiters();
    }
}

/// Whether two specs load the same thing (pinning aside).
fn same_model(a: &ModelSpec, b: &ModelSpec) -> bool {
    a.path == b.path && a.options == b.options
}

/// Every loaded copy, the retired ones included, with its name.
fn residents(st: &State) -> impl Iterator<Item = (&str, &Resident)> {
    st.entries
        .iter()
        .filter_map(|(n, e)| e.resident.as_ref().map(|r| (n.as_str(), r)))
        .chain(st.retired.iter().map(|r| (r.name.as_str(), &r.resident)))
}

/// For each loaded copy of weights, the copy that carries their bytes: the first
/// loaded of the residents sharing them.
fn weight_carriers(st: &State) -> HashMap<usize, u64> {
    let mut carriers: HashMap<usize, u64> = HashMap::new();
    for (_, r) in residents(st) {
        let c = carriers.entry(r.weights_id).or_insert(r.copy);
        *c = (*c).min(r.copy);
    }
    carriers
}

/// A resident's bytes with shared weights counted once, with their carrier.
fn own_bytes(r: &Resident, carriers: &HashMap<usize, u64>) -> u64 {
    let rest = r.footprint - r.weights;
    if carriers.get(&r.weights_id) == Some(&r.copy) {
        rest + r.weights
    } else {
        rest
    }
}

/// Sets every instrument's resident bytes in the metrics, shared weights counted once
/// (after a load, an eviction or a copy leaving).
fn publish_resident(shared: &Shared) {
    let bytes: Vec<(String, u64)> = {
        let st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let carriers = weight_carriers(&st);
        let mut by_name: HashMap<&str, u64> = st.entries.keys().map(|n| (n.as_str(), 0)).collect();
        for (name, r) in residents(&st) {
            *by_name.entry(name).or_default() += own_bytes(r, &carriers);
        }
        by_name
            .into_iter()
            .map(|(n, b)| (n.to_owned(), b))
            .collect()
    };
    for (name, b) in bytes {
        shared.metrics.set_resident(&name, b);
    }
}

fn used_bytes(st: &State) -> u64 {
    let mut weights = HashSet::new();
    let mut used = st.reserved;
    for (_, r) in residents(st) {
        used += r.footprint - r.weights;
        if weights.insert(r.weights_id) {
            used += r.weights;
        }
    }
    used
}

/// Evict idle, unpinned models other than `except`, least recently used first, until
/// the stage uses at most `target` bytes or none is left to evict.
fn evict_lru(st: &mut State, target: u64, except: &str) -> Vec<(String, u64)> {
    let mut candidates: Vec<(Instant, String)> = st
        .entries
        .iter()
        .filter(|(n, e)| {
            n.as_str() != except && e.resident.is_some() && e.leases == 0 && !e.spec.pinned
        })
        .map(|(n, e)| (e.last_used, n.clone()))
        .collect();
    candidates.sort();
    let mut out = Vec::new();
    for (_, name) in candidates {
        if used_bytes(st) <= target {
            break;
        }
        let e = st.entries.get_mut(&name).expect("candidate exists");
        let r = e.resident.take().expect("candidate is resident");
        out.push((name, r.footprint));
    }
    out
}

fn holders(st: &State) -> String {
    let mut v: Vec<String> = st
        .entries
        .iter()
        .filter_map(|(n, e)| {
            e.resident.as_ref().map(|r| {
                let why = if e.leases > 0 {
                    "playing"
                } else if e.spec.pinned {
                    "pinned"
                } else {
                    "idle"
                };
                format!("`{n}` {} ({why})", human_bytes(r.footprint))
            })
        })
        .collect();
    for r in &st.retired {
        v.push(format!(
            "`{}` {} (playing its last request: {})",
            r.name,
            human_bytes(r.resident.footprint),
            r.reason
        ));
    }
    if st.reserved > 0 {
        v.push(format!("loads in progress {}", human_bytes(st.reserved)));
    }
    v.sort();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_in_the_units_users_write() {
        assert_eq!(parse_bytes("12GiB"), Some(12 << 30));
        assert_eq!(parse_bytes("512 MB"), Some(512_000_000));
        assert_eq!(parse_bytes("1.5G"), Some(1_500_000_000));
        assert_eq!(parse_bytes("800000"), Some(800_000));
        assert_eq!(parse_bytes("lots"), None);
    }
}
