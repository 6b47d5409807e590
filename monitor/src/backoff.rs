//! The one retry schedule of dqmon: exponential backoff with jitter, used
//! by alert delivery (whose attempts are stored with each message) and by
//! the Kafka source's dead-letter producer.
//!
//! Attempt `k` (from 1) waits a random time in `[d/2, d]` with
//! `d = min(initial · 2^(k−1), max)` ("equal jitter"): never less than
//! half the exponential delay, so a dead receiver is not hammered, and
//! spread, so that many retries do not arrive in step.

use std::time::Duration;

use rand::Rng;

/// An exponential schedule between `initial` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The exponential delay of attempt `attempt` (1 for the first retry),
    /// before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(30);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before attempt `attempt`: uniform in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let d = self.ceiling(attempt).as_millis() as u64;
        let half = d / 2;
        Duration::from_millis(half + rng.random_range(0..=d - half))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_with_jitter_in_its_upper_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let ms = |a| b.ceiling(a).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(8), ms(9), ms(40)],
            [100, 200, 400, 10_000, 10_000, 10_000]
        );
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for attempt in 1..12 {
            for _ in 0..50 {
                let d = b.delay(attempt, &mut rng);
                assert!(
                    d <= b.ceiling(attempt) && d >= b.ceiling(attempt) / 2,
                    "{d:?}"
                );
            }
        }
    }
}
