//! The live SSE feed, joined once for every reader. One task reads the store's events and joins
//! those that arrive close together into one buffer, a [`Segment`], at most once per [`PACE`]
//! (the first event after a quiet spell goes at once). Each SSE reader writes a segment as it
//! is, or the part of it after its last event id (a slice of the same bytes); a reader of one
//! job joins that job's events out of it. 500 readers used to copy every event into buffers of
//! their own and write each commit's events separately: 40% of the server's CPU, and offers
//! waiting behind the writes (1.8 → 10 ms).
//!
//! Agents first: while the dispatcher is handing out a burst of offers, joined events wait
//! until it is done (at most [`HOLD_MAX`]), then go together. A burst's offers no longer share
//! the cores with 500 readers' writes of the events the burst makes (2,000 offers' p99 went
//! from twice to about the same as with no reader).
//!
//! Nothing is lost or sent twice: events reach the segments in id order, a reader subscribes
//! before it reads the table for what it missed, and skips what it already sent by id. A
//! segment task that falls behind the store's broadcast sends a gap, and every reader resyncs
//! from the table.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::frames::Live;

/// After a segment, the next waits this long, so that a busy stretch's events go in fewer
/// writes (a write to a socket costs far more than its bytes).
pub const PACE: Duration = Duration::from_millis(25);
/// While the dispatcher is handing out offers, joined events wait for it to finish, at most
/// this long: agents first. An offer is the work itself; an SSE message reports it, and 500
/// readers' writes of a burst's events would otherwise take the cores the offers need.
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// Most bytes joined into one segment (more waiting goes in the next one).
const SEGMENT_BYTES: usize = 64 * 1024;
/// Segments a reader may fall behind before it is told to resync (each at most
/// [`SEGMENT_BYTES`], and a broadcast keeps its last this many that some reader has not read).
const BUFFER: usize = 128;
/// Held segments go out at this many even while offers are going out, so that a reader that
/// keeps up is never a whole buffer behind after one release.
const HOLD_SEGMENTS: usize = BUFFER / 2;

/// One event's place in a segment.
struct Mark {
    id: i64,
    job: Option<Uuid>,
    end: usize,
}

/// Events joined: their SSE messages back to back, in id order.
pub struct Segment {
    bytes: Bytes,
    marks: Vec<Mark>,
    /// The segment task fell behind the store's events: some are missing before this one.
    pub gap: bool,
}

impl Segment {
    fn gap() -> Segment {
        Segment {
            bytes: Bytes::new(),
            marks: Vec::new(),
            gap: true,
        }
    }

    /// The highest event id in it (0 for a gap).
    pub fn last_id(&self) -> i64 {
        self.marks.last().map_or(0, |m| m.id)
    }

    fn ranges(&self) -> impl Iterator<Item = (Range<usize>, &Mark)> {
        let starts = std::iter::once(0).chain(self.marks.iter().map(|m| m.end));
        starts.zip(&self.marks).map(|(s, m)| (s..m.end, m))
    }

    /// The messages of the events after `last` (of `job` only, when given): the segment's own
    /// bytes or a slice of them where they are one run, `None` when there is none.
    pub fn after(&self, last: i64, job: Option<Uuid>) -> Option<Bytes> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (range, mark) in self.ranges() {
            if mark.id <= last || (job.is_some() && mark.job != job) {
                continue;
            }
            match runs.last_mut() {
                Some(run) if run.end == range.start => run.end = range.end,
                _ => runs.push(range),
            }
        }
        match runs.as_slice() {
            [] => None,
            [one] => Some(self.bytes.slice(one.clone())),
            many => Some(Bytes::from(
                many.iter()
                    .flat_map(|r| self.bytes[r.clone()].iter().copied())
                    .collect::<Vec<u8>>(),
            )),
        }
    }
}

/// Builds a segment out of events.
#[derive(Default)]
struct Builder {
    bytes: Vec<u8>,
    marks: Vec<Mark>,
}

impl Builder {
    fn push(&mut self, e: &Live) {
        self.bytes.extend_from_slice(&e.sse());
        self.marks.push(Mark {
            id: e.id,
            job: e.job_id,
            end: self.bytes.len(),
        });
    }

    fn finish(self) -> Segment {
        Segment {
            bytes: Bytes::from(self.bytes),
            marks: self.marks,
            gap: false,
        }
    }
}

/// Where SSE readers subscribe.
#[derive(Clone)]
pub struct Segments {
    tx: broadcast::Sender<Arc<Segment>>,
}

impl Segments {
    /// Starts the task that joins `live` into segments; it ends with the server. `offering`
    /// is true while the dispatcher has more offers to hand out (see [`HOLD_MAX`]).
    pub fn start(
        live: broadcast::Receiver<Live>,
        offering: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> (Segments, tokio::task::JoinHandle<()>) {
        let (tx, _) = broadcast::channel(BUFFER);
        let task = tokio::spawn(join(live, tx.clone(), offering, shutdown));
        (Segments { tx }, task)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Segment>> {
        self.tx.subscribe()
    }
}

/// Events joined and not yet sent.
#[derive(Default)]
struct Held {
    done: Vec<Segment>,
    building: Builder,
    /// When the oldest of them arrived.
    since: Option<Instant>,
}

impl Held {
    fn push(&mut self, e: &Live) {
        self.since.get_or_insert_with(Instant::now);
        self.building.push(e);
        if self.building.bytes.len() >= SEGMENT_BYTES {
            self.done.push(std::mem::take(&mut self.building).finish());
        }
    }

    fn gap(&mut self) {
        self.since.get_or_insert_with(Instant::now);
        self.finish_building();
        self.done.push(Segment::gap());
    }

    fn finish_building(&mut self) {
        if !self.building.marks.is_empty() {
            self.done.push(std::mem::take(&mut self.building).finish());
        }
    }

    /// When they may go: after the pace; while offers go out, after [`HOLD_MAX`] (or once
    /// [`HOLD_SEGMENTS`] wait). `None` when nothing is held.
    fn due(&self, paced_until: Instant, offering: bool) -> Option<Instant> {
        let since = self.since?;
        if self.done.iter().any(|s| s.gap) {
            // Every reader resyncs anyway: at once.
            return Some(since);
        }
        if offering && self.done.len() < HOLD_SEGMENTS {
            return Some(paced_until.max(since + HOLD_MAX));
        }
        Some(paced_until)
    }

    fn send(&mut self, tx: &broadcast::Sender<Arc<Segment>>) {
        self.finish_building();
        for segment in self.done.drain(..) {
            // No reader is fine: each subscribes before it reads the table.
            let _ = tx.send(Arc::new(segment));
        }
        self.since = None;
    }
}

async fn join(
    mut live: broadcast::Receiver<Live>,
    tx: broadcast::Sender<Arc<Segment>>,
    mut offering: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held = Held::default();
    let mut paced_until = Instant::now();
    // The dispatcher is gone (the server stops): nothing holds the events any more.
    let mut dispatcher_gone = false;
    loop {
        let due = held.due(
            paced_until,
            !dispatcher_gone && *offering.borrow_and_update(),
        );
        if due.is_some_and(|d| d <= Instant::now()) {
            held.send(&tx);
            paced_until = Instant::now() + PACE;
            continue;
        }
        tokio::select! {
            r = live.recv() => match r {
                Ok(e) => {
                    if tx.receiver_count() == 0 {
                        // No reader: nothing to join.
                        continue;
                    }
                    held.push(&e);
                    // Take what else is there now, without a wake-up each.
                    loop {
                        match live.try_recv() {
                            Ok(e) => held.push(&e),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                held.gap();
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => held.gap(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
            // Only while something is held: the flag changes with each round of offers.
            r = offering.changed(), if due.is_some() && !dispatcher_gone => dispatcher_gone = r.is_err(),
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_shared::{Event, EventData};

    fn event(id: i64, job: Option<Uuid>) -> Live {
        crate::frames::Published::new(Event {
            id,
            job_id: job,
            task_id: None,
            agent_id: None,
            payload: EventData::AgentUnregistered(agora_shared::AgentNamed {
                name: format!("a{id}"),
            }),
            at: chrono::Utc::now(),
        })
    }

    fn segment(events: &[Live]) -> Segment {
        let mut b = Builder::default();
        for e in events {
            b.push(e);
        }
        b.finish()
    }

    #[test]
    fn a_reader_gets_the_events_after_its_last_as_one_slice() {
        let (a, b) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
        let events = [event(5, a), event(6, b), event(7, a)];
        let seg = segment(&events);
        let whole: Vec<u8> = events.iter().flat_map(|e| e.sse().to_vec()).collect();
        assert_eq!(seg.after(0, None).unwrap(), whole);
        assert_eq!(seg.after(4, None).unwrap().as_ptr(), seg.bytes.as_ptr());
        let tail: Vec<u8> = events[1..].iter().flat_map(|e| e.sse().to_vec()).collect();
        assert_eq!(seg.after(5, None).unwrap(), tail);
        assert!(seg.after(7, None).is_none());
        assert_eq!(seg.last_id(), 7);
    }

    #[test]
    fn a_job_reader_gets_that_jobs_events_only() {
        let (a, b) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
        let events = [event(5, a), event(6, b), event(7, a)];
        let seg = segment(&events);
        let of_a: Vec<u8> = [&events[0], &events[2]]
            .iter()
            .flat_map(|e| e.sse().to_vec())
            .collect();
        assert_eq!(seg.after(0, a).unwrap(), of_a);
        assert_eq!(seg.after(5, a).unwrap(), events[2].sse());
        assert_eq!(seg.after(0, b).unwrap(), events[1].sse());
        assert!(seg.after(6, b).is_none());
        assert!(seg.after(0, Some(Uuid::new_v4())).is_none());
    }

    /// A joiner fed by `events`, with the dispatcher's `offering` flag, and a reader of it.
    fn joiner(
        offering: bool,
    ) -> (
        broadcast::Sender<Live>,
        watch::Sender<bool>,
        broadcast::Receiver<Arc<Segment>>,
        watch::Sender<bool>,
    ) {
        let (events, live) = broadcast::channel(16);
        let (offering_tx, offering_rx) = watch::channel(offering);
        let (stop, stop_rx) = watch::channel(false);
        let (segments, _task) = Segments::start(live, offering_rx, stop_rx);
        (events, offering_tx, segments.subscribe(), stop)
    }

    async fn next(
        r: &mut broadcast::Receiver<Arc<Segment>>,
        within: Duration,
    ) -> Option<Arc<Segment>> {
        tokio::time::timeout(within, r.recv()).await.ok()?.ok()
    }

    #[tokio::test]
    async fn without_offers_going_out_the_first_event_goes_at_once() {
        let (events, _offering, mut reader, _stop) = joiner(false);
        let started = Instant::now();
        assert!(events.send(event(1, None)).is_ok());
        let seg = next(&mut reader, HOLD_MAX).await.expect("a segment");
        assert_eq!(seg.last_id(), 1);
        assert!(started.elapsed() < HOLD_MAX / 2, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn events_wait_while_offers_go_out_and_follow_them_together() {
        let (events, offering, mut reader, _stop) = joiner(true);
        assert!(events.send(event(1, None)).is_ok());
        assert!(events.send(event(2, None)).is_ok());
        assert!(
            next(&mut reader, HOLD_MAX / 4).await.is_none(),
            "held while the dispatcher hands out offers"
        );
        offering.send(false).unwrap();
        let seg = next(&mut reader, HOLD_MAX)
            .await
            .expect("sent once the offers are out");
        let ids: Vec<i64> = seg.marks.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2], "one segment, in order");
    }

    #[tokio::test]
    async fn events_wait_no_longer_than_the_hold() {
        let (events, _offering, mut reader, _stop) = joiner(true);
        let started = Instant::now();
        assert!(events.send(event(1, None)).is_ok());
        let seg = next(&mut reader, HOLD_MAX * 4)
            .await
            .expect("sent after the hold");
        assert_eq!(seg.last_id(), 1);
        assert!(started.elapsed() >= HOLD_MAX, "{:?}", started.elapsed());
    }
}
