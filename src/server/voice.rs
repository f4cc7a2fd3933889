//! `POST /api/voice`: a spoken transcript in (`{"text": "who's soloing?"}`), the
//! matched intent, the action taken and a one-sentence reply out. Understanding lives
//! in [`crate::voice`]; this handler only carries intents out through the library calls
//! the CLI makes (status report, stage pin/evict, `Conductor::set_lead`, a jam through
//! the stdlib) and speaks no HTTP beyond its own body.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::chat::parse_body;
use super::error::ApiError;
use crate::events::EventKind;
use crate::narrate::{list, stage_name};
use crate::stage::{ModelState, StageError, human_bytes};
use crate::voice::{Intent, Vocabulary, help, lead_of, parse, switched};

#[derive(Debug, Deserialize)]
pub struct VoiceRequest {
    /// What was said, as a transcript.
    pub text: String,
}

/// What `/api/voice` answers.
#[derive(Debug, Serialize)]
pub struct VoiceReply {
    /// The intent's name (`status`, `soloist`, `switch_lead`, ..., `unknown`).
    pub intent: &'static str,
    /// What the intent named: section, instrument, prompt.
    pub args: Value,
    /// What was done, when something was (`null` for questions and refusals).
    pub action: Option<String>,
    /// One sentence to speak back.
    pub reply: String,
}

/// Drops a briefing line's `STATUS: ` label.
fn unlabelled(line: &str) -> String {
    line.split_once(": ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| line.to_string())
}

/// A Lua string literal of `s`.
fn lua_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub async fn voice(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<VoiceReply>, ApiError> {
    let req: VoiceRequest = parse_body(body)?;
    let c = state.conductor()?;
    let info = c.info().await?;
    let vocab = Vocabulary {
        instruments: info.instruments.iter().map(|i| i.name.clone()).collect(),
        sections: info.sections.clone(),
    };
    let intent = parse(&req.text, &vocab);
    let mut args = serde_json::to_value(&intent).unwrap_or(Value::Null);
    if let Some(o) = args.as_object_mut() {
        o.remove("name");
    }
    let (action, reply) = carry_out(&state, &intent, &info, &vocab).await?;
    c.events().emit(EventKind::Custom {
        name: "voice".into(),
        data: json!({ "text": req.text, "intent": intent.name(), "action": action, "reply": reply }),
    });
    Ok(axum::Json(VoiceReply {
        intent: intent.name(),
        args,
        action,
        reply,
    }))
}

async fn carry_out(
    state: &AppState,
    intent: &Intent,
    info: &crate::score::ScoreInfo,
    vocab: &Vocabulary,
) -> Result<(Option<String>, String), ApiError> {
    let c = state.conductor()?;
    Ok(match intent {
        Intent::Status => {
            let report = super::status::report(state).await?;
            let lines = crate::status::brief(&report);
            let said: Vec<String> = lines.iter().take(2).map(|l| unlabelled(l)).collect();
            (None, said.join(" "))
        }
        Intent::Soloist => {
            let report = super::status::report(state).await?;
            let active = crate::status::brief(&report)
                .get(1)
                .map(|l| unlabelled(l))
                .unwrap_or_default();
            let reply = if report.active.iter().any(|r| r.soloist.is_some()) {
                active
            } else if report.active.is_empty() {
                "Nobody is soloing right now.".to_string()
            } else {
                format!("Nobody is soloing yet. {active}")
            };
            (None, reply)
        }
        Intent::Memory => {
            let report = super::status::report(state).await?;
            let free = report.memory.budget.saturating_sub(report.memory.used);
            let on: Vec<String> = report
                .instruments
                .iter()
                .filter(|i| matches!(i.state, ModelState::Resident | ModelState::Playing))
                .map(|i| i.name.clone())
                .collect();
            let who = match on.len() {
                0 => "the stage is empty".to_string(),
                1 => format!("{} is on stage", list(&on)),
                _ => format!("{} are on stage", list(&on)),
            };
            (
                None,
                format!(
                    "{} free of {}; {who}.",
                    human_bytes(free),
                    human_bytes(report.memory.budget)
                ),
            )
        }
        Intent::SectionLead { section } => {
            let players: Vec<String> = info
                .instruments
                .iter()
                .filter(|i| &i.section == section && !i.embeddings)
                .map(|i| i.name.clone())
                .collect();
            (
                None,
                lead_of(
                    section,
                    players.first().map(String::as_str),
                    players.get(1..).unwrap_or_default(),
                ),
            )
        }
        Intent::SwitchLead {
            section,
            instrument,
        } => match c.set_lead(section, instrument).await {
            Ok(before) => (
                Some(format!("set_lead {section}={instrument}")),
                switched(section, instrument, Some(&before)),
            ),
            Err(crate::score::LeadError::OtherSection { plays, .. }) => (
                None,
                format!(
                    "{} plays in the {plays} section, not {section}.",
                    stage_name(instrument)
                ),
            ),
            Err(e) => return Err(ApiError::internal(e.to_string())),
        },
        Intent::Pin { instrument }
        | Intent::Unpin { instrument }
        | Intent::Unload { instrument } => stage_command(state, intent, instrument).await?,
        Intent::Jam { prompt } if prompt.is_empty() => (
            None,
            "What should the band jam on? Say: jam on, and then the question.".into(),
        ),
        Intent::Jam { prompt } => {
            let code = format!(
                "return (require(\"orchestra.arrange\").jam(band, {}) or {{}}).text",
                lua_quote(prompt)
            );
            let conductor = c.clone();
            let events = c.events().clone();
            let mut stop = state.stop.subscribe();
            let asked = prompt.clone();
            tokio::spawn(async move {
                let outcome = tokio::select! {
                    r = conductor.eval(&code, None) => r,
                    _ = stop.changed() => return,
                };
                let (text, error) = match outcome {
                    Ok(crate::score::EvalOutcome::Values(v)) => (v.join("\n"), None),
                    Ok(_) => (String::new(), None),
                    Err(e) => (String::new(), Some(e.to_string())),
                };
                events.emit(EventKind::Custom {
                    name: "voice_jam".into(),
                    data: json!({ "prompt": asked, "text": text, "error": error }),
                });
            });
            (
                Some(format!("jam {prompt:?}")),
                format!(
                    "Jam session: the band is playing on “{prompt}”. Watch the stage for the merge."
                ),
            )
        }
        Intent::Stop => {
            let playing = state.admission.in_flight();
            state.stop.send_modify(|n| *n += 1);
            let reply = match playing {
                0 => "Nothing was playing; the stage is quiet.".to_string(),
                1 => "Stopped the request that was playing.".to_string(),
                n => format!("Stopped the {n} requests that were playing."),
            };
            (Some(format!("stop {playing}")), reply)
        }
        Intent::Unknown => (None, help(vocab)),
    })
}

/// Pin, unpin or unload one instrument on its stage.
async fn stage_command(
    state: &AppState,
    intent: &Intent,
    name: &str,
) -> Result<(Option<String>, String), ApiError> {
    let who = stage_name(name);
    let Some(h) = state.conductor()?.instrument(name).await? else {
        return Ok((None, format!("There is no {who} in this band.")));
    };
    if h.remote.is_some() {
        return Ok((
            None,
            format!("{who} plays on another server, so there is nothing of it on this stage."),
        ));
    }
    let said = match intent {
        Intent::Pin { .. } => {
            h.stage.pin(name, true)?;
            if h.stage.is_resident(name) {
                (
                    Some(format!("pin {name}")),
                    format!("{who} is pinned and stays on stage."),
                )
            } else {
                // Pinning means "keep it ready": bring it on now, in the background.
                let stage = h.stage.clone();
                let model = name.to_string();
                tokio::spawn(async move {
                    if let Err(e) = stage.acquire(&model).await {
                        tracing::warn!(model, error = %e, "voice: loading a pinned model failed");
                    }
                });
                (
                    Some(format!("pin {name}")),
                    format!("{who} is pinned and walking on stage now."),
                )
            }
        }
        Intent::Unpin { .. } => {
            h.stage.pin(name, false)?;
            (
                Some(format!("unpin {name}")),
                format!("{who} is no longer pinned and may leave when idle."),
            )
        }
        _ => match h.stage.evict(name) {
            Ok(true) => (
                Some(format!("unload {name}")),
                format!("{who} leaves the stage."),
            ),
            Ok(false) => (None, format!("{who} is not on stage.")),
            Err(StageError::Playing(_)) => (
                None,
                format!("{who} is playing right now; ask again when the solo ends."),
            ),
            Err(e) => return Err(e.into()),
        },
    };
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::lua_quote;

    #[test]
    fn prompts_become_lua_string_literals() {
        assert_eq!(lua_quote(r#"say "hi"\n"#), r#""say \"hi\"\\n""#);
        assert_eq!(lua_quote("a\nb"), "\"a\\010b\"");
    }
}
