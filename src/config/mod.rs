//! Config in three steps: the file model (`model`, read by `load`), the checks
//! and compilation into the runtime model (`compile`, which calls each
//! domain's own compiler; `check` holds the checks they share), and the
//! errors of both, each with its place in the file (`error`, `source_map`,
//! `yaml_syntax`).

pub mod build_context;
pub mod check;
pub mod compile;
mod env;
pub mod error;
pub mod load;
pub use load::block;
pub mod model;
mod source_map;
pub mod units;
mod yaml_syntax;

pub use build_context::BuildContext;
pub use error::{did_you_mean, suggestion, ConfigError, ConfigErrors};
pub use model::ConfigFile;
pub use source_map::Location;
pub use units::{parse_network, ByteSize, Duration, Percent};

use crate::gateway::Compiled;
use source_map::SourceMap;
use std::path::Path;

/// Parses and compiles config text: the one entry point `run` and `validate`
/// share. Blocks that do not parse are reported and the rest is still
/// compiled, so one run reports every error.
pub fn build(text: &str) -> Result<Compiled, ConfigErrors> {
    let metrics = std::sync::Arc::new(crate::telemetry::metrics::Metrics::new());
    let local_limits = std::sync::Arc::new(crate::ratelimit::local::LocalStore::new(1024));
    let plugin_state = std::sync::Arc::new(crate::plugins::PluginState::default());
    build_with(
        text,
        &BuildContext {
            metrics: &metrics,
            local_limits: &local_limits,
            plugin_state: &plugin_state,
            previous: None,
        },
    )
}

/// [`build`] for a running gateway: its metrics, and its current config to
/// carry unchanged upstreams over from.
pub fn build_with(text: &str, context: &BuildContext<'_>) -> Result<Compiled, ConfigErrors> {
    let partial = load::parse(text).map_err(|errors| located(errors, text))?;
    let mut errors = partial.errors;
    match compile::compile(&partial.file, &partial.unparsed_upstreams, context) {
        Ok(mut compiled) if errors.is_empty() => {
            compiled.gateway.hash = text_hash(text.as_bytes());
            Ok(compiled)
        }
        Ok(_) => Err(located(errors, text)),
        Err(more) => {
            errors.errors.extend(more.errors);
            Err(located(errors, text))
        }
    }
}

/// Reads and builds a config file.
pub fn build_file(path: &Path) -> Result<Compiled, ConfigErrors> {
    build(&read_file(path)?)
}

/// Names a config by its text: two nodes with the same hash run the same file.
pub fn text_hash(text: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text))
}

/// The config file's text, or the error that names it.
pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        let mut errors = ConfigErrors::default();
        errors.push("", format!("cannot read {}: {e}", path.display()));
        errors
    })
}

fn located(mut errors: ConfigErrors, text: &str) -> ConfigErrors {
    errors.locate(&SourceMap::build(text));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match build(text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    const LISTENER: &str = "listeners: [{ name: public, addr: '127.0.0.1:0' }]\n";

    #[test]
    fn a_bad_global_plugin_is_reported_once_not_once_per_route() {
        let text = format!(
            "{LISTENER}plugins: {{ cors: {{}} }}\nroutes:\n  - {{ name: a, match: {{ path: /a }}, respond: {{}} }}\n  - {{ name: b, match: {{ path: /b }}, respond: {{}} }}\n"
        );
        let found = errors(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("plugins.cors: missing field `origins`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_route_naming_an_upstream_when_none_is_declared_says_where_to_add_one() {
        let found = errors(&format!(
            "{LISTENER}routes:\n  - {{ name: a, match: {{ path: /a }}, upstream: users }}\n"
        ));
        assert_eq!(
            found,
            ["routes[0].upstream: unknown upstream \"users\"; no upstreams are declared: add one under `upstreams:` (line 3, column 37)"],
        );
    }

    #[test]
    fn upstream_blocks_are_checked_as_a_whole() {
        let text = format!(
            "{LISTENER}upstreams:\n  hashed: {{ targets: ['127.0.0.1:1'], balance: consistent_hash }}\n  stray: {{ targets: ['127.0.0.1:1'], hash_on: client_ip }}\n  backups: {{ targets: [{{ addr: '127.0.0.1:1', backup: true }}] }}\n  weights: {{ targets: [{{ addr: '127.0.0.1:1', weight: 0 }}, '127.0.0.1:2', '127.0.0.1:2'] }}\n  empty: {{ targets: [] }}\n  bad: {{ targets: ['http://x:1', 'nohost', '127.0.0.1:1'], timeouts: {{ connect: 0s }} }}\n"
        );
        let found = errors(&text).join("\n");
        for expected in [
            "upstreams.hashed: `balance: consistent_hash` needs `hash_on`",
            "upstreams.stray.hash_on: `hash_on` applies only with `balance: consistent_hash`",
            "upstreams.backups.targets: every target is a backup",
            "upstreams.weights.targets[0].weight: weight must be at least 1",
            "upstreams.weights.targets[2]: 127.0.0.1:2 is listed twice",
            "upstreams.empty.targets: no targets",
            "upstreams.bad.targets[0]: target \"http://x:1\" has a scheme or path",
            "upstreams.bad.targets[1]: target \"nohost\" has no port",
            "upstreams.bad.timeouts.connect: must be longer than zero",
        ] {
            assert!(found.contains(expected), "missing {expected:?} in:\n{found}");
        }
    }

    #[test]
    fn routes_need_exactly_one_destination_and_matching_extras() {
        let text = format!(
            "{LISTENER}upstreams: {{ u: {{ targets: ['127.0.0.1:1'] }} }}\nroutes:\n  - {{ name: none, match: {{ path: /a }} }}\n  - {{ name: both, match: {{ path: /b }}, upstream: u, respond: {{}} }}\n  - {{ name: extras, match: {{ path: /c }}, respond: {{ status: 99, body: x, json: 1 }}, preserve_host: true }}\n  - {{ name: 'bad name!', match: {{ path: /d }}, upstream: u }}\n"
        );
        let found = errors(&text).join("\n");
        for expected in [
            "routes[0]: the route needs somewhere to go",
            "routes[1]: a route has either `upstream` or `respond`, not both",
            "routes[2].preserve_host: applies only to routes with an `upstream`",
            "routes[2].respond.status: 99 is not a final status",
            "routes[2].respond: give either `body` or `json`, not both",
            "routes[3].name: route names use letters",
        ] {
            assert!(found.contains(expected), "missing {expected:?} in:\n{found}");
        }
    }

    #[test]
    fn health_checks_and_retries_refuse_zero_and_absurd_values() {
        let text = format!(
            "{LISTENER}upstreams:\n  u:\n    targets: ['127.0.0.1:1']\n    health_check:\n      active: {{ path: health, interval: 0s, timeout: 1s, healthy: 0, unhealthy: 0, expect: 2xx }}\n      passive: {{ consecutive_failures: 0, eject_for: 1m, max_eject_for: 10s }}\n    retries: {{ attempts: 50, on: [], buffer_body: 1GiB }}\n  v:\n    targets: ['127.0.0.1:2']\n    health_check: {{}}\n  x:\n    targets: ['127.0.0.1:4']\n    retries: {{ on: [404] }}\n  w:\n    targets: ['127.0.0.1:3']\n    retries: {{ budget: 200% }}\n"
        );
        let found = errors(&text).join("\n");
        for expected in [
            "upstreams.u.health_check.active.path: \"health\" is not a path",
            "upstreams.u.health_check.active.interval: must be longer than zero",
            "upstreams.u.health_check.active.timeout: must not be longer than `interval`",
            "upstreams.u.health_check.active.healthy: must be at least 1",
            "upstreams.u.health_check.active.unhealthy: must be at least 1",
            "upstreams.u.health_check.active.expect: invalid status range \"2xx\"",
            "upstreams.u.health_check.passive.consecutive_failures: must be at least 1",
            "upstreams.u.health_check.passive.max_eject_for: must be at least `eject_for`",
            "upstreams.u.retries.attempts: 50 retries is too many",
            "upstreams.u.retries.on: list what to retry on",
            "upstreams.u.retries.buffer_body: must be at most 16MiB",
            "upstreams.v.health_check: configure `active`, `passive`, or both",
            "upstreams.x.retries.on[0]: 404 cannot be retried on",
            "upstreams.w.retries.budget: invalid percentage \"200%\"",
        ] {
            assert!(found.contains(expected), "missing {expected:?} in:\n{found}");
        }
    }

    #[test]
    fn listeners_are_checked_and_env_references_resolved() {
        std::env::set_var("PORTICO_TEST_PORT_ADDR", "127.0.0.1:0");
        assert!(errors("listeners: [{ name: a, addr: '${env:PORTICO_TEST_PORT_ADDR}' }]\n").is_empty());
        let found = errors(
            "listeners:\n  - { name: a, addr: '127.0.0.1:8080', limits: { max_headers: 0, max_header_bytes: 10 } }\n  - { name: a, addr: '127.0.0.1:8080', timeouts: { idle: 0s } }\n",
        )
        .join("\n");
        for expected in [
            "listeners[0].limits.max_headers: must be at least 1",
            "listeners[0].limits.max_header_bytes: must be at least 1KiB",
            "listeners[1].name: duplicate listener name \"a\"",
            "listeners[1].addr: 127.0.0.1:8080 is used by another listener",
            "listeners[1].timeouts.idle: must be longer than zero",
        ] {
            assert!(found.contains(expected), "missing {expected:?} in:\n{found}");
        }
    }

    #[test]
    fn access_log_cluster_and_plugin_blocks_name_their_errors() {
        let text = format!(
            "{LISTENER}access_log: {{ format: combined, fields: [], file: '' }}\n\
             cluster: {{ redis: 'http://nope' }}\n\
             routes:\n  - name: a\n    match: {{ path: /a }}\n    respond: {{}}\n    plugins:\n      \
             concurrency_limit: {{ max: 0 }}\n      \
             ip_restriction: {{ allow: ['10.0.0.0/33'] }}\n      \
             cors: {{ origins: ['*', 'app.example.com'], credentials: true }}\n      \
             oauth2_introspection: {{ url: 'ftp://auth', client_id: a, client_secret: b }}\n      \
             basic_auth: {{ realm: 'a\"b' }}\n      \
             acl: {{}}\n"
        );
        let found = errors(&text).join("\n");
        for expected in [
            "access_log.fields: list at least one field",
            "access_log.fields: `fields` applies to `format: json`",
            "access_log.file: give a path",
            "cluster.redis: not a Redis URL",
            "routes[0].plugins.concurrency_limit.max: must be at least 1",
            "routes[0].plugins.ip_restriction.allow[0]: \"10.0.0.0/33\" is not an address or CIDR block",
            "routes[0].plugins.cors.origins[0]: `*` cannot be used with `credentials: true`",
            "routes[0].plugins.cors.origins[1]: \"app.example.com\" is not an origin",
            "routes[0].plugins.oauth2_introspection.url:",
            "routes[0].plugins.basic_auth.realm:",
            "routes[0].plugins.acl: list groups to `allow`, to `deny`, or both",
        ] {
            assert!(found.contains(expected), "missing {expected:?} in:\n{found}");
        }
    }
}
