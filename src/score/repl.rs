//! The REPL engine, independent of any terminal: feeds lines to the conductor,
//! accumulates unfinished chunks (a `function` without its `end` continues on the next
//! line), and knows the few `:commands`. The terminal front end (`cli::console`) and the
//! tests drive the same engine.

use super::conductor::Conductor;
use super::request::TextSink;
use super::vm::EvalOutcome;

/// What one line of input produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplOutput {
    /// Nothing to show (an empty line).
    Nothing,
    /// The chunk is unfinished: show the continuation prompt and read on.
    More,
    /// The values the input returned, pretty-printed (none for a statement).
    Values(Vec<String>),
    /// The input failed: message, file, line and traceback.
    Error(String),
    /// Text for the user (`:help`, `:reload`, `:info`).
    Message(String),
    /// `:quit`.
    Quit,
}

/// One REPL session on a conductor.
pub struct ReplSession {
    conductor: Conductor,
    /// Lines of an unfinished chunk.
    pending: String,
}

const HELP: &str = "Lua with the score loaded: `band`, `score` and `orchestra` are globals.
  expressions print their value; statements run; unfinished chunks continue on the next line
  Tab completes globals, fields and methods (`band.col<Tab>`, `band.coltrane:gen<Tab>`)
  Ctrl-C cancels the running line (and its generations); Ctrl-D or :quit leaves
  :reload   reload the score now (saving the file does it too)
  :info     the score's version, files and instruments
  :help     this text";

const HELP_SCORELESS: &str = "Lua with the stdlib loaded and no score: `orchestra` is a global.
  declare a band here (`band = orchestra.band {}`, `band:add(\"name\", { model = \"FILE.gguf\", section = \"code\" })`),
  or start with a score: `orchestra repl SCORE.lua`
  expressions print their value; statements run; unfinished chunks continue on the next line
  Tab completes globals, fields and methods
  Ctrl-C cancels the running line (and its generations); Ctrl-D or :quit leaves
  :info     the instruments declared so far
  :help     this text";

impl ReplSession {
    pub fn new(conductor: Conductor) -> ReplSession {
        ReplSession {
            conductor,
            pending: String::new(),
        }
    }

    pub fn conductor(&self) -> &Conductor {
        &self.conductor
    }

    /// `> `, or `>> ` while a chunk is unfinished.
    pub fn prompt(&self) -> &'static str {
        if self.pending.is_empty() { "> " } else { ">> " }
    }

    /// Whether a chunk is waiting for more lines.
    pub fn is_continuing(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forget an unfinished chunk (Ctrl-C at the continuation prompt).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Feeds one line. Tokens of model calls made without a callback stream into
    /// `echo`. Dropping the future cancels the evaluation.
    pub async fn feed(&mut self, line: &str, echo: Option<TextSink>) -> ReplOutput {
        if self.pending.is_empty() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                return ReplOutput::Nothing;
            }
            if let Some(cmd) = trimmed.strip_prefix(':') {
                return self.command(cmd.trim()).await;
            }
        } else {
            self.pending.push('\n');
        }
        self.pending.push_str(line);
        let code = self.pending.clone();
        let out = self.conductor.eval(&code, echo).await;
        match out {
            Ok(EvalOutcome::Incomplete) => ReplOutput::More,
            Ok(EvalOutcome::Values(v)) => {
                self.pending.clear();
                ReplOutput::Values(v)
            }
            Err(e) => {
                self.pending.clear();
                ReplOutput::Error(e.to_string())
            }
        }
    }

    async fn command(&mut self, cmd: &str) -> ReplOutput {
        match cmd {
            "q" | "quit" | "exit" => ReplOutput::Quit,
            "h" | "help" | "?" if self.conductor.is_scoreless() => {
                ReplOutput::Message(HELP_SCORELESS.into())
            }
            "h" | "help" | "?" => ReplOutput::Message(HELP.into()),
            "reload" | "r" if self.conductor.is_scoreless() => ReplOutput::Error(
                "there is no score to reload: start with `orchestra repl SCORE.lua`".into(),
            ),
            "reload" | "r" => match self.conductor.reload().await {
                Ok(ev) if ev.ok => ReplOutput::Message(format!(
                    "reloaded: version {} ({:.0} ms)",
                    ev.version, ev.ms
                )),
                Ok(ev) => ReplOutput::Error(format!(
                    "reload rejected, version {} keeps playing:\n{}",
                    ev.version,
                    ev.error.unwrap_or_default()
                )),
                Err(e) => ReplOutput::Error(e.to_string()),
            },
            "info" | "i" => match self.conductor.info().await {
                Ok(info) => {
                    let mut s = format!("score `{}`, version {}", info.name, info.version);
                    if info.watching {
                        s.push_str(" (watching for changes)");
                    }
                    for f in &info.files {
                        s.push_str(&format!("\n  file: {}", f.display()));
                    }
                    for i in &info.instruments {
                        s.push_str(&format!("\n  {} ({}): {}", i.name, i.section, i.model));
                    }
                    ReplOutput::Message(s)
                }
                Err(e) => ReplOutput::Error(e.to_string()),
            },
            other => ReplOutput::Error(format!("unknown command `:{other}` (try :help)")),
        }
    }

    /// Completion candidates (see `Conductor::complete`).
    pub async fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        self.conductor.complete(line, pos).await
    }
}

/// How a reload looks in the REPL.
pub fn describe_reload(ev: &super::conductor::ReloadEvent) -> String {
    if ev.ok {
        format!(
            "[score reloaded: version {} in {:.0} ms]",
            ev.version, ev.ms
        )
    } else {
        format!(
            "[reload rejected, version {} keeps playing]\n{}",
            ev.version,
            ev.error.as_deref().unwrap_or("")
        )
    }
}
