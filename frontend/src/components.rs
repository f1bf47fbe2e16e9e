//! Small pieces every view uses: live data, badges, progress bars, pagers, times.

use agora_shared::{Event, JobStatus, TaskStatus};
use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos_router::hooks::{query_signal, query_signal_with_options};
use leptos_router::NavigateOptions;

use crate::api::{self, ApiFailure};
use crate::live::{use_live, Conn};
use crate::names::AgentName;

/// Rows per page in every list.
pub const PER_PAGE: u64 = 50;

/// An API answer kept up to date: `None` until the first one arrives.
pub type Fetched<T> = RwSignal<Option<Result<T, ApiFailure>>>;

/// Loads `load(request())` (a call of [`api`]) now, again whenever the signals `request` reads
/// change, and again after events arrive. One request at a time: a change while one is out asks
/// for one more when it lands (with the request as it is then), so a burst of events never
/// piles requests up behind the browser's few connections (where they delayed everything else,
/// agents' name lookups included, by tens of seconds). An answer equal to the last one changes
/// nothing (no re-render).
pub fn fetched<R, T, F>(
    request: impl Fn() -> Option<R> + Send + Sync + 'static,
    load: impl Fn(R) -> F + Copy + Send + Sync + 'static,
) -> Fetched<T>
where
    R: 'static,
    F: std::future::Future<Output = Result<T, ApiFailure>> + 'static,
    T: PartialEq + Send + Sync + 'static,
{
    let live = use_live();
    let out: Fetched<T> = RwSignal::new(None);
    let in_flight = StoredValue::new(false);
    let again = StoredValue::new(false);
    let rerun = RwSignal::new(0u64);
    Effect::new(move |_| {
        live.tick.track();
        rerun.track();
        let Some(request) = request() else {
            return;
        };
        if in_flight.get_value() {
            again.set_value(true);
            return;
        }
        in_flight.set_value(true);
        leptos::task::spawn_local(async move {
            let answer = load(request).await;
            in_flight.set_value(false);
            if out.with_untracked(|o| o.as_ref() != Some(&answer)) {
                out.set(Some(answer));
            }
            if again.get_value() {
                again.set_value(false);
                rerun.update(|n| *n += 1);
            }
        });
    });
    out
}

/// Shows a fetched value with `render`, a loading line, or the error.
pub fn show<T: Clone + Send + Sync + 'static, V: IntoView + 'static>(
    data: Fetched<T>,
    render: impl Fn(T) -> V + Send + Sync + 'static,
) -> impl IntoView {
    move || match data.get() {
        None => view! { <p class="muted">"Loading…"</p> }.into_any(),
        Some(Err(e)) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
        Some(Ok(v)) => render(v).into_any(),
    }
}

#[component]
pub fn JobBadge(status: JobStatus) -> impl IntoView {
    let s = status.as_str();
    view! { <span class=format!("badge job-{s}") data-status=s>{s}</span> }
}

#[component]
pub fn TaskBadge(status: TaskStatus) -> impl IntoView {
    let s = status.as_str();
    view! { <span class=format!("badge task-{s}") data-status=s>{s}</span> }
}

#[component]
pub fn Progress(done: u32, total: u32, #[prop(into)] label: String) -> impl IntoView {
    let pct = if total == 0 {
        0
    } else {
        (u64::from(done) * 100 / u64::from(total)) as u32
    };
    view! {
        <div class="progress" role="progressbar" aria-label=label aria-valuemin="0"
            aria-valuemax="100" aria-valuenow=pct.to_string()>
            <div class="fill" style=format!("width:{pct}%")></div>
            <span class="progress-text">{format!("{done}/{total}")}</span>
        </div>
    }
}

/// A view's state kept in the URL's query string (`?status=failed&q=nightly`), so a reload, a
/// shared link and back/forward keep it. Changes made together (a filter and its page reset) make
/// one history entry.
#[derive(Clone, Copy)]
pub struct UrlText {
    value: Memo<Option<String>>,
    set: SignalSetter<Option<String>>,
}

impl UrlText {
    /// A parameter whose every change is a history entry (a filter).
    pub fn new(key: &'static str) -> Self {
        let (value, set) = query_signal::<String>(key);
        Self { value, set }
    }

    /// A parameter typed a key at a time (a search): it replaces the entry instead of adding one
    /// per keystroke.
    pub fn typed(key: &'static str) -> Self {
        let (value, set) = query_signal_with_options::<String>(
            key,
            NavigateOptions {
                replace: true,
                scroll: false,
                ..Default::default()
            },
        );
        Self { value, set }
    }

    pub fn get(&self) -> String {
        self.value.get().unwrap_or_default()
    }

    /// Sets it; empty removes it from the URL.
    pub fn set(&self, v: String) {
        self.set.set(Some(v).filter(|v| !v.is_empty()));
    }
}

/// A page number kept in the URL, 1-based there (`?page=3`) and 0-based here; page 1 leaves the
/// URL without it.
#[derive(Clone, Copy)]
pub struct UrlPage {
    value: Memo<Option<u64>>,
    set: SignalSetter<Option<u64>>,
}

impl UrlPage {
    pub fn new(key: &'static str) -> Self {
        let (value, set) = query_signal_with_options::<u64>(
            key,
            NavigateOptions {
                scroll: false,
                ..Default::default()
            },
        );
        Self { value, set }
    }

    pub fn get(&self) -> u64 {
        self.value.get().unwrap_or(1).max(1) - 1
    }

    pub fn get_untracked(&self) -> u64 {
        self.value.get_untracked().unwrap_or(1).max(1) - 1
    }

    pub fn set(&self, page: u64) {
        self.set.set((page > 0).then_some(page + 1));
    }
}

/// First / previous / next / last over `total` rows, `PER_PAGE` at a time.
#[component]
pub fn Pager(page: UrlPage, total: u64, #[prop(into)] what: String) -> impl IntoView {
    let pages = total.div_ceil(PER_PAGE).max(1);
    let current = page.get_untracked().min(pages - 1);
    let first = if total == 0 {
        0
    } else {
        current * PER_PAGE + 1
    };
    let last = ((current + 1) * PER_PAGE).min(total);
    // Computed here, not inside `view!`: there a `>` in an attribute closes the tag, and the rest
    // of the expression renders as the button's text.
    let (at_first, at_last) = (current == 0, current + 1 >= pages);
    view! {
        <nav class="pager" aria-label=format!("{what} pages")>
            <button type="button" class="pager-first" disabled=at_first on:click=move |_| page.set(0)>
                "« First"
            </button>
            <button type="button" class="pager-prev" disabled=at_first on:click=move |_| page.set(current.saturating_sub(1))>
                "‹ Previous"
            </button>
            <span class="pager-range">{format!("{first}–{last} of {total} {what}")}</span>
            <button type="button" class="pager-next" disabled=at_last on:click=move |_| page.set(current + 1)>
                "Next ›"
            </button>
            <button type="button" class="pager-last" disabled=at_last on:click=move |_| page.set(pages - 1)>
                "Last »"
            </button>
        </nav>
    }
}

/// The feed's state in the header.
#[component]
pub fn ConnIndicator() -> impl IntoView {
    let live = use_live();
    let text = move || match live.conn.get() {
        Conn::Connecting => "connecting…",
        Conn::Live => "live",
        Conn::Reconnecting => "reconnecting…",
    };
    let class = move || match live.conn.get() {
        Conn::Live => "conn conn-live",
        _ => "conn conn-down",
    };
    let title = move || format!("event feed: last event #{}", live.last_id.get());
    view! {
        <span id="conn" class=class role="status" aria-live="polite" data-state=text title=title>
            <span class="dot" aria-hidden="true"></span>
            {text}
        </span>
    }
}

/// `12 s ago`, `5 min ago`, or the date.
pub fn ago(t: &DateTime<Utc>) -> String {
    let secs = (Utc::now() - *t).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => t.format("%Y-%m-%d %H:%M").to_string(),
    }
}

pub fn short(id: &uuid::Uuid) -> String {
    id.to_string()[..8].to_string()
}

/// JSON for people.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A list of events, newest first.
#[component]
pub fn EventList(events: Vec<Event>) -> impl IntoView {
    if events.is_empty() {
        return view! { <p class="muted">"No events yet."</p> }.into_any();
    }
    view! {
        <ol class="events">
            {events
                .into_iter()
                .map(|e| {
                    let job = e.job_id.map(|j| {
                        view! { <a href=format!("/jobs/{j}")>{short(&j)}</a> }
                    });
                    view! {
                        <li>
                            <span class="event-id">{format!("#{}", e.id)}</span>
                            <span class="event-kind">{e.kind().as_str()}</span>
                            {job}
                            {e
                                .agent_id
                                .map(|a| {
                                    let name = e.agent_name().map(str::to_string);
                                    view! { <AgentName id=a name=name/> }
                                })}
                            <time datetime=e.at.to_rfc3339()>{ago(&e.at)}</time>
                        </li>
                    }
                })
                .collect_view()}
        </ol>
    }
    .into_any()
}

/// A warning across the top when the server listens beyond loopback with open registration or
/// open operator calls (`ALLOW_OPEN`): anyone who reaches it may register, approve and cancel.
#[component]
pub fn OpenBanner() -> impl IntoView {
    let open = RwSignal::new(false);
    leptos::task::spawn_local(async move {
        if let Ok(h) = api::health().await {
            open.set(h.open_access);
        }
    });
    move || {
        open.get().then(|| {
            view! {
                <div class="banner-open" role="alert">
                    "This server is open: it listens beyond loopback without REGISTRATION_TOKEN or ADMIN_TOKEN, so anyone who reaches it may register agents, approve and cancel jobs."
                </div>
            }
        })
    }
}
