//! [`HubConfig`]: the Hub endpoint, the cache folder, the token and the offline switch,
//! read from the environment variables users of Python's `huggingface_hub` already set,
//! with the same precedence, so both share one cache. Reads the environment and the token
//! file; no network.

use std::fmt;
use std::path::{Path, PathBuf};

/// The public Hugging Face Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where models come from and where they are kept.
#[derive(Clone)]
pub struct HubConfig {
    /// Hub base URL without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache holding `models--ORG--REPO/{blobs,snapshots,refs}` (`HF_HUB_CACHE`,
    /// else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Token for gated and private repos (`HF_TOKEN`, else the token file `hf auth login`
    /// writes).
    pub token: Option<String>,
    /// Use the cache only and never the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Retries of a request after a transient failure (connection refused, 5xx, timeouts),
    /// and of a download after its connection dropped.
    pub retries: usize,
    /// Files downloaded at the same time.
    pub parallel_downloads: usize,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("retries", &self.retries)
            .field("parallel_downloads", &self.parallel_downloads)
            .finish()
    }
}

impl HubConfig {
    /// Reads the process environment the way `huggingface_hub` does:
    /// - `HF_ENDPOINT` (trailing `/` removed), default `https://huggingface.co`;
    /// - cache: `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else
    ///   `$HF_HOME/hub`, where `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else
    ///   `~/.cache/huggingface`; `~` is expanded;
    /// - token: `HF_TOKEN`, else the legacy `HUGGING_FACE_HUB_TOKEN`, else the file at
    ///   `HF_TOKEN_PATH` (default `$HF_HOME/token`); none when
    ///   `HF_HUB_DISABLE_IMPLICIT_TOKEN` is true;
    /// - offline: `HF_HUB_OFFLINE`, else `TRANSFORMERS_OFFLINE`, true for `1`, `ON`, `YES`,
    ///   `TRUE` in any case.
    ///
    /// Empty variables count as unset.
    pub fn from_env() -> HubConfig {
        HubConfig::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`HubConfig::from_env`] over any source of variables (tests pass a map).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let var = |key: &str| var(key).filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from).or_else(dirs::home_dir);
        let expand = |p: String| expand_user(&p, home.as_deref());

        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());

        let hf_home = var("HF_HOME").map(&expand).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(&expand).unwrap_or_else(|| {
                home.clone()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache")
            });
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(&expand)
            .unwrap_or_else(|| hf_home.join("hub"));

        let token = if is_true(var("HF_HUB_DISABLE_IMPLICIT_TOKEN").as_deref()) {
            None
        } else {
            var("HF_TOKEN")
                .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
                .or_else(|| {
                    let path = var("HF_TOKEN_PATH")
                        .map(&expand)
                        .unwrap_or_else(|| hf_home.join("token"));
                    std::fs::read_to_string(path).ok()
                })
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };

        let offline = is_true(
            var("HF_HUB_OFFLINE")
                .or_else(|| var("TRANSFORMERS_OFFLINE"))
                .as_deref(),
        );

        HubConfig {
            endpoint,
            cache_dir,
            token,
            offline,
            retries: 5,
            parallel_downloads: 3,
        }
    }

    /// A configuration for `endpoint` and `cache_dir` with no token, online — what tests
    /// and embedders start from.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> HubConfig {
        HubConfig {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            retries: 5,
            parallel_downloads: 3,
        }
    }

    /// The web page of a repo on this endpoint.
    pub fn repo_url(&self, repo: &str) -> String {
        format!("{}/{repo}", self.endpoint)
    }
}

/// `huggingface_hub`'s `_is_true`.
fn is_true(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

fn expand_user(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') => home.join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn cache_dir_follows_huggingface_hub_precedence() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("HOME", "/h")], "/h/.cache/huggingface/hub"),
            (
                &[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")],
                "/x/huggingface/hub",
            ),
            (
                &[("HOME", "/h"), ("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/hf")],
                "/hf/hub",
            ),
            (&[("HOME", "/h"), ("HF_HOME", "~/hf")], "/h/hf/hub"),
            (
                &[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy")],
                "/legacy",
            ),
            (
                &[
                    ("HF_HOME", "/hf"),
                    ("HUGGINGFACE_HUB_CACHE", "/legacy"),
                    ("HF_HUB_CACHE", "/c"),
                ],
                "/c",
            ),
            (&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "")], "/hf/hub"),
        ];
        for (vars, want) in cases {
            assert_eq!(config(vars).cache_dir, PathBuf::from(want), "{vars:?}");
        }
    }

    #[test]
    fn offline_accepts_the_same_true_values_as_python() {
        for v in ["1", "ON", "yes", "True", " true "] {
            assert!(config(&[("HF_HUB_OFFLINE", v)]).offline, "{v}");
        }
        for v in ["0", "off", "no", "false", "2", ""] {
            assert!(!config(&[("HF_HUB_OFFLINE", v)]).offline, "{v}");
        }
        assert!(config(&[("TRANSFORMERS_OFFLINE", "1")]).offline);
        assert!(!config(&[("HF_HUB_OFFLINE", "0"), ("TRANSFORMERS_OFFLINE", "1")]).offline);
    }

    #[test]
    fn endpoint_and_token_come_from_the_environment() {
        let c = config(&[
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " hf_abc \n"),
        ]);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("hf_abc"));
        let c = config(&[
            ("HF_HOME", "/nonexistent"),
            ("HUGGING_FACE_HUB_TOKEN", "legacy"),
        ]);
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.token.as_deref(), Some("legacy"));
        let c = config(&[("HF_TOKEN", "x"), ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")]);
        assert_eq!(c.token, None);
        assert!(!format!("{c:?}").contains("hf_abc"));
    }

    #[test]
    fn token_file_is_read_from_hf_home() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        std::fs::write(dir.join("token"), "hf_from_file\n").unwrap();
        let c = config(&[("HF_HOME", dir.to_str().unwrap())]);
        assert_eq!(c.token.as_deref(), Some("hf_from_file"));
        let other = dir.join("other");
        std::fs::write(&other, "hf_other").unwrap();
        let c = config(&[
            ("HF_HOME", dir.to_str().unwrap()),
            ("HF_TOKEN_PATH", other.to_str().unwrap()),
        ]);
        assert_eq!(c.token.as_deref(), Some("hf_other"));
    }
}
