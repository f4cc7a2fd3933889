//! The event bus every part reports to (loads, evictions, generations, routing and
//! whatever a score emits). The stage page, metrics, narration and logs subscribe.
//! A `tokio::sync::broadcast` channel: publishers never wait, and a slow subscriber
//! loses old events instead of slowing the band down.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: f64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    ModelLoading {
        model: String,
        estimate_bytes: u64,
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
        request: u64,
    },
    GenerationFinished {
        model: String,
        request: u64,
        tokens: usize,
        tok_s: f64,
    },
    /// Anything a score reports (`orchestra.emit(name, data)`).
    Custom {
        name: String,
        data: serde_json::Value,
    },
}

/// Cheap to clone; every clone publishes into the same channel.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self { tx }
    }

    pub fn emit(&self, kind: EventKind) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        tracing::debug!(?kind, "event");
        // No subscriber is fine: events are for whoever listens.
        let _ = self.tx.send(Event { at_ms, kind });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
