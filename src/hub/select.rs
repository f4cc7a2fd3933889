//! Choosing files from a repo's file list: which GGUF model a reference means, the parts of
//! a split GGUF (`-00001-of-00003.gguf`), quantisation labels read from file names. Pure
//! functions over path lists; the same rules serve the Hub listing and the offline cache.

use super::error::HubError;

/// The quantisation picked when a reference names neither a file nor a quantisation — the
/// same default as llama.cpp's `-hf`.
pub const DEFAULT_QUANT: &str = "Q4_K_M";

/// One GGUF model in a listing: a single file, or every part of a split model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The file llama.cpp opens (part 1 of a split model).
    pub first: String,
    /// All files of the model in order, `first` included.
    pub parts: Vec<String>,
}

impl Candidate {
    /// The model that `file` belongs to: all its parts when it is one part of a split model.
    pub fn for_file(file: &str) -> Candidate {
        match split_part(file) {
            Some((prefix, _, count)) => {
                let parts: Vec<String> =
                    (1..=count).map(|i| part_name(&prefix, i, count)).collect();
                Candidate {
                    first: parts[0].clone(),
                    parts,
                }
            }
            None => Candidate {
                first: file.to_string(),
                parts: vec![file.to_string()],
            },
        }
    }

    /// Parts that are not in `files`.
    pub fn missing<'a>(&'a self, files: &[String]) -> Vec<&'a str> {
        self.parts
            .iter()
            .filter(|p| !files.contains(p))
            .map(String::as_str)
            .collect()
    }
}

/// `(prefix, index, count)` of a split-GGUF part name `PREFIX-00002-of-00005.gguf`.
pub(crate) fn split_part(path: &str) -> Option<(String, u32, u32)> {
    let stem = strip_gguf(path)?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(count) || !digits(index) || prefix.is_empty() {
        return None;
    }
    let (index, count): (u32, u32) = (index.parse().ok()?, count.parse().ok()?);
    (index >= 1 && index <= count).then(|| (prefix.to_string(), index, count))
}

/// llama.cpp's split naming: `{prefix}-{index:05}-of-{count:05}.gguf`.
pub(crate) fn part_name(prefix: &str, index: u32, count: u32) -> String {
    format!("{prefix}-{index:05}-of-{count:05}.gguf")
}

fn strip_gguf(path: &str) -> Option<&str> {
    let cut = path.len().checked_sub(5)?;
    path.is_char_boundary(cut)
        .then(|| path.split_at(cut))
        .filter(|(_, ext)| ext.eq_ignore_ascii_case(".gguf"))
        .map(|(stem, _)| stem)
}

/// A `.gguf` file that is a model, not a vision projector (`mmproj`).
pub(crate) fn is_model_gguf(path: &str) -> bool {
    strip_gguf(path).is_some() && !basename(path).to_ascii_lowercase().contains("mmproj")
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The quantisation a file name announces (`Q4_K_M`, `IQ4_XS`, `F16`, `UD-Q4_K_XL`),
/// upper-cased.
pub fn quant_label(path: &str) -> Option<String> {
    let name = basename(path);
    let stem = strip_gguf(name).unwrap_or(name);
    let stem = match split_part(name) {
        Some(_) => stem.rsplitn(4, '-').nth(3).unwrap_or(stem),
        None => stem,
    };
    let tokens: Vec<&str> = stem.split(['-', '.']).collect();
    for (i, token) in tokens.iter().enumerate().rev() {
        let upper = token.to_ascii_uppercase();
        if is_quant_token(&upper) {
            if i > 0 && tokens[i - 1].eq_ignore_ascii_case("UD") {
                return Some(format!("UD-{upper}"));
            }
            return Some(upper);
        }
    }
    None
}

fn is_quant_token(t: &str) -> bool {
    if matches!(
        t,
        "F16" | "F32" | "BF16" | "F64" | "MXFP4" | "MXFP4_MOE" | "NVFP4"
    ) {
        return true;
    }
    let rest = t
        .strip_prefix("IQ")
        .or_else(|| t.strip_prefix("TQ"))
        .or_else(|| t.strip_prefix('Q'));
    match rest {
        Some(rest) => {
            rest.starts_with(|c: char| c.is_ascii_digit())
                && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Whether `path` is a file of quantisation `quant`: the name contains it (any case) as a
/// whole token, so `Q4_K` does not match `Q4_K_M` and `Q4_0` does not match `IQ4_0`.
pub(crate) fn matches_quant(path: &str, quant: &str) -> bool {
    let hay = path.to_ascii_lowercase();
    let needle = quant.to_ascii_lowercase();
    let bytes = hay.as_bytes();
    hay.match_indices(&needle).any(|(at, _)| {
        let before_ok = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let end = at + needle.len();
        let after_ok = end == bytes.len() || matches!(bytes[end], b'.' | b'-' | b'/');
        before_ok && after_ok
    })
}

/// The GGUF models in a file list, each split model once.
pub(crate) fn models(files: &[String]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for file in files.iter().filter(|f| is_model_gguf(f)) {
        let candidate = Candidate::for_file(file);
        if !out.iter().any(|c| c.first == candidate.first) {
            out.push(candidate);
        }
    }
    out.sort_by(|a, b| a.first.cmp(&b.first));
    out
}

/// The model a quantisation (or, with `None`, the default) picks from `files`.
/// `reference` is the reference as written, for messages.
pub(crate) fn choose(
    files: &[String],
    repo: &str,
    quant: Option<&str>,
    reference: &str,
) -> Result<Candidate, HubError> {
    let all = models(files);
    if all.is_empty() {
        return Err(HubError::NoGguf { repo: repo.into() });
    }
    let of_quant = |q: &str| -> Vec<Candidate> {
        all.iter()
            .filter(|c| matches_quant(&c.first, q))
            .cloned()
            .collect()
    };
    let pick = |mut found: Vec<Candidate>| -> Result<Candidate, HubError> {
        if found.len() == 1 {
            return Ok(found.remove(0));
        }
        Err(HubError::Ambiguous {
            reference: reference.into(),
            candidates: found
                .iter()
                .map(|c| c.first.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            advice: format!("name one with `hf:{repo}/FILE.gguf`"),
        })
    };
    match quant {
        Some(q) => {
            let found = of_quant(q);
            if found.is_empty() {
                return Err(HubError::NoSuchQuant {
                    repo: repo.into(),
                    quant: q.into(),
                    available: available(repo, &all),
                });
            }
            pick(found)
        }
        None => {
            let found = of_quant(DEFAULT_QUANT);
            if !found.is_empty() {
                return pick(found);
            }
            if all.len() == 1 {
                return Ok(all[0].clone());
            }
            let labels = labels(&all);
            Err(HubError::Ambiguous {
                reference: reference.into(),
                candidates: if labels.is_empty() {
                    all.iter()
                        .map(|c| c.first.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    labels.join(", ")
                },
                advice: match labels.first() {
                    Some(q) => format!("add a quantisation, e.g. `hf:{repo}:{q}`"),
                    None => format!("name one with `hf:{repo}/FILE.gguf`"),
                },
            })
        }
    }
}

/// "it has Q4_K_M, Q8_0 — pick one with `hf:org/repo:Q8_0`", or the file names.
pub(crate) fn available(repo: &str, all: &[Candidate]) -> String {
    let labels = labels(all);
    if let Some(first) = labels.first() {
        return format!(
            "it has {} — pick one with `hf:{repo}:{first}`",
            labels.join(", ")
        );
    }
    if all.is_empty() {
        return "it has no GGUF files".into();
    }
    let names: Vec<&str> = all.iter().take(12).map(|c| c.first.as_str()).collect();
    format!(
        "it has {} — name one with `hf:{repo}/FILE.gguf`",
        names.join(", ")
    )
}

/// Distinct quantisation labels of the models, sorted.
pub(crate) fn labels(all: &[Candidate]) -> Vec<String> {
    let mut labels: Vec<String> = all.iter().filter_map(|c| quant_label(&c.first)).collect();
    labels.sort();
    labels.dedup();
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn split_parts_are_recognised_and_named_like_llama_cpp() {
        assert_eq!(
            split_part("a/m-Q4-00002-of-00003.gguf"),
            Some(("a/m-Q4".into(), 2, 3))
        );
        assert_eq!(
            split_part("m-00001-of-00001.GGUF"),
            Some(("m".into(), 1, 1))
        );
        assert_eq!(split_part("m-0001-of-0003.gguf"), None);
        assert_eq!(split_part("m-00004-of-00003.gguf"), None);
        assert_eq!(split_part("m.gguf"), None);
        assert_eq!(part_name("m", 3, 12), "m-00003-of-00012.gguf");
        let c = Candidate::for_file("m-00002-of-00003.gguf");
        assert_eq!(c.first, "m-00001-of-00003.gguf");
        assert_eq!(c.parts.len(), 3);
        assert_eq!(c.missing(&files(&["m-00001-of-00003.gguf"])).len(), 2);
    }

    #[test]
    fn quant_labels_come_from_file_names() {
        let cases = [
            ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", Some("Q4_K_M")),
            ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", Some("IQ4_XS")),
            ("model.Q8_0.gguf", Some("Q8_0")),
            ("sub/Model-BF16-00001-of-00002.gguf", Some("BF16")),
            ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", Some("UD-Q4_K_XL")),
            ("tiny.gguf", None),
        ];
        for (name, want) in cases {
            assert_eq!(quant_label(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn quant_matches_whole_tokens_only() {
        assert!(matches_quant("m-Q4_K_M.gguf", "q4_k_m"));
        assert!(matches_quant("Q4_K_M/m-00001-of-00002.gguf", "Q4_K_M"));
        assert!(!matches_quant("m-Q4_K_M.gguf", "Q4_K"));
        assert!(!matches_quant("m-IQ4_NL.gguf", "Q4_NL"));
        assert!(matches_quant("m-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"));
    }

    #[test]
    fn choose_picks_by_quant_default_and_reports_what_exists() {
        let listing = files(&[
            "README.md",
            "m-Q8_0.gguf",
            "m-Q4_K_M-00001-of-00002.gguf",
            "m-Q4_K_M-00002-of-00002.gguf",
            "mmproj-m-f16.gguf",
        ]);
        let c = choose(&listing, "o/r", Some("Q8_0"), "hf:o/r:Q8_0").unwrap();
        assert_eq!(c.parts, vec!["m-Q8_0.gguf"]);
        let c = choose(&listing, "o/r", None, "hf:o/r").unwrap();
        assert_eq!(c.first, "m-Q4_K_M-00001-of-00002.gguf");
        assert_eq!(c.parts.len(), 2);
        let err = choose(&listing, "o/r", Some("Q2_K"), "hf:o/r:Q2_K")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Q4_K_M, Q8_0"), "{err}");
        assert!(!err.contains("F16"), "mmproj is no model: {err}");

        let two = files(&["m-Q8_0.gguf", "m-F16.gguf"]);
        let err = choose(&two, "o/r", None, "hf:o/r").unwrap_err().to_string();
        assert!(
            err.contains("add a quantisation, e.g. `hf:o/r:F16`"),
            "{err}"
        );
        let one = files(&["tiny.gguf", "config.json"]);
        assert_eq!(
            choose(&one, "o/r", None, "hf:o/r").unwrap().first,
            "tiny.gguf"
        );
        let none = files(&["config.json"]);
        assert!(matches!(
            choose(&none, "o/r", None, "hf:o/r"),
            Err(HubError::NoGguf { .. })
        ));
    }
}
