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
    /// Lookups that failed, per agent: each is tried again a second later, a few times.
    failures: StoredValue<HashMap<Uuid, u32>>,
}

/// Lookups of one agent's name before the id prefix stays.
const LOOKUPS: u32 = 4;

pub fn provide_names() {
    provide_context(Names {
        known: RwSignal::new(HashMap::new()),
        asked: StoredValue::new(HashSet::new()),
        failures: StoredValue::new(HashMap::new()),
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
            match api::agent(id).await {
                Ok(agent) => names.known.update(|k| {
                    k.insert(id, agent.name);
                }),
                // The server did not answer, or not yet: a second later whatever shows the
                // agent asks again (it reads `known`, which the empty update wakes).
                Err(_) => {
                    let failed = names
                        .failures
                        .try_update_value(|f| {
                            let n = f.entry(id).or_default();
                            *n += 1;
                            *n
                        })
                        .unwrap_or(LOOKUPS);
                    if failed < LOOKUPS {
                        set_timeout(
                            move || {
                                names.asked.update_value(|a| {
                                    a.remove(&id);
                                });
                                names.known.update(|_| {});
                            },
                            std::time::Duration::from_secs(1),
                        );
                    }
                }
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
