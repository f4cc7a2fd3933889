//! Rehearsal models: tiny llama models whose greedy output is a fixed script followed
//! by `<|im_end|>`, whatever the prompt. They stand in for real models in tests and
//! demos. Owns script splitting and the rehearsal band; the weights are `model.rs`'s.
//!
//! A prompt must end with a token that is not one of the script's pieces (a ChatML
//! prompt ends with `\n` after `<|im_start|>assistant`, a byte token never used by a
//! script); a prompt ending inside the script resumes the script from there.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::error::SynthError;
use super::gguf::TensorType;
use super::model::{LlamaSpec, ReplayChain, Weights, hash_str, model_writer};
use super::vocab::{SPACE, Vocab};
use crate::gguf::read_header;

/// Metadata key holding the script a rehearsal model replays.
pub const REHEARSAL_SCRIPT_KEY: &str = "orchestra.rehearsal.script";
/// Metadata key holding [`REHEARSAL_FORMAT`].
pub const REHEARSAL_FORMAT_KEY: &str = "orchestra.rehearsal.format";
/// Bumped whenever the layout of rehearsal models changes, so
/// [`write_rehearsal_band`] rewrites stale files.
pub const REHEARSAL_FORMAT: u32 = 1;
/// The type rehearsal band models are written in: quantised like the real models
/// they stand in for.
pub const BAND_DTYPE: TensorType = TensorType::Q8_0;

/// Longest script, in pieces: each piece costs an embedding dimension.
const MAX_PIECES: usize = 4000;

/// What a rehearsal model will say.
#[derive(Debug, Clone, PartialEq)]
pub struct RehearsalInfo {
    pub name: String,
    /// The exact text greedy decoding produces before end-of-generation.
    pub text: String,
    /// The vocabulary pieces of the text, in order (`▁` for spaces).
    pub pieces: Vec<String>,
    pub piece_count: usize,
    pub n_vocab: usize,
    pub n_embd: u32,
    /// File size in bytes.
    pub bytes: u64,
}

/// One member of the rehearsal band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RehearsalMember {
    /// Model name and file stem (`coltrane` → `coltrane.gguf`).
    pub name: &'static str,
    /// The section it plays in.
    pub section: &'static str,
    /// What it says, verbatim.
    pub script: &'static str,
}

impl RehearsalMember {
    pub fn file_name(&self) -> String {
        format!("{}.gguf", self.name)
    }
}

/// The rehearsal band: one model per section, each with a recognisable line.
pub fn rehearsal_band() -> Vec<RehearsalMember> {
    vec![
        RehearsalMember {
            name: "coltrane",
            section: "code",
            script: "fn reverse(s: &str) -> String { s.chars().rev().collect() }",
        },
        RehearsalMember {
            name: "ella",
            section: "creative",
            script: "Moonlight hums a slow blue tune, and the whole city sways along.",
        },
        RehearsalMember {
            name: "monk",
            section: "analysis",
            script: "Analysis: the function walks the string once, so it runs in O(n) time and O(n) space.",
        },
        RehearsalMember {
            name: "mingus",
            section: "review",
            script: "Review: correct and idiomatic. Consider a test for empty input; score 8/10.",
        },
    ]
}

/// Writes every band member as `{dir}/{name}.gguf` unless an up-to-date file is
/// already there (same script, same format); returns the paths in band order.
pub fn write_rehearsal_band(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, SynthError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| SynthError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for member in rehearsal_band() {
        let path = dir.join(member.file_name());
        if !is_up_to_date(&path, member.script) {
            write_rehearsal_model(member.name, member.script, &path, BAND_DTYPE)?;
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Whether `path` is a complete rehearsal model of the current format for `script`.
fn is_up_to_date(path: &Path, script: &str) -> bool {
    let Ok(header) = read_header(path) else {
        return false;
    };
    header.get_str(REHEARSAL_SCRIPT_KEY) == Some(script)
        && header.get_u64(REHEARSAL_FORMAT_KEY) == Some(u64::from(REHEARSAL_FORMAT))
        && header.dominant_type() == Some(BAND_DTYPE.ggml())
}

/// The script a rehearsal model replays, read from its header.
pub fn rehearsal_script(path: impl AsRef<Path>) -> Option<String> {
    read_header(path)
        .ok()?
        .get_str(REHEARSAL_SCRIPT_KEY)
        .map(str::to_owned)
}

/// Writes a model that greedy-decodes exactly `script`, then `<|im_end|>`.
pub fn write_rehearsal_model(
    name: &str,
    script: &str,
    path: impl AsRef<Path>,
    dtype: TensorType,
) -> Result<RehearsalInfo, SynthError> {
    let bad = |reason: String| SynthError::BadScript {
        name: name.to_owned(),
        reason,
    };
    if script.is_empty() {
        return Err(bad("the script is empty; give it some text to say".into()));
    }
    if script.contains(SPACE) {
        return Err(bad(format!(
            "it contains `{SPACE}` (U+2581), which SentencePiece renders as a space; use a plain space"
        )));
    }

    let mut vocab = Vocab::new();
    let pieces = split_with(script, |s| vocab.is_special(s))
        .ok_or_else(|| bad("it is the text of a special token".into()))?;
    if pieces.len() > MAX_PIECES {
        return Err(bad(format!(
            "it splits into {} pieces; at most {MAX_PIECES} are supported, shorten it",
            pieces.len()
        )));
    }
    debug_assert_eq!(render(&pieces), script);
    let tokens: Vec<u32> = pieces.iter().map(|p| vocab.piece(p)).collect();

    // One embedding dim per piece plus the shared one; q8_0 rows need whole blocks of
    // 32, and head size 32 keeps every width a valid head count.
    let n_embd = ((pieces.len() + 1).div_ceil(32) * 32).max(64) as u32;
    let spec = LlamaSpec {
        n_ctx_train: 4096,
        seed: hash_str(0, name),
        ..LlamaSpec::new(name, n_embd, 1, n_embd / 32, n_embd / 32, n_embd * 2, dtype)
    };
    let weights = Weights::Replay(ReplayChain {
        tokens,
        end: Vocab::IM_END,
    });
    let mut writer = model_writer(&spec, &vocab, &weights)?;
    writer.set(REHEARSAL_SCRIPT_KEY, script);
    writer.set(REHEARSAL_FORMAT_KEY, REHEARSAL_FORMAT);
    let bytes = writer.write(path)?;

    Ok(RehearsalInfo {
        name: name.to_owned(),
        text: script.to_owned(),
        piece_count: pieces.len(),
        pieces,
        n_vocab: vocab.len(),
        n_embd,
        bytes,
    })
}

/// Splits a script into the distinct vocabulary pieces a rehearsal model replays:
/// words (letters, digits, `_`; multi-byte letters included) and single other
/// characters, each carrying the whitespace before it (spaces as `▁`). A piece that
/// would repeat an earlier one is merged with what follows until it is new.
pub fn split_script(script: &str) -> Vec<String> {
    let vocab = Vocab::new();
    split_with(script, |s| vocab.is_special(s)).unwrap_or_else(|| vec![script.replace(' ', "▁")])
}

/// [`split_script`] with `reserved(s)` marking strings no piece may be (special
/// tokens). `None` only when the whole script is reserved.
fn split_with(script: &str, reserved: impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let atoms = atoms(script);
    let mut used: HashSet<String> = HashSet::new();
    let taken = |used: &HashSet<String>, s: &str| used.contains(s) || reserved(s);
    let mut pieces: Vec<String> = Vec::new();
    let mut i = 0;
    while i < atoms.len() {
        let mut piece = atoms[i].clone();
        i += 1;
        while taken(&used, &piece) && i < atoms.len() {
            piece.push_str(&atoms[i]);
            i += 1;
        }
        // The tail ran out before it became new: fold it into earlier pieces. The whole
        // script as one piece is always new (it is the longest string).
        while taken(&used, &piece) {
            let prev = pieces.pop()?;
            used.remove(&prev);
            piece = prev + &piece;
        }
        used.insert(piece.clone());
        pieces.push(piece);
    }
    Some(pieces)
}

/// Words and single characters with their leading whitespace; trailing whitespace
/// joins the last atom.
fn atoms(script: &str) -> Vec<String> {
    let mut atoms = Vec::new();
    let mut pending = String::new();
    let mut chars = script.chars().peekable();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    while let Some(c) = chars.next() {
        if c == ' ' {
            pending.push(SPACE);
        } else if c.is_whitespace() {
            pending.push(c);
        } else {
            let mut atom = std::mem::take(&mut pending);
            atom.push(c);
            if is_word(c) {
                while let Some(&n) = chars.peek() {
                    if !is_word(n) {
                        break;
                    }
                    atom.push(n);
                    chars.next();
                }
            }
            atoms.push(atom);
        }
    }
    if !pending.is_empty() {
        match atoms.last_mut() {
            Some(last) => last.push_str(&pending),
            None => atoms.push(pending),
        }
    }
    atoms
}

/// The text llama.cpp prints for these pieces.
fn render(pieces: &[String]) -> String {
    pieces.concat().replace(SPACE, " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_distinct(pieces: &[String]) {
        let set: HashSet<&String> = pieces.iter().collect();
        assert_eq!(set.len(), pieces.len(), "{pieces:?}");
    }

    #[test]
    fn words_carry_their_leading_space() {
        let pieces = split_script("Hello world, again");
        assert_eq!(pieces, ["Hello", "▁world", ",", "▁again"]);
    }

    #[test]
    fn repeated_words_merge_until_unique() {
        let cases: &[(&str, &[&str])] = &[
            (
                "the cat and the dog",
                &["the", "▁cat", "▁and", "▁the", "▁dog"],
            ),
            ("a a a a", &["a", "▁a", "▁a▁a", "▁a"]),
            ("x.x.", &["x", ".", "x."]),
            ("()()()", &["(", ")", "()", "()"]),
            (
                "s.chars().rev()",
                &["s", ".", "chars", "(", ")", ".rev", "()"],
            ),
        ];
        for (script, _) in cases {
            let pieces = split_script(script);
            assert_distinct(&pieces);
            assert_eq!(render(&pieces), *script);
        }
        // Exact splits for the simple cases.
        assert_eq!(split_script("the cat and the dog"), cases[0].1);
        assert_eq!(split_script("x.x."), cases[2].1);
        assert_eq!(split_script("s.chars().rev()"), cases[4].1);
    }

    #[test]
    fn tails_that_cannot_become_new_fold_backwards() {
        for script in ["a a a a", "()()()", "ababab ab ab ab", "...."] {
            let pieces = split_script(script);
            assert_distinct(&pieces);
            assert_eq!(render(&pieces), script);
        }
    }

    #[test]
    fn multi_byte_characters_stay_whole() {
        let script = "café ☕ naïve — 日本語 ok ☕";
        let pieces = split_script(script);
        assert_distinct(&pieces);
        assert_eq!(render(&pieces), script);
        assert_eq!(pieces[0], "café");
        assert_eq!(pieces[1], "▁☕");
        assert_eq!(pieces[2], "▁naïve");
        assert!(pieces.contains(&"▁日本語".to_string()));
    }

    #[test]
    fn whitespace_other_than_spaces_is_kept_verbatim() {
        let script = "  fn main() {\n    go();\n}\n";
        let pieces = split_script(script);
        assert_distinct(&pieces);
        assert_eq!(render(&pieces), script);
        assert_eq!(pieces[0], "▁▁fn");
        assert!(pieces.last().unwrap().ends_with('\n'));
        // No piece is bare whitespace, so a prompt ending in a newline never continues
        // a script.
        assert!(
            pieces
                .iter()
                .all(|p| !p.trim_matches([' ', '▁', '\n']).is_empty())
        );
    }

    #[test]
    fn special_token_text_is_never_a_piece() {
        let reserved = |s: &str| s == "x" || s == "<s>";
        let pieces = split_with("x y", reserved).unwrap();
        assert_eq!(pieces, ["x▁y"]);
        assert!(split_with("x", reserved).is_none());
    }

    #[test]
    fn bad_scripts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        for script in ["", "a▁b"] {
            let err = write_rehearsal_model("bad", script, &path, TensorType::F32).unwrap_err();
            assert!(
                err.to_string().starts_with("rehearsal script for `bad`"),
                "{err}"
            );
        }
        assert!(!path.exists());
    }

    #[test]
    fn rehearsal_model_records_its_script_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.gguf");
        let script = "Hello from the rehearsal room, hello again.";
        let info = write_rehearsal_model("r", script, &path, TensorType::Q8_0).unwrap();
        assert_eq!(info.text, script);
        assert_eq!(info.piece_count, info.pieces.len());
        assert_eq!(info.n_embd, 64);
        let h = read_header(&path).unwrap();
        assert_eq!(h.get_str(REHEARSAL_SCRIPT_KEY), Some(script));
        assert_eq!(h.vocab_size(), Some(info.n_vocab as u64));
        assert_eq!(h.file_size, info.bytes);
        assert_eq!(rehearsal_script(&path).as_deref(), Some(script));
    }

    #[test]
    fn band_members_are_distinct_from_their_first_piece() {
        let band = rehearsal_band();
        let sections: Vec<&str> = band.iter().map(|m| m.section).collect();
        assert_eq!(sections, ["code", "creative", "analysis", "review"]);
        let firsts: HashSet<String> = band
            .iter()
            .map(|m| split_script(m.script)[0].clone())
            .collect();
        assert_eq!(firsts.len(), band.len());
    }

    #[test]
    fn band_is_written_once_and_rewritten_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_rehearsal_band(dir.path()).unwrap();
        assert_eq!(paths.len(), 4);
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["coltrane.gguf", "ella.gguf", "monk.gguf", "mingus.gguf"]
        );
        let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before: Vec<_> = paths.iter().map(|p| modified(p)).collect();

        // Damage one file: only that one is rewritten.
        std::fs::write(&paths[1], b"not a model").unwrap();
        let damaged = modified(&paths[1]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let again = write_rehearsal_band(dir.path()).unwrap();
        assert_eq!(again, paths);
        assert_eq!(modified(&paths[0]), before[0]);
        assert_ne!(modified(&paths[1]), damaged);
        assert_eq!(
            rehearsal_script(&paths[1]).as_deref(),
            Some(rehearsal_band()[1].script)
        );
        // No temporary files are left behind.
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 4);
    }
}
