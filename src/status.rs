//! The picture of a running orchestra: what `GET /api/status` answers, what the stage
//! page starts from and what `orchestra status` prints — plain structs, built by the
//! server from library calls, read back by the CLI. Also the spoken-style briefing
//! (`orchestra status --brief`) and the fold of recent events into the requests
//! playing now. No HTTP here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{Event, EventKind};
use crate::narrate::{list, stage_name};
use crate::score::ArrangementRecord;
use crate::stage::{ModelState, human_bytes};

/// Everything `GET /api/status` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub score: ScoreSummary,
    /// Every instrument, in the order the score declared them.
    pub instruments: Vec<InstrumentStatus>,
    pub memory: Memory,
    /// Requests playing now and waiting for a turn.
    pub in_flight: usize,
    pub queued: usize,
    pub max_in_flight: usize,
    pub max_queue: usize,
    /// Requests answered since the server started.
    pub done: Done,
    /// Requests playing now, as far as the recent events tell.
    pub active: Vec<ActiveRequest>,
    /// The last arrangements played, newest first.
    pub recent: Vec<ArrangementRecord>,
    /// The last reload attempt, if any.
    pub last_reload: Option<ReloadNotice>,
    /// The sequence number of the last event: `/api/events` with `Last-Event-ID` set
    /// to it continues exactly after this picture.
    pub last_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub name: String,
    pub version: u64,
    pub sections: Vec<String>,
    pub watching: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstrumentStatus {
    pub name: String,
    pub section: String,
    /// The model reference the score gave.
    pub model: String,
    pub embeddings: bool,
    pub state: ModelState,
    pub load_progress: Option<f32>,
    /// Real bytes when resident, else the estimate.
    pub footprint_bytes: u64,
    pub pinned: bool,
    /// Requests holding it now.
    pub playing: usize,
    pub idle_ms: Option<u64>,
    /// Milliseconds until the idle sweep unloads it (resident, idle, not pinned).
    pub unloads_in_ms: Option<u64>,
    /// Tokens per second of its last generation.
    pub tempo: Option<f64>,
    /// Timing steadiness of its last generation (1.0 = a metronome).
    pub swing: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub generations: u64,
    pub tokens: u64,
    /// Tokens of the generations it is playing now.
    pub live_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Memory {
    pub used: u64,
    pub budget: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Done {
    pub requests: u64,
    pub failed: u64,
    pub cancelled: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadNotice {
    pub ok: bool,
    /// The version serving after the attempt.
    pub version: u64,
    pub error: Option<String>,
    /// Where a rejected version broke, when the error says.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub reason: String,
}

/// One request playing now, folded from its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActiveRequest {
    pub request_id: u64,
    /// The model id the client sent.
    pub model: String,
    pub started_ms: f64,
    /// `received`, `routed`, `comping`, `soloing`, `reviewing`, `revising`.
    pub phase: String,
    pub section: Option<String>,
    /// The routing rule that decided (its name, or its number).
    pub rule: Option<String>,
    pub comping: Vec<String>,
    pub soloist: Option<String>,
    pub reviewer: Option<String>,
    pub verdict: Option<String>,
    /// Instruments generating for it now, with their tokens so far and tempo.
    pub playing: BTreeMap<String, Playing>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Playing {
    pub tokens: usize,
    pub tok_s: f64,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The requests still playing at the end of `events` (oldest first): those the server
/// received and has not finished, with what their arrangement events said.
pub fn active_requests(events: &[Event]) -> Vec<ActiveRequest> {
    let mut active: BTreeMap<u64, ActiveRequest> = BTreeMap::new();
    for e in events {
        let Some(id) = e.request_id else { continue };
        match &e.kind {
            EventKind::RequestReceived { model, .. } => {
                active.insert(
                    id,
                    ActiveRequest {
                        request_id: id,
                        model: model.clone(),
                        started_ms: e.at_ms,
                        phase: "received".into(),
                        ..ActiveRequest::default()
                    },
                );
            }
            EventKind::RequestFinished { .. } => {
                active.remove(&id);
            }
            kind => {
                let Some(r) = active.get_mut(&id) else {
                    continue;
                };
                match kind {
                    EventKind::GenerationProgress {
                        model,
                        tokens,
                        tok_s,
                        ..
                    } => {
                        r.playing.insert(
                            model.clone(),
                            Playing {
                                tokens: *tokens,
                                tok_s: *tok_s,
                            },
                        );
                    }
                    EventKind::GenerationFinished { model, .. } => {
                        r.playing.remove(model);
                    }
                    EventKind::Custom { name, data } => match name.as_str() {
                        "routed" => {
                            r.phase = "routed".into();
                            r.section = text(data, "section");
                            r.rule = text(data, "name").or_else(|| {
                                data.get("rule")
                                    .filter(|v| !v.is_null())
                                    .map(|v| v.to_string())
                            });
                        }
                        "comp" => {
                            r.phase = "comping".into();
                            r.comping = data
                                .get("players")
                                .and_then(Value::as_array)
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|p| p.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default();
                        }
                        "solo" => {
                            r.phase = "soloing".into();
                            r.soloist = text(data, "player");
                            if r.section.is_none() {
                                r.section = text(data, "section");
                            }
                        }
                        "review" => {
                            r.phase = "reviewing".into();
                            r.reviewer = text(data, "reviewer");
                        }
                        "verdict" => r.verdict = text(data, "verdict"),
                        "revise" => r.phase = "revising".into(),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    active.into_values().collect()
}

const SMALL: [&str; 13] = [
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve",
];

/// "four instruments", "one request", "23 requests".
fn count(n: usize, one: &str, many: &str) -> String {
    let word = if n < SMALL.len() {
        SMALL[n].to_string()
    } else {
        n.to_string()
    };
    format!("{word} {}", if n == 1 { one } else { many })
}

/// "9 minutes", "40 seconds", "2 hours".
fn spoken_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        count(s as usize, "second", "seconds")
    } else if s < 3600 {
        count((s / 60) as usize, "minute", "minutes")
    } else {
        count((s / 3600) as usize, "hour", "hours")
    }
}

fn capitalized(s: &str) -> String {
    stage_name(s)
}

/// The spoken-style briefing: one STATUS, ACTIVE, DONE and WATCH line each, short
/// enough for text-to-speech.
pub fn brief(s: &StatusReport) -> Vec<String> {
    let on_stage: Vec<&InstrumentStatus> = s
        .instruments
        .iter()
        .filter(|i| matches!(i.state, ModelState::Resident | ModelState::Playing))
        .collect();
    let mut status = if on_stage.is_empty() {
        format!(
            "STATUS: the stage is empty, {} of memory free.",
            human_bytes(s.memory.budget)
        )
    } else {
        format!(
            "STATUS: {} on stage, {} of {}.",
            count(on_stage.len(), "instrument", "instruments"),
            human_bytes(s.memory.used),
            human_bytes(s.memory.budget)
        )
    };
    if s.queued > 0 {
        status.push_str(&format!(
            " {} waiting.",
            capitalized(&count(s.queued, "request", "requests"))
        ));
    }

    let active = if s.active.is_empty() {
        "ACTIVE: nobody is playing.".to_string()
    } else {
        let parts: Vec<String> = s.active.iter().map(active_line).collect();
        format!("ACTIVE: {}", parts.join(" "))
    };

    let done = match (s.done.requests, s.done.failed) {
        (0, _) => "DONE: no requests yet.".to_string(),
        (n, 0) => format!(
            "DONE: {}, none failed.",
            count(n as usize, "request", "requests")
        ),
        (n, f) => format!(
            "DONE: {}, {} failed.",
            count(n as usize, "request", "requests"),
            SMALL
                .get(f as usize)
                .map(|w| w.to_string())
                .unwrap_or(f.to_string())
        ),
    };

    let mut watch: Vec<String> = Vec::new();
    if let Some(r) = &s.last_reload
        && !r.ok
    {
        let at = match (&r.file, r.line) {
            (Some(f), Some(l)) => format!(" at {f} line {l}"),
            _ => String::new(),
        };
        watch.push(format!(
            "the last edit of the score was rejected{at}; version {} keeps playing.",
            r.version
        ));
    }
    let idle = s
        .instruments
        .iter()
        .filter(|i| i.state == ModelState::Resident)
        .filter_map(|i| i.idle_ms.map(|ms| (ms, i)))
        .max_by_key(|(ms, _)| *ms);
    if let Some((ms, i)) = idle
        && ms >= 60_000
    {
        let mut line = format!(
            "{} has been idle {}",
            capitalized(&i.name),
            spoken_duration(ms)
        );
        if let Some(left) = i.unloads_in_ms {
            let minutes = left.div_ceil(60_000) as usize;
            line.push_str(&format!(
                " and unloads in {}",
                if minutes <= 1 {
                    "a minute".to_string()
                } else {
                    count(minutes, "minute", "minutes")
                }
            ));
        }
        line.push('.');
        watch.push(line);
    }
    let free = s.memory.budget.saturating_sub(s.memory.used);
    if s.memory.budget > 0 && free * 10 < s.memory.budget {
        watch.push(format!(
            "memory is nearly full, {} left.",
            human_bytes(free)
        ));
    }
    let watch = if watch.is_empty() {
        "WATCH: nothing to watch.".to_string()
    } else {
        let mut w = watch.join(" ");
        if let Some(first) = w.get(..1) {
            w = first.to_uppercase() + &w[1..];
        }
        format!("WATCH: {w}")
    };
    vec![status, active, done, watch]
}

fn active_line(r: &ActiveRequest) -> String {
    let on = match &r.section {
        Some(s) => format!("on a {s} request"),
        None => "on a request".to_string(),
    };
    let tempo = |who: &str| {
        r.playing
            .get(who)
            .filter(|p| p.tok_s > 0.0)
            .map(|p| format!(" at {:.0} tokens a second", p.tok_s))
            .unwrap_or_default()
    };
    match (r.phase.as_str(), &r.soloist, &r.reviewer) {
        ("reviewing", Some(solo), Some(rev)) => format!(
            "{} is reviewing {}'s solo {on}.",
            capitalized(rev),
            capitalized(solo)
        ),
        ("revising", Some(solo), _) => format!("{} is revising {on}.", capitalized(solo)),
        (_, Some(solo), _) => format!("{} is soloing {on}{}.", capitalized(solo), tempo(solo)),
        ("comping", _, _) => format!(
            "{} {} comping {on}.",
            list(&r.comping),
            if r.comping.len() == 1 { "is" } else { "are" }
        ),
        _ => match r.playing.keys().next() {
            Some(who) => format!("{} is playing {on}{}.", capitalized(who), tempo(who)),
            None => format!("a request for {} is starting.", r.model),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use serde_json::json;

    fn ev(id: u64, kind: EventKind) -> Event {
        Event {
            request_id: Some(id),
            ..Event::new(kind)
        }
    }

    fn custom(id: u64, name: &str, data: Value) -> Event {
        ev(
            id,
            EventKind::Custom {
                name: name.into(),
                data,
            },
        )
    }

    #[test]
    fn events_fold_into_the_requests_still_playing() {
        let events = vec![
            ev(
                1,
                EventKind::RequestReceived {
                    model: "orchestra".into(),
                    stream: false,
                    in_flight: 1,
                    queued: 0,
                },
            ),
            ev(
                2,
                EventKind::RequestReceived {
                    model: "orchestra".into(),
                    stream: true,
                    in_flight: 2,
                    queued: 0,
                },
            ),
            custom(
                1,
                "routed",
                json!({ "section": "code", "rule": 1, "name": "code words" }),
            ),
            custom(
                1,
                "solo",
                json!({ "player": "coltrane", "section": "code" }),
            ),
            ev(
                1,
                EventKind::GenerationProgress {
                    model: "coltrane".into(),
                    generation: 7,
                    tokens: 12,
                    tok_s: 38.2,
                    ttft_ms: 20.0,
                },
            ),
            ev(
                2,
                EventKind::RequestFinished {
                    model: "orchestra".into(),
                    outcome: "ok".into(),
                    section: None,
                    soloist: None,
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    ms: 1.0,
                    ttft_ms: None,
                    error: None,
                    in_flight: 1,
                    queued: 0,
                },
            ),
        ];
        let active = active_requests(&events);
        assert_eq!(active.len(), 1);
        let r = &active[0];
        assert_eq!(r.request_id, 1);
        assert_eq!(r.rule.as_deref(), Some("code words"));
        assert_eq!(
            active_line(r),
            "Coltrane is soloing on a code request at 38 tokens a second."
        );
    }
}
