//! The retry schedule and what a failed send means.
//!
//! A failure is retryable (back off exponentially with jitter), retry-after (the
//! provider said when), or permanent (never retry; the address is suppressed).
//! Attempts are capped: a retryable failure on the last attempt makes the
//! notification dead — counted, visible and replayable, never retried forever.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Retryable { reason: String },
    RetryAfter { after_ms: i64, reason: String },
    Permanent { reason: String },
}

impl Failure {
    pub fn reason(&self) -> &str {
        match self {
            Failure::Retryable { reason }
            | Failure::RetryAfter { reason, .. }
            | Failure::Permanent { reason } => reason,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub base_delay_ms: i64,
    pub max_delay_ms: i64,
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay_ms: 30_000,
            max_delay_ms: 3_600_000,
            max_attempts: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again at this time (ms since the epoch).
    RetryAt(i64),
    /// Permanent failure: do not retry, suppress the address.
    Failed,
    /// Retries exhausted.
    Dead,
}

impl RetryPolicy {
    /// The delay before attempt `attempts_made + 1`, with "equal jitter": half the
    /// exponential delay is fixed and half is random, so retries spread out without
    /// ever collapsing to zero. `jitter` is a uniform sample in `[0, 1)`.
    pub fn backoff_ms(&self, attempts_made: i32, jitter: f64) -> i64 {
        let exp = attempts_made.saturating_sub(1).clamp(0, 30) as u32;
        let full = self
            .base_delay_ms
            .saturating_mul(1_i64 << exp)
            .min(self.max_delay_ms)
            .max(1);
        let half = full / 2;
        half + ((full - half) as f64 * jitter.clamp(0.0, 1.0)) as i64
    }

    /// What to do after attempt number `attempts_made` failed with `failure` at `now`.
    pub fn decide(
        &self,
        attempts_made: i32,
        failure: &Failure,
        now_ms: i64,
        jitter: f64,
    ) -> Decision {
        match failure {
            Failure::Permanent { .. } => Decision::Failed,
            _ if attempts_made >= self.max_attempts => Decision::Dead,
            Failure::RetryAfter { after_ms, .. } => Decision::RetryAt(now_ms + (*after_ms).max(0)),
            Failure::Retryable { .. } => {
                Decision::RetryAt(now_ms + self.backoff_ms(attempts_made, jitter))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn retryable() -> Failure {
        Failure::Retryable {
            reason: "421 try later".into(),
        }
    }

    #[test]
    fn permanent_failures_are_never_retried() {
        let p = RetryPolicy::default();
        let f = Failure::Permanent {
            reason: "550 no such user".into(),
        };
        assert_eq!(p.decide(1, &f, 0, 0.5), Decision::Failed);
    }

    #[test]
    fn the_last_attempt_makes_it_dead() {
        let p = RetryPolicy {
            base_delay_ms: 10,
            max_delay_ms: 100,
            max_attempts: 3,
        };
        assert!(matches!(
            p.decide(2, &retryable(), 0, 0.0),
            Decision::RetryAt(_)
        ));
        assert_eq!(p.decide(3, &retryable(), 0, 0.0), Decision::Dead);
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = RetryPolicy::default();
        let f = Failure::RetryAfter {
            after_ms: 120_000,
            reason: "429".into(),
        };
        assert_eq!(p.decide(1, &f, 1_000, 0.9), Decision::RetryAt(121_000));
    }

    proptest! {
        #[test]
        fn backoff_grows_and_stays_within_bounds(attempt in 1i32..40, jitter in 0.0f64..1.0) {
            let p = RetryPolicy { base_delay_ms: 1_000, max_delay_ms: 60_000, max_attempts: 50 };
            let d = p.backoff_ms(attempt, jitter);
            let full = (1_000i64 << (attempt - 1).min(30)).min(60_000);
            prop_assert!(d >= full / 2 && d <= full, "delay {} outside [{}, {}]", d, full / 2, full);
            // Never shorter than the fixed half of the previous attempt's delay.
            if attempt > 1 {
                prop_assert!(d >= p.backoff_ms(attempt - 1, 0.0));
            }
        }
    }
}
