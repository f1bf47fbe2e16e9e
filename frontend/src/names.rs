//! Agents by name, not id: the names the API gave (task lists, approvals, agent pages) are kept,
//! and an id seen without one (in an event) is asked for once (`GET /api/agents/:id`). Every
//! view shows an agent with [`AgentName`]: the name, with the id in its tooltip.

use std::collections::{HashMap, HashSet};

use leptos::prelude::*;
use uuid::Uuid;

use crate::api;
use crate::components::short;

#[derive(Clone, Copy)]
struct Names {
    known: RwSignal<HashMap<Uuid, String>>,
    asked: StoredValue<HashSet<Uuid>>,
}

pub fn provide_names() {
    provide_context(Names {
        known: RwSignal::new(HashMap::new()),
        asked: StoredValue::new(HashSet::new()),
    });
}

/// The agent's name when known; asks the server once when it is not.
fn name_of(names: Names, id: Uuid) -> Option<String> {
    if let Some(n) = names.known.with(|k| k.get(&id).cloned()) {
        return Some(n);
    }
    let first_ask = names
        .asked
        .try_update_value(|a| a.insert(id))
        .unwrap_or(false);
    if first_ask {
        leptos::task::spawn_local(async move {
            if let Ok(agent) = api::agent(id).await {
                names.known.update(|k| {
                    k.insert(id, agent.name);
                });
            }
        });
    }
    None
}

/// An agent as people read it: its name (the id's first 8 characters until the name is known),
/// the whole id in the tooltip.
#[component]
pub fn AgentName(id: Uuid, #[prop(default = None)] name: Option<String>) -> impl IntoView {
    let names = expect_context::<Names>();
    let name = name.filter(|n| !n.is_empty());
    if let Some(n) = &name {
        if names.known.with_untracked(|k| k.get(&id) != Some(n)) {
            names.known.update(|k| {
                k.insert(id, n.clone());
            });
        }
    }
    let text = move || {
        name.clone()
            .or_else(|| name_of(names, id))
            .unwrap_or_else(|| short(&id))
    };
    view! { <span class="agent-name" title=format!("agent {id}") data-agent=id.to_string()>{text}</span> }
}
