//! The agents alert rules look at: organisation, hostname, folder, tags and presence, loaded
//! from the database by the supervisor (at start, on every reload, after a lagged event bus)
//! and shared read-only with the rule actors, which match scopes and describe alerts with it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use reap3r_store::{AlertAgent, Uuid};

use super::manage::Rule;

#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<RwLock<HashMap<Uuid, AlertAgent>>>);

impl Directory {
    pub fn get(&self, id: Uuid) -> Option<AlertAgent> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn replace_all(&self, agents: Vec<AlertAgent>) {
        let map = agents.into_iter().map(|a| (a.id, a)).collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    pub fn upsert(&self, agent: AlertAgent) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.id, agent);
    }

    pub fn remove(&self, id: Uuid) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Updates an agent's presence, if it is known.
    pub fn set_connected(&self, id: Uuid, connected: bool) {
        if let Some(a) = self
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&id)
        {
            a.connected = connected;
        }
    }

    /// Whether the rule watches this agent: same organisation and inside the scope.
    pub fn in_scope(&self, rule: &Rule, agent: Uuid) -> bool {
        self.get(agent).is_some_and(|a| matches(rule, &a))
    }

    /// The agents a rule watches.
    pub fn scope_of(&self, rule: &Rule) -> Vec<AlertAgent> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut agents: Vec<AlertAgent> =
            map.values().filter(|a| matches(rule, a)).cloned().collect();
        agents.sort_by_key(|a| a.id);
        agents
    }
}

fn matches(rule: &Rule, a: &AlertAgent) -> bool {
    let tags: Vec<Uuid> = a.tags.iter().map(|(id, _)| *id).collect();
    a.org_id == rule.org_id && rule.scope.matches(a.id, a.folder_id, &tags)
}
