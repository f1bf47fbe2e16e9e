//! The shell: header with navigation and the connection indicator, and the routes.

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;

use crate::components::{ConnIndicator, OpenBanner};
use crate::live::provide_live;
use crate::names::provide_names;
use crate::views::{
    agents::AgentsPage, job::JobPage, jobs::JobsPage, overview::Overview, submit::SubmitPage,
};

#[component]
pub fn App() -> impl IntoView {
    provide_live();
    provide_names();
    view! {
        <Router>
            <OpenBanner/>
            <header class="top">
                <a class="brand" href="/">"Agora"</a>
                <nav aria-label="Main">
                    <A href="/" exact=true>"Overview"</A>
                    <A href="/jobs">"Jobs"</A>
                    <A href="/agents">"Agents"</A>
                    <A href="/submit">"Submit a job"</A>
                </nav>
                <ConnIndicator/>
            </header>
            <main id="main">
                <Routes fallback=|| view! { <h1>"Not found"</h1><p><a href="/">"Back to the overview"</a></p> }>
                    <Route path=path!("/") view=Overview/>
                    <Route path=path!("/jobs") view=JobsPage/>
                    <Route path=path!("/jobs/:id") view=JobPage/>
                    <Route path=path!("/agents") view=AgentsPage/>
                    <Route path=path!("/submit") view=SubmitPage/>
                </Routes>
            </main>
        </Router>
    }
}
