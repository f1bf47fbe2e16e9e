//! What a quiet server gives back.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// A burst of reads opens several read connections (on SQLite each keeps a page cache of up to
/// 2 MB and a thread of its own); once the server is quiet it closes the idle ones but one. The
/// pool's own idle timeout never would: it hands each read to the connection idle the longest,
/// and the scheduler reads at every tick, so every connection stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_server_closes_the_read_connections_a_burst_opened() {
    let app = spawn_app_with(|c| c.scheduler_interval_secs = 0.2).await;
    let pool = app.store.reader_for_tests();
    let before = pool.size();
    for r in futures::future::join_all((0..64).map(|_| app.get("/jobs"))).await {
        assert!(r.status.is_success(), "{}: {}", r.status, r.body);
    }
    let opened = pool.size();
    assert!(
        opened > before,
        "64 reads at once should open more read connections than the {before} there were"
    );
    // What the server promises is about idle connections: on PostgreSQL the writer's loops
    // take connections from the same pool as they first get work and keep them, so the pool's
    // size alone may stay above what it was before the burst.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, idle) = (pool.size(), pool.num_idle());
        if idle <= 1 && now < opened {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} read connections ({idle} idle) 10 s after the burst (it opened {opened}, there were {before})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next burst opens them again.
    let r = app.get("/jobs").await;
    assert!(r.status.is_success(), "{}: {}", r.status, r.body);
}
