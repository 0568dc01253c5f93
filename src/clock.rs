//! The operator's idea of "now": the system clock, optionally shifted by a fixed offset.
//!
//! Reconcile decisions (check intervals, backoff, re-auth link expiry) and JWT assertion
//! lifetimes read the time through a [`Clock`], so that a node whose clock is off can be
//! rehearsed in tests by shifting it. In production the offset is zero.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The system clock, shifted by `offset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    offset: SignedDuration,
}

impl Clock {
    /// The system clock as it is.
    pub const fn system() -> Self {
        Self {
            offset: SignedDuration::ZERO,
        }
    }

    /// The system clock, ahead by `offset` (behind when negative), as on a skewed node.
    pub const fn skewed(offset: SignedDuration) -> Self {
        Self { offset }
    }

    /// How far this clock is from the system clock.
    pub fn offset(&self) -> SignedDuration {
        self.offset
    }

    /// The current time by this clock (the system time when the shift would leave the range
    /// of representable times).
    pub fn now(&self) -> Timestamp {
        let system = Timestamp::now();
        system.checked_add(self.offset).unwrap_or(system)
    }

    /// Seconds since the Unix epoch by this clock.
    pub fn unix_seconds(&self) -> i64 {
        self.now().as_second()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_shifts_now_both_ways() {
        let ten_minutes = SignedDuration::from_mins(10);
        for (clock, want) in [
            (Clock::system(), 0),
            (Clock::skewed(ten_minutes), 600),
            (Clock::skewed(-ten_minutes), -600),
        ] {
            let system = Timestamp::now().as_second();
            let got = clock.unix_seconds() - system;
            assert!((got - want).abs() <= 1, "{clock:?}: {got}");
        }
        assert_eq!(Clock::default(), Clock::system());
        // Out of range: falls back to the system time instead of panicking.
        let absurd = Clock::skewed(SignedDuration::MAX);
        assert!((absurd.unix_seconds() - Timestamp::now().as_second()).abs() <= 1);
    }
}
