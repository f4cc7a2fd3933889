//! `GET /api/events`: the event bus as server-sent events — `id:` the sequence number,
//! `event:` the type (`routed`, `solo`, `verdict`, `generation_progress`, …), `data:`
//! the event as JSON. A client resumes with `Last-Event-ID` (browsers send it when
//! they reconnect) or `?after=SEQ`; without either it starts with the next event.
//! When the bus has dropped events the client missed, a `resync` event says so (fetch
//! `/api/status` again).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::AppState;
use super::error::ApiError;
use crate::events::{Event, EventBus};

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Resume after this sequence number (what `Last-Event-ID` says, for clients that
    /// cannot set headers).
    after: Option<u64>,
}

pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let bus = state.conductor()?.events().clone();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.after);
    let last = bus.last_seq();
    // A number past the last event: the server restarted since the client heard it.
    let restarted = resume.is_some_and(|r| r > last);
    let after = resume.filter(|_| !restarted).unwrap_or(last);
    Ok(
        Sse::new(stream(bus, after, restarted, state.closing.clone()))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    )
}

struct Follow {
    bus: EventBus,
    /// The server is stopping: send `closing` and end.
    closing: tokio_util::sync::CancellationToken,
    ended: bool,
    rx: broadcast::Receiver<Event>,
    ready: VecDeque<SseEvent>,
    /// The last sequence number sent.
    sent: u64,
}

impl Follow {
    /// Queues the events numbered after the last one sent (a `resync` first when some
    /// are gone from the history).
    fn take(&mut self, events: Vec<Event>) {
        for e in events {
            if e.seq <= self.sent {
                continue;
            }
            if e.seq > self.sent + 1 && self.sent > 0 {
                self.ready.push_back(
                    SseEvent::default()
                        .event("resync")
                        .data(format!(r#"{{"missed_from":{}}}"#, self.sent + 1)),
                );
            }
            self.sent = e.seq;
            self.ready.push_back(sse(&e));
        }
    }
}

fn sse(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.type_name())
        .data(data)
}

fn stream(
    bus: EventBus,
    after: u64,
    restarted: bool,
    closing: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let (past, rx) = bus.subscribe_after(after);
    let mut follow = Follow {
        bus,
        closing,
        ended: false,
        rx,
        ready: VecDeque::new(),
        sent: after,
    };
    // Reconnect quickly after a server restart.
    follow.ready.push_back(
        SseEvent::default()
            .retry(Duration::from_secs(1))
            .comment("orchestra"),
    );
    if restarted {
        follow.ready.push_back(
            SseEvent::default()
                .event("resync")
                .data(r#"{"restarted":true}"#),
        );
    }
    follow.take(past);
    futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(e) = f.ready.pop_front() {
                return Some((Ok(e), f));
            }
            if f.ended {
                return None;
            }
            let next = tokio::select! {
                biased;
                _ = f.closing.cancelled() => {
                    // The last word: clients know the end was meant (and EventSource
                    // reconnects once the server is back).
                    f.ended = true;
                    f.ready.push_back(
                        SseEvent::default()
                            .event("closing")
                            .data(r#"{"reason":"the server is stopping"}"#),
                    );
                    continue;
                }
                r = f.rx.recv() => r,
            };
            match next {
                Ok(e) => f.take(vec![e]),
                // Fell behind: pick up again from the history.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (past, rx) = f.bus.subscribe_after(f.sent);
                    f.rx = rx;
                    f.take(past);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
