//! Download progress on the terminal: indicatif bars (one per file plus a total line)
//! as a [`ProgressSink`] for the hub's pulls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{BinaryBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::hub::{Progress, ProgressEvent, ProgressSink};

/// Bars on stderr: one per file (bytes, speed, ETA) and a total line. indicatif hides
/// them when stderr is not a terminal.
pub fn bars() -> Progress {
    bars_to(ProgressDrawTarget::stderr())
}

/// Bars drawn to `target` (a hidden target in tests).
pub fn bars_to(target: ProgressDrawTarget) -> Progress {
    Progress::new(Arc::new(Bars {
        multi: MultiProgress::with_draw_target(target),
        state: Mutex::new(BarState::default()),
    }))
}

struct Bars {
    multi: MultiProgress,
    // A std Mutex: events arrive from several download tasks, each holds it for a few
    // bar updates and never across an await.
    state: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    total: Option<ProgressBar>,
    /// Files announced by every plan so far.
    planned: usize,
    files: HashMap<String, (ProgressBar, u64)>,
}

const FILE_TEMPLATE: &str = "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}";
const TOTAL_TEMPLATE: &str =
    "{prefix:.bold} [{bar:30.green/white}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    /// A line above the bars; on a non-terminal, where bars are hidden, plain stderr.
    fn line(&self, text: String) {
        if self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }

    fn total_add(state: &BarState, delta: u64) {
        if let Some(total) = &state.total {
            total.inc(delta);
        }
    }
}

impl ProgressSink for Bars {
    fn event(&self, event: &ProgressEvent) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match event {
            ProgressEvent::Planned { files, bytes } => {
                if *files > 0 {
                    let total = match state.total.take() {
                        // Several plans in one run (play pulling model after model) add up.
                        Some(bar) => {
                            bar.inc_length(*bytes);
                            bar
                        }
                        None => {
                            let bar = self.multi.add(ProgressBar::new(*bytes));
                            bar.set_style(style(TOTAL_TEMPLATE));
                            bar
                        }
                    };
                    state.planned += files;
                    total.set_prefix(format!("total ({} files)", state.planned));
                    total.enable_steady_tick(Duration::from_millis(250));
                    state.total = Some(total);
                }
            }
            ProgressEvent::Cached { file, size } => {
                self.line(format!("  {file} is in the cache ({})", BinaryBytes(*size)));
            }
            ProgressEvent::Started { file, size, from } => {
                let bar = match &state.total {
                    Some(total) => self.multi.insert_before(total, ProgressBar::new(*size)),
                    None => self.multi.add(ProgressBar::new(*size)),
                };
                bar.set_style(style(FILE_TEMPLATE));
                bar.set_prefix(short(file));
                bar.set_position(*from);
                bar.reset_eta();
                if *from > 0 {
                    bar.set_message(format!("(resumed at {})", BinaryBytes(*from)));
                }
                Bars::total_add(&state, *from);
                state.files.insert(file.clone(), (bar, *from));
            }
            ProgressEvent::Advanced { file, done, .. } => {
                let Some((bar, last)) = state.files.get_mut(file) else {
                    return;
                };
                let delta = done.saturating_sub(*last);
                *last = *done;
                bar.set_position(*done);
                Bars::total_add(&state, delta);
            }
            ProgressEvent::Retrying { file, at, reason } => {
                self.line(format!(
                    "  {file}: connection lost at {} ({reason}), resuming",
                    BinaryBytes(*at)
                ));
            }
            ProgressEvent::Refetching { file, reason } => {
                self.line(format!("  {file} is corrupt ({reason}), fetching it again"));
            }
            ProgressEvent::Note(text) => {
                self.line(format!("  {text}"));
            }
            ProgressEvent::Verifying { file } => {
                if let Some((bar, _)) = state.files.get(file) {
                    bar.set_message("verifying sha256");
                }
            }
            ProgressEvent::Failed { file, .. } => {
                if let Some((bar, _)) = state.files.get(file) {
                    bar.abandon_with_message("failed");
                }
                if let Some(total) = &state.total {
                    total.abandon();
                }
            }
            ProgressEvent::Finished { file, .. } => {
                if let Some((bar, _)) = state.files.get(file) {
                    bar.finish_with_message("done");
                }
                let all_done = state.files.values().all(|(b, _)| b.is_finished());
                if all_done
                    && let Some(total) = &state.total
                    && total.position() >= total.length().unwrap_or(0)
                {
                    total.finish();
                }
            }
        }
    }
}

/// The last path component, so bars stay on one line.
fn short(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    if name.chars().count() > 48 {
        let tail: String = name
            .chars()
            .rev()
            .take(45)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("...{tail}")
    } else {
        name.to_string()
    }
}
