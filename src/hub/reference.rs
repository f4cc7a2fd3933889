//! Model references as users write them — `hf:org/repo/file.gguf`, `hf:org/repo:Q4_K_M`,
//! an optional `@revision`, huggingface.co file URLs and local paths: parsing and display.
//! Pure text; no file system or network access.

use std::fmt;
use std::path::PathBuf;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// A GGUF file on this machine.
    Local(PathBuf),
    /// A GGUF file in a Hugging Face model repository.
    Hub {
        /// `org/repo`.
        repo: String,
        /// Path of the file inside the repo; `None` picks by `quant`.
        file: Option<String>,
        /// Quantisation to pick (`Q4_K_M`), used when `file` is `None`. With neither,
        /// the repo's `Q4_K_M` file or its only GGUF model is used.
        quant: Option<String>,
        /// Branch, tag or commit; `None` means `main`.
        revision: Option<String>,
    },
}

/// The forms [`ModelRef::parse`] accepts, shown with every parse error.
pub const ACCEPTED_FORMS: &str = "accepted forms:
  hf:ORG/REPO/FILE.gguf         a file in a Hugging Face repo
  hf:ORG/REPO:QUANT             the repo's file of that quantisation, e.g. hf:ORG/REPO:Q4_K_M
  hf:ORG/REPO                   the repo's Q4_K_M file, or its only GGUF model
  any of these + @REVISION      a branch, tag or commit (default main)
  https://huggingface.co/ORG/REPO/resolve/REVISION/FILE.gguf
  PATH/TO/FILE.gguf             a local file";

/// A reference that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a model reference: {reason}\n{ACCEPTED_FORMS}")]
pub struct RefError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ModelRef {
    /// Parses a reference. Text that starts with neither `hf:` nor `http` is a local path
    /// (`~/` is expanded).
    ///
    /// ```
    /// use orchestra::hub::ModelRef;
    /// let r = ModelRef::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M@main").unwrap();
    /// assert_eq!(r.to_string(), "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M@main");
    /// ```
    pub fn parse(text: &str) -> Result<ModelRef, RefError> {
        let input = text.trim();
        let fail = |reason: &str| RefError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("it is empty"));
        }
        if let Some(rest) = input
            .strip_prefix("hf://")
            .or_else(|| input.strip_prefix("hf:"))
        {
            return parse_hub(rest).map_err(|reason| fail(&reason));
        }
        if input.starts_with("http://") || input.starts_with("https://") {
            return parse_url(input).map_err(|reason| fail(&reason));
        }
        Ok(ModelRef::Local(expand_home(input)))
    }

    /// The `org/repo` of a hub reference.
    pub fn repo(&self) -> Option<&str> {
        match self {
            ModelRef::Hub { repo, .. } => Some(repo),
            ModelRef::Local(_) => None,
        }
    }

    /// Whether the reference points at the Hugging Face Hub.
    pub fn is_hub(&self) -> bool {
        matches!(self, ModelRef::Hub { .. })
    }
}

impl std::str::FromStr for ModelRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelRef::parse(s)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Local(path) => write!(f, "{}", path.display()),
            ModelRef::Hub {
                repo,
                file,
                quant,
                revision,
            } => {
                write!(f, "hf:{repo}")?;
                if let Some(file) = file {
                    write!(f, "/{file}")?;
                } else if let Some(quant) = quant {
                    write!(f, ":{quant}")?;
                }
                if let Some(revision) = revision {
                    write!(f, "@{revision}")?;
                }
                Ok(())
            }
        }
    }
}

/// `ORG/REPO[@REV][/FILE | :QUANT][@REV]` — the text after `hf:`.
fn parse_hub(body: &str) -> Result<ModelRef, String> {
    let (owner, rest) = body
        .split_once('/')
        .ok_or_else(|| "it names no repo: write `hf:ORG/REPO`".to_string())?;
    let name_end = rest.find(['/', ':', '@']).unwrap_or(rest.len());
    let (name, mut tail) = rest.split_at(name_end);
    check_repo_part(owner, "organisation")?;
    check_repo_part(name, "repo name")?;

    let mut revision = None;
    if let Some(after) = tail.strip_prefix('@') {
        // `ORG/REPO@REV/FILE` or `ORG/REPO@REV:QUANT`: the revision ends at the next separator.
        let end = after.find(['/', ':']).unwrap_or(after.len());
        revision = Some(after[..end].to_string());
        tail = &after[end..];
    }

    let mut file = None;
    let mut quant = None;
    if let Some(path) = tail.strip_prefix('/') {
        let (path, rev) = split_trailing_revision(path);
        file = Some(path.to_string());
        revision = merge_revision(revision, rev)?;
    } else if let Some(q) = tail.strip_prefix(':') {
        let (q, rev) = split_trailing_revision(q);
        quant = Some(q.to_string());
        revision = merge_revision(revision, rev)?;
    } else if !tail.is_empty() {
        return Err(format!("unexpected `{tail}` after the repo name"));
    }

    if let Some(rev) = &revision
        && rev.is_empty()
    {
        return Err("the revision after `@` is empty".into());
    }
    if let Some(file) = &file {
        if file.is_empty() || file.ends_with('/') {
            return Err("the file path after the repo is empty".into());
        }
        if file.split('/').any(|seg| seg.is_empty() || seg == "..") {
            return Err(format!("`{file}` is not a file path inside the repo"));
        }
        if file.starts_with("resolve/") || file.starts_with("blob/") || file.starts_with("tree/") {
            return Err(format!(
                "`{file}` looks like part of a web address: write `hf:ORG/REPO/FILE.gguf@REVISION`"
            ));
        }
        if !file.to_ascii_lowercase().ends_with(".gguf") {
            return Err(format!(
                "`{file}` is not a .gguf file: orchestra runs GGUF models"
            ));
        }
    }
    if let Some(q) = &quant {
        if q.is_empty() {
            return Err("the quantisation after `:` is empty, e.g. `:Q4_K_M`".into());
        }
        if !q
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "`{q}` is not a quantisation name like Q4_K_M, Q8_0 or IQ4_XS"
            ));
        }
    }
    Ok(ModelRef::Hub {
        repo: format!("{owner}/{name}"),
        file,
        quant,
        revision,
    })
}

/// `https://huggingface.co/ORG/REPO[/resolve|blob/REV/FILE]`.
fn parse_url(url: &str) -> Result<ModelRef, String> {
    let without_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (host, path) = without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""));
    if !matches!(host, "huggingface.co" | "www.huggingface.co" | "hf.co") {
        return Err(format!(
            "only huggingface.co addresses are understood, not `{host}`"
        ));
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [owner, name] => parse_hub(&format!("{owner}/{name}")),
        [owner, name, "resolve" | "blob", rev, file @ ..] if !file.is_empty() => {
            let file = file.join("/");
            let mut r = parse_hub(&format!("{owner}/{name}/{file}"))?;
            if let ModelRef::Hub { revision, .. } = &mut r {
                *revision = (*rev != "main").then(|| rev.to_string());
            }
            Ok(r)
        }
        _ => Err("the address names no repo file: use the file's download link".into()),
    }
}

/// Splits `text@rev` at the last `@`, so a trailing revision may contain `/` (`refs/pr/1`).
fn split_trailing_revision(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once('@') {
        Some((head, rev)) => (head, Some(rev)),
        None => (text, None),
    }
}

fn merge_revision(first: Option<String>, second: Option<&str>) -> Result<Option<String>, String> {
    match (first, second) {
        (Some(_), Some(_)) => Err("it gives two revisions: keep one `@REVISION`".into()),
        (Some(a), None) => Ok(Some(a)),
        (None, b) => Ok(b.map(str::to_string)),
    }
}

fn check_repo_part(part: &str, what: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("the {what} is empty: write `hf:ORG/REPO`"));
    }
    let ok = part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok || part.starts_with(['-', '.']) || part.contains("--") || part.contains("..") {
        return Err(format!(
            "`{part}` is not a valid {what}: letters, digits, `-`, `_` and `.` only"
        ));
    }
    Ok(())
}

fn expand_home(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo: &str, file: Option<&str>, quant: Option<&str>, rev: Option<&str>) -> ModelRef {
        ModelRef::Hub {
            repo: repo.into(),
            file: file.map(Into::into),
            quant: quant.map(Into::into),
            revision: rev.map(Into::into),
        }
    }

    #[test]
    fn accepted_forms_parse_and_print_back() {
        let cases = [
            (
                "hf:org/repo/model.gguf",
                hub("org/repo", Some("model.gguf"), None, None),
            ),
            (
                "hf:org/repo/sub/dir/m-Q4_K_M.gguf",
                hub("org/repo", Some("sub/dir/m-Q4_K_M.gguf"), None, None),
            ),
            (
                "hf:org/repo:Q4_K_M",
                hub("org/repo", None, Some("Q4_K_M"), None),
            ),
            ("hf:org/repo", hub("org/repo", None, None, None)),
            (
                "hf:org/repo@v1.0",
                hub("org/repo", None, None, Some("v1.0")),
            ),
            (
                "hf:org/repo:Q8_0@dev",
                hub("org/repo", None, Some("Q8_0"), Some("dev")),
            ),
            (
                "hf:org/repo/m.gguf@refs/pr/1",
                hub("org/repo", Some("m.gguf"), None, Some("refs/pr/1")),
            ),
            (
                "hf:Org.X/Repo_1-GGUF:UD-Q4_K_XL",
                hub("Org.X/Repo_1-GGUF", None, Some("UD-Q4_K_XL"), None),
            ),
        ];
        for (text, want) in cases {
            let got = ModelRef::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text, "display of {text}");
        }
    }

    #[test]
    fn revision_after_the_repo_is_accepted_too() {
        let r = ModelRef::parse("hf:org/repo@abc/m.gguf").unwrap();
        assert_eq!(r, hub("org/repo", Some("m.gguf"), None, Some("abc")));
        let r = ModelRef::parse("hf:org/repo@abc:Q4_0").unwrap();
        assert_eq!(r, hub("org/repo", None, Some("Q4_0"), Some("abc")));
        let r = ModelRef::parse("hf://org/repo/m.gguf").unwrap();
        assert_eq!(r, hub("org/repo", Some("m.gguf"), None, None));
    }

    #[test]
    fn huggingface_urls_become_hub_references() {
        let r =
            ModelRef::parse("https://huggingface.co/org/repo/resolve/main/m.gguf?download=true")
                .unwrap();
        assert_eq!(r, hub("org/repo", Some("m.gguf"), None, None));
        let r = ModelRef::parse("https://huggingface.co/org/repo/blob/v2/a/m.gguf").unwrap();
        assert_eq!(r, hub("org/repo", Some("a/m.gguf"), None, Some("v2")));
        let r = ModelRef::parse("https://hf.co/org/repo").unwrap();
        assert_eq!(r, hub("org/repo", None, None, None));
    }

    #[test]
    fn other_text_is_a_local_path() {
        assert_eq!(
            ModelRef::parse("models/tiny.gguf").unwrap(),
            ModelRef::Local("models/tiny.gguf".into())
        );
        assert_eq!(
            ModelRef::parse("/abs/tiny.gguf").unwrap(),
            ModelRef::Local("/abs/tiny.gguf".into())
        );
    }

    #[test]
    fn malformed_references_explain_the_accepted_forms() {
        let cases = [
            ("", "empty"),
            ("hf:", "names no repo"),
            ("hf:repo", "names no repo"),
            ("hf:/repo", "organisation is empty"),
            ("hf:org/", "repo name is empty"),
            ("hf:org/re po", "not a valid repo name"),
            ("hf:org/repo/", "file path after the repo is empty"),
            ("hf:org/repo/config.json", "not a .gguf file"),
            ("hf:org/repo:", "quantisation after `:` is empty"),
            ("hf:org/repo:Q4 K", "not a quantisation name"),
            ("hf:org/repo@", "revision after `@` is empty"),
            ("hf:org/repo@a/m.gguf@b", "two revisions"),
            ("hf:org/repo/resolve/main/m.gguf", "web address"),
            ("https://example.com/m.gguf", "only huggingface.co"),
        ];
        for (text, reason) in cases {
            let err = ModelRef::parse(text).expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains(reason), "{text}: {msg}");
            assert!(msg.contains("hf:ORG/REPO:QUANT"), "{text}: {msg}");
        }
    }
}
