//! Memory given back after bursts. glibc's malloc keeps what a burst freed (heaptrack showed
//! 18.5 MB still allocated in a server holding 100 to 200 MB after the throughput runs), so
//! once the server goes quiet the scheduler asks it to return its free pages to the system.
//! Trimming walks every heap under its lock; done only when no event happened for a whole
//! scheduler interval, it costs agents nothing. Background work that makes no event (the git
//! writer catching up) can free more meanwhile, so the trim repeats each quiet interval until
//! there is nothing left to give back.

/// Hands free heap memory back to the system (glibc); whether there was any. Nothing to do
/// elsewhere.
pub fn give_back() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases pages that malloc holds free; it touches no live
    // allocation.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Decides when to trim: at each tick where the newest event id has not moved since the tick
/// before, until a trim finds nothing to give back; again after the next event.
#[derive(Debug, Default)]
pub struct QuietTrim {
    last_seen: Option<i64>,
    /// The quiet period (by its newest event) whose memory is all given back.
    done_at: Option<i64>,
}

impl QuietTrim {
    /// Called each scheduler tick with the newest event id; true when it is time to trim.
    pub fn tick(&mut self, newest_event: i64) -> bool {
        let quiet = self.last_seen == Some(newest_event);
        self.last_seen = Some(newest_event);
        quiet && self.done_at != Some(newest_event)
    }

    /// What the trim did: nothing left to give back ends this quiet period's trims.
    pub fn trimmed(&mut self, gave_back: bool) {
        if !gave_back {
            self.done_at = self.last_seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_while_quiet_until_nothing_is_left() {
        let mut q = QuietTrim::default();
        assert!(!q.tick(5), "the first tick has nothing to compare");
        assert!(q.tick(5), "quiet for an interval");
        q.trimmed(true);
        assert!(q.tick(5), "it gave some back: again");
        q.trimmed(false);
        assert!(!q.tick(5), "nothing left this quiet period");
        assert!(!q.tick(9), "busy again");
        assert!(q.tick(9), "quiet again: trims again");
        let _ = give_back();
    }
}
