//! Admission control: at most `max_in_flight` requests play at once and at most
//! `max_queue` wait for a turn; past that a request is refused at once (429 with
//! `Retry-After`) instead of piling up. Like llama-swap's per-model concurrency limit
//! and Ollama's `OLLAMA_MAX_QUEUE`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The limits and the counters behind them.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    max_queue: usize,
    /// Requests waiting for a slot right now.
    queued: AtomicUsize,
    /// Requests refused since the start.
    pub refused: AtomicUsize,
}

/// A turn to play; the slot is given back when it is dropped.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    /// How long the request waited for its turn.
    pub waited: Duration,
}

impl Admission {
    pub fn new(max_in_flight: usize, max_queue: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_queue,
            queued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    /// Requests playing now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }

    /// Requests waiting for a turn now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Waits for a turn, or refuses at once when the queue is full.
    pub async fn admit(&self) -> Result<Permit, ApiError> {
        let started = Instant::now();
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(Permit {
                _permit: p,
                waited: Duration::ZERO,
            });
        }
        // Reserve a place in the queue, or refuse.
        let mut q = self.queued.load(Ordering::SeqCst);
        loop {
            if q >= self.max_queue {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "the server is busy: {} requests playing and {} waiting (`--max-in-flight`, `--max-queue`); try again shortly",
                        self.in_flight(),
                        q
                    ),
                )
                .with_code("queue_full");
                e.retry_after = Some(1);
                return Err(e);
            }
            match self
                .queued
                .compare_exchange(q, q + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => q = now,
            }
        }
        // Leave the queue whether the wait ends in a turn or the client goes away.
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.queued);
        let p = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down", 1))?;
        let waited = started.elapsed();
        tracing::debug!(
            waited_ms = waited.as_secs_f64() * 1e3,
            "request admitted after waiting"
        );
        Ok(Permit { _permit: p, waited })
    }
}
