//! Talking to the Hub: repo listings and searches through `hf-hub`, the file-metadata HEAD
//! (ETag, size, commit — read from the first answer, before any CDN redirect, exactly as
//! `huggingface_hub` does), byte streams through `hf-hub` with `Range`, and the mapping of
//! HTTP refusals to [`HubError`]s that name the repo and the fix. No cache writes here.

use std::error::Error as _;
use std::time::Duration;

use futures::StreamExt;
use hf_hub::repository::ModelInfo;
use hf_hub::repository::download::HFByteStream;
use hf_hub::{HFClient, HFError};
use reqwest::header::{HeaderMap, HeaderValue};

use super::config::HubConfig;
use super::error::HubError;

/// What the Hub says about a repo at a revision.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    /// The commit the revision points at.
    pub commit: String,
    /// Every file path in the repo.
    pub files: Vec<String>,
}

/// What the Hub says about one file.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    /// The blob name in the cache: the sha256 for LFS files, the git object id otherwise.
    pub etag: String,
    /// Bytes.
    pub size: u64,
}

/// A client for one endpoint and token.
pub(crate) struct Remote {
    cfg: HubConfig,
    hf: HFClient,
    /// Does not follow redirects: the metadata headers sit on the Hub's first answer, and
    /// a CDN behind the redirect would replace them.
    head: reqwest::Client,
}

const USER_AGENT: &str = concat!("orchestra/", env!("CARGO_PKG_VERSION"), "; hf-hub/1");

impl Remote {
    pub fn new(cfg: &HubConfig) -> Result<Remote, HubError> {
        let mut builder = HFClient::builder()
            .endpoint(cfg.endpoint.clone())
            .cache_dir(cfg.cache_dir.clone())
            .user_agent(USER_AGENT)
            .retry_max_attempts(cfg.retries);
        if let Some(token) = &cfg.token {
            builder = builder.token(token.clone());
        }
        let endpoint_error = |detail: String| HubError::Endpoint {
            endpoint: cfg.endpoint.clone(),
            detail,
        };
        let hf = builder.build().map_err(|e| endpoint_error(e.to_string()))?;
        let head = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| endpoint_error(chain(&e)))?;
        Ok(Remote {
            cfg: cfg.clone(),
            hf,
            head,
        })
    }

    fn model(&self, repo: &str) -> hf_hub::HFRepository<hf_hub::RepoTypeModel> {
        let (owner, name) = hf_hub::split_id(repo);
        self.hf.model(owner, name)
    }

    /// The commit a revision (default: the main branch) points at and the repo's files.
    pub async fn listing(&self, repo: &str, revision: Option<&str>) -> Result<Listing, HubError> {
        let info = self
            .model(repo)
            .info()
            .maybe_revision(revision.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.map_hf(e, repo, None, revision))?;
        let commit = info.sha.ok_or_else(|| HubError::Hub {
            repo: repo.into(),
            endpoint: self.cfg.endpoint.clone(),
            detail: "the repo info has no commit sha".into(),
        })?;
        let files = info
            .siblings
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.rfilename)
            .collect();
        Ok(Listing { commit, files })
    }

    /// ETag and size of `file` at `commit`, from a HEAD on its resolve URL. Relative
    /// redirects (a renamed repo) are followed, absolute ones (the CDN) are not.
    pub async fn file_meta(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
    ) -> Result<FileMeta, HubError> {
        let mut url = self.resolve_url(repo, commit, file)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if let Some(token) = &self.cfg.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        for _ in 0..10 {
            let response = self.head_with_retries(&url, &headers, repo).await?;
            let status = response.status();
            let h = response.headers();
            if status.is_redirection()
                && let Some(location) = h
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                && !location.contains("://")
                && !location.starts_with("//")
            {
                url = url
                    .join(location)
                    .map_err(|e| self.hub_error(repo, e.to_string()))?;
                continue;
            }
            if !(status.is_success() || status.is_redirection()) {
                let code = header(h, "x-error-code");
                let message = header(h, "x-error-message");
                return Err(self.refusal(
                    status.as_u16(),
                    code.as_deref(),
                    message,
                    repo,
                    Some(file),
                    None,
                ));
            }
            let etag = header(h, "x-linked-etag")
                .or_else(|| header(h, "etag"))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
                .filter(|e| !e.is_empty())
                .ok_or_else(|| self.hub_error(repo, format!("no ETag for `{file}`")))?;
            let size = header(h, "x-linked-size")
                .or_else(|| header(h, "content-length"))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.hub_error(repo, format!("no size for `{file}`")))?;
            return Ok(FileMeta { etag, size });
        }
        Err(self.hub_error(repo, format!("too many redirects for `{file}`")))
    }

    async fn head_with_retries(
        &self,
        url: &reqwest::Url,
        headers: &HeaderMap,
        repo: &str,
    ) -> Result<reqwest::Response, HubError> {
        let mut attempt = 0;
        loop {
            let result = self
                .head
                .head(url.clone())
                .headers(headers.clone())
                .send()
                .await;
            let transient = match &result {
                Ok(r) => matches!(r.status().as_u16(), 500 | 502 | 503 | 504),
                Err(e) => e.is_connect() || e.is_timeout(),
            };
            if !transient || attempt >= self.cfg.retries {
                return result.map_err(|e| self.unreachable(repo, root_cause(&e)));
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// The bytes of `file` from offset `from` on. The first value is the length the
    /// server announced for this answer.
    pub async fn open(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        from: u64,
        size: u64,
    ) -> Result<(Option<u64>, HFByteStream), HubError> {
        self.model(repo)
            .download_file_stream()
            .filename(file.to_string())
            .revision(commit.to_string())
            .maybe_range((from > 0 && from < size).then_some(from..size))
            .send()
            .await
            .map_err(|e| self.map_hf(e, repo, Some(file), None))
    }

    /// GGUF repos matching `query`, most downloaded first, with their file lists.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<ModelInfo>, HubError> {
        let failed = |e: HFError| HubError::SearchFailed {
            endpoint: self.cfg.endpoint.clone(),
            query: query.into(),
            detail: hf_chain(&e),
        };
        let stream = self
            .hf
            .list_models()
            .search(query.to_string())
            .filter("gguf")
            .sort("downloads")
            .full(true)
            .limit(limit)
            .send()
            .map_err(failed)?;
        futures::pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            out.push(item.map_err(failed)?);
        }
        Ok(out)
    }

    fn resolve_url(&self, repo: &str, commit: &str, file: &str) -> Result<reqwest::Url, HubError> {
        let mut url = reqwest::Url::parse(&self.cfg.endpoint).map_err(|e| {
            self.hub_error(
                repo,
                format!("HF_ENDPOINT `{}` is not a URL: {e}", self.cfg.endpoint),
            )
        })?;
        {
            let mut segments = url.path_segments_mut().map_err(|_| {
                self.hub_error(
                    repo,
                    format!("HF_ENDPOINT `{}` is not an http URL", self.cfg.endpoint),
                )
            })?;
            segments.pop_if_empty();
            segments.extend(repo.split('/'));
            segments.push("resolve");
            segments.push(commit);
            segments.extend(file.split('/'));
        }
        Ok(url)
    }

    /// An `hf-hub` error as a [`HubError`] about `repo` (and `file`, `revision`).
    pub fn map_hf(
        &self,
        err: HFError,
        repo: &str,
        file: Option<&str>,
        revision: Option<&str>,
    ) -> HubError {
        match err {
            HFError::AuthRequired { context }
            | HFError::Forbidden { context }
            | HFError::Http { context } => self.refusal(
                context.status.as_u16(),
                context.error_code.as_deref(),
                context.server_message.clone(),
                repo,
                file,
                revision,
            ),
            HFError::RateLimited { .. } => HubError::RateLimited {
                repo: repo.into(),
                endpoint: self.cfg.endpoint.clone(),
            },
            // hf-hub names a 404 after what it asked for; the Hub's X-Error-Code says
            // what is really missing (a repo, when a revision of it was asked for).
            HFError::RepoNotFound {
                context: Some(context),
                ..
            }
            | HFError::RevisionNotFound {
                context: Some(context),
                ..
            }
            | HFError::EntryNotFound {
                context: Some(context),
                ..
            } if context.error_code.is_some() => self.refusal(
                context.status.as_u16(),
                context.error_code.as_deref(),
                context.server_message.clone(),
                repo,
                file,
                revision,
            ),
            HFError::RepoNotFound { .. } => self.not_found(repo),
            HFError::RevisionNotFound { revision: r, .. } => HubError::RevisionNotFound {
                repo: repo.into(),
                revision: revision.map(str::to_string).unwrap_or(r),
            },
            HFError::EntryNotFound { path, .. } => HubError::FileNotFound {
                repo: repo.into(),
                file: file.map(str::to_string).unwrap_or(path),
                available: format!("the repo page {} lists its files", self.cfg.repo_url(repo)),
            },
            HFError::Request { source, .. } => self.unreachable(repo, root_cause(&source)),
            other => self.hub_error(repo, other.to_string()),
        }
    }

    fn refusal(
        &self,
        status: u16,
        code: Option<&str>,
        message: Option<String>,
        repo: &str,
        file: Option<&str>,
        revision: Option<&str>,
    ) -> HubError {
        match (code, status) {
            (Some("RepoNotFound"), _) => self.not_found(repo),
            (Some("RevisionNotFound"), _) => HubError::RevisionNotFound {
                repo: repo.into(),
                revision: revision.unwrap_or("main").into(),
            },
            (Some("EntryNotFound"), _) | (_, 404) if file.is_some() => HubError::FileNotFound {
                repo: repo.into(),
                file: file.unwrap_or_default().into(),
                available: format!("the repo page {} lists its files", self.cfg.repo_url(repo)),
            },
            (_, 404) => match revision {
                Some(rev) if rev != "main" => HubError::RevisionNotFound {
                    repo: repo.into(),
                    revision: rev.into(),
                },
                _ => self.not_found(repo),
            },
            (_, 401 | 403) => HubError::AccessRefused {
                repo: repo.into(),
                status,
                advice: self.access_advice(repo, status),
            },
            (_, 429) => HubError::RateLimited {
                repo: repo.into(),
                endpoint: self.cfg.endpoint.clone(),
            },
            _ => self.hub_error(
                repo,
                format!(
                    "HTTP {status}{}",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            ),
        }
    }

    fn access_advice(&self, repo: &str, status: u16) -> String {
        let page = self.cfg.repo_url(repo);
        match (&self.cfg.token, status) {
            (None, _) => format!(
                "it is gated or private — accept its terms at {page} and set HF_TOKEN to a token with read access"
            ),
            (Some(_), 401) => format!(
                "the token in HF_TOKEN was not accepted — check it at {}/settings/tokens",
                self.cfg.endpoint
            ),
            (Some(_), _) => format!(
                "it is gated — accept its terms at {page} with the account that owns HF_TOKEN, or use a token that can read it"
            ),
        }
    }

    fn not_found(&self, repo: &str) -> HubError {
        HubError::RepoNotFound {
            repo: repo.into(),
            endpoint: self.cfg.endpoint.clone(),
            advice: if self.cfg.token.is_none() {
                " (a private repo also needs HF_TOKEN)".into()
            } else {
                String::new()
            },
        }
    }

    pub fn unreachable(&self, reference: &str, detail: String) -> HubError {
        HubError::Unreachable {
            endpoint: self.cfg.endpoint.clone(),
            reference: reference.into(),
            detail,
            cache_dir: self.cfg.cache_dir.clone(),
        }
    }

    fn hub_error(&self, repo: &str, detail: String) -> HubError {
        HubError::Hub {
            repo: repo.into(),
            endpoint: self.cfg.endpoint.clone(),
            detail,
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// Wait before retry `attempt` (1-based): 200 ms doubling, at most 5 s.
pub(crate) fn backoff(attempt: usize) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// An error and its causes on one line, without repeats ("error sending request: … :
/// connection refused").
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// The innermost cause of an error ("Connection refused (os error 111)"): what the user
/// can act on, without the client's layers.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The transport-level cause of an `hf-hub` error, for a dropped download.
pub(crate) fn hf_chain(err: &HFError) -> String {
    match err {
        HFError::Request { source, .. } => root_cause(source),
        other => match other.source() {
            Some(s) => format!("{other}: {s}"),
            None => other.to_string(),
        },
    }
}
