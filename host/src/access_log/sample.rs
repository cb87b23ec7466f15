//! Which requests are logged: a configured fraction chosen at random per
//! request, and every failed one. The draw is a per-thread generator, so
//! deciding takes no lock and no system call.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

/// A fraction of requests to log.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Draws below this are logged; `None` logs every request.
    below: Option<u64>,
}

impl Sample {
    /// Log `fraction` of requests: 1 (or more) logs all of them, and the
    /// configuration keeps it above 0.
    pub fn new(fraction: f64) -> Sample {
        Sample {
            // `as` saturates: fractions too small for a u64 log no draw.
            below: (fraction < 1.0).then(|| (fraction * 2f64.powi(64)) as u64),
        }
    }

    /// Whether to log this request: always when it `failed`, otherwise
    /// with the configured probability.
    pub fn admits(&self, failed: bool) -> bool {
        failed || self.keeps(draw())
    }

    /// Whether a uniformly drawn `draw` falls in the logged fraction.
    fn keeps(&self, draw: u64) -> bool {
        self.below.is_none_or(|below| draw < below)
    }
}

/// A uniform 64-bit draw from this thread's SplitMix64 generator, seeded
/// from the process's random hash keys (distinct per thread).
fn draw() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_keeps_every_draw() {
        let all = Sample::new(1.0);
        for d in [0, 1, u64::MAX / 2, u64::MAX] {
            assert!(all.keeps(d));
        }
    }

    #[test]
    fn a_fraction_keeps_draws_below_its_share() {
        let quarter = Sample::new(0.25);
        assert!(quarter.keeps(0));
        assert!(quarter.keeps(u64::MAX / 4 - 1));
        assert!(!quarter.keeps(u64::MAX / 4 + 1));
        assert!(!quarter.keeps(u64::MAX));
        assert!(!Sample::new(1e-30).keeps(0));
    }

    #[test]
    fn failures_are_always_admitted() {
        let rare = Sample::new(1e-30);
        assert!((0..1000).all(|_| rare.admits(true)));
        assert!((0..1000).all(|_| !rare.admits(false)));
    }

    #[test]
    fn draws_admit_about_the_fraction() {
        let tenth = Sample::new(0.1);
        let n = 100_000;
        let admitted = (0..n).filter(|_| tenth.admits(false)).count();
        // 0.1 ± 5 standard deviations (σ ≈ 95).
        assert!((9_525..=10_475).contains(&admitted), "{admitted}");
    }

    #[test]
    fn threads_draw_different_sequences() {
        let here: Vec<u64> = (0..4).map(|_| draw()).collect();
        let there = std::thread::spawn(|| (0..4).map(|_| draw()).collect::<Vec<u64>>())
            .join()
            .unwrap();
        assert_ne!(here, there);
    }
}
