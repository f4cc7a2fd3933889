//! `orchestra check SCORE...`: validates scores without running a model — syntax, the
//! returned table, every model resolvable, section names, footprints within the band's
//! memory — and prints what each declares.

use std::path::PathBuf;

use clap::Args;

use super::play::LimitArgs;
use crate::score::{ScoreSource, check_blocking};

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The scores to check.
    #[arg(required = true)]
    pub scores: Vec<PathBuf>,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    let mut reports = Vec::new();
    // Every instrument of every valid score: a `--model-file` must name one of them.
    let mut instruments = Vec::new();
    for score in &args.scores {
        let checked = check_blocking(ScoreSource::file(score), args.limits.options());
        if let Ok(report) = &checked {
            instruments.extend(
                report
                    .bands
                    .iter()
                    .flat_map(|b| b.instruments.iter().map(|i| i.name.clone())),
            );
        }
        reports.push((score, checked));
    }
    // A misspelt `--model-file` is the error to see first, not after the reports.
    if reports.iter().all(|(_, r)| r.is_ok()) {
        args.limits.models.check_names(&instruments)?;
    }
    let mut json = Vec::new();
    for (score, checked) in reports {
        match checked {
            Ok(report) if args.json => json.push(serde_json::to_value(&report)?),
            Ok(report) => print!("{report}"),
            Err(e) => {
                failed += 1;
                if args.json {
                    json.push(serde_json::json!({
                        "score": score.display().to_string(),
                        "error": e.to_string(),
                    }));
                } else {
                    eprintln!("score `{}` is invalid:\n{e}", score.display());
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    match failed {
        0 => Ok(()),
        n => anyhow::bail!("{n} of {} scores are invalid", args.scores.len()),
    }
}
