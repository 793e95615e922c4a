//! What a build takes from the running process, shared by every domain's
//! compiler.

use crate::gateway::Gateway;
use crate::plugins::PluginState;
use crate::ratelimit::local::LocalStore;
use crate::telemetry::metrics::Metrics;
use std::sync::Arc;

/// What a build may take from outside the file: the process's metrics, and
/// the config running now, whose unchanged upstreams carry over with their
/// state (health, breakers, connections, discovered targets).
pub struct BuildContext<'a> {
    pub metrics: &'a Arc<Metrics>,
    /// Rate-limit counters kept in this process, across reloads.
    pub local_limits: &'a Arc<LocalStore>,
    /// What plugins keep across reloads (in-flight counts).
    pub plugin_state: &'a Arc<PluginState>,
    pub previous: Option<&'a Gateway>,
}
