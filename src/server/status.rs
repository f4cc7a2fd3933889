//! `GET /api/status`: the [`StatusReport`] of this server — the score, every
//! instrument with its state, footprint, tempo and swing, memory, queue, requests
//! playing now and the recent arrangements.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::stage::ModelState;
use crate::status::{
    Done, InstrumentStatus, Memory, ReloadNotice, ScoreSummary, StatusReport, active_requests,
};

/// The report, as the library sees it (also what `orchestra status` reads).
pub async fn report(state: &AppState) -> Result<StatusReport, ApiError> {
    let c = state.conductor()?;
    // First: the events after this number are what the picture does not show yet.
    let last_seq = c.events().last_seq();
    let info = c.info().await?;
    let stage = c.stage_status();
    let instruments = info
        .instruments
        .iter()
        .map(|i| {
            let m = stage.models.iter().find(|m| m.name == i.name);
            let state = m.map(|m| m.state).unwrap_or(ModelState::Offstage);
            let idle_ms = m.and_then(|m| m.idle_ms);
            let pinned = m.is_some_and(|m| m.pinned);
            let unloads_in_ms = match (state, stage.idle_ttl_ms, idle_ms) {
                (ModelState::Resident, Some(ttl), Some(idle)) if !pinned => {
                    Some(ttl.saturating_sub(idle))
                }
                _ => None,
            };
            let stats = m.map(|m| m.stats.clone()).unwrap_or_default();
            InstrumentStatus {
                name: i.name.clone(),
                section: i.section.clone(),
                model: i.model.clone(),
                embeddings: i.embeddings,
                state,
                load_progress: m.and_then(|m| m.load_progress),
                footprint_bytes: m
                    .and_then(|m| m.footprint_bytes.or(m.estimate_bytes))
                    .unwrap_or(0),
                pinned,
                playing: m.map(|m| m.playing).unwrap_or(0),
                idle_ms,
                unloads_in_ms,
                tempo: stats.tempo,
                swing: stats.swing,
                ttft_ms: stats.ttft_ms,
                generations: stats.generations,
                tokens: stats.tokens,
                live_tokens: stats.live_tokens,
            }
        })
        .collect();
    let last_reload = c.last_reload().map(|r| {
        let (file, line) = match r.error.as_deref().and_then(crate::score::error_location) {
            Some((f, l)) => (Some(f), Some(l)),
            None => (None, None),
        };
        ReloadNotice {
            ok: r.ok,
            version: r.version,
            error: r.error,
            file,
            line,
            reason: r.reason,
        }
    });
    let d = &state.done;
    Ok(StatusReport {
        score: ScoreSummary {
            name: info.name,
            version: info.version,
            sections: info.sections,
            watching: info.watching,
        },
        instruments,
        memory: Memory {
            used: stage.used,
            budget: stage.budget,
        },
        in_flight: state.admission.in_flight(),
        queued: state.admission.queued(),
        max_in_flight: state.limits.0,
        max_queue: state.limits.1,
        done: Done {
            requests: d.requests.load(Ordering::Relaxed),
            failed: d.failed.load(Ordering::Relaxed),
            cancelled: d.cancelled.load(Ordering::Relaxed),
        },
        active: active_requests(&c.events().recent()),
        recent: c.recent_arrangements(),
        last_reload,
        last_seq,
    })
}

pub async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(report(&state).await?).into_response())
}
