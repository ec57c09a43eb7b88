//! The latency histogram: 64 logarithmic bins (three per doubling), the
//! bin of a duration and the percentile estimate read back from a
//! histogram. Used by the rollups (`rollup.rs`, one histogram per rollup
//! row and latency kind) and the stats read side (`stats.rs`).
//!
//! Pure arithmetic: no SQL, no I/O.

/// Histogram bins: 0 is [0, 1 ms), bin i in 1..63 is
/// [2^((i-1)/3), 2^(i/3)) ms, the last is everything from 2^(62/3) ms up.
pub const BINS: usize = 64;

/// The bin of a duration in milliseconds.
pub fn bin(ms: f64) -> usize {
    // Also catches NaN and negatives.
    if ms.is_nan() || ms < 1.0 {
        return 0;
    }
    let i = (ms.log2() * 3.0).floor() + 1.0;
    i.clamp(1.0, (BINS - 1) as f64) as usize
}

/// The lower and upper bound of bin `i`, in ms (the last bin's upper
/// bound is open: it is reported as `f64::INFINITY`).
pub fn bin_bounds(i: usize) -> (f64, f64) {
    match i {
        0 => (0.0, 1.0),
        i if i >= BINS - 1 => (2f64.powf((BINS - 2) as f64 / 3.0), f64::INFINITY),
        i => (2f64.powf((i - 1) as f64 / 3.0), 2f64.powf(i as f64 / 3.0)),
    }
}

/// Estimates the `q` quantile (0..=1) from a histogram and the largest
/// value seen: the bin holding the rank, interpolated geometrically within
/// it (linearly in bin 0), never above `max`. `None` for an empty
/// histogram.
pub fn percentile(hist: &[i64; BINS], max: f64, q: f64) -> Option<f64> {
    let n: i64 = hist.iter().sum();
    if n <= 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * n as f64;
    let mut before = 0i64;
    for (i, &c) in hist.iter().enumerate() {
        if c <= 0 {
            continue;
        }
        if (before + c) as f64 >= rank {
            let f = ((rank - before as f64) / c as f64).clamp(0.0, 1.0);
            let (lo, hi) = bin_bounds(i);
            let hi = if hi.is_finite() { hi } else { max.max(lo) };
            let v = if i == 0 {
                hi * f
            } else {
                lo * (hi / lo).powf(f)
            };
            return Some(if max.is_finite() { v.min(max) } else { v });
        }
        before += c;
    }
    Some(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_range_in_order() {
        assert_eq!(bin(0.0), 0);
        assert_eq!(bin(-3.0), 0);
        assert_eq!(bin(f64::NAN), 0);
        assert_eq!(bin(0.999), 0);
        assert_eq!(bin(1.0), 1);
        assert_eq!(bin(1e12), BINS - 1);
        let mut last = 0;
        let mut ms = 0.01;
        while ms < 1e8 {
            let b = bin(ms);
            assert!(b >= last, "bins must not go down at {ms}");
            let (lo, hi) = bin_bounds(b);
            // Within a rounding hair of the bin's bounds.
            assert!(
                ms >= lo * 0.999_999 && ms <= hi * 1.000_001,
                "{ms} in {b}: {lo}..{hi}"
            );
            last = b;
            ms *= 1.07;
        }
    }

    #[test]
    fn percentiles_are_within_a_bin_of_the_truth() {
        // A spread of latencies: 1..=2000 ms, skewed.
        let values: Vec<f64> = (1..=2000)
            .map(|i| (i as f64).powf(1.3) / 5.0 + 0.5)
            .collect();
        let mut hist = [0i64; BINS];
        for &v in &values {
            hist[bin(v)] += 1;
        }
        let max = values.iter().cloned().fold(0.0, f64::max);
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for q in [0.5, 0.95, 0.99] {
            let exact = sorted[((q * sorted.len() as f64).ceil() as usize).saturating_sub(1)];
            let est = percentile(&hist, max, q).unwrap();
            // One bin is a factor 2^(1/3) wide.
            let ratio = est / exact;
            assert!((0.79..=1.26).contains(&ratio), "q{q}: {est} vs {exact}");
        }
        assert_eq!(percentile(&hist, max, 1.0).unwrap(), max);
        assert!(percentile(&[0; BINS], 0.0, 0.5).is_none());
        // The open last bin ends at the largest value seen.
        let mut h = [0i64; BINS];
        h[BINS - 1] = 1;
        let p50 = percentile(&h, 5e6, 0.5).unwrap();
        assert!(p50 >= bin_bounds(BINS - 1).0 && p50 <= 5e6, "{p50}");
        assert_eq!(percentile(&h, 5e6, 1.0).unwrap(), 5e6);
    }
}
