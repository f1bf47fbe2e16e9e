//! Memory given back after bursts. The whole process allocates through mimalloc
//! ([`Allocator`], declared by the binary; `override` makes SQLite's and libgit2's mallocs use it
//! too): glibc's malloc cost the SQLite writer a fifth of its time under load, and kept what a
//! burst freed (100 to 200 MB after the throughput runs). mimalloc returns freed pages to the
//! system on its own after a short delay. It is built without transparent huge pages (`no_thp`:
//! with them a fresh server held 38 MB instead of 20, whole 2 MiB pages resident for a few live
//! objects). Once the server goes quiet the scheduler also collects ([`give_back`]), so pages
//! freed by threads that went idle are returned too; it repeats each quiet interval while that
//! gives something back. Freed pages are purged after 10 ms (mimalloc 2's delay, not 3's
//! 1 s; [`configure`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The allocator the `agora` binary installs (`#[global_allocator]`).
#[cfg(feature = "mimalloc")]
pub type Allocator = mimalloc::MiMalloc;
/// Without the `mimalloc` feature: the system allocator, which heap profilers such as
/// heaptrack can follow, and nothing to collect.
#[cfg(not(feature = "mimalloc"))]
pub type Allocator = std::alloc::System;

/// Memory the allocator holds committed, in bytes (none known without mimalloc).
#[cfg(not(feature = "mimalloc"))]
fn committed() -> usize {
    0
}

/// Memory the allocator holds committed, in bytes.
#[cfg(feature = "mimalloc")]
fn committed() -> usize {
    let (mut elapsed, mut user, mut system) = (0, 0, 0);
    let (mut rss, mut peak_rss, mut commit, mut peak_commit, mut faults) = (0, 0, 0, 0, 0);
    // SAFETY: mi_process_info writes the counters it is given pointers to, nothing else.
    unsafe {
        libmimalloc_sys::mi_process_info(
            &mut elapsed,
            &mut user,
            &mut system,
            &mut rss,
            &mut peak_rss,
            &mut commit,
            &mut peak_commit,
            &mut faults,
        );
    }
    commit
}

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`; `libmimalloc-sys` names no constant
/// for it).
#[cfg(feature = "mimalloc")]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed pages wait before they are given back, milliseconds, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise: mimalloc 2's default. mimalloc 3's (1 s) kept 8-10 MB
/// more a minute after the throughput runs (62-71 MB against 54-59), for no throughput
/// measured (64 agents, three interleaved pairs).
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// Sets the allocator's options; call first thing in `main`.
pub fn configure() {
    #[cfg(feature = "mimalloc")]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an option's value, which the allocator reads at its
        // next purge.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Bumped by [`give_back`]: every thread collects its own free pages the next time it idles.
static ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last [`ASKED`] this thread collected for.
    static COLLECTED: Cell<u64> = const { Cell::new(0) };
}

/// Hands free memory back to the system; whether there was any. This thread's free pages go at
/// once; every other thread's when it next idles ([`collect_if_asked`]): an allocator thread
/// keeps the pages it freed until it collects them itself, and a tokio worker or the SQLite
/// writer that went quiet after a burst would keep them for good.
pub fn give_back() -> bool {
    let before = committed();
    ASKED.fetch_add(1, Ordering::Relaxed);
    collect_if_asked();
    committed() < before
}

/// Bumped at every quiet scheduler tick ([`drop_caches`]).
static CACHES: AtomicU64 = AtomicU64::new(0);

/// Asks threads that keep caches of their own (the SQLite writer) to drop them: the server is
/// quiet (no event for a scheduler interval), though it may still be writing (idle agents'
/// `last_seen`), and what such writes fill again is dropped at the next quiet tick.
pub fn drop_caches() {
    CACHES.fetch_add(1, Ordering::Relaxed);
}

/// How many times [`drop_caches`] has asked; a thread drops its caches when this moves.
pub fn caches_asked() -> u64 {
    CACHES.load(Ordering::Relaxed)
}

/// Collects this thread's free pages now (a thread that has just freed its caches).
pub fn collect_here() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect frees only what the allocator holds free.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// Collects this thread's free pages if [`give_back`] asked since it last did: the runtimes'
/// idle hook (`on_thread_park`) and a blocking thread's last act. Costs an atomic load when
/// nothing was asked.
pub fn collect_if_asked() {
    let asked = ASKED.load(Ordering::Relaxed);
    if COLLECTED.with(|c| c.replace(asked)) != asked {
        collect_here();
    }
}

/// Decides when to trim: at each tick where the newest event id has not moved since the tick
/// before, until a trim finds nothing to give back; again after the next event.
#[derive(Debug, Default)]
pub struct QuietTrim {
    last_seen: Option<i64>,
    /// The quiet period (by its newest event) whose memory is all given back.
    done_at: Option<i64>,
}

/// What a scheduler tick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// No event since the tick before.
    pub quiet: bool,
    /// Quiet, and this quiet period's memory is not all given back yet.
    pub trim: bool,
}

impl QuietTrim {
    /// Called each scheduler tick with the newest event id.
    pub fn tick(&mut self, newest_event: i64) -> Tick {
        let quiet = self.last_seen == Some(newest_event);
        self.last_seen = Some(newest_event);
        Tick {
            quiet,
            trim: quiet && self.done_at != Some(newest_event),
        }
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

    #[cfg(feature = "mimalloc")]
    #[test]
    fn the_purge_delay_is_mimallocs_option_and_set_to_10_ms() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option's value.
        let get = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(
            get(),
            1000,
            "option 15 is mimalloc 3's purge delay (default 1 s)"
        );
        configure();
        assert_eq!(get(), PURGE_DELAY_MS);
    }

    #[test]
    fn trims_while_quiet_until_nothing_is_left() {
        let mut q = QuietTrim::default();
        assert!(!q.tick(5).trim, "the first tick has nothing to compare");
        assert!(q.tick(5).trim, "quiet for an interval");
        q.trimmed(true);
        assert!(q.tick(5).trim, "it gave some back: again");
        q.trimmed(false);
        let t = q.tick(5);
        assert!(
            t.quiet && !t.trim,
            "still quiet, nothing left this quiet period"
        );
        assert_eq!(
            q.tick(9),
            Tick {
                quiet: false,
                trim: false
            },
            "busy again"
        );
        assert!(q.tick(9).trim, "quiet again: trims again");
        let _ = give_back();
    }
}
