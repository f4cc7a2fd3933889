//! Voice commands: a spoken transcript ("who's soloing?") matched to an [`Intent`] by
//! plain word rules, and the one-sentence replies worth speaking back. No HTTP and no
//! score here: `server::voice` carries out what an intent asks; this module only
//! understands and phrases, so every rule is testable as a table.

use serde::Serialize;

use crate::narrate::{list, stage_name};

/// What a transcript asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Intent {
    /// How the band is doing.
    Status,
    /// Who is soloing right now.
    Soloist,
    /// How much memory is left.
    Memory,
    /// Who leads a section.
    SectionLead { section: String },
    /// Make an instrument the lead of its section.
    SwitchLead { section: String, instrument: String },
    /// Keep an instrument on stage.
    Pin { instrument: String },
    /// Let a pinned instrument be unloaded again.
    Unpin { instrument: String },
    /// Take an instrument off stage now.
    Unload { instrument: String },
    /// Every section answers `prompt`, a leader merges (an empty prompt: ask for one).
    Jam { prompt: String },
    /// Stop what is playing.
    Stop,
    /// Nothing above.
    Unknown,
}

impl Intent {
    /// The intent's name as the API reports it (`switch_lead`).
    pub fn name(&self) -> &'static str {
        match self {
            Intent::Status => "status",
            Intent::Soloist => "soloist",
            Intent::Memory => "memory",
            Intent::SectionLead { .. } => "section_lead",
            Intent::SwitchLead { .. } => "switch_lead",
            Intent::Pin { .. } => "pin",
            Intent::Unpin { .. } => "unpin",
            Intent::Unload { .. } => "unload",
            Intent::Jam { .. } => "jam",
            Intent::Stop => "stop",
            Intent::Unknown => "unknown",
        }
    }
}

/// The names a transcript may mention: the score's instruments and sections.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub instruments: Vec<String>,
    pub sections: Vec<String>,
}

/// The spoken answer to what is not understood: what can be asked.
pub fn help(v: &Vocabulary) -> String {
    let example = v
        .instruments
        .first()
        .map(|i| stage_name(i))
        .unwrap_or_else(|| "Coltrane".into());
    let section = v.sections.first().map(String::as_str).unwrap_or("code");
    format!(
        "Sorry, I didn't catch that. You can ask for the status, who's soloing, how much memory is left, or who leads the {section} section; say make {example} the {section} lead, pin {example}, unload {example}, jam on a question, or stop."
    )
}

/// Lowercase words, apostrophes kept, contractions and possessives undone.
fn words(text: &str) -> Vec<String> {
    let text = text.replace(['’', '‘'], "'").to_lowercase();
    let mut out = Vec::new();
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '_')) {
        let w = raw.trim_matches('\'');
        if w.is_empty() {
            continue;
        }
        match w {
            "who's" => out.extend(["who", "is"].map(String::from)),
            "what's" => out.extend(["what", "is"].map(String::from)),
            "how's" => out.extend(["how", "is"].map(String::from)),
            "let's" => out.extend(["let", "us"].map(String::from)),
            "don't" => out.extend(["do", "not"].map(String::from)),
            _ => out.push(w.strip_suffix("'s").unwrap_or(w).to_string()),
        }
    }
    out
}

fn has(words: &[String], any: &[&str]) -> bool {
    words.iter().any(|w| any.contains(&w.as_str()))
}

/// A phrase of consecutive words.
fn has_phrase(words: &[String], phrase: &str) -> bool {
    let p: Vec<&str> = phrase.split(' ').collect();
    words
        .windows(p.len())
        .any(|w| w.iter().zip(&p).all(|(a, b)| a == b))
}

/// The first name of `names` the words mention (plural `codes` counts for `code`).
fn mention(words: &[String], names: &[String]) -> Option<String> {
    words.iter().find_map(|w| {
        names
            .iter()
            .find(|n| {
                let n = n.to_lowercase();
                *w == n || w.strip_suffix('s') == Some(n.as_str())
            })
            .cloned()
    })
}

/// What follows the word `jam` (and `session`, `on`, `about`, ...) in the transcript,
/// with its own capitals.
fn jam_prompt(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let Some(at) = lower.match_indices("jam").map(|(i, _)| i).find(|&i| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + 3..].chars().next();
        !before.is_some_and(char::is_alphanumeric)
            && !after.is_some_and(|c| c.is_alphanumeric() && c != 's')
    }) else {
        return String::new();
    };
    let mut rest = text[at + 3..].trim_start_matches(|c: char| c.is_alphanumeric());
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ':' || c == ',');
        let token = trimmed.split_whitespace().next().unwrap_or("");
        let word = token.trim_end_matches([':', ',']).to_ascii_lowercase();
        if [
            "session",
            "on",
            "about",
            "with",
            "over",
            "around",
            "regarding",
        ]
        .contains(&word.as_str())
        {
            rest = &trimmed[token.len()..];
        } else {
            rest = trimmed;
            break;
        }
    }
    rest.trim().trim_end_matches(['.', '!']).trim().to_string()
}

/// Matches a transcript. Order matters: a jam prompt may contain any word ("jam on
/// how to stop a thread"), so jams come first; a switch names an instrument where a
/// question about the lead does not.
pub fn parse(text: &str, v: &Vocabulary) -> Intent {
    let w = words(text);
    if w.is_empty() {
        return Intent::Unknown;
    }
    if has(&w, &["jam", "jamming"]) {
        return Intent::Jam {
            prompt: jam_prompt(text),
        };
    }
    if has(
        &w,
        &[
            "stop", "cancel", "halt", "abort", "enough", "quiet", "silence",
        ],
    ) || has_phrase(&w, "shut up")
    {
        return Intent::Stop;
    }
    let instrument = mention(&w, &v.instruments);
    let section = mention(&w, &v.sections);
    let leading = has(&w, &["lead", "leads", "leader", "leading", "lead's"]);
    if leading && let Some(section) = &section {
        let asking = has(&w, &["who", "what", "which", "whose", "tell"])
            && !has(
                &w,
                &["make", "set", "switch", "swap", "change", "let", "put"],
            );
        return match instrument {
            Some(instrument) if !asking => Intent::SwitchLead {
                section: section.clone(),
                instrument,
            },
            _ => Intent::SectionLead {
                section: section.clone(),
            },
        };
    }
    if let Some(instrument) = instrument {
        if has(&w, &["unpin", "unpinned"]) {
            return Intent::Unpin { instrument };
        }
        if has(&w, &["pin", "pinned", "keep", "hold"]) {
            return Intent::Pin { instrument };
        }
        if has(
            &w,
            &[
                "unload", "evict", "dismiss", "drop", "offstage", "off", "remove",
            ],
        ) {
            return Intent::Unload { instrument };
        }
    }
    if has(&w, &["solo", "soloing", "soloist", "playing", "plays"]) {
        return Intent::Soloist;
    }
    if has(&w, &["memory", "ram", "room", "space", "budget"]) {
        return Intent::Memory;
    }
    if has(
        &w,
        &[
            "status", "doing", "going", "report", "band", "stage", "update",
        ],
    ) {
        return Intent::Status;
    }
    Intent::Unknown
}

/// The reply to a switch of leads.
pub fn switched(section: &str, instrument: &str, before: Option<&str>) -> String {
    match before {
        Some(b) if b != instrument => format!(
            "{} now leads the {section} section, taking over from {}.",
            stage_name(instrument),
            stage_name(b)
        ),
        Some(_) => format!(
            "{} already leads the {section} section.",
            stage_name(instrument)
        ),
        None => format!(
            "{} now leads the {section} section.",
            stage_name(instrument)
        ),
    }
}

/// The reply naming a section's lead.
pub fn lead_of(section: &str, lead: Option<&str>, others: &[String]) -> String {
    match lead {
        None => format!("Nobody plays in the {section} section."),
        Some(l) if others.is_empty() => format!("{} leads the {section} section.", stage_name(l)),
        Some(l) => format!(
            "{} leads the {section} section, with {} standing by.",
            stage_name(l),
            list(others)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocabulary {
        Vocabulary {
            instruments: ["coltrane", "ella", "monk"].map(String::from).to_vec(),
            sections: ["code", "creative"].map(String::from).to_vec(),
        }
    }

    #[test]
    fn jam_prompts_keep_their_words() {
        assert_eq!(
            jam_prompt("Start a jam on Why is the sky blue?"),
            "Why is the sky blue?"
        );
        assert_eq!(
            jam_prompt("jam session about: Rust lifetimes."),
            "Rust lifetimes"
        );
        assert_eq!(jam_prompt("let's jam"), "");
    }

    #[test]
    fn help_lists_what_is_understood() {
        let h = help(&vocab());
        for w in [
            "status", "soloing", "memory", "lead", "pin", "unload", "jam", "stop",
        ] {
            assert!(h.contains(w), "{w}: {h}");
        }
    }
}
