//! One request as the server sees it: its id, the event context every event it
//! causes carries, and what is counted when it ends (requests by model, section and
//! outcome, time to first token, duration). Counted here, where the answer finishes,
//! not from the event bus. `play::start` is the only user.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::AppState;
use super::error::ApiError;
use super::play::Finished;
use crate::events::{EventContext, EventKind};

tokio::task_local! {
    /// When the request's first text left; set by [`first_token`].
    static FIRST: Arc<OnceLock<Instant>>;
}

/// Marks the first text of the running request's answer (later calls do nothing).
pub fn first_token() {
    let _ = FIRST.try_with(|f| {
        f.get_or_init(Instant::now);
    });
}

/// A request from its arrival to its end; dropped unfinished, it counts as cancelled.
pub struct Observed {
    state: AppState,
    id: u64,
    model: String,
    started: Instant,
    first: Arc<OnceLock<Instant>>,
    finished: bool,
}

/// Runs the request's task inside its event context.
pub struct RequestScope {
    ctx: EventContext,
    first: Arc<OnceLock<Instant>>,
}

impl RequestScope {
    pub fn run<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        FIRST.scope(self.first, crate::events::scope(self.ctx, fut))
    }
}

impl Observed {
    /// A request arrived: gives it an id and announces it.
    pub fn begin(state: &AppState, model: &str, stream: bool) -> (Observed, RequestScope) {
        let id = crate::events::next_request_id();
        let version = state.conductor().ok().map(|c| c.version());
        let ctx = EventContext {
            request_id: Some(id),
            score_version: version,
        };
        if let Ok(c) = state.conductor() {
            c.events().emit_in(
                ctx,
                EventKind::RequestReceived {
                    model: model.to_string(),
                    stream,
                    in_flight: state.admission.in_flight(),
                    queued: state.admission.queued(),
                },
            );
        }
        let first = Arc::new(OnceLock::new());
        (
            Observed {
                state: state.clone(),
                id,
                model: model.to_string(),
                started: Instant::now(),
                first: first.clone(),
                finished: false,
            },
            RequestScope { ctx, first },
        )
    }

    /// The request ended with an answer or an error.
    pub fn finish(&mut self, result: &Result<Finished, ApiError>) {
        self.finished = true;
        match result {
            Ok(f) => self.end("ok", Some(f), None),
            Err(e) => self.end("error", None, Some(e.message.clone())),
        }
    }

    fn end(&self, outcome: &str, f: Option<&Finished>, error: Option<String>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let ttft = self
            .first
            .get()
            .map(|t| (*t - self.started).as_secs_f64())
            .or((outcome == "ok").then_some(seconds));
        let section = f.and_then(|f| f.section.clone());
        let done = &self.state.done;
        done.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            "ok" => {}
            "cancelled" => {
                done.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                done.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Ok(c) = self.state.conductor() else {
            return;
        };
        let metrics = c.metrics();
        metrics.request_finished(
            &self.model,
            section.as_deref().unwrap_or(""),
            outcome,
            seconds,
        );
        if let Some(t) = ttft {
            metrics.first_token(&self.model, t);
        }
        c.events().emit_in(
            EventContext {
                request_id: Some(self.id),
                score_version: Some(f.map(|f| f.score_version).unwrap_or_else(|| c.version())),
            },
            EventKind::RequestFinished {
                model: self.model.clone(),
                outcome: outcome.to_string(),
                section,
                soloist: f.and_then(|f| f.soloist.clone()),
                prompt_tokens: f.map(|f| f.prompt_tokens).unwrap_or(0),
                completion_tokens: f.map(|f| f.completion_tokens).unwrap_or(0),
                ms: seconds * 1e3,
                ttft_ms: ttft.map(|t| t * 1e3),
                error,
                // The permit goes back right after this.
                in_flight: self.state.admission.in_flight().saturating_sub(1),
                queued: self.state.admission.queued(),
            },
        );
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if !self.finished {
            self.end("cancelled", None, None);
        }
    }
}
