//! Submit a job: a title and a JSON spec, checked as you type.

use agora_shared::SubmitJob;
use leptos::prelude::*;
use leptos_router::hooks::use_navigate;

use crate::api;

/// The spec as JSON, or what is wrong with it.
fn parse_spec(text: &str) -> Result<serde_json::Value, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))
}

#[component]
pub fn SubmitPage() -> impl IntoView {
    let title = RwSignal::new(String::new());
    let spec = RwSignal::new("{\n  \n}".to_string());
    let priority = RwSignal::new(String::new());
    let failure = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let spec_error = move || parse_spec(&spec.get()).err();
    let title_error = move || {
        let t = title.get();
        (t.trim().is_empty() || t.chars().count() > 200).then_some("1 to 200 characters")
    };
    let navigate = use_navigate();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(job_spec) = parse_spec(&spec.get_untracked()) else {
            return;
        };
        let body = SubmitJob {
            title: title.get_untracked().trim().to_string(),
            job_spec,
            priority: priority.get_untracked().trim().parse().ok(),
            approvals_required: None,
            submitted_by: None,
            approval_ttl_secs: None,
            plan_approvals_required: None,
            idempotency_key: None,
        };
        busy.set(true);
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            let answer = api::submit(&body).await;
            busy.set(false);
            match answer {
                Ok(job) => navigate(&format!("/jobs/{}", job.id), Default::default()),
                Err(e) => failure.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <h1>"Submit a job"</h1>
        <form class="submit" on:submit=submit novalidate>
            <label for="title">"Title"</label>
            <input id="title" type="text" required maxlength="200" autocomplete="off"
                aria-invalid=move || title_error().is_some().to_string()
                on:input=move |ev| title.set(event_target_value(&ev))/>
            <label for="spec">"Job spec (JSON)"</label>
            <textarea id="spec" rows="12" spellcheck="false"
                aria-invalid=move || spec_error().is_some().to_string()
                aria-describedby="spec-status"
                prop:value=move || spec.get()
                on:input=move |ev| spec.set(event_target_value(&ev))></textarea>
            <p id="spec-status" class=move || if spec_error().is_some() { "error" } else { "ok" } aria-live="polite">
                {move || spec_error().unwrap_or_else(|| "valid JSON".into())}
            </p>
            <label for="priority">"Priority (higher first, optional)"</label>
            <input id="priority" type="number" step="1" on:input=move |ev| priority.set(event_target_value(&ev))/>
            <button type="submit" disabled=move || busy.get() || spec_error().is_some() || title_error().is_some()>
                "Submit"
            </button>
            {move || failure.get().map(|f| view! { <p class="error" role="alert">{f}</p> })}
        </form>
    }
}
