//! Rows, summaries and the handoff histogram.
//!
//! Every figure is printed as one tab-separated row:
//! `metric  implementation  x  median  min  max  unit`, where `x` is empty for a single
//! figure and the point on the horizontal axis (bytes, processes) for a curve, and
//! median/min/max summarise the repeated runs of that figure.

use std::sync::atomic::{AtomicU64, Ordering};

/// Median, minimum and maximum of the runs of one figure.
pub fn summary(samples: &[f64]) -> (f64, f64, f64) {
    assert!(!samples.is_empty(), "no samples");
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// Print one figure: the summary of its runs.
pub fn row(metric: &str, implementation: &str, x: Option<f64>, samples: &[f64], unit: &str) {
    let (median, min, max) = summary(samples);
    let x = x.map_or(String::new(), |x| format!("{x}"));
    println!("{metric}\t{implementation}\t{x}\t{median:.6}\t{min:.6}\t{max:.6}\t{unit}");
}

/// A note for the report (machine state during a measurement).
pub fn note(text: &str) {
    println!("# info: {text}");
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Log-scale histogram of nanosecond durations: 32 buckets per octave (bucket width
/// about 2.2%), up to 2^40 ns. Children count locally and add into a shared copy once.
pub const PER_OCTAVE: f64 = 32.0;
pub const BUCKETS: usize = 40 * 32;

#[inline]
pub fn bucket(ns: u64) -> usize {
    if ns <= 1 {
        0
    } else {
        ((ns as f64).log2() * PER_OCTAVE) as usize
    }
    .min(BUCKETS - 1)
}

/// The geometric middle of a bucket, in nanoseconds.
fn bucket_value(i: usize) -> f64 {
    ((i as f64 + 0.5) / PER_OCTAVE).exp2()
}

/// Add a local histogram into a shared one.
pub fn merge(shared: &[AtomicU64], local: &[u64]) {
    for (s, &l) in shared.iter().zip(local) {
        if l != 0 {
            s.fetch_add(l, Ordering::Relaxed);
        }
    }
}

/// Percentile `p` of a histogram, in nanoseconds; `None` if it is empty.
pub fn hist_percentile(hist: &[u64], p: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total - 1) as f64 * p).round() as u64;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen > rank {
            return Some(bucket_value(i));
        }
    }
    None
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for all processes (vDSO, no system call).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
