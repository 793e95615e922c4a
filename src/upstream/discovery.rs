//! Service discovery: targets that change without editing the config.
//!
//! `discovery: { file: targets.yaml }` polls a file holding a list of targets
//! (the same entries `targets:` takes: `host:port` or `{ addr, weight, backup }`),
//! the shape config-management tools and Kubernetes ConfigMaps produce. A file
//! that goes missing or invalid keeps the last good targets.
//!
//! `discovery: { dns: name:port }` resolves the name's A and AAAA records every
//! `refresh`; `dns_srv: _http._tcp.name` its SRV records, each target with its
//! port and weight (records of a worse priority become backups). A name that
//! does not resolve keeps the last good targets (none at start: the upstream
//! answers 503 until it resolves).

use super::{parse_target, TargetSpec, UpstreamPool};
use crate::config::model::TargetConfig;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
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
    DnsSrv {
        name: String,
        refresh: Duration,
        nameservers: Vec<SocketAddr>,
    },
}

/// What a DNS watcher resolves.
#[derive(Debug, Clone)]
enum DnsQuery {
    /// A and AAAA of a name, all on one port.
    Addresses { name: String, port: u16 },
    /// SRV records, each target's addresses on the record's port.
    Service { name: String },
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

/// Starts watching, if the pool discovers its targets.
pub(super) fn start(pool: &Arc<UpstreamPool>) {
    match &pool.discovery {
        Some(Discovery::File { path, refresh }) => {
            tokio::spawn(watch_file(Arc::downgrade(pool), path.clone(), *refresh));
        }
        Some(Discovery::Dns {
            name,
            port,
            refresh,
            nameservers,
        }) => {
            let query = DnsQuery::Addresses {
                name: name.clone(),
                port: *port,
            };
            spawn_dns(pool, query, nameservers, *refresh);
        }
        Some(Discovery::DnsSrv {
            name,
            refresh,
            nameservers,
        }) => spawn_dns(pool, DnsQuery::Service { name: name.clone() }, nameservers, *refresh),
        None => {}
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

fn spawn_dns(pool: &Arc<UpstreamPool>, query: DnsQuery, nameservers: &[SocketAddr], refresh: Duration) {
    match resolver(nameservers) {
        Ok(resolver) => {
            tokio::spawn(watch_dns(Arc::downgrade(pool), resolver, query, refresh));
        }
        Err(error) => tracing::error!(upstream = &*pool.name, %error, "cannot set up DNS resolution"),
    }
}

/// The targets a DNS query yields now, sorted so that answers compare equal
/// whatever order the server gave them in.
async fn resolve(resolver: &TokioResolver, query: &DnsQuery) -> Result<Vec<TargetSpec>, String> {
    let mut specs = Vec::new();
    match query {
        DnsQuery::Addresses { name, port } => {
            let answer = resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| format!("{name} does not resolve: {e}"))?;
            specs.extend(answer.iter().map(|ip| TargetSpec {
                addr: SocketAddr::new(ip, *port).to_string(),
                weight: 1,
                backup: false,
            }));
        }
        DnsQuery::Service { name } => {
            let answer = resolver
                .lookup(name.as_str(), RecordType::SRV)
                .await
                .map_err(|e| format!("{name} has no SRV records: {e}"))?;
            let records: Vec<_> = answer
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            // The lowest priority value is preferred; the rest stand by.
            let best = records.iter().map(|srv| srv.priority).min().unwrap_or_default();
            for srv in records {
                let host = srv.target.to_string();
                let ips = resolver
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|e| format!("{host} (from {name}) does not resolve: {e}"))?;
                specs.extend(ips.iter().map(|ip| TargetSpec {
                    addr: SocketAddr::new(ip, srv.port).to_string(),
                    weight: u32::from(srv.weight.max(1)),
                    backup: srv.priority > best,
                }));
            }
        }
    }
    specs.sort_by(|a, b| a.addr.cmp(&b.addr));
    specs.dedup_by(|a, b| a.addr == b.addr);
    Ok(specs)
}

async fn watch_dns(pool: Weak<UpstreamPool>, resolver: TokioResolver, query: DnsQuery, refresh: Duration) {
    let mut applied: Option<Vec<TargetSpec>> = None;
    let mut last_error: Option<String> = None;
    loop {
        let resolved = resolve(&resolver, &query).await;
        let Some(pool) = pool.upgrade() else { return };
        match resolved {
            Ok(specs) if applied.as_ref() != Some(&specs) => match pool.set_targets(&specs) {
                Ok(()) => {
                    tracing::info!(upstream = &*pool.name, targets = specs.len(), "DNS targets updated");
                    applied = Some(specs);
                    last_error = None;
                }
                Err(error) => report(&pool, error, &mut last_error),
            },
            Ok(_) => last_error = None,
            Err(error) => report(&pool, error, &mut last_error),
        }
        drop(pool);
        tokio::time::sleep(refresh).await;
    }
}
