//! Where answers are kept: in this process's memory, bounded in bytes with
//! W-TinyLFU admission and eviction (`moka`), or in Redis, shared by every
//! node. A Redis that cannot be reached is a miss and a skipped store,
//! never an error to the client.

use super::entry::{Entry, Slot};
use super::key::Key;
use crate::ratelimit::redis::RedisStore;
use moka::sync::Cache as Moka;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to purge.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Purge {
    /// One URL: `host/path?query` (the host as clients send it).
    Url(String),
    /// Every URL whose path starts with this.
    Prefix(String),
    /// Every answer tagged with this `Surrogate-Key` / `Cache-Tag`.
    Tag(String),
    All,
}

#[derive(Clone)]
pub enum Store {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

pub struct MemoryStore {
    entries: Moka<Key, Arc<Slot>>,
    bound: u64,
}

/// Each entry lives as long as it may be of use (`Entry::keep_for`).
struct KeepFor;

impl moka::Expiry<Key, Arc<Slot>> for KeepFor {
    fn expire_after_create(&self, _key: &Key, slot: &Arc<Slot>, _at: Instant) -> Option<Duration> {
        match &**slot {
            Slot::Answer(entry) => Some(entry.keep_for(crate::clock::system_now())),
            // Variant lists outlive their variants a little: no harm.
            Slot::Varies(_) => Some(Duration::from_secs(24 * 3600)),
        }
    }
}

impl MemoryStore {
    pub fn new(bound: u64) -> MemoryStore {
        let entries = Moka::builder()
            .max_capacity(bound)
            .weigher(|_: &Key, slot: &Arc<Slot>| match &**slot {
                Slot::Answer(entry) => entry.weight().saturating_add(KEY_WEIGHT),
                Slot::Varies(names) => KEY_WEIGHT + (names.iter().map(String::len).sum::<usize>() + 64) as u32,
            })
            .expire_after(KeepFor)
            .support_invalidation_closures()
            .build();
        MemoryStore { entries, bound }
    }

    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// Bytes held now (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

const PREFIX: &str = "portico:cache:";

/// A key's bytes, as the bound counts them.
const KEY_WEIGHT: u32 = 32;

impl Store {
    pub async fn get(&self, key: &Key) -> Option<Arc<Slot>> {
        match self {
            Store::Memory(memory) => memory.entries.get(key),
            Store::Redis(redis) => {
                let mut connection = redis.connection().await.ok()?;
                let bytes: Option<Vec<u8>> = connection
                    .get(format!("{PREFIX}e:{key}"))
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "the cache's Redis cannot be read; a miss"))
                    .ok()?;
                postcard::from_bytes::<Slot>(&bytes?).ok().map(Arc::new)
            }
        }
    }

    pub async fn put(&self, key: &Key, slot: Slot) {
        match self {
            Store::Memory(memory) => memory.entries.insert(*key, Arc::new(slot)),
            Store::Redis(redis) => {
                let keep = match &slot {
                    Slot::Answer(entry) => entry.keep_for(crate::clock::system_now()),
                    Slot::Varies(_) => Duration::from_secs(24 * 3600),
                };
                let Ok(bytes) = postcard::to_allocvec(&slot) else {
                    return;
                };
                let Ok(mut connection) = redis.connection().await else {
                    return;
                };
                let entry_key = format!("{PREFIX}e:{key}");
                let ms = keep.as_millis().clamp(1, u64::MAX as u128) as u64;
                let mut pipe = redis::pipe();
                pipe.pset_ex(&entry_key, bytes, ms).ignore();
                // Indexes for invalidation and purges: by URL and by tag.
                if let Slot::Answer(entry) = &slot {
                    let mut index = |name: String| {
                        pipe.sadd(&name, &entry_key).ignore();
                        pipe.pexpire(&name, ms as i64).ignore();
                    };
                    index(format!("{PREFIX}u:{}", entry.url));
                    for tag in &entry.tags {
                        index(format!("{PREFIX}t:{tag}"));
                    }
                }
                if let Err(e) = pipe.query_async::<()>(&mut connection).await {
                    tracing::warn!(error = %e, "the cache's Redis cannot be written; not stored");
                }
            }
        }
    }

    /// Forgets every answer for one URL (after an unsafe method).
    pub async fn invalidate_url(&self, url: &str) {
        let _ = self.purge(&Purge::Url(url.to_string())).await;
    }

    pub async fn purge(&self, what: &Purge) -> Result<(), String> {
        match self {
            Store::Memory(memory) => {
                let entries = &memory.entries;
                let predicate: Box<dyn Fn(&Entry) -> bool + Send + Sync> = match what.clone() {
                    Purge::All => {
                        entries.invalidate_all();
                        return Ok(());
                    }
                    Purge::Url(url) => Box::new(move |e| e.url == url),
                    Purge::Prefix(prefix) => Box::new(move |e| path_of(&e.url).starts_with(&prefix)),
                    Purge::Tag(tag) => Box::new(move |e| e.tags.contains(&tag)),
                };
                entries
                    .invalidate_entries_if(move |_, slot| answer_of(slot).is_some_and(&predicate))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Store::Redis(redis) => {
                let mut connection = redis.connection().await?;
                let sets: Vec<String> = match what {
                    Purge::Url(url) => vec![format!("{PREFIX}u:{url}")],
                    Purge::Tag(tag) => vec![format!("{PREFIX}t:{tag}")],
                    Purge::Prefix(prefix) => {
                        let all = scan(&mut connection, &format!("{PREFIX}u:*")).await?;
                        let offset = format!("{PREFIX}u:").len();
                        all.into_iter()
                            .filter(|set| path_of(&set[offset..]).starts_with(prefix.as_str()))
                            .collect()
                    }
                    Purge::All => {
                        let all = scan(&mut connection, &format!("{PREFIX}*")).await?;
                        return delete(&mut connection, all).await;
                    }
                };
                let mut doomed = sets.clone();
                for set in &sets {
                    let members: Vec<String> = connection.smembers(set).await.map_err(|e| e.to_string())?;
                    doomed.extend(members);
                }
                delete(&mut connection, doomed).await
            }
        }
    }
}

fn answer_of(slot: &Slot) -> Option<&Entry> {
    match slot {
        Slot::Answer(entry) => Some(entry),
        Slot::Varies(_) => None,
    }
}

/// `host/path?query` → `/path?query`.
fn path_of(url: &str) -> &str {
    url.find('/').map_or("", |at| &url[at..])
}

async fn scan(connection: &mut redis::aio::ConnectionManager, pattern: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut iter: redis::AsyncIter<String> = connection.scan_match(pattern).await.map_err(|e| e.to_string())?;
    while let Some(key) = iter.next_item().await {
        keys.push(key.map_err(|e| e.to_string())?);
    }
    Ok(keys)
}

async fn delete(connection: &mut redis::aio::ConnectionManager, keys: Vec<String>) -> Result<(), String> {
    for chunk in keys.chunks(500) {
        let _: () = connection.del(chunk).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
