//! The figures of an eval: pass@k (Chen et al.'s unbiased estimator), its 95%
//! confidence interval, and latency percentiles. Pure functions of the results.
//!
//! Which interval: with one sample per problem, pass@1 is a proportion and its interval
//! is the Wilson score interval (right near 0 and 1 and for small samples, where the
//! normal approximation overshoots). With `n > 1` samples per problem, pass@1 is the
//! mean over problems of each problem's `c/n`; its interval is the normal approximation
//! of that mean (`mean ± z·s/√P`, `s` the standard deviation of the per-problem values,
//! clipped to [0, 1]).

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The unbiased estimate of pass@k for one problem with `n` samples of which `c`
/// passed: `1 - C(n-c, k) / C(n, k)` (Chen et al. 2021); `c/n` for k = 1.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(c <= n, "more passes ({c}) than samples ({n})");
    if k == 0 || n == 0 {
        return 0.0;
    }
    if n - c < k {
        return 1.0;
    }
    // The product form avoids large binomials: prod_{i=n-c+1}^{n} (1 - k/i).
    let mut fail = 1.0;
    for i in (n - c + 1)..=n {
        fail *= 1.0 - k as f64 / i as f64;
    }
    1.0 - fail
}

/// The Wilson score interval of `successes` out of `n` at the given z; (0, 1) for n = 0.
pub fn wilson(successes: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// pass@1 over problems and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PassAt1 {
    pub value: f64,
    pub low: f64,
    pub high: f64,
    /// Problems counted.
    pub problems: usize,
    /// Problems with at least one passing sample.
    pub solved: usize,
    /// `wilson` (one sample per problem) or `normal` (mean of per-problem rates).
    pub interval: &'static str,
}

/// pass@1 of problems given as `(samples, passed)` each: Wilson when every problem has
/// one sample, else the mean of `c/n` with a normal-approximation interval.
pub fn pass_at_1(problems: &[(usize, usize)]) -> PassAt1 {
    let counted: Vec<(usize, usize)> = problems.iter().copied().filter(|(n, _)| *n > 0).collect();
    let p = counted.len();
    let solved = counted.iter().filter(|(_, c)| *c > 0).count();
    if p == 0 {
        return PassAt1 {
            value: 0.0,
            low: 0.0,
            high: 1.0,
            problems: 0,
            solved: 0,
            interval: "wilson",
        };
    }
    if counted.iter().all(|(n, _)| *n == 1) {
        let (low, high) = wilson(solved, p, Z95);
        return PassAt1 {
            value: solved as f64 / p as f64,
            low,
            high,
            problems: p,
            solved,
            interval: "wilson",
        };
    }
    let rates: Vec<f64> = counted.iter().map(|&(n, c)| pass_at_k(n, c, 1)).collect();
    let mean = rates.iter().sum::<f64>() / p as f64;
    let half = if p > 1 {
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (p - 1) as f64;
        Z95 * (var / p as f64).sqrt()
    } else {
        0.0
    };
    PassAt1 {
        value: mean,
        low: (mean - half).max(0.0),
        high: (mean + half).min(1.0),
        problems: p,
        solved,
        interval: "normal",
    }
}

/// The `q`-quantile (0..=1) of `values` by linear interpolation between the nearest
/// ranks (numpy's default); `None` when empty.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}
