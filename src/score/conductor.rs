//! The conductor: one thread that owns a score's Lua VMs and runs every request, REPL
//! line and reload on a single-threaded tokio runtime (a `LocalSet`), so Lua values
//! never cross threads. Requests are coroutines: hundreds interleave while they wait on
//! models, which generate on their own worker threads.
//!
//! [`Conductor`] is the handle the rest of the program holds (cheap to clone, `Send`);
//! it talks to the thread over a channel with plain Rust values ([`Request`] in,
//! [`Answer`] out). Hot reload builds the new version in a fresh VM on the same thread
//! while the old one keeps serving, and swaps only if it loads and validates; a request
//! keeps the VM it started on until it finishes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::context::{StageKey, Stages};
use super::error::ScoreError;
use super::options::ScoreOptions;
use super::request::{Answer, Request, TextSink};
use super::vm::{EvalOutcome, ScoreSource, ScoreVm};
use super::watch::FileWatcher;
use crate::events::{EventBus, EventContext, EventKind};
use crate::metrics::Metrics;
use crate::stage::StageStatus;

impl std::fmt::Debug for InstrumentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentHandle")
            .field("name", &self.name)
            .field("section", &self.section)
            .finish_non_exhaustive()
    }
}

/// The outcome of one reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEvent {
    /// Whether the new version replaced the old one.
    pub ok: bool,
    /// The version serving after the attempt.
    pub version: u64,
    /// Why the new version was rejected (file, line and traceback included).
    pub error: Option<String>,
    /// Time to build and check the new version.
    pub ms: f64,
    /// The files whose change triggered it (empty for a manual reload).
    pub changed: Vec<PathBuf>,
    /// `file changed`, `asked`, `restart after running out of memory`.
    pub reason: String,
}

/// One instrument, as reported by [`Conductor::info`].
#[derive(Debug, Clone, Serialize)]
pub struct InstrumentInfo {
    pub name: String,
    pub section: String,
    pub model: String,
    pub path: PathBuf,
    /// Tokens one request may use (prompt + answer).
    pub context: u32,
    /// Default answer length.
    pub max_tokens: u32,
    /// An embedding model (it answers `embed`, not `generate`).
    pub embeddings: bool,
    /// The server's URL of a remote instrument (not on the stage, no footprint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// One instrument, played directly (no arrangement): what a server needs to lease its
/// model from the stage and build requests with the instrument's own defaults.
#[derive(Clone)]
pub struct InstrumentHandle {
    pub name: String,
    pub section: String,
    /// The stage the instrument's model lives on (`stage.acquire(&name)`).
    pub stage: crate::stage::Stage,
    pub sampling: crate::engine::SamplingParams,
    pub max_tokens: u32,
    /// The instrument's default system prompt.
    pub system: Option<String>,
    pub embeddings: bool,
    /// Set for a remote instrument: generate through it instead of leasing from
    /// `stage` (see [`InstrumentHandle::generate`]).
    pub remote: Option<crate::remote::RemoteModel>,
}

impl InstrumentHandle {
    /// Starts a generation on this instrument: a remote one streams from its server,
    /// a local one from a stage lease, which comes back with the generation and must
    /// be held until it ends.
    pub async fn generate(
        &self,
        request: crate::engine::GenerateRequest,
    ) -> Result<(Option<crate::stage::Lease>, crate::engine::Generation), InstrumentError> {
        if let Some(r) = &self.remote {
            return Ok((None, r.generate(request)?));
        }
        let lease = self.stage.acquire(&self.name).await?;
        let generation = lease.generate(request)?;
        Ok((Some(lease), generation))
    }
}

/// Why [`InstrumentHandle::generate`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    #[error(transparent)]
    Stage(#[from] crate::stage::StageError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// What is loaded right now.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreInfo {
    pub name: String,
    pub version: u64,
    /// The score and every file it required.
    pub files: Vec<PathBuf>,
    pub instruments: Vec<InstrumentInfo>,
    /// Every band's sections, in the order declared.
    pub sections: Vec<String>,
    /// Memory budget of the score's stages, in bytes.
    pub budget: u64,
    pub watching: bool,
}

/// What a request to an arrangement can count on: the tokens of prompt and answer
/// together, and the longest default answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The smallest context among the players that may solo (a fallback stand-in
    /// plays with its own).
    pub context: u32,
    /// The instrument whose context that is.
    pub narrowest: String,
    pub max_tokens: u32,
}

/// Tokens of the prompt OpenClaw 2026.9 sends with its default tools (its own
/// estimate, 16,186, rounded up): an instrument that plays agents needs at least this.
pub const AGENT_PROMPT_TOKENS: u32 = 16_384;
/// The context an agent's sessions grow into (a tool turn reached 17,258 tokens).
pub const AGENT_CONTEXT: u32 = 32_768;

impl ScoreInfo {
    /// The window of `section`'s arrangement (`orchestra/<section>`), or with `None`
    /// of the score's (`orchestra`): the narrowest of every section that solos (all
    /// but `review` and the router models' `routing`, which never solo), since the
    /// router may pick any. `None` when nothing plays.
    pub fn window(&self, section: Option<&str>) -> Option<Window> {
        let soloing = |i: &&InstrumentInfo| {
            !i.embeddings
                && i.context > 0
                && match section {
                    Some(s) => i.section == s,
                    None => i.section != "review" && i.section != "routing",
                }
        };
        let players: Vec<&InstrumentInfo> = self.instruments.iter().filter(soloing).collect();
        let narrowest = players.iter().min_by_key(|i| i.context)?;
        Some(Window {
            context: narrowest.context,
            narrowest: narrowest.name.clone(),
            max_tokens: players.iter().map(|i| i.max_tokens).max().unwrap_or(0),
        })
    }
}

/// One request the score played, as the stage page and `orchestra status` list it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArrangementRecord {
    pub request_id: u64,
    pub score_version: u64,
    /// When it finished, milliseconds since the Unix epoch.
    pub at_ms: f64,
    /// What the client asked for (`orchestra`, `orchestra/code`), when known.
    pub model: Option<String>,
    /// The last user message, cut to 200 characters.
    pub prompt: String,
    pub section: Option<String>,
    pub soloist: Option<String>,
    /// The last review verdict (`approve`, `revise`, `skipped`), when reviewed.
    pub verdict: Option<String>,
    pub revisions: u64,
    pub ms: f64,
    pub completion_tokens: usize,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The arrangement trace (`answer.data.trace`; `null` when there is none).
    pub trace: serde_json::Value,
}

/// Requests kept by [`Conductor::recent_arrangements`].
pub const RECENT_ARRANGEMENTS: usize = 50;

impl ArrangementRecord {
    fn new(request: &Request, result: &Result<Answer, ScoreError>, version: u64, ms: f64) -> Self {
        let prompt: String = request.last_user().chars().take(200).collect();
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        let mut r = ArrangementRecord {
            request_id: 0,
            score_version: version,
            at_ms,
            model: request.model.clone(),
            prompt,
            section: None,
            soloist: None,
            verdict: None,
            revisions: 0,
            ms,
            completion_tokens: 0,
            error: None,
            trace: serde_json::Value::Null,
        };
        match result {
            Ok(a) => {
                let s = |k: &str| a.data.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                let trace = a.data.get("trace").cloned().unwrap_or_default();
                r.request_id = a.request_id;
                r.score_version = a.score_version;
                r.section = s("section");
                r.soloist = s("player");
                r.verdict = trace
                    .get("reviews")
                    .and_then(|v| v.as_array())
                    .and_then(|v| v.last())
                    .and_then(|v| v.get("verdict"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                r.revisions = trace
                    .pointer("/answer/revisions")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                r.ms = a.elapsed_ms;
                r.completion_tokens = a.usage.completion_tokens;
                r.trace = trace;
            }
            Err(e) => r.error = Some(e.to_string()),
        }
        r
    }
}

enum Command {
    Perform {
        request: Request,
        /// The caller's event context: a request id given there is kept.
        events: Option<EventContext>,
        sink: Option<TextSink>,
        reply: oneshot::Sender<Result<Answer, ScoreError>>,
    },
    Eval {
        code: String,
        echo: Option<TextSink>,
        reply: oneshot::Sender<Result<EvalOutcome, ScoreError>>,
    },
    Complete {
        line: String,
        pos: usize,
        reply: oneshot::Sender<(usize, Vec<String>)>,
    },
    Reload {
        reason: String,
        changed: Vec<PathBuf>,
        reply: Option<oneshot::Sender<ReloadEvent>>,
    },
    Watch {
        reply: oneshot::Sender<Result<(), ScoreError>>,
    },
    Info {
        reply: oneshot::Sender<ScoreInfo>,
    },
    Instrument {
        name: String,
        reply: oneshot::Sender<Option<InstrumentHandle>>,
    },
    SetLead {
        section: String,
        instrument: String,
        reply: oneshot::Sender<Result<String, LeadError>>,
    },
}

/// Why [`Conductor::set_lead`] changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeadError {
    #[error("the score has no instrument `{name}`: its instruments are {known}")]
    NoInstrument { name: String, known: String },
    #[error(
        "`{instrument}` plays in the `{plays}` section, not `{section}`: pick an instrument of `{section}`, or move it there in the score"
    )]
    OtherSection {
        instrument: String,
        plays: String,
        section: String,
    },
    #[error("the conductor thread has stopped")]
    Stopped,
}

/// Moves `instrument` to the front of its section in its band (where `band:lead`,
/// `band:section` and the stdlib's arrangements look first); the previous lead.
fn set_lead(
    bands: &[(super::api::band::Band, mlua::AnyUserData)],
    section: &str,
    instrument: &str,
) -> Result<String, LeadError> {
    for (b, _) in bands {
        let mut st = b.state.lock().unwrap();
        let Some(pos) = st.members.iter().position(|(m, _)| m.name == instrument) else {
            continue;
        };
        let plays = st.members[pos].0.section.clone();
        if plays != section {
            return Err(LeadError::OtherSection {
                instrument: instrument.into(),
                plays,
                section: section.into(),
            });
        }
        let first = st
            .members
            .iter()
            .position(|(m, _)| m.section == section && !m.options.embeddings)
            .unwrap_or(pos);
        let before = st.members[first].0.name.clone();
        if first < pos {
            let moved = st.members.remove(pos);
            st.members.insert(first, moved);
        }
        return Ok(before);
    }
    let known: Vec<String> = bands
        .iter()
        .flat_map(|(b, _)| b.members())
        .map(|m| format!("`{}`", m.name))
        .collect();
    Err(LeadError::NoInstrument {
        name: instrument.into(),
        known: known.join(", "),
    })
}

struct Shared {
    tx: mpsc::UnboundedSender<Command>,
    reloads: broadcast::Sender<ReloadEvent>,
    events: EventBus,
    metrics: Metrics,
    /// Shared with the conductor thread: the stages are plain Rust behind mutexes, so
    /// their status is read here without a trip through the thread.
    stages: Arc<Stages>,
    recent: Arc<Mutex<VecDeque<ArrangementRecord>>>,
    last_reload: Arc<Mutex<Option<ReloadEvent>>>,
    name: String,
    /// Started without a score file (`orchestra repl` alone): nothing to reload.
    scoreless: bool,
    version: Arc<AtomicU64>,
}

/// Handle to a running score. Clones share one conductor thread, which stops when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Conductor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor")
            .field("score", &self.shared.name)
            .field("version", &self.version())
            .finish()
    }
}

impl Conductor {
    /// Starts the conductor thread and loads the score; fails if it does not load.
    pub async fn start(
        source: ScoreSource,
        options: ScoreOptions,
    ) -> Result<Conductor, ScoreError> {
        let (conductor, ready) = Self::spawn(source, options);
        ready.await.map_err(|_| ScoreError::Stopped)??;
        Ok(conductor)
    }

    /// [`Conductor::start`] for callers outside an async runtime.
    pub fn start_blocking(
        source: ScoreSource,
        options: ScoreOptions,
    ) -> Result<Conductor, ScoreError> {
        let (conductor, ready) = Self::spawn(source, options);
        ready.blocking_recv().map_err(|_| ScoreError::Stopped)??;
        Ok(conductor)
    }

    fn spawn(
        source: ScoreSource,
        options: ScoreOptions,
    ) -> (Conductor, oneshot::Receiver<Result<(), ScoreError>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (reloads, _) = broadcast::channel(64);
        let version = Arc::new(AtomicU64::new(1));
        let stages = Stages::new(
            options.events.clone(),
            options.metrics.clone(),
            !options.check_only,
        );
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let last_reload = Arc::new(Mutex::new(None));
        let shared = Arc::new(Shared {
            tx: tx.clone(),
            reloads: reloads.clone(),
            events: options.events.clone(),
            metrics: options.metrics.clone(),
            stages: stages.clone(),
            recent: recent.clone(),
            last_reload: last_reload.clone(),
            name: source.name(),
            scoreless: matches!(source, ScoreSource::Empty { .. }),
            version: version.clone(),
        });
        let weak = tx.downgrade();
        drop(tx);
        std::thread::Builder::new()
            .name("conductor".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("starting the conductor's tokio runtime");
                let local = tokio::task::LocalSet::new();
                let shared = Handed {
                    stages,
                    recent,
                    last_reload,
                    reloads,
                    version,
                };
                local.block_on(&rt, run(source, options, rx, weak, shared, ready_tx));
            })
            .expect("spawning the conductor thread");
        (Conductor { shared }, ready_rx)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ScoreError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .tx
            .send(make(reply))
            .map_err(|_| ScoreError::Stopped)?;
        rx.await.map_err(|_| ScoreError::Stopped)
    }

    /// Runs `perform(request)` on the current version. Dropping the future cancels the
    /// request (its generations stop).
    pub async fn perform(&self, request: Request) -> Result<Answer, ScoreError> {
        self.ask(|reply| Command::Perform {
            request,
            events: crate::events::current(),
            sink: None,
            reply,
        })
        .await?
    }

    /// Like [`Conductor::perform`], with `req:write(...)` text streamed into `sink`.
    pub async fn perform_streaming(
        &self,
        request: Request,
        sink: TextSink,
    ) -> Result<Answer, ScoreError> {
        self.ask(|reply| Command::Perform {
            request,
            events: crate::events::current(),
            sink: Some(sink),
            reply,
        })
        .await?
    }

    /// Runs one REPL input (see [`EvalOutcome`]); tokens of model calls made without a
    /// callback are echoed into `echo`. Dropping the future cancels it.
    pub async fn eval(
        &self,
        code: &str,
        echo: Option<TextSink>,
    ) -> Result<EvalOutcome, ScoreError> {
        let code = code.to_string();
        self.ask(|reply| Command::Eval { code, echo, reply })
            .await?
    }

    /// Completion candidates for `line` with the cursor at `pos`.
    pub async fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let line = line.to_string();
        self.ask(|reply| Command::Complete { line, pos, reply })
            .await
            .unwrap_or((pos, Vec::new()))
    }

    /// [`Conductor::complete`] for threads outside an async runtime (a line editor's).
    pub fn complete_blocking(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Complete {
            line: line.to_string(),
            pos,
            reply,
        };
        if self.shared.tx.send(cmd).is_err() {
            return (pos, Vec::new());
        }
        rx.blocking_recv().unwrap_or((pos, Vec::new()))
    }

    /// Reloads the score now (what the watcher does on a save).
    pub async fn reload(&self) -> Result<ReloadEvent, ScoreError> {
        self.ask(|reply| Command::Reload {
            reason: "asked".into(),
            changed: Vec::new(),
            reply: Some(reply),
        })
        .await
    }

    /// Starts watching the score and the files it required: a save reloads it.
    pub async fn watch(&self) -> Result<(), ScoreError> {
        self.ask(|reply| Command::Watch { reply }).await?
    }

    /// Every reload attempt, successful or not.
    pub fn reloads(&self) -> broadcast::Receiver<ReloadEvent> {
        self.shared.reloads.subscribe()
    }

    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// Where the score's stages, reloads (and the server, if any) count.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Every stage of the score taken together: the sum of their budgets and use,
    /// and every registered model.
    pub fn stage_status(&self) -> StageStatus {
        let mut all = StageStatus {
            budget: 0,
            used: 0,
            models: Vec::new(),
            idle_ttl_ms: None,
        };
        for stage in self.shared.stages.all() {
            let s = stage.status();
            all.budget += s.budget;
            all.used += s.used;
            all.models.extend(s.models);
            all.idle_ttl_ms = all.idle_ttl_ms.or(s.idle_ttl_ms);
        }
        all.models.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Bytes the score's stages have promised to loads in progress (zero when none runs).
    pub fn stage_reserved(&self) -> u64 {
        self.shared.stages.all().iter().map(|s| s.reserved()).sum()
    }

    /// The last reload attempt, accepted or not.
    pub fn last_reload(&self) -> Option<ReloadEvent> {
        self.shared.last_reload.lock().unwrap().clone()
    }

    /// The last requests played (at most [`RECENT_ARRANGEMENTS`]), newest first.
    pub fn recent_arrangements(&self) -> Vec<ArrangementRecord> {
        self.shared
            .recent
            .lock()
            .unwrap()
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    /// The version serving now.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::SeqCst)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether this conductor runs without a score file (the bare REPL).
    pub fn is_scoreless(&self) -> bool {
        self.shared.scoreless
    }

    pub async fn info(&self) -> Result<ScoreInfo, ScoreError> {
        self.ask(|reply| Command::Info { reply }).await
    }

    /// Makes `instrument` the lead of `section` (the first instrument `band:lead` and
    /// the arrangements pick) until the score reloads; returns the previous lead.
    pub async fn set_lead(&self, section: &str, instrument: &str) -> Result<String, LeadError> {
        let (section, instrument) = (section.to_string(), instrument.to_string());
        self.ask(|reply| Command::SetLead {
            section,
            instrument,
            reply,
        })
        .await
        .map_err(|_| LeadError::Stopped)?
    }

    /// The instrument `name` of the current version, to play it directly.
    pub async fn instrument(&self, name: &str) -> Result<Option<InstrumentHandle>, ScoreError> {
        let name = name.to_string();
        self.ask(|reply| Command::Instrument { name, reply }).await
    }
}

/// The conductor thread's state; lives on that thread only.
struct State {
    current: RefCell<Arc<ScoreVm>>,
    source: ScoreSource,
    options: ScoreOptions,
    stages: Arc<Stages>,
    version: Cell<u64>,
    shared_version: Arc<AtomicU64>,
    /// One reload at a time; saves during a reload queue behind it.
    reload_lock: tokio::sync::Mutex<()>,
    watcher: RefCell<Option<FileWatcher>>,
    /// (version, files) the watcher last took from the current VM: a score that requires
    /// a module during a request (not while loading) adds a file to watch.
    watched: Cell<(u64, usize)>,
    weak_tx: mpsc::WeakUnboundedSender<Command>,
    reloads: broadcast::Sender<ReloadEvent>,
    recent: Arc<Mutex<VecDeque<ArrangementRecord>>>,
    last_reload: Arc<Mutex<Option<ReloadEvent>>>,
}

/// What [`Conductor::spawn`] hands the conductor thread.
struct Handed {
    stages: Arc<Stages>,
    recent: Arc<Mutex<VecDeque<ArrangementRecord>>>,
    last_reload: Arc<Mutex<Option<ReloadEvent>>>,
    reloads: broadcast::Sender<ReloadEvent>,
    version: Arc<AtomicU64>,
}

/// Each band's stage settings and instrument names.
fn stage_keys(vm: &ScoreVm) -> Vec<(StageKey, Vec<String>)> {
    vm.ctx
        .bands
        .lock()
        .unwrap()
        .iter()
        .map(|(b, _)| {
            let names = b.members().iter().map(|m| m.name.clone()).collect();
            (b.key.clone(), names)
        })
        .collect()
}

async fn run(
    source: ScoreSource,
    options: ScoreOptions,
    mut rx: mpsc::UnboundedReceiver<Command>,
    weak_tx: mpsc::WeakUnboundedSender<Command>,
    handed: Handed,
    ready: oneshot::Sender<Result<(), ScoreError>>,
) {
    let Handed {
        stages,
        recent,
        last_reload,
        reloads,
        version: shared_version,
    } = handed;
    options.events.set_score_version(1);
    let vm = match ScoreVm::load(&source, &options, stages.clone(), 1).await {
        Ok(vm) => Arc::new(vm),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    vm.commit_stage();
    stages.retain(&stage_keys(&vm));
    let state = Rc::new(State {
        current: RefCell::new(vm),
        source,
        options,
        stages,
        version: Cell::new(1),
        shared_version,
        reload_lock: tokio::sync::Mutex::new(()),
        watcher: RefCell::new(None),
        watched: Cell::new((0, 0)),
        weak_tx,
        reloads,
        recent,
        last_reload,
    });
    let _ = ready.send(Ok(()));
    while let Some(cmd) = rx.recv().await {
        handle(&state, cmd);
    }
}

fn handle(state: &Rc<State>, cmd: Command) {
    match cmd {
        Command::Perform {
            request,
            events,
            sink,
            mut reply,
        } => {
            let vm = state.current.borrow().clone();
            let state = state.clone();
            tokio::task::spawn_local(async move {
                let started = Instant::now();
                let id = events.and_then(|e| e.request_id);
                let res = tokio::select! {
                    r = vm.perform(&request, id, sink) => r,
                    // The caller went away: dropping the request cancels it.
                    _ = reply.closed() => return,
                };
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let mut record = ArrangementRecord::new(&request, &res, vm.version, ms);
                if record.request_id == 0 {
                    record.request_id = id.unwrap_or(0);
                }
                state.options.events.emit_in(
                    EventContext {
                        request_id: Some(record.request_id),
                        score_version: Some(record.score_version),
                    },
                    EventKind::Arrangement {
                        data: serde_json::to_value(&record).unwrap_or_default(),
                    },
                );
                {
                    let mut recent = state.recent.lock().unwrap();
                    if recent.len() == RECENT_ARRANGEMENTS {
                        recent.pop_front();
                    }
                    recent.push_back(record);
                }
                if matches!(res, Err(ScoreError::Memory { .. })) {
                    restart_if_full(&state, &vm).await;
                }
                watch_new_files(&state, &vm);
                let _ = reply.send(res);
            });
        }
        Command::Eval {
            code,
            echo,
            mut reply,
        } => {
            let vm = state.current.borrow().clone();
            let state = state.clone();
            tokio::task::spawn_local(async move {
                let res = tokio::select! {
                    r = vm.eval(&code, echo) => r,
                    _ = reply.closed() => return,
                };
                if matches!(res, Err(ScoreError::Memory { .. })) {
                    restart_if_full(&state, &vm).await;
                }
                watch_new_files(&state, &vm);
                let _ = reply.send(res);
            });
        }
        Command::Complete { line, pos, reply } => {
            let vm = state.current.borrow().clone();
            let _ = reply.send(super::complete::complete(&vm.lua, &line, pos));
        }
        Command::Reload {
            reason,
            changed,
            reply,
        } => {
            let state = state.clone();
            tokio::task::spawn_local(async move {
                let event = reload(&state, reason, changed).await;
                if let Some(reply) = reply {
                    let _ = reply.send(event);
                }
            });
        }
        Command::Watch { reply } => {
            let _ = reply.send(start_watching(state));
        }
        Command::Info { reply } => {
            let vm = state.current.borrow().clone();
            let bands = vm.ctx.bands.lock().unwrap();
            let instruments = instrument_infos(bands.iter().map(|(b, _)| b));
            let mut sections: Vec<String> = Vec::new();
            let mut stages: Vec<&StageKey> = Vec::new();
            let mut budget = 0;
            for (b, _) in bands.iter() {
                if !stages.contains(&&b.key) {
                    stages.push(&b.key);
                    budget += b.stage.budget();
                }
                for s in b.sections.iter() {
                    if !sections.contains(s) {
                        sections.push(s.clone());
                    }
                }
            }
            drop(bands);
            let _ = reply.send(ScoreInfo {
                name: state.source.name(),
                version: vm.version,
                files: vm.deps(),
                instruments,
                sections,
                budget,
                watching: state.watcher.borrow().is_some(),
            });
        }
        Command::Instrument { name, reply } => {
            let vm = state.current.borrow().clone();
            let handle = vm
                .ctx
                .bands
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(b, _)| b.members())
                .find(|m| m.name == name)
                .map(|m| InstrumentHandle {
                    name: m.name.clone(),
                    section: m.section.clone(),
                    stage: m.stage.clone(),
                    sampling: m.sampling.clone(),
                    max_tokens: m.max_tokens,
                    system: m.system.clone(),
                    embeddings: m.options.embeddings,
                    remote: m.remote.clone(),
                });
            let _ = reply.send(handle);
        }
        Command::SetLead {
            section,
            instrument,
            reply,
        } => {
            let vm = state.current.borrow().clone();
            let bands = vm.ctx.bands.lock().unwrap();
            let _ = reply.send(set_lead(&bands, &section, &instrument));
        }
    }
}

/// Tokens one request of an instrument may use: what the score set, else what the
/// engine picks (the model's training context, at most 4096).
/// Every instrument of these bands, as `info` lists them.
pub(crate) fn instrument_infos<'a>(
    bands: impl Iterator<Item = &'a super::api::band::Band>,
) -> Vec<InstrumentInfo> {
    bands
        .flat_map(|b| b.members())
        .map(|m| InstrumentInfo {
            name: m.name.clone(),
            section: m.section.clone(),
            model: m.reference.clone(),
            path: m.path.clone(),
            context: context_of(&m.path, m.options.context),
            max_tokens: m.max_tokens,
            embeddings: m.options.embeddings,
            remote: m.remote.as_ref().map(|r| r.spec().url.clone()),
        })
        .collect()
}

fn context_of(path: &std::path::Path, declared: u32) -> u32 {
    if declared > 0 {
        return declared;
    }
    crate::gguf::read_header(path)
        .ok()
        .and_then(|h| {
            let arch = h.architecture().unwrap_or("llama").to_owned();
            h.get_u64(&format!("{arch}.context_length"))
        })
        .map(|n| n.min(4096) as u32)
        .unwrap_or(4096)
}

/// Adds files the current version required since the watcher last looked.
fn watch_new_files(state: &Rc<State>, vm: &Arc<ScoreVm>) {
    if !Arc::ptr_eq(&state.current.borrow(), vm) {
        return;
    }
    let deps = vm.deps();
    if state.watched.get() == (vm.version, deps.len()) {
        return;
    }
    if let Some(w) = state.watcher.borrow_mut().as_mut() {
        match w.add_files(&deps) {
            Ok(()) => state.watched.set((vm.version, deps.len())),
            Err(e) => tracing::warn!(error = %e, "cannot watch the score's files"),
        }
    }
}

/// After a request ran out of memory: if the garbage it left is still live (a score
/// that hoards data in globals), rebuild the VM before answering, so the next request
/// has room.
async fn restart_if_full(state: &Rc<State>, vm: &Arc<ScoreVm>) {
    if !Arc::ptr_eq(&state.current.borrow(), vm) {
        return;
    }
    if vm.memory_after_gc() > state.options.memory_limit / 2 {
        reload(
            state,
            "restart after running out of memory".into(),
            Vec::new(),
        )
        .await;
    }
}

fn start_watching(state: &Rc<State>) -> Result<(), ScoreError> {
    if state.watcher.borrow().is_some() {
        return Ok(());
    }
    let weak = state.weak_tx.clone();
    let mut watcher = FileWatcher::new(state.options.reload_debounce, move |changed| {
        if let Some(tx) = weak.upgrade() {
            let _ = tx.send(Command::Reload {
                reason: "file changed".into(),
                changed,
                reply: None,
            });
        }
    })
    .map_err(|e| ScoreError::Model(format!("cannot watch the score's files: {e}")))?;
    let deps = state.current.borrow().deps();
    watcher
        .set_files(&deps)
        .map_err(|e| ScoreError::Model(format!("cannot watch the score's files: {e}")))?;
    *state.watcher.borrow_mut() = Some(watcher);
    Ok(())
}

async fn reload(state: &Rc<State>, reason: String, changed: Vec<PathBuf>) -> ReloadEvent {
    let _one_at_a_time = state.reload_lock.lock().await;
    let started = Instant::now();
    let next = state.version.get() + 1;
    let loaded = ScoreVm::load(&state.source, &state.options, state.stages.clone(), next).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let name = state.source.name();
    let event = match loaded {
        Ok(vm) => {
            let vm = Arc::new(vm);
            state.version.set(next);
            // Only now, with the new version loaded and validated, does the stage
            // change: models whose file changed, instruments the score dropped.
            vm.commit_stage();
            state.stages.retain(&stage_keys(&vm));
            let deps = vm.deps();
            *state.current.borrow_mut() = vm;
            state.shared_version.store(next, Ordering::SeqCst);
            state.options.events.set_score_version(next);
            state.options.metrics.reload(true);
            if let Some(w) = state.watcher.borrow_mut().as_mut()
                && let Err(e) = w.add_files(&deps)
            {
                tracing::warn!(error = %e, "cannot watch the score's files");
            }
            tracing::info!(score = %name, version = next, ms, "score reloaded");
            state.options.events.emit(EventKind::Custom {
                name: "score_reloaded".into(),
                data: serde_json::json!({ "score": name, "version": next, "ms": ms, "reason": reason }),
            });
            ReloadEvent {
                ok: true,
                version: next,
                error: None,
                ms,
                changed,
                reason,
            }
        }
        Err(e) => {
            let error = e.to_string();
            // Instruments (and stages) only the rejected version named leave again.
            let current = state.current.borrow().clone();
            state.stages.retain(&stage_keys(&current));
            tracing::warn!(score = %name, "reload rejected, the previous version keeps playing: {error}");
            state.options.metrics.reload(false);
            let (file, line) = match error_location(&error) {
                Some((f, l)) => (Some(f), Some(l)),
                None => (None, None),
            };
            state.options.events.emit(EventKind::Custom {
                name: "score_reload_failed".into(),
                data: serde_json::json!({
                    "score": name, "error": error, "reason": reason, "file": file, "line": line,
                    "version": state.version.get(),
                }),
            });
            ReloadEvent {
                ok: false,
                version: state.version.get(),
                error: Some(error),
                ms,
                changed,
                reason,
            }
        }
    };
    *state.last_reload.lock().unwrap() = Some(event.clone());
    let _ = state.reloads.send(event.clone());
    event
}

/// The first `file.lua:LINE` (Lua's prefix) or `` `file.lua` line LINE `` in an error.
pub fn error_location(error: &str) -> Option<(String, u32)> {
    let words: Vec<&str> = error.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_matches(|c: char| c == '`' || c == '\'' || c == '"' || c == ',');
        if let Some(at) = w.find(".lua:") {
            let digits: String = w[at + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(line) = digits.parse() {
                return Some((w[..at + 4].to_string(), line));
            }
        }
        if w.ends_with(".lua")
            && words.get(i + 1) == Some(&"line")
            && let Some(n) = words.get(i + 2)
        {
            let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(line) = digits.parse() {
                return Some((w.to_string(), line));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::error_location as file_line;

    #[test]
    fn a_rejected_reload_names_its_file_and_line() {
        assert_eq!(
            file_line("scores/jam.lua:12: attempt to call a nil value"),
            Some(("scores/jam.lua".into(), 12))
        );
        assert_eq!(
            file_line("score `jam.lua` line 7: `band:lead` needs a section name"),
            Some(("jam.lua".into(), 7))
        );
        assert_eq!(file_line("the conductor thread has stopped"), None);
    }
}
