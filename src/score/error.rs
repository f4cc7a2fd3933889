//! Errors of the Lua side: loading, validating and playing scores. Lua errors are
//! flattened here into a message (with the file and line Lua reported) and the Lua
//! traceback, so every caller prints the same thing.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong with a score.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScoreError {
    #[error("cannot read score `{path}`: {reason}")]
    Read { path: PathBuf, reason: String },
    /// A Lua error: syntax, `error(...)`, a failed API call.
    #[error("{message}{}", traceback_suffix(.traceback))]
    Lua {
        /// The message with the `file:line:` prefix Lua gives it.
        message: String,
        /// The Lua stack traceback (`stack traceback:` and its lines), when there is one.
        traceback: Option<String>,
    },
    /// The score loaded but is not a usable score.
    #[error("score `{score}` {problem}")]
    Invalid { score: String, problem: String },
    /// A request ran Lua code longer than its CPU budget.
    #[error(
        "score `{score}`: {what} used more than {} of Lua CPU time (time waiting for models does not count) and was stopped{}: look for a loop that never ends, or raise the limit with `--cpu-limit`",
        human_duration(*.limit),
        location_suffix(.location)
    )]
    CpuLimit {
        score: String,
        what: String,
        limit: Duration,
        /// `file:line` where the loop was stopped, when known.
        location: Option<String>,
    },
    /// The VM hit its memory limit.
    #[error(
        "score `{score}`: {what} ran out of Lua memory (limit {limit}): {detail}; raise the limit with `--memory-limit` if the score really needs more"
    )]
    Memory {
        score: String,
        what: String,
        limit: String,
        detail: String,
    },
    /// A request ran longer than its wall-clock timeout.
    #[error("score `{score}`: {what} did not finish within {}", human_duration(*.limit))]
    Timeout {
        score: String,
        what: String,
        limit: Duration,
    },
    #[error("the request was cancelled")]
    Cancelled,
    #[error("the conductor thread has stopped")]
    Stopped,
    /// A model reference that cannot be used.
    #[error("{0}")]
    Model(String),
    /// The score failed because an instrument refused the request for a reason the
    /// client can fix (the prompt is over its context, a schema it cannot follow).
    #[error("{message}")]
    Refused { kind: Refusal, message: String },
}

/// Why an instrument refused a request the client could change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The prompt has more tokens than the instrument's context allows.
    ContextLength,
    /// Anything else about the request (empty prompt, a grammar or schema, a tool).
    InvalidRequest,
}

impl Refusal {
    /// The refusal an engine error amounts to, if it is the request's fault.
    pub fn of(e: &crate::engine::EngineError) -> Option<Refusal> {
        use crate::engine::EngineError as E;
        match e {
            E::PromptTooLong { .. } => Some(Refusal::ContextLength),
            E::EmptyPrompt
            | E::Grammar
            | E::Template { .. }
            | E::Schema { .. }
            | E::UnknownTool { .. } => Some(Refusal::InvalidRequest),
            _ => None,
        }
    }
}

fn traceback_suffix(t: &Option<String>) -> String {
    match t {
        Some(t) if !t.is_empty() => format!("\n{t}"),
        _ => String::new(),
    }
}

fn location_suffix(l: &Option<String>) -> String {
    match l {
        Some(l) => format!(" at {l}"),
        None => String::new(),
    }
}

/// `1s 500ms`, `250ms`, `10m`: to the millisecond, in the syntax the limits are given in
/// (`--cpu-limit 250ms`).
pub fn human_duration(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

impl ScoreError {
    /// The message without the traceback (one line for Lua errors).
    pub fn summary(&self) -> String {
        match self {
            ScoreError::Lua { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The Lua traceback, when the error has one.
    pub fn traceback(&self) -> Option<&str> {
        match self {
            ScoreError::Lua { traceback, .. } => traceback.as_deref(),
            _ => None,
        }
    }

    /// Flattens an mlua error: callback wrappers are peeled off (keeping the innermost
    /// traceback), contexts are kept as prefixes.
    pub(crate) fn from_lua(err: &mlua::Error) -> ScoreError {
        let (message, traceback) = flatten(err);
        ScoreError::Lua { message, traceback }
    }

    /// Whether the error is Lua running out of memory.
    pub(crate) fn lua_is_memory(err: &mlua::Error) -> bool {
        match err {
            mlua::Error::MemoryError(_) => true,
            mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
                ScoreError::lua_is_memory(cause)
            }
            mlua::Error::BadArgument { cause, .. } => ScoreError::lua_is_memory(cause),
            _ => false,
        }
    }
}

/// (message, traceback) of an mlua error.
pub(crate) fn flatten(err: &mlua::Error) -> (String, Option<String>) {
    use mlua::Error as E;
    match err {
        E::SyntaxError { message, .. } => (clean(message), None),
        E::RuntimeError(m) | E::MemoryError(m) => split_traceback(m),
        E::CallbackError { traceback, cause } => {
            let (message, inner) = flatten(cause);
            // The innermost traceback is the most precise one.
            (message, inner.or_else(|| Some(traceback.clone())))
        }
        E::WithContext { context, cause } => {
            let (message, tb) = flatten(cause);
            (format!("{context}: {message}"), tb)
        }
        E::BadArgument {
            to,
            pos,
            name,
            cause,
        } => {
            let (message, tb) = flatten(cause);
            let func = to.as_deref().unwrap_or("a function");
            let arg = match name {
                Some(n) => format!("argument #{pos} (`{n}`)"),
                None => format!("argument #{pos}"),
            };
            (format!("bad {arg} to `{func}`: {message}"), tb)
        }
        E::FromLuaConversionError { from, to, message } => {
            let mut s = format!("expected {}, got {from}", lua_type_name(to));
            if let Some(m) = message {
                s.push_str(&format!(" ({m})"));
            }
            (s, None)
        }
        E::ExternalError(e) => split_traceback(&e.to_string()),
        other => split_traceback(&other.to_string()),
    }
}

/// Rust type names in conversion errors, said the Lua way.
fn lua_type_name(rust: &str) -> String {
    match rust {
        "String" | "LuaString" | "string" => "a string".into(),
        "i32" | "i64" | "u32" | "u64" | "usize" | "isize" | "Integer" => "an integer".into(),
        "f32" | "f64" | "Number" => "a number".into(),
        "bool" => "a boolean".into(),
        "Table" | "table" => "a table".into(),
        "Function" | "function" => "a function".into(),
        other => format!("`{other}`"),
    }
}

fn split_traceback(m: &str) -> (String, Option<String>) {
    match m.find("\nstack traceback:") {
        Some(i) => (clean(&m[..i]), Some(m[i + 1..].trim_end().to_string())),
        None => (clean(m), None),
    }
}

fn clean(m: &str) -> String {
    m.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_split_message_and_traceback() {
        let e = mlua::Error::RuntimeError(
            "a.lua:3: boom\nstack traceback:\n\t[C]: in ?\n\ta.lua:3: in main chunk".into(),
        );
        let ScoreError::Lua { message, traceback } = ScoreError::from_lua(&e) else {
            panic!("not a Lua error")
        };
        assert_eq!(message, "a.lua:3: boom");
        assert!(traceback.unwrap().starts_with("stack traceback:"));
    }

    #[test]
    fn durations_read_as_they_are_written_on_the_command_line() {
        for (d, text) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1s 500ms"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_micros(5_000_400), "5s"),
        ] {
            assert_eq!(human_duration(d), text);
            let to_the_ms = Duration::from_millis(d.as_millis() as u64);
            assert_eq!(
                crate::score::parse_duration(text),
                Some(to_the_ms),
                "{text}"
            );
        }
    }
}
