//! `orchestra repl [SCORE]`: Lua with the band and the stdlib loaded, hot reload on,
//! history in the user's data folder.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::console::{ConsoleOut, history_path, run_terminal};
use super::play::LimitArgs;
use crate::score::{Conductor, ScoreSource};

#[derive(Debug, Clone, Args)]
pub struct ReplArgs {
    /// The score to load (without one: `orchestra` and the stdlib only).
    pub score: Option<PathBuf>,
    /// Do not reload the score when it is saved.
    #[arg(long)]
    pub no_watch: bool,
    /// Do not read or write the history file.
    #[arg(long)]
    pub no_history: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Runs the REPL on the calling thread. Not async: the line editor blocks, so it must
/// not run inside a tokio runtime; this builds its own.
pub fn run(args: ReplArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = ConsoleOut::new();
    let options = args.limits.options().with_printer(out.printer());
    let source = match &args.score {
        Some(p) => ScoreSource::file(p),
        None => ScoreSource::Empty {
            dir: std::env::current_dir()?,
        },
    };
    let conductor =
        Conductor::start_blocking(source, options).with_context(|| match &args.score {
            Some(p) => format!("loading score `{}`", p.display()),
            None => "starting the REPL".into(),
        })?;
    rt.block_on(super::play::check_overrides(
        &conductor,
        &args.limits.models,
    ))?;
    if args.score.is_some() && !args.no_watch {
        rt.block_on(conductor.watch())?;
    }
    let history = if args.no_history {
        None
    } else {
        history_path()
    };
    run_terminal(conductor, out, rt.handle(), history)?;
    Ok(())
}
