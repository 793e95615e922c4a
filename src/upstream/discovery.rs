//! Service discovery: targets that change without editing the config.
//!
//! `discovery: { file: targets.yaml }` polls a file holding a list of targets
//! (the same entries `targets:` takes: `host:port` or `{ addr, weight, backup }`),
//! the shape config-management tools and Kubernetes ConfigMaps produce. A file
//! that goes missing or invalid keeps the last good targets.

use super::{parse_target, TargetSpec, UpstreamPool};
use crate::config::model::TargetConfig;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A compiled `discovery:` block.
#[derive(Debug, Clone)]
pub enum Discovery {
    File { path: PathBuf, refresh: Duration },
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
