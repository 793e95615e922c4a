//! Request coalescing: of concurrent misses for one key, one goes upstream
//! (the leader) and the others wait for it, bounded, then look again.

use super::key::Key;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Flights {
    /// Keys with a request upstream. Touched on misses only.
    leaders: Mutex<HashMap<Key, Arc<Notify>>>,
}

pub enum Joined<'a> {
    /// Go upstream; the others wait until this is dropped.
    Lead(Leader<'a>),
    /// Another request went upstream and is done (or the wait ran out).
    Waited,
}

pub struct Leader<'a> {
    /// What it leads for; `None` when coalescing is off.
    flights: Option<(&'a Flights, Key)>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if let Some((flights, key)) = self.flights {
            let mut leaders = flights.leaders.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(notify) = leaders.remove(&key) {
                notify.notify_waiters();
            }
        }
    }
}

impl Flights {
    /// Leads for `key`, or waits up to `wait` for its leader. Without
    /// `wait` (coalescing off), every request leads.
    pub async fn join(&self, key: Key, wait: Option<Duration>) -> Joined<'_> {
        let Some(wait) = wait else {
            return Joined::Lead(Leader { flights: None });
        };
        let notified = {
            let mut leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
            match leaders.get(&key) {
                // Made under the lock: it hears the leader's end even before it is polled.
                Some(notify) => notify.clone().notified_owned(),
                None => {
                    leaders.insert(key, Arc::new(Notify::new()));
                    return Joined::Lead(Leader {
                        flights: Some((self, key)),
                    });
                }
            }
        };
        let _ = tokio::time::timeout(wait, notified).await;
        Joined::Waited
    }

    /// Leads for `key` only if no one does (a background refresh).
    pub fn try_lead(&self, key: Key) -> Option<Leader<'_>> {
        let mut leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        if leaders.contains_key(&key) {
            return None;
        }
        leaders.insert(key, Arc::new(Notify::new()));
        Some(Leader {
            flights: Some((self, key)),
        })
    }
}
