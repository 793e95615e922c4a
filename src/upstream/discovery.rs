//! Service discovery: targets that change without editing the config.
//!
//! `discovery: { file: targets.yaml }` polls a file holding a list of targets
//! (the same entries `targets:` takes: `host:port` or `{ addr, weight, backup }`),
//! the shape config-management tools and Kubernetes ConfigMaps produce. A file
//! that goes missing or invalid keeps the last good targets.
//!
//! `discovery: { dns: name:port }` resolves the name's A and AAAA records every
//! `refresh`; a name that does not resolve keeps the last good targets (none
//! at start: the upstream answers 503 until it resolves).

use super::{parse_target, TargetSpec, UpstreamPool};
use crate::config::model::TargetConfig;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A compiled `discovery:` block.
#[derive(Debug, Clone)]
pub enum Discovery {
    File {
        path: PathBuf,
        refresh: Duration,
    },
    Dns {
        name: String,
        port: u16,
        refresh: Duration,
        /// Empty: the system's resolver configuration.
        nameservers: Vec<SocketAddr>,
    },
}

/// Reads a targets file; the error says what is wrong with it.
pub fn read_file(path: &std::path::Path) -> Result<Vec<TargetSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries: Vec<TargetConfig> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| {
            format!(
                "{} is not a list of targets (`- host:port` or `- {{ addr, weight }}`): {e}",
                path.display()
            )
        })?
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_target(entry.addr()).map_err(|e| format!("{} entry {i}: {e}", path.display()))?;
            if entry.weight() == 0 {
                return Err(format!("{} entry {i}: weight must be at least 1", path.display()));
            }
            Ok(TargetSpec {
                addr: entry.addr().to_string(),
                weight: entry.weight(),
                backup: entry.backup(),
            })
        })
        .collect()
}

/// Starts watching for every pool that discovers its targets.
pub fn start<'a>(pools: impl IntoIterator<Item = &'a Arc<UpstreamPool>>) {
    for pool in pools {
        match &pool.discovery {
            Some(Discovery::File { path, refresh }) => {
                tokio::spawn(watch_file(Arc::downgrade(pool), path.clone(), *refresh));
            }
            Some(Discovery::Dns {
                name,
                port,
                refresh,
                nameservers,
            }) => match resolver(nameservers) {
                Ok(resolver) => {
                    tokio::spawn(watch_dns(Arc::downgrade(pool), resolver, name.clone(), *port, *refresh));
                }
                Err(error) => tracing::error!(upstream = &*pool.name, %error, "cannot set up DNS resolution"),
            },
            None => {}
        }
    }
}

/// Loads the file into the pool now; used when the config is compiled, so
/// that the first requests already see the targets.
pub fn load_now(pool: &UpstreamPool) {
    if let Some(Discovery::File { path, .. }) = &pool.discovery {
        match read_file(path).and_then(|specs| pool.set_targets(&specs)) {
            Ok(()) => {}
            Err(error) => tracing::warn!(upstream = &*pool.name, %error, "no targets discovered yet: answering 503"),
        }
    }
}

async fn watch_file(pool: Weak<UpstreamPool>, path: PathBuf, refresh: Duration) {
    let mut applied: Option<Vec<TargetSpec>> = None;
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(refresh).await;
        let Some(pool) = pool.upgrade() else { return };
        let read = read_file(&path);
        match read {
            Ok(specs) if applied.as_ref() != Some(&specs) => match pool.set_targets(&specs) {
                Ok(()) => {
                    tracing::info!(
                        upstream = &*pool.name,
                        targets = specs.len(),
                        "discovered targets updated"
                    );
                    applied = Some(specs);
                    last_error = None;
                }
                Err(error) => report(&pool, error, &mut last_error),
            },
            Ok(_) => last_error = None,
            Err(error) => report(&pool, error, &mut last_error),
        }
    }
}

/// Logs a discovery error once, not at every poll.
fn report(pool: &UpstreamPool, error: String, last_error: &mut Option<String>) {
    if last_error.as_ref() != Some(&error) {
        tracing::error!(upstream = &*pool.name, %error, "discovery failed; keeping the last good targets");
        *last_error = Some(error);
    }
}

fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut builder = if nameservers.is_empty() {
        Resolver::builder_tokio().map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    // Every refresh asks again: answers must not come from a cache.
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

async fn watch_dns(pool: Weak<UpstreamPool>, resolver: TokioResolver, name: String, port: u16, refresh: Duration) {
    let mut applied: Option<Vec<TargetSpec>> = None;
    let mut last_error: Option<String> = None;
    loop {
        let resolved = resolver.lookup_ip(name.as_str()).await;
        let Some(pool) = pool.upgrade() else { return };
        match resolved {
            Ok(answer) => {
                let mut specs: Vec<TargetSpec> = answer
                    .iter()
                    .map(|ip| TargetSpec {
                        addr: SocketAddr::new(ip, port).to_string(),
                        weight: 1,
                        backup: false,
                    })
                    .collect();
                specs.sort_by(|a, b| a.addr.cmp(&b.addr));
                specs.dedup();
                if applied.as_ref() != Some(&specs) {
                    match pool.set_targets(&specs) {
                        Ok(()) => {
                            tracing::info!(upstream = &*pool.name, %name, targets = specs.len(), "DNS targets updated");
                            applied = Some(specs);
                        }
                        Err(error) => report(&pool, error, &mut last_error),
                    }
                }
                last_error = None;
            }
            Err(error) => report(&pool, format!("{name} does not resolve: {error}"), &mut last_error),
        }
        drop(pool);
        tokio::time::sleep(refresh).await;
    }
}
