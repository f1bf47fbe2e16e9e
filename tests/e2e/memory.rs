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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = pool.size();
        if now <= before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} read connections ({} idle) 10 s after the burst (it opened {opened}, there were {before})", pool.num_idle()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next burst opens them again.
    let r = app.get("/jobs").await;
    assert!(r.status.is_success(), "{}: {}", r.status, r.body);
}
