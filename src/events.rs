//! The event bus every part reports to (loads, evictions, generations, routing and
//! whatever a score emits). The stage page, narration and logs subscribe; metrics do
//! not (they are counted where things happen, see [`crate::metrics`]).
//!
//! A `tokio::sync::broadcast` channel: publishers never wait, and a slow subscriber
//! loses old events instead of slowing the band down. Every event gets the next
//! sequence number and, where known, the request and the score version it belongs to
//! (taken from the task's [`EventContext`], see [`scope`]). The bus also keeps the
//! last [`HISTORY`] events so a client that reconnects can resume where it stopped
//! ([`EventBus::subscribe_after`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events the bus keeps for clients that resume ([`EventBus::subscribe_after`]).
pub const HISTORY: usize = 2048;

/// One thing that happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Position on the bus: 1 for the first event, +1 for each one after.
    #[serde(default)]
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: f64,
    /// The request the event belongs to, when it happened while one was playing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    /// The score version that was serving (or the request's version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_version: Option<u64>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event outside the bus (tests, replays): no sequence number, no context.
    pub fn new(kind: EventKind) -> Event {
        Event {
            seq: 0,
            at_ms: now_ms(),
            request_id: None,
            score_version: None,
            kind,
        }
    }

    /// The event's type as a client sees it: the variant's name in snake case, or for
    /// what a score emits, the name it gave (`routed`, `solo`, `verdict`, …).
    pub fn type_name(&self) -> &str {
        match &self.kind {
            EventKind::ModelLoading { .. } => "model_loading",
            EventKind::ModelLoadProgress { .. } => "model_load_progress",
            EventKind::ModelLoaded { .. } => "model_loaded",
            EventKind::ModelLoadFailed { .. } => "model_load_failed",
            EventKind::ModelEvicted { .. } => "model_evicted",
            EventKind::GenerationStarted { .. } => "generation_started",
            EventKind::GenerationProgress { .. } => "generation_progress",
            EventKind::GenerationFinished { .. } => "generation_finished",
            EventKind::Played { .. } => "played",
            EventKind::RequestReceived { .. } => "request_received",
            EventKind::RequestFinished { .. } => "request_finished",
            EventKind::QueueFull { .. } => "queue_full",
            EventKind::Arrangement { .. } => "arrangement",
            EventKind::Custom { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    ModelLoading {
        model: String,
        estimate_bytes: u64,
    },
    /// llama.cpp's load progress, at most one event per tenth.
    ModelLoadProgress {
        model: String,
        /// 0.0 to 1.0.
        progress: f32,
    },
    ModelLoaded {
        model: String,
        footprint_bytes: u64,
        load_ms: f64,
    },
    ModelLoadFailed {
        model: String,
        error: String,
    },
    ModelEvicted {
        model: String,
        reason: String,
    },
    GenerationStarted {
        model: String,
        /// The generation's id on its model.
        #[serde(rename = "generation")]
        request: u64,
    },
    /// Tokens of a running generation so far; coalesced (a few per second per
    /// generation), never one event per token.
    GenerationProgress {
        model: String,
        generation: u64,
        tokens: usize,
        /// Decode speed so far.
        tok_s: f64,
        /// Time to the first token.
        ttft_ms: f64,
    },
    GenerationFinished {
        model: String,
        #[serde(rename = "generation")]
        request: u64,
        tokens: usize,
        tok_s: f64,
    },
    /// How a finished generation played: tokens, tempo (tok/s), swing, time to first
    /// token (the stage reports it for every generation, whoever started it).
    Played {
        model: String,
        generation: u64,
        tokens: usize,
        tok_s: f64,
        swing: Option<f64>,
        ttft_ms: f64,
    },
    /// The server took a request (`model` is the id the client sent); it is playing.
    RequestReceived {
        model: String,
        stream: bool,
        /// Requests playing (this one included) and waiting, right after it started.
        in_flight: usize,
        queued: usize,
    },
    /// The server answered a request, or gave up on it.
    RequestFinished {
        model: String,
        /// `ok`, `error`, `cancelled`.
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        section: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        soloist: Option<String>,
        prompt_tokens: usize,
        completion_tokens: usize,
        ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttft_ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Requests playing (this one no longer) and waiting, right after it ended.
        in_flight: usize,
        queued: usize,
    },
    /// A request the score played, finished: section, soloist, verdict and trace (a
    /// `score::ArrangementRecord` as JSON).
    Arrangement {
        data: serde_json::Value,
    },
    /// A request was refused: every slot playing and the queue full.
    QueueFull {
        in_flight: usize,
        queued: usize,
    },
    /// Anything a score reports (`orchestra.emit(name, data)`), and the conductor's
    /// `score_reloaded` / `score_reload_failed`.
    Custom {
        name: String,
        data: serde_json::Value,
    },
}

/// What the events of the running task belong to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventContext {
    pub request_id: Option<u64>,
    pub score_version: Option<u64>,
}

tokio::task_local! {
    static CONTEXT: EventContext;
}

/// Runs `fut` with its events tagged with `ctx` (task-local: tasks it spawns are not).
pub fn scope<F: Future>(ctx: EventContext, fut: F) -> impl Future<Output = F::Output> {
    CONTEXT.scope(ctx, fut)
}

/// The context of the running task, if it has one.
pub fn current() -> Option<EventContext> {
    CONTEXT.try_with(|c| *c).ok()
}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// A request id unique in this process (the server's and the score's requests share
/// the counter, so an id names one request across reloads).
pub fn next_request_id() -> u64 {
    NEXT_REQUEST.fetch_add(1, Ordering::Relaxed)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// The sequence counter and the recent events. One lock for both: an event's number
/// and its place in the channel are decided together, so subscribers see numbers in
/// order, and a resuming client misses nothing between the history and the channel.
#[derive(Debug)]
struct Ledger {
    seq: u64,
    recent: VecDeque<Event>,
}

#[derive(Debug)]
struct Shared {
    tx: broadcast::Sender<Event>,
    ledger: Mutex<Ledger>,
    /// The score version serving now, for events outside a request (0: unknown).
    version: AtomicU64,
}

/// Cheap to clone; every clone publishes into the same channel.
#[derive(Debug, Clone)]
pub struct EventBus {
    shared: Arc<Shared>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            shared: Arc::new(Shared {
                tx,
                ledger: Mutex::new(Ledger {
                    seq: 0,
                    recent: VecDeque::with_capacity(HISTORY),
                }),
                version: AtomicU64::new(0),
            }),
        }
    }

    /// Publishes an event, numbered and tagged with the task's [`EventContext`].
    pub fn emit(&self, kind: EventKind) {
        self.emit_in(current().unwrap_or_default(), kind);
    }

    /// Publishes an event with a context taken elsewhere (a thread that loads a model
    /// for a request reports its progress as that request's).
    pub fn emit_in(&self, ctx: EventContext, kind: EventKind) {
        let version = self.shared.version.load(Ordering::Relaxed);
        let score_version = ctx.score_version.or((version > 0).then_some(version));
        tracing::debug!(?kind, request_id = ?ctx.request_id, "event");
        let mut ledger = self.shared.ledger.lock().unwrap();
        ledger.seq += 1;
        let event = Event {
            seq: ledger.seq,
            at_ms: now_ms(),
            request_id: ctx.request_id,
            score_version,
            kind,
        };
        if ledger.recent.len() == HISTORY {
            ledger.recent.pop_front();
        }
        ledger.recent.push_back(event.clone());
        // No subscriber is fine: events are for whoever listens.
        let _ = self.shared.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.tx.subscribe()
    }

    /// The kept events numbered after `seq`, and a receiver for every later one: no
    /// event is missed or repeated between the two. Events older than the history are
    /// gone (the first one returned then has a number above `seq + 1`).
    pub fn subscribe_after(&self, seq: u64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let ledger = self.shared.ledger.lock().unwrap();
        let rx = self.shared.tx.subscribe();
        let past = ledger
            .recent
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect();
        (past, rx)
    }

    /// The number of the last event published (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.shared.ledger.lock().unwrap().seq
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.shared
            .ledger
            .lock()
            .unwrap()
            .recent
            .iter()
            .cloned()
            .collect()
    }

    /// Tags later events outside a request with this score version.
    pub fn set_score_version(&self, version: u64) {
        self.shared.version.store(version, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_in_order_and_resume_after_a_sequence_number() {
        let bus = EventBus::new();
        for i in 0..5 {
            bus.emit(EventKind::QueueFull {
                in_flight: i,
                queued: 0,
            });
        }
        let (past, mut rx) = bus.subscribe_after(3);
        assert_eq!(past.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        bus.emit(EventKind::QueueFull {
            in_flight: 9,
            queued: 0,
        });
        assert_eq!(rx.try_recv().unwrap().seq, 6);
        assert_eq!(bus.last_seq(), 6);
    }

    #[tokio::test]
    async fn events_inside_a_scope_carry_its_request_and_version() {
        let bus = EventBus::new();
        bus.set_score_version(3);
        let ctx = EventContext {
            request_id: Some(42),
            score_version: Some(2),
        };
        scope(ctx, async {
            bus.emit(EventKind::QueueFull {
                in_flight: 0,
                queued: 0,
            })
        })
        .await;
        bus.emit(EventKind::QueueFull {
            in_flight: 0,
            queued: 0,
        });
        let all = bus.recent();
        assert_eq!(
            (all[0].request_id, all[0].score_version),
            (Some(42), Some(2))
        );
        assert_eq!((all[1].request_id, all[1].score_version), (None, Some(3)));
        let json = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(json["type"], "queue_full");
        assert_eq!(json["seq"], 1);
        assert_eq!(json["request_id"], 42);
    }
}
