//! `orchestra check`: load a score without playing it — syntax, the returned table,
//! every `band:add` (model resolvable, a readable GGUF header, a known section, a
//! footprint within the band's memory) — and report what it declares. Remote
//! instruments get a health check (`GET /models`); an unreachable one is a note, not
//! an error: the score is valid and its section falls back at play time.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::context::Stages;
use super::error::ScoreError;
use super::options::ScoreOptions;
use super::util::display_path;
use super::vm::{ScoreSource, ScoreVm};
use crate::stage::human_bytes;

/// What a valid score declares.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub score: String,
    /// The score and every file it required.
    pub files: Vec<PathBuf>,
    pub bands: Vec<BandReport>,
    /// Things worth knowing that do not make the score invalid.
    pub notes: Vec<String>,
    /// Whether `orchestra` (the score's arrangement) can take an agent's prompt.
    pub agents: Option<AgentFit>,
}

/// Whether the score's arrangement can play agents' turns (OpenClaw's prompt).
#[derive(Debug, Clone, Serialize)]
pub struct AgentFit {
    /// Tokens a request to `orchestra` can count on.
    pub context: u32,
    /// The instrument whose context that is.
    pub narrowest: String,
    /// At least [`AGENT_PROMPT_TOKENS`](super::AGENT_PROMPT_TOKENS).
    pub fits: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BandReport {
    pub memory: u64,
    pub sections: Vec<String>,
    pub instruments: Vec<InstrumentReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstrumentReport {
    pub name: String,
    pub section: String,
    /// As written in the score.
    pub model: String,
    /// The file it resolved to (`None`: a hub model not downloaded yet).
    pub path: Option<PathBuf>,
    /// Estimated resident bytes (weights + KV cache + compute).
    pub footprint: Option<u64>,
    /// The server's URL of a remote instrument.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Whether the remote server answered its health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
}

/// Checks a score without running any model.
pub async fn check(source: ScoreSource, options: ScoreOptions) -> Result<CheckReport, ScoreError> {
    let options = options.with_check_only(true);
    let stages = Stages::new(options.events.clone(), options.metrics.clone(), false);
    let vm = ScoreVm::load(&source, &options, stages, 1).await?;
    let mut notes = vm.ctx.warnings.lock().unwrap().clone();
    let bands = vm.ctx.bands.lock().unwrap().clone();
    if bands.is_empty() {
        notes.push("the score declares no band (`orchestra.band{...}`)".into());
    }
    let mut reports = Vec::new();
    let remotes: Vec<_> = bands
        .iter()
        .flat_map(|(b, _)| b.members())
        .filter_map(|m| {
            m.remote
                .clone()
                .map(|r| (m.name.clone(), m.section.clone(), r))
        })
        .collect();
    let health = futures::future::join_all(remotes.iter().map(|(_, _, r)| r.health())).await;
    let mut reachable = std::collections::HashMap::new();
    for ((name, section, r), res) in remotes.iter().zip(health) {
        let spec = r.spec();
        match res {
            Ok(models) => {
                if !models.is_empty() && !models.contains(&spec.model) {
                    notes.push(format!(
                        "remote `{name}`: `{}` does not list model `{}` (it serves {}); some servers answer with whatever they loaded",
                        spec.url,
                        spec.model,
                        models.join(", ")
                    ));
                }
                reachable.insert(name.clone(), true);
            }
            Err(e) => {
                notes.push(format!(
                    "remote `{name}` is unreachable, so `{section}` falls back to its next instrument until it answers (the score is valid): {e}"
                ));
                reachable.insert(name.clone(), false);
            }
        }
    }
    for (band, _) in &bands {
        let members = band.members();
        if band.declared_sections {
            for s in band.sections.iter() {
                if !members.iter().any(|m| &m.section == s) {
                    notes.push(format!("section `{s}` has no instrument"));
                }
            }
        }
        reports.push(BandReport {
            memory: band.key.budget,
            sections: band.sections.to_vec(),
            instruments: members
                .iter()
                .map(|m| {
                    let resolved = !m.path.as_os_str().is_empty();
                    let remote = m.remote.as_ref().map(|r| r.spec().url.clone());
                    InstrumentReport {
                        reachable: remote.as_ref().and(reachable.get(&m.name).copied()),
                        remote,
                        name: m.name.clone(),
                        section: m.section.clone(),
                        // What plays: a `--model-file` replaces the score's reference.
                        model: options
                            .overrides
                            .get(&m.name)
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| m.reference.clone()),
                        path: resolved.then(|| m.path.clone()),
                        footprint: resolved
                            .then(|| crate::stage::estimate(&m.path, &m.options).ok())
                            .flatten()
                            .map(|f| f.total()),
                    }
                })
                .collect(),
        });
    }
    let infos = super::conductor::instrument_infos(bands.iter().map(|(b, _)| b));
    let info = super::ScoreInfo {
        name: source.name(),
        version: 1,
        files: Vec::new(),
        instruments: infos,
        sections: Vec::new(),
        budget: 0,
        watching: false,
    };
    let agents = info.window(None).map(|w| AgentFit {
        fits: w.context >= super::AGENT_PROMPT_TOKENS,
        context: w.context,
        narrowest: w.narrowest,
    });
    Ok(CheckReport {
        score: source.name(),
        files: vm.deps(),
        bands: reports,
        notes,
        agents,
    })
}

/// [`check`] for callers outside an async runtime.
pub fn check_blocking(
    source: ScoreSource,
    options: ScoreOptions,
) -> Result<CheckReport, ScoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ScoreError::Model(format!("cannot start a tokio runtime: {e}")))?
        .block_on(check(source, options))
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "score `{}` is valid", self.score)?;
        for b in &self.bands {
            writeln!(
                f,
                "  band: {} of memory; sections {}",
                human_bytes(b.memory),
                b.sections.join(", ")
            )?;
            let width = b
                .instruments
                .iter()
                .map(|i| i.name.len())
                .max()
                .unwrap_or(0);
            let swidth = b
                .instruments
                .iter()
                .map(|i| i.section.len())
                .max()
                .unwrap_or(0);
            for i in &b.instruments {
                let size = match (&i.remote, i.reachable) {
                    (Some(url), Some(true)) => format!("remote at {url}, reachable"),
                    (Some(url), _) => format!("remote at {url}, unreachable"),
                    (None, _) => i
                        .footprint
                        .map(|n| format!("~{}", human_bytes(n)))
                        .unwrap_or_else(|| "not downloaded".into()),
                };
                writeln!(
                    f,
                    "    {:width$}  {:swidth$}  {}  ({size})",
                    i.name, i.section, i.model,
                )?;
            }
        }
        let files: Vec<String> = self.files.iter().map(|p| display_path(p)).collect();
        writeln!(f, "  files: {}", files.join(", "))?;
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        match &self.agents {
            Some(a) if a.fits => writeln!(
                f,
                "  agents: `orchestra` takes {} tokens, room for OpenClaw's prompt (about {})",
                a.context,
                super::AGENT_PROMPT_TOKENS
            )?,
            Some(a) => writeln!(
                f,
                "  warning: `orchestra` takes {} tokens ({}), too few for an agent: OpenClaw's prompt is about {} and grows; give `{}` `context = {}`",
                a.context,
                a.narrowest,
                super::AGENT_PROMPT_TOKENS,
                a.narrowest,
                super::AGENT_CONTEXT
            )?,
            None => {}
        }
        Ok(())
    }
}
