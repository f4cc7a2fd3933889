//! How a score runs: sandbox policy, limits, where `print` goes, the event bus. One
//! value handed to every VM the conductor builds, so a reload runs under exactly the
//! rules of the first load.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::events::EventBus;
use crate::metrics::Metrics;

/// What a score may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// For shared scores: no programs (`os.execute`, `io.popen`), no files outside the
    /// score's folder, no native modules, no binary chunks, no environment variables.
    #[default]
    Shared,
    /// The full Lua standard library (`--allow-unsafe`): for scores you wrote yourself.
    Trusted,
}

/// Where `print` and echoed tokens go.
pub type Printer = Arc<dyn Fn(&str) + Send + Sync>;

/// Settings of the Lua runtime.
#[derive(Clone)]
pub struct ScoreOptions {
    pub sandbox: Sandbox,
    /// Bytes each Lua VM may allocate.
    pub memory_limit: usize,
    /// Lua CPU time one request (or one load, or one REPL line) may use. Time spent
    /// waiting for models does not count.
    pub cpu_limit: Duration,
    /// Optional wall-clock limit on one request, waiting for models included.
    pub request_timeout: Option<Duration>,
    /// The CPU budget is checked every this many Lua instructions.
    pub check_every: u32,
    /// Where `orchestra.rehearsal_model` writes the rehearsal band.
    pub rehearsal_dir: PathBuf,
    /// `orchestra check`: resolve and inspect models, never load or play them.
    pub check_only: bool,
    /// Where `print` goes (default: stdout).
    pub printer: Printer,
    /// Everything the runtime and the score report.
    pub events: EventBus,
    /// Where loads, evictions, tokens and reloads are counted.
    pub metrics: Metrics,
    /// Debounce of the file watcher (hot reload).
    pub reload_debounce: Duration,
    /// Instrument name → GGUF file played instead of the score's `model = ...`
    /// (`--model-file NAME=PATH`): try another file, or a local copy of an `hf:` model,
    /// without editing the score.
    pub overrides: BTreeMap<String, PathBuf>,
}

impl std::fmt::Debug for ScoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreOptions")
            .field("sandbox", &self.sandbox)
            .field("memory_limit", &self.memory_limit)
            .field("cpu_limit", &self.cpu_limit)
            .field("request_timeout", &self.request_timeout)
            .field("check_every", &self.check_every)
            .field("rehearsal_dir", &self.rehearsal_dir)
            .field("check_only", &self.check_only)
            .field("reload_debounce", &self.reload_debounce)
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// Default memory limit of one VM.
pub const DEFAULT_MEMORY_LIMIT: usize = 256 << 20;
/// Default Lua CPU budget of one request.
pub const DEFAULT_CPU_LIMIT: Duration = Duration::from_secs(5);

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            sandbox: Sandbox::Shared,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            cpu_limit: DEFAULT_CPU_LIMIT,
            request_timeout: None,
            check_every: 10_000,
            rehearsal_dir: crate::home::orchestra_home().join("rehearsal"),
            check_only: false,
            printer: Arc::new(|s: &str| println!("{s}")),
            events: EventBus::new(),
            metrics: Metrics::new(),
            reload_debounce: Duration::from_millis(40),
            overrides: BTreeMap::new(),
        }
    }
}

impl ScoreOptions {
    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }
    pub fn with_cpu_limit(mut self, limit: Duration) -> Self {
        self.cpu_limit = limit;
        self
    }
    pub fn with_request_timeout(mut self, limit: Option<Duration>) -> Self {
        self.request_timeout = limit;
        self
    }
    pub fn with_rehearsal_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rehearsal_dir = dir.into();
        self
    }
    pub fn with_check_only(mut self, check_only: bool) -> Self {
        self.check_only = check_only;
        self
    }
    pub fn with_printer(mut self, printer: Printer) -> Self {
        self.printer = printer;
        self
    }
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }
    pub fn with_reload_debounce(mut self, debounce: Duration) -> Self {
        self.reload_debounce = debounce;
        self
    }
    /// Plays `path` wherever the score adds the instrument `name`, whatever its
    /// `model = ...` says. A relative path starts at the current folder.
    pub fn with_model_override(
        mut self,
        name: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> Self {
        self.overrides.insert(name.into(), path.into());
        self
    }
}

/// Parses `10m`, `30s`, `1.5h`, `250ms`, `1m 30s` (humantime's syntax) or a bare number
/// of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_units_users_write() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}
