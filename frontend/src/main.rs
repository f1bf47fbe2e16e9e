//! Agora's dashboard: a Leptos CSR app over the REST API and one SSE connection.

mod api;
mod app;
mod charts;
mod components;
mod flow;
mod graph;
mod live;
mod names;
mod views;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
