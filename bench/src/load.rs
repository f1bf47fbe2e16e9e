//! `--only load`: many WebSocket agents and SSE readers on one server. Reports the server's
//! memory with them connected, the offer latency they see (task created → offer in the agent's
//! hands, one task at a time and in a burst), and what a slow SSE reader that never reads does
//! to the server's memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_shared::ws::ServerMsg;
use agora_shared::TaskType;
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::client::{agent, submit};
use crate::server::Server;
use crate::{ms, pct};

/// Raises this process's open-file limit (the server, started after, inherits it).
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit fill and read a plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = libc::rlimit {
            rlim_cur: want.max(lim.rlim_cur),
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &target) != 0 {
            // Not allowed above the hard limit: take what there is.
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// One load agent: `ready 1`, accepts every offer, plans a job into `job_spec.n` tasks, completes
/// work at once, and reports each work offer's latency in milliseconds.
async fn connect(agent: &Client, lat: mpsc::UnboundedSender<f64>) -> anyhow::Result<()> {
    let mut session = agent.session().await?;
    session.ready(1).await?;
    tokio::spawn(async move {
        while let Ok(msg) = session.next().await {
            let ServerMsg::TaskOffer { offer_id, task, .. } = msg else {
                continue;
            };
            let arrived = chrono::Utc::now();
            let result = match task.task_type {
                TaskType::Plan => {
                    // A plan task's spec is its job's spec.
                    let n = task.task_spec["n"].as_u64().unwrap_or(1);
                    json!({ "task_specs": (0..n).map(|i| json!({ "i": i })).collect::<Vec<_>>() })
                }
                TaskType::Work => {
                    let waited = (arrived - task.created_at).num_microseconds().unwrap_or(0);
                    let _ = lat.send(waited as f64 / 1000.0);
                    json!(null)
                }
            };
            if session.accept(offer_id).await.is_err()
                || session.complete(task.id, result).await.is_err()
            {
                break;
            }
        }
    });
    Ok(())
}

/// An SSE reader of every event that counts the `id:` lines it sees without parsing them (500
/// readers parsing every event would load the bench's own cores, not the server's).
fn sse_reader(base: String, seen: Arc<AtomicU64>, resynced: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let Ok(res) = reqwest::get(format!("{base}/events")).await else {
            return;
        };
        let mut body = res.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            // `id: ` starts each message's id line; compact JSON never holds it (`"id":1`).
            // A SIMD search: a byte-by-byte scan of 500 readers' streams took a quarter of
            // both cores during the burst, the server's time as much as the bench's.
            let n = memchr::memmem::find_iter(&chunk, b"id: ").count();
            seen.fetch_add(n as u64, Ordering::Relaxed);
            if memchr::memmem::find(&chunk, b"event: resync").is_some() {
                resynced.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

fn report(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let d: Vec<Duration> = v
        .iter()
        .map(|m| Duration::from_secs_f64(m / 1000.0))
        .collect();
    println!(
        "  {name:<34} n={:<5} p50 {:>12}  p99 {:>12}  max {:>12}",
        d.len(),
        ms(pct(&d, 0.5)),
        ms(pct(&d, 0.99)),
        ms(d.last().copied().unwrap_or_default())
    );
}

async fn job_of(approver: &Client, n: usize) -> anyhow::Result<()> {
    let job = submit(approver, "load", json!({ "n": n })).await?;
    approver.approve(job, None).await?;
    Ok(())
}

pub async fn run(
    server: &Server,
    api: &Client,
    sockets: usize,
    sse: usize,
    samples: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let agents: Vec<Client> = futures::stream::iter(0..sockets)
        .map(|i| async move { agent(api, &format!("load-{i}")).await })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let approver = agent(api, "load-approver").await?;
    println!(
        "load: {sockets} agents registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    futures::stream::iter(agents.iter())
        .map(|a| connect(a, lat_tx.clone()))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .context("connecting the load agents")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "  {sockets} WebSocket agents connected in {:.1} s; server RSS {:.1} MB",
        started.elapsed().as_secs_f64(),
        server.rss_mb()
    );
    let counters: Vec<Arc<AtomicU64>> = (0..sse).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let resynced = Arc::new(AtomicU64::new(0));
    for c in &counters {
        sse_reader(server.base.clone(), c.clone(), resynced.clone());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "  + {sse} SSE readers: server RSS {:.1} MB",
        server.rss_mb()
    );

    // One task at a time: created → offered to one of the ready agents.
    let mut single = Vec::with_capacity(samples);
    for _ in 0..samples {
        job_of(&approver, 1).await?;
        let l = tokio::time::timeout(Duration::from_secs(30), lat_rx.recv())
            .await
            .context("no offer within 30 s")?
            .context("agents gone")?;
        single.push(l);
    }
    report("offer latency, one task at a time", single);
    // A burst: 2,000 tasks created at once, fanned out to the agents.
    let burst_n = 2000.min(sockets.max(1) * 4);
    job_of(&approver, burst_n).await?;
    let mut burst = Vec::with_capacity(burst_n);
    while burst.len() < burst_n {
        let l = tokio::time::timeout(Duration::from_secs(60), lat_rx.recv())
            .await
            .context("the burst stalled")?
            .context("agents gone")?;
        burst.push(l);
    }
    report(&format!("offer latency, burst of {burst_n}"), burst);
    println!("  server RSS after the offers: {:.1} MB", server.rss_mb());

    // A reader that never reads: the server must cut it off rather than queue for it.
    let addr = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api")
        .to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await?;
    slow.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut rss = vec![server.rss_mb()];
    // 20,000 tasks: ~20 MB of events, more than the server's buffer of segments (8 MB) and
    // the socket's own buffers together.
    for _ in 0..10 {
        job_of(&approver, 2000).await?;
        let mut got = 0;
        while got < 2000 {
            tokio::time::timeout(Duration::from_secs(60), lat_rx.recv())
                .await
                .context("stalled")?;
            got += 1;
        }
        rss.push(server.rss_mb());
    }
    // Read what reached the socket: a server that gave up on the reader told it to `resync`
    // and ended the response (the last chunk of a chunked body).
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = slow.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    let cut_off = text.contains("event: resync") && seen.ends_with(b"\r\n0\r\n\r\n");
    let series: Vec<String> = rss.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "  slow SSE reader (never reads) during 20,000 more tasks: server RSS after each 2,000: {} MB; it held {} KB when the server told it to resync and ended its stream: {}",
        series.join(" → "),
        seen.len() / 1024,
        if cut_off { "yes" } else { "no" }
    );
    // The readers may still be catching up (the server holds events while it offers): wait
    // until their counts stop moving.
    let total = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut last = total();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = total();
        if now == last {
            break;
        }
        last = now;
    }
    let seen: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!(
        "  SSE readers saw {}..{} events each; {} of them fell behind and were told to resync",
        seen.iter().min().unwrap_or(&0),
        seen.iter().max().unwrap_or(&0),
        resynced.load(Ordering::Relaxed)
    );
    Ok(())
}
