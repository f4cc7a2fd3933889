//! Which models a score file names, found by a static scan of its Lua string literals —
//! `"hf:…"` references and `"….gguf"` paths — without running it (the Lua runtime lives
//! in `score/`). A model name built at run time (`"hf:" .. name`) is not seen. Reads
//! files only.

use std::path::{Path, PathBuf};

use super::reference::ModelRef;

/// A model reference found in a score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreModel {
    /// 1-based line of the literal.
    pub line: usize,
    /// The parsed reference; relative local paths are joined to the score's folder.
    pub reference: ModelRef,
}

/// The model references in the score at `path`: every string literal that starts with
/// `hf:` or ends with `.gguf`. A malformed `hf:` literal is an error naming the line.
pub fn score_models(path: &Path) -> Result<Vec<ScoreModel>, ScanError> {
    let src = std::fs::read_to_string(path).map_err(|error| ScanError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (line, text) in string_literals(&src) {
        let text = text.trim();
        let reference = if text.starts_with("hf:") {
            ModelRef::parse(text).map_err(|e| ScanError::Reference {
                path: path.to_path_buf(),
                line,
                message: e.to_string(),
            })?
        } else if text.to_ascii_lowercase().ends_with(".gguf") && !text.contains('\n') {
            match ModelRef::parse(text) {
                // Relative paths start at the score's folder, as `score/` resolves them.
                Ok(ModelRef::Local(p)) if p.is_relative() => ModelRef::Local(base.join(p)),
                Ok(local @ ModelRef::Local(_)) => local,
                _ => continue,
            }
        } else {
            continue;
        };
        if !out.iter().any(|m: &ScoreModel| m.reference == reference) {
            out.push(ScoreModel { line, reference });
        }
    }
    Ok(out)
}

/// A score could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The file could not be read.
    // The OS error is part of the message, not a `source`: an error chain printed with
    // `{:#}` would say it twice.
    #[error("cannot read score `{}`: {error}", path.display())]
    Read {
        /// The score.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// An `hf:` literal is malformed.
    #[error("score `{}` line {line}: {message}", path.display())]
    Reference {
        /// The score.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parse error.
        message: String,
    },
}

/// Every string literal in Lua source with its starting line: `"…"` and `'…'` (escapes
/// resolved for `\\`, `\"`, `\'`, `\n`, `\t`) and long brackets `[[…]]`, `[==[…]==]`;
/// comments (`--`, `--[[…]]`) are skipped.
pub fn string_literals(src: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                i += 2;
                if let Some((level, body_start)) = long_open(&chars, i) {
                    let (_, end, lines) = long_body(&chars, body_start, level);
                    line += lines;
                    i = end;
                } else {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                }
            }
            '[' => {
                if let Some((level, body_start)) = long_open(&chars, i) {
                    let (text, end, lines) = long_body(&chars, body_start, level);
                    out.push((line, text));
                    line += lines;
                    i = end;
                } else {
                    i += 1;
                }
            }
            '"' | '\'' => {
                let start_line = line;
                let mut text = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            let next = chars[i + 1];
                            text.push(match next {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                            if next == '\n' {
                                line += 1;
                            }
                            i += 2;
                        }
                        '\n' => break, // unfinished string: Lua rejects it; stop here
                        ch => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push((start_line, text));
            }
            _ => i += 1,
        }
    }
    out
}

/// At `[`, `[[` or `[=*[`: the level and where the body starts.
fn long_open(chars: &[char], at: usize) -> Option<(usize, usize)> {
    if chars.get(at) != Some(&'[') {
        return None;
    }
    let mut j = at + 1;
    while chars.get(j) == Some(&'=') {
        j += 1;
    }
    (chars.get(j) == Some(&'[')).then(|| (j - at - 1, j + 1))
}

/// The body of a long bracket up to `]=*]`: text, index after the close, newlines inside.
fn long_body(chars: &[char], start: usize, level: usize) -> (String, usize, usize) {
    let mut i = start;
    // Lua drops a newline right after the opening bracket.
    if chars.get(i) == Some(&'\n') {
        i += 1;
    }
    let body_start = i;
    let mut lines = usize::from(body_start > start);
    while i < chars.len() {
        if chars[i] == ']' {
            let mut j = i + 1;
            while chars.get(j) == Some(&'=') {
                j += 1;
            }
            if j - i - 1 == level && chars.get(j) == Some(&']') {
                return (chars[body_start..i].iter().collect(), j + 1, lines);
            }
        }
        if chars[i] == '\n' {
            lines += 1;
        }
        i += 1;
    }
    (chars[body_start..].iter().collect(), chars.len(), lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_found_and_comments_skipped() {
        let src = r#"
local band = orchestra.band { memory = "12GiB" }
-- band:add("x", { model = "hf:commented/out/a.gguf" })
--[[ model = "hf:block/comment/b.gguf" ]]
band:add('coltrane', { model = 'hf:Qwen/Coder-GGUF:Q4_K_M' })
band:add("mingus", { model = [[hf:org/long/c.gguf]] })
local s = "say \"hi\"\n" .. [==[
multi ]] line]==]
band:add("local", { model = "models/tiny.gguf" })
"#;
        let lits = string_literals(src);
        let texts: Vec<&str> = lits.iter().map(|(_, t)| t.as_str()).collect();
        assert!(texts.contains(&"hf:Qwen/Coder-GGUF:Q4_K_M"));
        assert!(texts.contains(&"hf:org/long/c.gguf"));
        assert!(texts.contains(&"say \"hi\"\n"));
        assert!(texts.contains(&"multi ]] line"));
        assert!(
            !texts
                .iter()
                .any(|t| t.contains("commented") || t.contains("block"))
        );
        let line_of = |t: &str| lits.iter().find(|(_, x)| x == t).unwrap().0;
        assert_eq!(line_of("hf:Qwen/Coder-GGUF:Q4_K_M"), 5);
        assert_eq!(line_of("models/tiny.gguf"), 9);
    }

    #[test]
    fn score_models_parse_hf_literals_and_name_bad_lines() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let score = dir.join("s.lua");
        std::fs::write(
            &score,
            "m = 'hf:o/r:Q8_0'\nn = 'hf:o/r:Q8_0'\nl = 'x.gguf'\nt = 'hello'\n",
        )
        .unwrap();
        let models = score_models(&score).unwrap();
        assert_eq!(models.len(), 2, "duplicates are dropped: {models:?}");
        assert_eq!(models[0].reference.to_string(), "hf:o/r:Q8_0");
        assert_eq!(models[1].reference, ModelRef::Local(dir.join("x.gguf")));
        std::fs::write(&score, "\n\nm = 'hf:nope'\n").unwrap();
        let err = score_models(&score).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
