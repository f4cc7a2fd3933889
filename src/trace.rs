//! The arrangement trace for people, and the narrator: `play --trace` prints the trace
//! an arrangement returned (`answer.data.trace`, written by `stdlib/trace.lua`) as a
//! short readable table; `--narrate` turns the event bus into spoken-style lines and
//! `--say CMD` pipes each line to a text-to-speech command. Reads JSON and events only;
//! it never runs a score.

use std::fmt::Write as _;

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::events::{Event, EventBus};
use crate::narrate::{Speaker, Teller, list, stage_name};

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn n(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn items(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn names(v: &Value, key: &str) -> Vec<String> {
    items(v, key)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

fn who(v: &Value, key: &str) -> String {
    s(v, key).map(stage_name).unwrap_or_else(|| "?".into())
}

/// One line of text: newlines as spaces, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 1000.0 => format!("{:.2} s", x / 1000.0),
        Some(x) if x >= 10.0 => format!("{x:.0} ms"),
        Some(x) => format!("{x:.2} ms"),
        None => "?".into(),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Renders an arrangement trace (`answer.data.trace`) as a readable table: routing and
/// why, comping notes, the solo, fallbacks, each review verdict and revision, jam and
/// cascade steps, the answer, then tempo (tokens/s) and swing (timing steadiness, 1.0
/// = perfectly steady) per instrument. Missing parts are left out.
pub fn render_trace(trace: &Value) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "arrangement ({})", ms(n(trace, "ms")));
    let row = |w: &mut String, label: &str, text: String| {
        let _ = writeln!(w, "  {label:<10}{text}");
    };

    if let Some(r) = trace.get("route") {
        let mut text = s(r, "section").unwrap_or("?").to_string();
        if let Some(rule) = r.get("rule").and_then(Value::as_i64) {
            let kind = s(r, "kind").unwrap_or("rule");
            match s(r, "name") {
                Some(name) => {
                    let _ = write!(text, " — rule {rule} \"{name}\" ({kind})");
                }
                None => {
                    let _ = write!(text, " — rule {rule} ({kind})");
                }
            }
        }
        if let Some(why) = s(r, "why") {
            let _ = write!(text, ": {why}");
        }
        if let Some(us) = n(r, "us") {
            let _ = write!(text, " [{}]", ms(Some(us / 1000.0)));
        }
        row(w, "route", text);
        for t in items(r, "tried") {
            let label = match s(&t, "name") {
                Some(name) => format!("\"{name}\""),
                None => s(&t, "kind").unwrap_or("rule").to_string(),
            };
            let _ = writeln!(
                w,
                "{:12}passed over rule {} {label}: {}",
                "",
                t.get("rule").and_then(Value::as_i64).unwrap_or(0),
                s(&t, "why").unwrap_or("no match")
            );
        }
    }

    if let Some(c) = trace.get("comp") {
        let players = names(c, "players");
        let mut text = list(&players);
        if let Some(max) = n(c, "max_tokens") {
            let _ = write!(text, " — up to {max:.0} tokens each");
        }
        let _ = write!(text, ", {}", ms(n(c, "ms")));
        row(w, "comp", text);
        for note in items(c, "notes") {
            let _ = writeln!(
                w,
                "{:12}{} ({}): {}",
                "",
                who(&note, "player"),
                s(&note, "section").unwrap_or("?"),
                one_line(s(&note, "text").unwrap_or(""), 72)
            );
        }
        for f in items(c, "failed") {
            let _ = writeln!(
                w,
                "{:12}{} did not comp: {}",
                "",
                who(&f, "player"),
                one_line(s(&f, "error").unwrap_or(""), 72)
            );
        }
    }

    if let Some(j) = trace.get("jam") {
        let players = names(j, "players");
        let mut text = format!("{} played", list(&players));
        if let Some(leader) = s(j, "leader") {
            let _ = write!(text, "; {} merged", stage_name(leader));
        }
        row(w, "jam", text);
        for p in items(j, "parts") {
            let _ = writeln!(
                w,
                "{:12}{} ({}): {}",
                "",
                who(&p, "player"),
                s(&p, "section").unwrap_or("?"),
                one_line(s(&p, "text").unwrap_or(""), 72)
            );
        }
    }

    if let Some(v) = trace.get("vote") {
        let takes = items(v, "takes");
        let mut players = names(v, "players");
        players.dedup();
        let mut text = format!("{} — {} takes", list(&players), takes.len());
        if let Some(why) = s(v, "why") {
            let _ = write!(text, ", {why}");
        }
        if let Some(p) = v.get("picked").and_then(Value::as_u64) {
            let _ = write!(text, "; take {p} goes out");
        }
        let _ = write!(text, ", {}", ms(n(v, "ms")));
        row(w, "vote", text);
    }

    if let Some(c) = trace.get("cascade") {
        let steps: Vec<String> = items(c, "steps")
            .iter()
            .map(|step| {
                let verdict = s(step, "verdict")
                    .map(str::to_owned)
                    .or_else(|| step.get("error").map(|_| "failed".to_owned()))
                    .unwrap_or_else(|| "?".into());
                format!("{} ({verdict})", who(step, "player"))
            })
            .collect();
        let escalations = c.get("escalations").and_then(Value::as_u64).unwrap_or(0);
        row(
            w,
            "cascade",
            format!(
                "{} — {}",
                steps.join(" → "),
                plural(escalations, "escalation", "escalations")
            ),
        );
    }

    if let Some(solo) = trace.get("solo")
        && let Some(player) = s(solo, "player")
    {
        let mut text = format!(
            "{} ({})",
            stage_name(player),
            s(solo, "section").unwrap_or("?")
        );
        if let Some(t) = n(solo, "tokens") {
            let _ = write!(text, " — {t:.0} tokens");
        }
        if let Some(notes) = n(solo, "notes").filter(|x| *x > 0.0) {
            let _ = write!(
                text,
                ", with notes from {}",
                plural(notes as u64, "player", "players")
            );
        }
        row(w, "solo", text);
    }

    // Parts the arrangement left out, and why (an agent's turn plays the soloist alone).
    for sk in items(trace, "skipped") {
        row(
            w,
            "skipped",
            format!(
                "{}: {}",
                s(&sk, "part").unwrap_or("?"),
                s(&sk, "why").unwrap_or("?")
            ),
        );
    }

    // Tool calls the score's policy kept from the client.
    if let Some(tools) = trace.get("tools") {
        for b in items(tools, "blocked") {
            row(
                w,
                "tools",
                format!(
                    "blocked `{}` {}: {}",
                    s(&b, "name").unwrap_or("?"),
                    one_line(s(&b, "arguments").unwrap_or(""), 48),
                    s(&b, "why").unwrap_or("?")
                ),
            );
        }
        if let Some(again) = s(tools, "asked_again") {
            row(w, "tools", format!("asked the soloist again {again}"));
        }
    }

    for f in items(trace, "fallbacks") {
        let to = s(&f, "to")
            .map(|t| format!(" → {}", stage_name(t)))
            .unwrap_or_else(|| " (nobody left)".into());
        let when = match n(&f, "pieces") {
            Some(p) if f.get("mid_stream").and_then(Value::as_bool) == Some(true) => {
                format!(", mid-stream after {p:.0} pieces")
            }
            _ => String::new(),
        };
        row(
            w,
            "fallback",
            format!(
                "{}{to} ({}{when}): {}",
                who(&f, "from"),
                s(&f, "role").unwrap_or("?"),
                one_line(s(&f, "error").unwrap_or(""), 80)
            ),
        );
    }

    let revisions = items(trace, "revisions");
    for r in items(trace, "reviews") {
        let round = r.get("round").and_then(Value::as_i64);
        let label = match round {
            Some(k) => format!("review {k}"),
            None => "review".into(),
        };
        let verdict = s(&r, "verdict").unwrap_or("?");
        let mut text = format!(
            "{} on {}: {verdict}",
            who(&r, "reviewer"),
            who(&r, "author")
        );
        let problems = names(&r, "problems");
        if !problems.is_empty() {
            let _ = write!(text, " — {}", one_line(&problems.join("; "), 80));
        }
        if r.get("unreadable").and_then(Value::as_bool) == Some(true) {
            let _ = write!(text, " (unreadable, also when asked again: not approved)");
        } else if r.get("retried").and_then(Value::as_bool) == Some(true) {
            let _ = write!(text, " (readable when asked again)");
        }
        if let Some(why) = s(&r, "why") {
            let _ = write!(text, " ({why})");
        }
        row(w, &label, text);
        if let Some(k) = round {
            for v in revisions
                .iter()
                .filter(|v| v.get("round").and_then(Value::as_i64) == Some(k))
            {
                let text = match s(v, "error") {
                    Some(e) => format!("{} could not: {}", who(v, "player"), one_line(e, 80)),
                    None => format!(
                        "{} — {} tokens",
                        who(v, "player"),
                        n(v, "tokens").unwrap_or(0.0)
                    ),
                };
                row(w, &format!("revise {k}"), text);
            }
        }
    }

    if let Some(a) = trace.get("answer") {
        let mut text = format!(
            "{} ({}), {} characters",
            who(a, "player"),
            s(a, "section").unwrap_or("?"),
            n(a, "chars").unwrap_or(0.0)
        );
        if let Some(k) = a.get("revisions").and_then(Value::as_u64) {
            let _ = write!(text, ", {}", plural(k, "revision", "revisions"));
        }
        if a.get("unreviewed").and_then(Value::as_bool) == Some(true) {
            let _ = write!(text, ", unreviewed");
        }
        row(w, "answer", text);
    }

    // Prompts that were not all computed: where the rest came from.
    for p in items(trace, "plays") {
        let Some(src) = p.get("prompt_sources") else {
            continue;
        };
        let k = |key: &str| src.get(key).and_then(Value::as_u64).unwrap_or(0);
        if k("slot") + k("ram") + k("disk") == 0 {
            continue;
        }
        let parts: Vec<String> = [
            ("slot", "from its slot"),
            ("ram", "from a snapshot in RAM"),
            ("disk", "from a snapshot on disk"),
            ("computed", "computed"),
        ]
        .iter()
        .filter(|(key, _)| k(key) > 0)
        .map(|(key, what)| format!("{} {what}", k(key)))
        .collect();
        row(
            w,
            "prompt",
            format!(
                "{} ({}): {}",
                who(&p, "player"),
                s(&p, "role").unwrap_or("?"),
                parts.join(", ")
            ),
        );
    }

    let instruments = items(trace, "instruments");
    if !instruments.is_empty() {
        let _ = writeln!(
            w,
            "  tempo (tokens/s) and swing (1.0 = perfectly steady timing)"
        );
        let width = instruments
            .iter()
            .map(|i| s(i, "name").map(str::len).unwrap_or(1))
            .max()
            .unwrap_or(1);
        for i in &instruments {
            let tempo = n(i, "tempo")
                .map(|t| format!("{t:>8.1} tok/s"))
                .unwrap_or_else(|| format!("{:>14}", "—"));
            let swing = n(i, "swing")
                .map(|x| format!("swing {x:.2}"))
                .unwrap_or_else(|| "swing —   ".into());
            let remote = s(i, "remote")
                .map(|u| format!(" (remote, {u})"))
                .unwrap_or_default();
            let _ = writeln!(
                w,
                "    {:<width$}  {tempo}  {swing}  {} in {}: {}{remote}",
                who(i, "name"),
                plural(
                    i.get("tokens").and_then(Value::as_u64).unwrap_or(0),
                    "token",
                    "tokens"
                ),
                plural(
                    i.get("calls").and_then(Value::as_u64).unwrap_or(0),
                    "call",
                    "calls"
                ),
                names(i, "roles").join(", "),
            );
        }
    }
    out
}

/// Listens to the event bus and turns arrangement events into spoken-style lines
/// ("Mingus is reviewing Coltrane's solo."): printed as they happen when asked, spoken
/// through a text-to-speech command when given, and collected for [`Narrator::finish`].
/// Needs a tokio runtime.
pub struct Narrator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Vec<String>>>,
}

/// Where a narrator prints each line as it happens.
pub type LinePrinter = Box<dyn FnMut(&str) + Send>;

impl Narrator {
    /// Starts listening now: events emitted before this call are not narrated.
    /// `print` receives each line as it happens (e.g. print to stderr); `say` speaks it
    /// (a failing command is reported once on stderr, then left alone).
    pub fn start(bus: &EventBus, say: Option<Speaker>, mut print: Option<LinePrinter>) -> Narrator {
        let mut rx = bus.subscribe();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut lines = Vec::new();
            let mut say = say.map(std::sync::Arc::new);
            let mut teller = Teller::default();
            let mut narrate = async |event: Option<Event>, lines: &mut Vec<String>| {
                let told = match event {
                    Some(e) => teller.tell(&e),
                    None => teller.flush().into_iter().collect(),
                };
                for text in told {
                    if let Some(p) = print.as_mut() {
                        p(&text);
                    }
                    if let Some(speaker) = say.clone() {
                        let spoken = text.clone();
                        let res = tokio::task::spawn_blocking(move || speaker.say(&spoken)).await;
                        if let Ok(Err(e)) = res {
                            eprintln!("warning: --say: {e}; narration goes on in text only");
                            say = None;
                        }
                    }
                    lines.push(text);
                }
            };
            loop {
                tokio::select! {
                    biased;
                    r = rx.recv() => match r {
                        Ok(e) => narrate(Some(e), &mut lines).await,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = &mut stopped => {
                        // Everything emitted before the stop is in the channel already:
                        // narrate it, then end.
                        loop {
                            match rx.try_recv() {
                                Ok(e) => narrate(Some(e), &mut lines).await,
                                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                                Err(_) => break,
                            }
                        }
                        break;
                    }
                }
            }
            narrate(None, &mut lines).await;
            lines
        });
        Narrator {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Narrates everything emitted so far, stops, and returns every line in order.
    pub async fn finish(mut self) -> Vec<String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

impl Drop for Narrator {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_not_all_computed_says_where_the_rest_came_from() {
        let trace = serde_json::json!({ "plays": [
            { "player": "coltrane", "role": "solo",
              "prompt_sources": { "slot": 0, "ram": 0, "disk": 12000, "computed": 40 } },
            { "player": "monk", "role": "comp",
              "prompt_sources": { "slot": 0, "ram": 0, "disk": 0, "computed": 300 } },
        ]});
        let text = render_trace(&trace);
        assert!(
            text.contains("12000 from a snapshot on disk, 40 computed"),
            "{text}"
        );
        // A prompt computed in full adds nothing.
        assert_eq!(text.matches("prompt").count(), 1, "{text}");
    }
}
