//! One score in one Lua VM: building the VM (standard libraries, sandbox, limits,
//! API), loading the score file, and running requests and REPL lines in it as metered
//! coroutines. A reload builds a new `ScoreVm`; nothing here is ever reused across
//! versions, so globals of an old version cannot leak into a new one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value};

use super::api;
use super::context::{SCOPE, Scope, Stages, VmContext};
use super::error::{ScoreError, flatten};
use super::meter::{Meter, Stop};
use super::options::{Sandbox, ScoreOptions};
use super::request::{self, Answer, Request, TextSink};
use super::sandbox;
use super::util::{display_path, pretty};
use crate::stage::human_bytes;

/// The score shipped inside the binary: the rehearsal band and a simple perform.
pub const REHEARSAL_SCORE: &str = include_str!("../../scores/rehearsal.lua");

/// Where a score comes from.
#[derive(Debug, Clone)]
pub enum ScoreSource {
    /// A score file; it and the files it requires are watched for hot reload.
    File(PathBuf),
    /// Score text that is not a file of its own (the embedded rehearsal score, tests).
    /// `dir` is where `require` and relative model paths start.
    Text {
        name: String,
        text: String,
        dir: PathBuf,
    },
    /// No score: the stdlib and `orchestra` only (the REPL without a score).
    Empty { dir: PathBuf },
}

impl ScoreSource {
    pub fn file(path: impl Into<PathBuf>) -> ScoreSource {
        ScoreSource::File(path.into())
    }

    /// The embedded `scores/rehearsal.lua`.
    pub fn rehearsal() -> ScoreSource {
        ScoreSource::Text {
            name: "scores/rehearsal.lua".into(),
            text: REHEARSAL_SCORE.into(),
            dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }

    /// The name users see in messages.
    pub fn name(&self) -> String {
        match self {
            ScoreSource::File(p) => p.display().to_string(),
            ScoreSource::Text { name, .. } => name.clone(),
            ScoreSource::Empty { .. } => "repl".into(),
        }
    }

    /// (folder, folder as written).
    fn dirs(&self) -> (PathBuf, PathBuf) {
        match self {
            ScoreSource::File(p) => {
                let shown = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                (shown.clone(), shown)
            }
            ScoreSource::Text { dir, .. } | ScoreSource::Empty { dir } => {
                (dir.clone(), PathBuf::from(display_path(dir)))
            }
        }
    }

    /// The score file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ScoreSource::File(p) => Some(p),
            _ => None,
        }
    }
}

/// What a REPL line did.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalOutcome {
    /// The input is an unfinished chunk: read another line and try again.
    Incomplete,
    /// The line ran; the values it returned, pretty-printed (empty for statements).
    Values(Vec<String>),
}

/// A loaded score.
pub(crate) struct ScoreVm {
    pub(crate) lua: Lua,
    meter: Arc<Meter>,
    pub(crate) ctx: Arc<VmContext>,
    score: Option<Table>,
    perform: Option<Function>,
    /// 1 for the first load, +1 per reload.
    pub(crate) version: u64,
}

/// Runs a Lua future as a metered, scoped coroutine; maps stops to score errors.
async fn run_metered<T>(
    lua: &Lua,
    meter: &Arc<Meter>,
    ctx: &VmContext,
    what: &str,
    scope: Scope,
    fut: impl Future<Output = mlua::Result<T>>,
) -> Result<(T, Duration), ScoreError> {
    let options = &ctx.options;
    let refusals = scope.refusals.clone();
    let scoped = SCOPE.scope(scope, fut);
    let metered = meter.run(lua, options.cpu_limit, scoped);
    let (res, spent) = match options.request_timeout {
        Some(limit) => match tokio::time::timeout(limit, metered).await {
            Ok(r) => r,
            Err(_) => {
                return Err(ScoreError::Timeout {
                    score: ctx.score_name.clone(),
                    what: what.into(),
                    limit,
                });
            }
        },
        None => metered.await,
    };
    match res {
        Ok(v) => Ok((v, spent)),
        Err(Stop::Cpu { location }) => Err(ScoreError::CpuLimit {
            score: ctx.score_name.clone(),
            what: what.into(),
            limit: options.cpu_limit,
            location,
        }),
        Err(Stop::Lua(e)) if ScoreError::lua_is_memory(&e) => Err(ScoreError::Memory {
            score: ctx.score_name.clone(),
            what: what.into(),
            limit: human_bytes(options.memory_limit as u64),
            detail: flatten(&e).0,
        }),
        Err(Stop::Lua(e)) => {
            let err = ScoreError::from_lua(&e);
            // An instrument's refusal that the score passed on (its message is in the
            // error) is the request's fault, not the score's: keep its type.
            let text = err.to_string();
            let refused = refusals
                .lock()
                .unwrap()
                .iter()
                .find(|(_, m)| text.contains(m.as_str()))
                .cloned();
            Err(match refused {
                Some((kind, message)) => ScoreError::Refused { kind, message },
                None => err,
            })
        }
    }
}

fn lua_err(e: mlua::Error) -> ScoreError {
    ScoreError::from_lua(&e)
}

impl ScoreVm {
    /// A fresh VM with the standard libraries, sandbox, limits and API, no score yet.
    fn build(
        source: &ScoreSource,
        options: &ScoreOptions,
        stages: Arc<Stages>,
    ) -> Result<(Lua, Arc<Meter>, Arc<VmContext>), ScoreError> {
        let lua = match options.sandbox {
            Sandbox::Shared => {
                Lua::new_with(StdLib::ALL_SAFE, LuaOptions::new()).map_err(lua_err)?
            }
            // SAFETY: the user asked for it (`--allow-unsafe`): the full standard
            // library, debug and C modules included.
            Sandbox::Trusted => unsafe { Lua::unsafe_new_with(StdLib::ALL, LuaOptions::new()) },
        };
        let (dir, dir_display) = source.dirs();
        let ctx = Arc::new(VmContext::new(
            options.clone(),
            source.name(),
            &dir,
            dir_display,
            stages,
        ));
        lua.set_app_data(ctx.clone());
        if options.sandbox == Sandbox::Shared {
            sandbox::apply_shared(&lua).map_err(lua_err)?;
        }
        api::register(&lua).map_err(lua_err)?;
        sandbox::run_prelude(&lua, options.sandbox == Sandbox::Shared).map_err(lua_err)?;
        let meter = Meter::new(options.check_every);
        meter.install(&lua).map_err(lua_err)?;
        // Set last: building the VM itself must not count against the score.
        lua.set_memory_limit(options.memory_limit)
            .map_err(lua_err)?;
        Ok((lua, meter, ctx))
    }

    /// Builds a VM and loads the score into it; fails unless the score loads and
    /// returns a table with a `perform` function.
    pub(crate) async fn load(
        source: &ScoreSource,
        options: &ScoreOptions,
        stages: Arc<Stages>,
        version: u64,
    ) -> Result<ScoreVm, ScoreError> {
        let (lua, meter, ctx) = Self::build(source, options, stages)?;
        let (text, chunk_name) = match source {
            ScoreSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ScoreError::Read {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
                ctx.add_dep(p);
                (Some(text), format!("@{}", p.display()))
            }
            ScoreSource::Text { name, text, .. } => (Some(text.clone()), format!("@{name}")),
            ScoreSource::Empty { .. } => (None, String::new()),
        };
        let mut vm = ScoreVm {
            lua,
            meter,
            ctx,
            score: None,
            perform: None,
            version,
        };
        let Some(text) = text else {
            return Ok(vm);
        };
        let chunk = vm
            .lua
            .load(text)
            .set_name(chunk_name)
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(lua_err)?;
        let (value, _) = run_metered(
            &vm.lua,
            &vm.meter,
            &vm.ctx,
            "loading the score",
            Scope::default(),
            chunk.call_async::<Value>(()),
        )
        .await?;
        let invalid = |problem: String| ScoreError::Invalid {
            score: vm.ctx.score_name.clone(),
            problem,
        };
        let table = match value {
            Value::Table(t) => t,
            other => {
                return Err(invalid(format!(
                    "must end with `return {{ perform = function(req) ... end }}`; it returned {}",
                    super::util::describe(&other)
                )));
            }
        };
        let perform = match table.get::<Value>("perform").map_err(lua_err)? {
            Value::Function(f) => f,
            Value::Nil => {
                return Err(invalid(
                    "returned a table without `perform`: add `perform = function(req) ... end`"
                        .into(),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "has `perform` = {}, but it must be a function `perform(req)`",
                    super::util::describe(&other)
                )));
            }
        };
        // The REPL's handles: `score`, and `band` when the score keeps its band local.
        let g = vm.lua.globals();
        if g.raw_get::<Value>("score").map_err(lua_err)?.is_nil() {
            g.raw_set("score", table.clone()).map_err(lua_err)?;
        }
        let first_band = vm
            .ctx
            .bands
            .lock()
            .unwrap()
            .first()
            .map(|(_, ud)| ud.clone());
        if let Some(ud) = first_band
            && g.raw_get::<Value>("band").map_err(lua_err)?.is_nil()
        {
            g.raw_set("band", ud).map_err(lua_err)?;
        }
        vm.score = Some(table);
        vm.perform = Some(perform);
        Ok(vm)
    }

    /// Makes this version's instruments the stage's: the model changes its load held
    /// back take effect (call once it is accepted).
    pub(crate) fn commit_stage(&self) {
        self.ctx.commit_stage();
    }

    /// Files this version loaded (the score and everything it required).
    pub(crate) fn deps(&self) -> Vec<PathBuf> {
        self.ctx.deps.lock().unwrap().clone()
    }

    /// Runs `perform(request)` as request `id` (a fresh id when `None`); every event
    /// it causes carries that id and this version.
    pub(crate) async fn perform(
        &self,
        request: &Request,
        id: Option<u64>,
        sink: Option<TextSink>,
    ) -> Result<Answer, ScoreError> {
        let started = Instant::now();
        let perform = self.perform.clone().ok_or_else(|| ScoreError::Invalid {
            score: self.ctx.score_name.clone(),
            problem: "is not loaded: there is no `perform` to call (start with a score file)"
                .into(),
        })?;
        let id = id.unwrap_or_else(crate::events::next_request_id);
        let (table, written) = request::to_lua(&self.lua, request, id, sink).map_err(lua_err)?;
        let scope = Scope::default();
        let usage = scope.usage.clone();
        let events = crate::events::EventContext {
            request_id: Some(id),
            score_version: Some(self.version),
        };
        let (values, spent) = crate::events::scope(
            events,
            run_metered(
                &self.lua,
                &self.meter,
                &self.ctx,
                "the request",
                scope,
                perform.call_async::<MultiValue>(table),
            ),
        )
        .await?;
        let mut answer =
            request::answer_from(&self.lua, values, written.take()).map_err(lua_err)?;
        answer.score_version = self.version;
        answer.request_id = id;
        answer.usage = *usage.lock().unwrap();
        answer.lua_cpu_ms = spent.as_secs_f64() * 1e3;
        answer.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(answer)
    }

    /// Runs one REPL input: `return <input>` first (so expressions print their value),
    /// then the input as statements; an unfinished chunk asks for more input.
    pub(crate) async fn eval(
        &self,
        code: &str,
        echo: Option<TextSink>,
    ) -> Result<EvalOutcome, ScoreError> {
        let compile = |src: String| {
            self.lua
                .load(src)
                .set_name("=repl")
                .set_mode(ChunkMode::Text)
                .into_function()
        };
        let f = match compile(format!("return {code}")) {
            Ok(f) => f,
            Err(_) => match compile(code.to_string()) {
                Ok(f) => f,
                Err(mlua::Error::SyntaxError {
                    incomplete_input: true,
                    ..
                }) => return Ok(EvalOutcome::Incomplete),
                Err(e) => return Err(lua_err(e)),
            },
        };
        let (values, _) = run_metered(
            &self.lua,
            &self.meter,
            &self.ctx,
            "the REPL line",
            Scope {
                echo,
                ..Scope::default()
            },
            f.call_async::<MultiValue>(()),
        )
        .await?;
        Ok(EvalOutcome::Values(values.iter().map(pretty).collect()))
    }

    /// Lua memory in use, after a full collection.
    pub(crate) fn memory_after_gc(&self) -> usize {
        let _ = self.lua.gc_collect();
        self.lua.used_memory()
    }
}
