//! `orchestra search`: GGUF repositories on the Hub for a query — name, downloads, likes
//! and the quantisations their file names offer. Network only; touches no cache.

use super::config::HubConfig;
use super::error::HubError;
use super::remote::Remote;
use super::select;

/// One repository found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// `org/repo`.
    pub repo: String,
    /// Downloads in the last 30 days.
    pub downloads: u64,
    /// Likes.
    pub likes: u64,
    /// Quantisations on offer (`Q4_K_M`, `Q8_0`, …), sorted.
    pub quants: Vec<String>,
    /// Whether users must accept terms first (then HF_TOKEN is needed).
    pub gated: bool,
}

/// Up to `limit` GGUF repos matching `query`, most downloaded first.
pub async fn search(
    query: &str,
    cfg: &HubConfig,
    limit: usize,
) -> Result<Vec<SearchHit>, HubError> {
    if cfg.offline {
        return Err(HubError::Offline {
            what: format!("orchestra search {query}"),
        });
    }
    let remote = Remote::new(cfg)?;
    let found = remote.search(query, limit).await?;
    Ok(found
        .into_iter()
        .map(|info| {
            let files: Vec<String> = info
                .siblings
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.rfilename)
                .collect();
            SearchHit {
                repo: info.id,
                downloads: info.downloads.unwrap_or(0),
                likes: info.likes.unwrap_or(0),
                quants: select::labels(&select::models(&files)),
                gated: info
                    .gated
                    .is_some_and(|g| !(g.is_null() || g == serde_json::Value::Bool(false))),
            }
        })
        .collect())
}
