//! Narration: turns events into short spoken-style lines ("Mingus is reviewing
//! Coltrane's solo") for the terminal and for a text-to-speech command. It only reads
//! the event bus; arrangements report what they do with `orchestra.emit(name, data)`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::events::{Event, EventKind};

/// "coltrane" -> "Coltrane".
pub fn stage_name(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "Monk", "Monk and Ella", "Monk, Ella and Mingus".
pub fn list(names: &[String]) -> String {
    let names: Vec<String> = names.iter().map(|n| stage_name(n)).collect();
    match names.len() {
        0 => "nobody".into(),
        1 => names[0].clone(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

fn s(data: &Value, key: &str) -> String {
    data.get(key)
        .and_then(Value::as_str)
        .map(stage_name)
        .unwrap_or_else(|| "someone".into())
}

fn names(data: &Value, key: &str) -> Vec<String> {
    data.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn possessive(name: &str) -> String {
    if name.ends_with('s') {
        format!("{name}'")
    } else {
        format!("{name}'s")
    }
}

/// The spoken line for an event, if it deserves one.
pub fn line(event: &Event) -> Option<String> {
    match &event.kind {
        EventKind::ModelLoading { model, .. } => {
            Some(format!("{} is walking on stage.", stage_name(model)))
        }
        EventKind::ModelEvicted { model, .. } => {
            Some(format!("{} leaves the stage.", stage_name(model)))
        }
        EventKind::ModelLoadFailed { model, .. } => {
            Some(format!("{} could not make it tonight.", stage_name(model)))
        }
        EventKind::Custom { name, data } => custom_line(name, data),
        _ => None,
    }
}

/// Tells lines in the order a listener expects. The score announces a part ("Coltrane
/// is taking a solo") before the player's model is loaded, so the bus carries the
/// announcement first and the loading second; told that way, the player takes a solo
/// before walking on stage. A part's line is held until the next event: the loading of
/// one of its players is told first, anything else lets it go.
#[derive(Debug, Default)]
pub struct Teller {
    /// A part's line and the stage names of its players.
    held: Option<(String, Vec<String>)>,
}

impl Teller {
    /// Takes the next event; returns the lines to tell now, in order.
    pub fn tell(&mut self, event: &Event) -> Vec<String> {
        let mut out = Vec::new();
        if let (EventKind::ModelLoading { model, .. }, Some((_, players))) =
            (&event.kind, &self.held)
            && players.contains(&stage_name(model))
        {
            out.extend(line(event));
            return out;
        }
        out.extend(self.flush());
        let Some(text) = line(event) else { return out };
        match part_players(event) {
            Some(players) if !players.is_empty() => self.held = Some((text, players)),
            _ => out.push(text),
        }
        out
    }

    /// The held line, if any (call when no more events come).
    pub fn flush(&mut self) -> Option<String> {
        self.held.take().map(|(text, _)| text)
    }
}

/// The stage names of the players an announced part is about to play with.
fn part_players(event: &Event) -> Option<Vec<String>> {
    let EventKind::Custom { name, data } = &event.kind else {
        return None;
    };
    let keys: &[&str] = match name.as_str() {
        "solo" | "revise" => &["player"],
        "comp" => &["players"],
        "review" => &["reviewer"],
        "jam" | "vote" => &["players"],
        _ => return None,
    };
    let mut players = Vec::new();
    for k in keys {
        match data.get(*k) {
            Some(Value::String(p)) => players.push(stage_name(p)),
            Some(Value::Array(ps)) => {
                players.extend(ps.iter().filter_map(Value::as_str).map(stage_name))
            }
            _ => {}
        }
    }
    Some(players)
}

fn custom_line(name: &str, d: &Value) -> Option<String> {
    Some(match name {
        "routed" => format!(
            "This one is for the {} section.",
            d.get("section").and_then(Value::as_str).unwrap_or("main")
        ),
        "solo" => format!("{} is taking a solo.", s(d, "player")),
        "comp" => {
            let players = names(d, "players");
            let verb = if players.len() == 1 { "is" } else { "are" };
            format!("{} {verb} comping.", list(&players))
        }
        "review" if d.get("retry").and_then(Value::as_bool) == Some(true) => {
            format!("{} is asked again for a verdict.", s(d, "reviewer"))
        }
        "review" => format!(
            "{} is reviewing {} solo.",
            s(d, "reviewer"),
            possessive(&s(d, "author"))
        ),
        "verdict" => {
            let who = s(d, "reviewer");
            match d.get("verdict").and_then(Value::as_str) {
                Some("approve") => format!("{who} approves."),
                Some("unreadable") => {
                    format!("{who} gives no readable verdict; it goes out unreviewed.")
                }
                _ => format!("{who} wants another take."),
            }
        }
        "revise" => format!("{} plays it again.", s(d, "player")),
        "tool_guard" => {
            let tools: Vec<String> = d
                .get("blocked")
                .and_then(Value::as_array)
                .map(|b| {
                    b.iter()
                        .filter_map(|x| x.get("name").and_then(Value::as_str))
                        .map(|n| format!("`{n}`"))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "The band holds back {} call to {}.",
                possessive(&s(d, "player")),
                tools.join(", ")
            )
        }
        "jam" => format!("Jam session: {} all play.", list(&names(d, "players"))),
        "vote" => {
            let mut players = names(d, "players");
            let n = players.len();
            players.dedup();
            if players.len() == 1 {
                format!("{} plays {n} takes.", stage_name(&players[0]))
            } else {
                format!("{} each play a take.", list(&players))
            }
        }
        "voted" => match d.get("agreeing").and_then(Value::as_u64) {
            Some(k) => format!(
                "{k} of {} takes agree; {} take goes out.",
                d.get("of").and_then(Value::as_u64).unwrap_or(0),
                possessive(&s(d, "player"))
            ),
            None => format!("{} take is picked.", possessive(&s(d, "player"))),
        },
        "merge" => format!("{} brings it all together.", s(d, "leader")),
        "escalate" => format!("{} hands it over to {}.", s(d, "from"), s(d, "to")),
        "fallback" => format!("{} dropped out; {} steps in.", s(d, "from"), s(d, "to")),
        "say" => d.get("text").and_then(Value::as_str)?.to_owned(),
        _ => return None,
    })
}

/// Speaks lines through a text-to-speech command. With `{}` in the command the line
/// replaces it (as one shell-quoted word); otherwise the line goes to its stdin
/// (`espeak-ng --stdin`, `piper ...`).
#[derive(Debug, Clone)]
pub struct Speaker {
    command: String,
}

impl Speaker {
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
        }
    }

    /// Speak one line and wait until the command has taken it.
    pub fn say(&self, line: &str) -> std::io::Result<()> {
        let (cmd, stdin_line) = if self.command.contains("{}") {
            (self.command.replace("{}", &shell_quote(line)), None)
        } else {
            (self.command.clone(), Some(line))
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        if let Some(text) = stdin_line
            && let Some(mut stdin) = child.stdin.take()
        {
            let _ = writeln!(stdin, "{text}");
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "`{}` exited with {status}",
                self.command
            )));
        }
        Ok(())
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn custom(name: &str, data: Value) -> Event {
        Event::new(EventKind::Custom {
            name: name.into(),
            data,
        })
    }

    fn loading(model: &str) -> Event {
        Event::new(EventKind::ModelLoading {
            model: model.into(),
            estimate_bytes: 0,
        })
    }

    #[test]
    fn a_player_walks_on_stage_before_taking_the_solo_it_was_announced_for() {
        let mut t = Teller::default();
        let mut told = Vec::new();
        for e in [
            custom("routed", json!({"section": "code"})),
            custom("solo", json!({"player": "coltrane"})),
            loading("coltrane"),
            loading("mingus"),
            custom(
                "review",
                json!({"reviewer": "mingus", "author": "coltrane"}),
            ),
            custom(
                "verdict",
                json!({"reviewer": "mingus", "verdict": "approve"}),
            ),
        ] {
            told.extend(t.tell(&e));
        }
        told.extend(t.flush());
        assert_eq!(
            told,
            [
                "This one is for the code section.",
                "Coltrane is walking on stage.",
                "Coltrane is taking a solo.",
                "Mingus is walking on stage.",
                "Mingus is reviewing Coltrane's solo.",
                "Mingus approves.",
            ]
        );
    }

    #[test]
    fn arrangement_events_read_as_short_spoken_lines() {
        let cases = [
            (
                custom("solo", json!({"player": "coltrane"})),
                "Coltrane is taking a solo.",
            ),
            (
                custom("comp", json!({"players": ["monk", "ella"]})),
                "Monk and Ella are comping.",
            ),
            (
                custom(
                    "review",
                    json!({"reviewer": "mingus", "author": "coltrane"}),
                ),
                "Mingus is reviewing Coltrane's solo.",
            ),
            (
                custom(
                    "verdict",
                    json!({"reviewer": "mingus", "verdict": "revise"}),
                ),
                "Mingus wants another take.",
            ),
            (
                custom("jam", json!({"players": ["monk", "ella", "coltrane"]})),
                "Jam session: Monk, Ella and Coltrane all play.",
            ),
            (
                custom("escalate", json!({"from": "ella", "to": "monk"})),
                "Ella hands it over to Monk.",
            ),
        ];
        for (event, want) in cases {
            assert_eq!(line(&event).as_deref(), Some(want));
        }
        assert_eq!(line(&custom("something-else", json!({}))), None);
    }

    #[test]
    fn a_speaker_pipes_lines_to_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spoken.txt");
        let stdin = Speaker::new(format!("cat >> {}", out.display()));
        stdin.say("Monk is comping.").unwrap();
        let arg = Speaker::new(format!("echo {{}} >> {}", out.display()));
        arg.say("It's Ella's turn.").unwrap();
        let spoken = std::fs::read_to_string(&out).unwrap();
        assert_eq!(spoken, "Monk is comping.\nIt's Ella's turn.\n");
        assert!(Speaker::new("exit 3").say("x").is_err());
    }
}
