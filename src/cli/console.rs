//! The REPL in a terminal: rustyline for editing, history and tab completion around the
//! library's [`ReplSession`] engine (which knows nothing of terminals). `readline` blocks, so it runs on the calling thread while the
//! conductor plays on its own; generations stream to the terminal as they come, reload
//! notices appear above the prompt (rustyline's external printer), and Ctrl-C during
//! an evaluation cancels it, not the REPL.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, ExternalPrinter, Helper};

use crate::score::{Conductor, Printer, ReplOutput, ReplSession, describe_reload};

/// Terminal output shared by `print`, streamed tokens and reload notices: through
/// rustyline's external printer when there is a terminal (so text shown while the prompt
/// is up does not garble it), plain stdout otherwise.
#[derive(Clone, Default)]
pub struct ConsoleOut {
    printer: Arc<Mutex<Option<Box<dyn ExternalPrinter + Send>>>>,
}

impl ConsoleOut {
    pub fn new() -> ConsoleOut {
        ConsoleOut::default()
    }

    /// Writes `text` as is (streamed tokens).
    pub fn write(&self, text: &str) {
        let mut p = self.printer.lock().unwrap();
        if let Some(p) = p.as_mut()
            && p.print(text.to_string()).is_ok()
        {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Writes a line.
    pub fn line(&self, text: &str) {
        self.write(&format!("{text}\n"));
    }

    /// `print` for [`ScoreOptions::with_printer`](crate::score::ScoreOptions::with_printer).
    pub fn printer(&self) -> Printer {
        let out = self.clone();
        Arc::new(move |s: &str| out.line(s))
    }

    fn attach(&self, printer: Box<dyn ExternalPrinter + Send>) {
        *self.printer.lock().unwrap() = Some(printer);
    }
}

struct ReplHelper {
    conductor: Conductor,
}

impl Completer for ReplHelper {
    type Candidate = String;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.conductor.complete_blocking(line, pos))
    }
}
impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

/// Where the REPL keeps its history: `<data dir>/orchestra/repl_history`.
pub fn history_path() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("orchestra").join("repl_history"))
}

/// Runs the REPL on this thread until Ctrl-D or `:quit`. `rt` runs the evaluations'
/// futures; this thread must not be inside it (readline and completion block).
pub fn run_terminal(
    conductor: Conductor,
    out: ConsoleOut,
    rt: &tokio::runtime::Handle,
    history: Option<PathBuf>,
) -> std::io::Result<()> {
    let mut rl: Editor<ReplHelper, DefaultHistory> =
        Editor::new().map_err(std::io::Error::other)?;
    rl.set_helper(Some(ReplHelper {
        conductor: conductor.clone(),
    }));
    if let Some(h) = &history {
        // A first run has no history file yet.
        let _ = rl.load_history(h);
    }
    if let Ok(p) = rl.create_external_printer() {
        out.attach(Box::new(p));
    }
    // Reload notices, from the conductor's broadcast.
    {
        let out = out.clone();
        let mut reloads = conductor.reloads();
        std::thread::Builder::new()
            .name("repl-reloads".into())
            .spawn(move || {
                while let Ok(ev) = reloads.blocking_recv() {
                    out.line(&describe_reload(&ev));
                }
            })?;
    }
    out.line(&if conductor.is_scoreless() {
        format!(
            "orchestra {} — no score loaded (the stdlib is; `orchestra repl SCORE.lua` loads one). :help for help, Ctrl-D to leave.",
            env!("CARGO_PKG_VERSION"),
        )
    } else {
        format!(
            "orchestra {} — score `{}` (version {}). :help for help, Ctrl-D to leave.",
            env!("CARGO_PKG_VERSION"),
            conductor.name(),
            conductor.version()
        )
    });
    let mut session = ReplSession::new(conductor);
    loop {
        let line = match rl.readline(session.prompt()) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                if session.is_continuing() {
                    session.reset();
                } else {
                    out.line("(Ctrl-D or :quit leaves)");
                }
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(std::io::Error::other(e)),
        };
        if !line.trim().is_empty() {
            let _ = rl.add_history_entry(line.as_str());
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut streamed = false;
        let outcome = rt.block_on(async {
            let feed = session.feed(&line, Some(tx));
            tokio::pin!(feed);
            // One listener for the whole evaluation: a signal that arrives while no
            // listener exists is lost.
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::pin!(ctrl_c);
            loop {
                tokio::select! {
                    out_ = &mut feed => {
                        while let Ok(t) = rx.try_recv() {
                            out.write(&t);
                            streamed = true;
                        }
                        break Some(out_);
                    }
                    Some(t) = rx.recv() => {
                        out.write(&t);
                        streamed = true;
                    }
                    _ = &mut ctrl_c => break None,
                }
            }
        });
        if streamed {
            out.write("\n");
        }
        match outcome {
            None => {
                session.reset();
                out.line("[cancelled]");
            }
            Some(ReplOutput::Quit) => break,
            Some(ReplOutput::Nothing | ReplOutput::More) => {}
            Some(ReplOutput::Values(values)) => {
                if !values.is_empty() {
                    out.line(&values.join("\t"));
                }
            }
            Some(ReplOutput::Message(m)) => out.line(&m),
            Some(ReplOutput::Error(e)) => out.line(&format!("error: {e}")),
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = rl.save_history(h) {
            tracing::warn!(error = %e, path = %h.display(), "cannot save the REPL history");
        }
    }
    Ok(())
}
