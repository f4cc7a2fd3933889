//! An eval's results summarised per model id, and the tables people read: pass@1 with
//! its interval, problems passed, latency p50/p95, tokens, where the time went; for the
//! routing suite, the confusion table. Reads results only; runs nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::run::ProblemResult;
use super::stats::{PassAt1, pass_at_1, percentile};

/// One model id's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub pass_at_1: PassAt1,
    /// Answers checked (problems × samples) and how many passed.
    pub answers: usize,
    pub passed: usize,
    /// Answers the model did not give (errors), counted as failed.
    pub errors: usize,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub completion_tokens: usize,
    /// Mean milliseconds per answer in each part (over answers where it played).
    pub route_ms: Option<f64>,
    pub comp_ms: Option<f64>,
    pub solo_ms: Option<f64>,
    pub review_ms: Option<f64>,
}

/// Summaries in the order model ids first appear in `results`.
pub fn summarize(results: &[ProblemResult]) -> Vec<Summary> {
    let mut order: Vec<&str> = Vec::new();
    for r in results {
        if !order.contains(&r.model.as_str()) {
            order.push(&r.model);
        }
    }
    order
        .into_iter()
        .map(|model| {
            let mine: Vec<&ProblemResult> = results.iter().filter(|r| r.model == model).collect();
            // (samples, passed) per problem, in first-seen order.
            let mut per: Vec<(&str, usize, usize)> = Vec::new();
            for r in &mine {
                match per.iter_mut().find(|p| p.0 == r.problem) {
                    Some(p) => {
                        p.1 += 1;
                        p.2 += usize::from(r.passed);
                    }
                    None => per.push((&r.problem, 1, usize::from(r.passed))),
                }
            }
            let counts: Vec<(usize, usize)> = per.iter().map(|p| (p.1, p.2)).collect();
            let latencies: Vec<f64> = mine.iter().map(|r| r.latency_ms).collect();
            let mean = |f: fn(&ProblemResult) -> Option<f64>| {
                let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            Summary {
                model: model.to_string(),
                pass_at_1: pass_at_1(&counts),
                answers: mine.len(),
                passed: mine.iter().filter(|r| r.passed).count(),
                errors: mine.iter().filter(|r| r.status == "error").count(),
                latency_p50_ms: percentile(&latencies, 0.5),
                latency_p95_ms: percentile(&latencies, 0.95),
                completion_tokens: mine.iter().map(|r| r.completion_tokens).sum(),
                route_ms: mean(|r| r.parts.route_ms),
                comp_ms: mean(|r| r.parts.comp_ms),
                solo_ms: mean(|r| r.parts.solo_ms),
                review_ms: mean(|r| r.parts.review_ms),
            }
        })
        .collect()
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x >= 10_000.0 => format!("{:.1}s", x / 1e3),
        Some(x) if x >= 10.0 => format!("{x:.0}ms"),
        Some(x) => format!("{x:.2}ms"),
    }
}

/// The table: one row per model id.
pub fn render_table(suite: &str, summaries: &[Summary]) -> String {
    let mut out = String::new();
    let header = [
        "model", "pass@1", "95% CI", "passed", "p50", "p95", "tokens", "route", "comp", "solo",
        "review",
    ];
    let rows: Vec<[String; 11]> = summaries
        .iter()
        .map(|s| {
            let p = &s.pass_at_1;
            let passed = if s.answers == p.problems {
                format!("{}/{}", s.passed, s.answers)
            } else {
                format!("{}/{} ({} solved)", s.passed, s.answers, p.solved)
            };
            [
                s.model.clone(),
                format!("{:.1}%", p.value * 100.0),
                format!("{:.1}–{:.1}%", p.low * 100.0, p.high * 100.0),
                if s.errors > 0 {
                    format!("{passed}, {} errors", s.errors)
                } else {
                    passed
                },
                ms(s.latency_p50_ms),
                ms(s.latency_p95_ms),
                s.completion_tokens.to_string(),
                ms(s.route_ms),
                ms(s.comp_ms),
                ms(s.solo_ms),
                ms(s.review_ms),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(l, "{c:<w$}");
            } else {
                let _ = write!(l, "  {c:>w$}");
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    let _ = writeln!(out, "{suite}");
    line(&mut out, header.to_vec());
    for row in &rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    let interval = summaries.first().map_or("wilson", |s| s.pass_at_1.interval);
    let _ = writeln!(
        out,
        "pass@1 interval: {}; latency per answer; route/comp/solo/review: mean time per answer from the arrangement trace",
        if interval == "wilson" {
            "Wilson score, 95%"
        } else {
            "normal approximation over per-problem pass rates, 95%"
        }
    );
    out
}

/// For the routing suite: expected section (rows) against the section picked (columns),
/// per model id.
pub fn render_confusion(results: &[ProblemResult]) -> String {
    let mut out = String::new();
    let mut models: Vec<&str> = Vec::new();
    for r in results {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
    }
    for model in models {
        let mut cells: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut sections: Vec<String> = Vec::new();
        for r in results.iter().filter(|r| r.model == model) {
            let want = r.expected.clone().unwrap_or_else(|| "?".into());
            let got = r.section.clone().unwrap_or_else(|| "(none)".into());
            for s in [&want, &got] {
                if !sections.contains(s) {
                    sections.push(s.clone());
                }
            }
            *cells.entry((want, got)).or_default() += 1;
        }
        sections.sort();
        let w = sections.iter().map(|s| s.len()).max().unwrap_or(4).max(8);
        let _ = writeln!(
            out,
            "routing of `{model}`: expected (rows) → picked (columns)"
        );
        let mut head = format!("{:<w$}", "");
        for s in &sections {
            let _ = write!(head, "  {s:>w$}");
        }
        let _ = writeln!(out, "{}", head.trim_end());
        for want in &sections {
            let mut row = format!("{want:<w$}");
            for got in &sections {
                let n = cells
                    .get(&(want.clone(), got.clone()))
                    .copied()
                    .unwrap_or(0);
                let _ = write!(row, "  {n:>w$}");
            }
            let _ = writeln!(out, "{}", row.trim_end());
        }
    }
    out
}
