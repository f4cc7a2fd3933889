//! The Lua CPU budget: stops runaway loops without counting time spent waiting for
//! models.
//!
//! Every Lua call the runtime makes (loading a score, a request, a REPL line) runs as
//! a coroutine wrapped in [`Metered`], which adds up the time spent *inside* its polls —
//! that is Lua running, never Lua waiting, because a coroutine waiting for a model
//! returns `Pending` at once. A global hook runs every N instructions; once the running
//! call's budget is spent it yields the coroutine (`VmState::Yield`), `Metered` sees the
//! trip and drops the coroutine. A hook that *errors* could be swallowed by
//! `while true do pcall(f) end`; a yield cannot. Where Lua cannot yield (inside a
//! `table.sort` comparator, a metamethod called from C) the hook raises instead and
//! switches to every instruction, so even a loop of `pcall`s has no instruction left to
//! run until the error reaches a point where the coroutine can yield.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, VmState};

/// The per-VM record of which metered call is running right now.
pub(crate) struct Meter {
    /// std `Mutex`: locked for a few instructions by the hook and by `Metered::poll`,
    /// never across an await; everything runs on the conductor thread anyway.
    state: Mutex<Option<Active>>,
    /// Instructions between two checks.
    every: u32,
}

#[derive(Debug, Clone)]
struct Active {
    /// When the current poll started.
    since: Instant,
    /// CPU time of earlier polls.
    spent: Duration,
    limit: Duration,
    tripped: bool,
    /// The hook was switched to every instruction.
    escalated: bool,
    /// Where the loop was when the budget ran out.
    location: Option<String>,
}

/// Why a metered call stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The CPU budget ran out; where the Lua code was at that moment.
    Cpu {
        location: Option<String>,
    },
    Lua(mlua::Error),
}

impl Meter {
    pub(crate) fn new(every: u32) -> Arc<Meter> {
        Arc::new(Meter {
            state: Mutex::new(None),
            every: every.max(1),
        })
    }

    /// Installs the global hook on `lua` (and every coroutine created from now on).
    pub(crate) fn install(self: &Arc<Self>, lua: &Lua) -> mlua::Result<()> {
        self.install_every(lua, self.every)
    }

    fn install_every(self: &Arc<Self>, lua: &Lua, every: u32) -> mlua::Result<()> {
        let meter = self.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(every),
            move |lua, debug| meter.on_hook(lua, debug),
        )
    }

    fn on_hook(self: &Arc<Self>, lua: &Lua, debug: &mlua::debug::Debug) -> mlua::Result<VmState> {
        let escalate = {
            let mut st = self.state.lock().unwrap();
            let Some(a) = st.as_mut() else {
                return Ok(VmState::Continue);
            };
            if !a.tripped {
                if a.spent + a.since.elapsed() <= a.limit {
                    return Ok(VmState::Continue);
                }
                a.tripped = true;
                // The nearest frame of the score (not the runtime's prelude).
                a.location = crate::score::util::caller_location(lua).or_else(|| location(debug));
            }
            // SAFETY: `Lua::state` is the thread running this hook (mlua sets it for the
            // duration of a callback); `lua_isyieldable` only reads its status.
            let yieldable = unsafe { mlua::ffi::lua_isyieldable(lua.state()) } != 0;
            if yieldable {
                return Ok(VmState::Yield);
            }
            let first = !a.escalated;
            a.escalated = true;
            first
        };
        if escalate {
            self.install_every(lua, 1)?;
        }
        Err(mlua::Error::runtime(
            "Lua CPU budget exhausted: the score is being stopped",
        ))
    }

    fn enter(&self, active: Active) -> Option<Active> {
        self.state.lock().unwrap().replace(active)
    }

    fn leave(&self, previous: Option<Active>) -> Active {
        let mut st = self.state.lock().unwrap();
        let mine = std::mem::replace(&mut *st, previous);
        mine.expect("a metered poll left without entering")
    }

    /// Runs `fut` under a CPU budget of `limit`.
    pub(crate) fn run<F, T>(self: &Arc<Self>, lua: &Lua, limit: Duration, fut: F) -> Metered<F>
    where
        F: Future<Output = mlua::Result<T>>,
    {
        Metered {
            inner: Some(Box::pin(fut)),
            meter: self.clone(),
            lua: lua.clone(),
            spent: Duration::ZERO,
            limit,
        }
    }
}

fn location(debug: &mlua::debug::Debug) -> Option<String> {
    let src = debug.source();
    let file = src.short_src.as_deref()?.to_string();
    match debug.current_line() {
        Some(line) => Some(format!("{file}:{line}")),
        None => Some(file),
    }
}

/// A Lua call under a CPU budget (see the module docs).
pub(crate) struct Metered<F> {
    inner: Option<Pin<Box<F>>>,
    meter: Arc<Meter>,
    lua: Lua,
    spent: Duration,
    limit: Duration,
}

impl<F> Metered<F> {
    /// Drops the coroutine with the budget marked as spent, so that Lua code run while
    /// it closes (`<close>` variables) cannot loop forever either.
    fn stop_inner(&mut self) {
        if let Some(inner) = self.inner.take() {
            let prev = self.meter.enter(Active {
                since: Instant::now(),
                spent: self.limit,
                limit: self.limit,
                tripped: true,
                escalated: false,
                location: None,
            });
            drop(inner);
            let act = self.meter.leave(prev);
            if act.escalated {
                let _ = self.meter.install(&self.lua);
            }
        }
    }
}

impl<F> Drop for Metered<F> {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

impl<F, T> Future for Metered<F>
where
    F: Future<Output = mlua::Result<T>>,
{
    type Output = (Result<T, Stop>, Duration);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Metered` is Unpin: the inner future is boxed.
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready((Err(Stop::Cpu { location: None }), this.spent));
        };
        let prev = this.meter.enter(Active {
            since: Instant::now(),
            spent: this.spent,
            limit: this.limit,
            tripped: false,
            escalated: false,
            location: None,
        });
        let res = inner.as_mut().poll(cx);
        let act = this.meter.leave(prev);
        this.spent = act.spent + act.since.elapsed();
        if act.escalated {
            // Back to the normal interval for coroutines created from now on.
            let _ = this.meter.install(&this.lua);
        }
        match res {
            // Once tripped the call fails even if it finished: the hook may have cut a
            // nested coroutine short, so its result cannot be trusted.
            _ if act.tripped => {
                this.stop_inner();
                Poll::Ready((
                    Err(Stop::Cpu {
                        location: act.location,
                    }),
                    this.spent,
                ))
            }
            Poll::Ready(Ok(v)) => {
                this.inner = None;
                Poll::Ready((Ok(v), this.spent))
            }
            Poll::Pending if this.spent > this.limit => {
                this.stop_inner();
                Poll::Ready((
                    Err(Stop::Cpu {
                        location: act.location,
                    }),
                    this.spent,
                ))
            }
            Poll::Ready(Err(e)) => {
                this.inner = None;
                Poll::Ready((Err(Stop::Lua(e)), this.spent))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
