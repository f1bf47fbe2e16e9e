//! Where the store's `now` comes from: the system clock, or a hand-driven one that tests move
//! forward instead of sleeping (leases, deadlines, backoff and cooldowns all read it).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;

/// The time in milliseconds since the Unix epoch (how the store keeps every time); cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that stands at `start_ms` until [`Clock::advance`] moves it.
    pub fn manual(start_ms: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The current minute, counted from the Unix epoch (the charts' unit).
    pub fn minute(&self) -> i64 {
        self.now_ms() / MINUTE_MS
    }

    /// Moves a manual clock forward (the system clock moves by itself).
    pub fn advance(&self, ms: i64) {
        if let Some(at) = &self.manual {
            at.fetch_add(ms, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        copy.advance(250);
        assert_eq!(clock.now_ms(), 1_250, "clones share the time");
        let system = Clock::system();
        assert!((system.now_ms() - chrono::Utc::now().timestamp_millis()).abs() < 1_000);
    }
}
