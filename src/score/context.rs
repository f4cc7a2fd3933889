//! What every Lua callback of one VM can reach: the options, the score's folder, the
//! stages shared across reloads, the files the score required, its bands. Stored as
//! the VM's app data; plain Rust, no Lua values (those live in the Lua registry).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mlua::{AnyUserData, Lua};

use super::api::band::Band;
use super::error::Refusal;
use super::options::ScoreOptions;
use super::request::{TextSink, Usage};
use crate::events::EventBus;
use crate::stage::{ModelSpec, Stage, StageConfig};

/// The rehearsal band on disk: (name, section, path) per member.
pub(crate) type RehearsalBand = Vec<(String, String, PathBuf)>;

/// Per-VM state reachable from callbacks.
pub(crate) struct VmContext {
    pub(crate) options: ScoreOptions,
    /// The score as users name it in messages (`scores/rehearsal.lua`, `repl`).
    pub(crate) score_name: String,
    /// The score's folder, resolved: `require` and `io.open` stay inside it.
    pub(crate) dir: PathBuf,
    /// The folder as the user wrote it, for chunk names.
    pub(crate) dir_display: PathBuf,
    pub(crate) stages: Arc<Stages>,
    /// Every file this VM loaded (the score first), for the watcher.
    pub(crate) deps: Mutex<Vec<PathBuf>>,
    /// Bands the score declared, with their Lua values (for the REPL's `band`).
    pub(crate) bands: Mutex<Vec<(Band, AnyUserData)>>,
    /// Notes for `orchestra check` (models not downloaded yet, deprecated forms).
    pub(crate) warnings: Mutex<Vec<String>>,
    /// Deprecated forms already reported by this VM: each is reported once.
    pub(crate) deprecations: Mutex<std::collections::HashSet<String>>,
    /// The rehearsal band on disk, written on first use: (name, section, path).
    pub(crate) rehearsal: OnceLock<Result<RehearsalBand, String>>,
    /// While the score loads: instruments that change a model already on a stage
    /// (another file, other options), applied only once this version has loaded and
    /// validated ([`VmContext::commit_stage`]), so a broken version changes nothing.
    /// `None` once committed: later `band:add` calls (the REPL) apply at once.
    pending: Mutex<Option<Vec<(Stage, ModelSpec)>>>,
}

impl VmContext {
    pub(crate) fn new(
        options: ScoreOptions,
        score_name: String,
        dir: &Path,
        dir_display: PathBuf,
        stages: Arc<Stages>,
    ) -> VmContext {
        VmContext {
            options,
            score_name,
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            dir_display,
            stages,
            deps: Mutex::new(Vec::new()),
            bands: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            deprecations: Mutex::new(std::collections::HashSet::new()),
            rehearsal: OnceLock::new(),
            pending: Mutex::new(Some(Vec::new())),
        }
    }

    /// Puts an instrument's model on its stage: at once when the name is new there
    /// or unchanged, else (while the score loads) once the version is accepted.
    pub(crate) fn register(&self, stage: &Stage, spec: ModelSpec) {
        let mut pending = self.pending.lock().unwrap();
        match (pending.as_mut(), stage.spec(&spec.name)) {
            (Some(list), Some(old)) => {
                let unchanged = old.path == spec.path
                    && old.options == spec.options
                    && old.pinned == spec.pinned;
                if !unchanged {
                    list.push((stage.clone(), spec));
                }
            }
            _ => stage.add(spec),
        }
    }

    /// Applies the changes the score's load held back (see [`VmContext::register`]).
    pub(crate) fn commit_stage(&self) {
        let pending = self.pending.lock().unwrap().take().unwrap_or_default();
        for (stage, spec) in pending {
            stage.add(spec);
        }
    }

    pub(crate) fn warn(&self, note: String) {
        self.warnings.lock().unwrap().push(note);
    }

    /// Whether the deprecated form `what` is reported now: true the first time only.
    pub(crate) fn first_deprecation(&self, what: &str) -> bool {
        self.deprecations.lock().unwrap().insert(what.to_owned())
    }

    pub(crate) fn add_dep(&self, path: &Path) {
        let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut deps = self.deps.lock().unwrap();
        if !deps.contains(&p) {
            deps.push(p);
        }
    }

    /// The path of a rehearsal band member, writing the band when missing.
    pub(crate) fn rehearsal_model(&self, name: &str) -> Result<PathBuf, String> {
        let band = self.rehearsal.get_or_init(|| {
            let dir = &self.options.rehearsal_dir;
            let paths = crate::synth::write_rehearsal_band(dir).map_err(|e| {
                format!(
                    "cannot write the rehearsal band to `{}`: {e}",
                    dir.display()
                )
            })?;
            Ok(crate::synth::rehearsal_band()
                .into_iter()
                .zip(paths)
                .map(|(m, p)| (m.name.to_string(), m.section.to_string(), p))
                .collect())
        });
        let band = band.as_ref().map_err(Clone::clone)?;
        band.iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, p)| p.clone())
            .ok_or_else(|| {
                let names: Vec<_> = band.iter().map(|(n, _, _)| format!("`{n}`")).collect();
                format!(
                    "no rehearsal model named `{name}`: the rehearsal band is {}",
                    names.join(", ")
                )
            })
    }
}

/// The VM's context (every VM built by this module has one).
pub(crate) fn ctx(lua: &Lua) -> Arc<VmContext> {
    lua.app_data_ref::<Arc<VmContext>>()
        .expect("a score VM always has its context")
        .clone()
}

/// Stage settings that decide whether two bands can share a stage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageKey {
    pub(crate) budget: u64,
    pub(crate) idle_ttl: Option<Duration>,
    pub(crate) wait_for_room: Duration,
}

/// Stages outlive VMs: a reloaded score whose band keeps its memory settings gets the
/// same stage back, so its models stay loaded across the reload.
pub(crate) struct Stages {
    all: Mutex<Vec<(StageKey, Stage)>>,
    events: EventBus,
    metrics: crate::metrics::Metrics,
    /// Run idle sweepers (not while checking: nothing loads then).
    sweep: bool,
}

impl Stages {
    pub(crate) fn new(
        events: EventBus,
        metrics: crate::metrics::Metrics,
        sweep: bool,
    ) -> Arc<Stages> {
        Arc::new(Stages {
            all: Mutex::new(Vec::new()),
            events,
            metrics,
            sweep,
        })
    }

    /// The stage for these settings, created on first use.
    pub(crate) fn get(&self, key: StageKey) -> Stage {
        let mut all = self.all.lock().unwrap();
        if let Some((_, s)) = all.iter().find(|(k, _)| *k == key) {
            return s.clone();
        }
        let stage = Stage::with_metrics(
            StageConfig {
                budget: key.budget,
                idle_ttl: key.idle_ttl,
                wait_for_room: key.wait_for_room,
            },
            self.events.clone(),
            self.metrics.clone(),
        );
        if self.sweep && tokio::runtime::Handle::try_current().is_ok() {
            stage.spawn_idle_sweeper();
        }
        all.push((key, stage.clone()));
        stage
    }

    /// Every stage in use.
    pub(crate) fn all(&self) -> Vec<Stage> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Forget stages no band of the current VM uses, and on the stages kept, the
    /// instruments the current VM no longer declares (their models unload once the
    /// requests still holding them finish).
    pub(crate) fn retain(&self, used: &[(StageKey, Vec<String>)]) {
        let mut all = self.all.lock().unwrap();
        all.retain(|(k, _)| used.iter().any(|(u, _)| u == k));
        for (key, stage) in all.iter() {
            let declared: Vec<&String> = used
                .iter()
                .filter(|(k, _)| k == key)
                .flat_map(|(_, names)| names)
                .collect();
            for name in stage.names() {
                if !declared.contains(&&name) {
                    stage.remove(&name);
                }
            }
        }
    }
}

tokio::task_local! {
    /// Per-request settings visible to callbacks while the request's coroutine runs.
    pub(crate) static SCOPE: Scope;
}

/// See [`SCOPE`].
#[derive(Clone, Default)]
pub(crate) struct Scope {
    /// Echo generated tokens here (the REPL shows generations as they stream).
    pub(crate) echo: Option<TextSink>,
    /// Tokens of the request's generations, summed.
    pub(crate) usage: Arc<Mutex<Usage>>,
    /// Instruments that refused a generation for a reason the client can fix (a
    /// prompt over the context): when the score fails with one of these messages, the
    /// request failed because of it, and says so with a typed error.
    pub(crate) refusals: Arc<Mutex<Vec<(Refusal, String)>>>,
}

/// Records that an instrument refused a generation (see [`Scope::refusals`]).
pub(crate) fn add_refusal(kind: Refusal, message: &str) {
    let _ = SCOPE.try_with(|s| s.refusals.lock().unwrap().push((kind, message.to_owned())));
}

/// Counts one finished generation into the running request's usage.
pub(crate) fn add_usage(c: &crate::engine::Completion) {
    let (prompt_tokens, cached_tokens, completion_tokens) =
        (c.prompt_tokens, c.cached_tokens, c.completion_tokens);
    let _ = SCOPE.try_with(|s| {
        let mut u = s.usage.lock().unwrap();
        u.prompt_tokens += prompt_tokens;
        u.cached_tokens += cached_tokens;
        let (a, b) = (&mut u.prompt_sources, &c.prompt_sources);
        a.slot += b.slot;
        a.ram += b.ram;
        a.disk += b.disk;
        a.computed += b.computed;
        u.completion_tokens += completion_tokens;
        u.generations += 1;
    });
}

/// The echo sink of the running request, if any.
pub(crate) fn echo() -> Option<TextSink> {
    SCOPE.try_with(|s| s.echo.clone()).ok().flatten()
}
