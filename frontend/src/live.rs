//! The one SSE connection (`/api/events`): every view refetches what it shows when events
//! arrive, and the header shows whether the feed is live. After a drop the browser (or, when it
//! gives up, this module) reconnects from the last event id.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use agora_shared::Event;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{EventSource, MessageEvent};

/// The state of the feed, as the connection indicator shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Live,
    Reconnecting,
}

/// Events kept for the overview's live list.
const RECENT: usize = 50;
/// Events replayed from the table when the page loads, so the overview starts full.
const AT_LOAD: i64 = 20;
/// Refetches happen at most this often, however many events arrive.
const COALESCE: Duration = Duration::from_millis(200);
/// Wait before opening a new connection when the browser gave up on the old one.
const RETRY: Duration = Duration::from_secs(1);

/// Shared by every view through context.
#[derive(Clone, Copy)]
pub struct Live {
    pub conn: ReadSignal<Conn>,
    /// Bumped after events arrive (coalesced): views refetch when it changes.
    pub tick: ReadSignal<u64>,
    /// The newest events, newest first.
    pub recent: ReadSignal<VecDeque<Event>>,
    pub last_id: ReadSignal<i64>,
}

#[derive(Clone, Copy)]
struct Writers {
    conn: WriteSignal<Conn>,
    tick: WriteSignal<u64>,
    recent: WriteSignal<VecDeque<Event>>,
    last_id: RwSignal<i64>,
    tick_pending: StoredValue<bool>,
}

thread_local! {
    static SOURCE: RefCell<Option<EventSource>> = const { RefCell::new(None) };
}

pub fn use_live() -> Live {
    expect_context::<Live>()
}

/// Opens the feed and provides [`Live`] to the app.
pub fn provide_live() {
    let (conn, set_conn) = signal(Conn::Connecting);
    let (tick, set_tick) = signal(0u64);
    let (recent, set_recent) = signal(VecDeque::new());
    let last_id = RwSignal::new(0i64);
    provide_context(Live {
        conn,
        tick,
        recent,
        last_id: last_id.read_only(),
    });
    let w = Writers {
        conn: set_conn,
        tick: set_tick,
        recent: set_recent,
        last_id,
        tick_pending: StoredValue::new(false),
    };
    // The overview starts full: the feed first replays the latest events from the table, then
    // goes on live (from the newest, when the count cannot be read).
    leptos::task::spawn_local(async move {
        match crate::api::stats().await {
            Ok(s) => open(w, Some((s.last_event_id - AT_LOAD).max(0))),
            Err(_) => open(w, None),
        }
    });
}

fn bump(w: Writers) {
    if w.tick_pending.get_value() {
        return;
    }
    w.tick_pending.set_value(true);
    set_timeout(
        move || {
            w.tick_pending.set_value(false);
            w.tick.update(|t| *t += 1);
        },
        COALESCE,
    );
}

/// Reconnects from the last event seen.
fn connect(w: Writers) {
    open(w, None)
}

/// Opens the feed after event `from`, or after the last one seen (`None`).
fn open(w: Writers, from: Option<i64>) {
    SOURCE.with(|s| {
        if let Some(old) = s.borrow_mut().take() {
            old.close();
        }
    });
    // Without a resume point the server starts at the newest event.
    let url = match (from, w.last_id.get_untracked()) {
        (Some(id), _) => format!("/api/events?last_event_id={id}"),
        (None, 0) => "/api/events".to_string(),
        (None, id) => format!("/api/events?last_event_id={id}"),
    };
    let Ok(source) = EventSource::new(&url) else {
        w.conn.set(Conn::Reconnecting);
        set_timeout(move || connect(w), RETRY);
        return;
    };

    let on_open = Closure::<dyn FnMut()>::new(move || {
        w.conn.set(Conn::Live);
        // Whatever happened while the feed was down shows up now.
        bump(w);
    });
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    on_open.forget();

    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |m: MessageEvent| {
        let Some(text) = m.data().as_string() else {
            return;
        };
        let Ok(event) = serde_json::from_str::<Event>(&text) else {
            return;
        };
        w.last_id.set(event.id);
        w.recent.update(|r| {
            r.push_front(event);
            r.truncate(RECENT);
        });
        bump(w);
    });
    source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();

    let on_error = Closure::<dyn FnMut()>::new(move || {
        w.conn.set(Conn::Reconnecting);
        let closed = SOURCE.with(|s| {
            s.borrow()
                .as_ref()
                .is_some_and(|s| s.ready_state() == EventSource::CLOSED)
        });
        // The browser retries by itself unless it gave up (an HTTP error): then we do.
        if closed {
            set_timeout(move || connect(w), RETRY);
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();

    // The server asks a client that fell behind to come back from its last id.
    let on_resync = Closure::<dyn FnMut()>::new(move || connect(w));
    let _ = source.add_event_listener_with_callback("resync", on_resync.as_ref().unchecked_ref());
    on_resync.forget();

    SOURCE.with(|s| *s.borrow_mut() = Some(source));
}
