//! The one backoff rule the operator uses everywhere it waits after a failure: start small,
//! double, stop at a ceiling.

use std::time::Duration;

/// `first` doubled `step` times, at most `max` (no overflow for any `step`).
pub fn exponential(first: Duration, step: u32, max: Duration) -> Duration {
    // 2^20 already exceeds every ceiling in use; capping the shift keeps the product finite.
    first
        .checked_mul(1u32 << step.min(20))
        .map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let s = Duration::from_secs;
        let got: Vec<u64> = (0..9)
            .map(|step| exponential(s(5), step, s(300)).as_secs())
            .collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(exponential(s(5), u32::MAX, s(300)), s(300));
        assert_eq!(
            exponential(Duration::from_millis(800), 3, s(5)),
            Duration::from_secs(5)
        );
    }
}
