//! The cluster store: limit states in Redis, shared by every node, checked
//! and charged by one Lua script per request (one round trip, atomic on the
//! server). The script takes the time from Redis (`TIME`), so nodes with
//! skewed clocks still agree; calendar windows are computed by the node, in
//! the configured time zone, and passed in.
//!
//! The connection is a `redis` crate `ConnectionManager`: one multiplexed
//! connection per node that reconnects on its own after Redis comes back.

use super::{Algorithm, Limit, Verdict};
use redis::aio::ConnectionManager;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The same arithmetic as `Limit::check`, on the server.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, next, all = {}, {}, true
for i = 1, #KEYS do
  local p = (i - 1) * 7
  local alg, requests, per, burst = tonumber(ARGV[p+1]), tonumber(ARGV[p+2]), tonumber(ARGV[p+3]), tonumber(ARGV[p+4])
  local wstart, wend, ttl = tonumber(ARGV[p+5]), tonumber(ARGV[p+6]), tonumber(ARGV[p+7])
  local s = redis.call('HMGET', KEYS[i], 'a', 'b', 'c')
  local a, b, c = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
  local ok, remaining, reset
  if alg == 1 then
    local interval = math.max(math.floor(per / requests), 1)
    local capacity = math.max(burst, 1) * interval
    local new = math.max(a, now) + interval
    if new - now <= capacity then
      ok, remaining, reset = true, math.floor((capacity - (new - now)) / interval), math.ceil((new - now) / 1000)
      a = new
    else
      ok, remaining, reset = false, 0, math.max(math.ceil((new - now - capacity) / 1000), 1)
    end
  elseif alg == 2 then
    local start = now - (now % per)
    local cur, prev = 0, 0
    if a == start then cur, prev = b, c elseif a + per == start then prev = b end
    local elapsed = now - start
    local used = math.floor(prev * (per - elapsed) / per) + cur
    reset = math.ceil((per - elapsed) / 1000)
    if used < requests then
      ok, remaining = true, requests - used - 1
      a, b, c = start, cur + 1, prev
    else
      ok, remaining, reset = false, 0, math.max(reset, 1)
    end
  else
    local count = 0
    if a == wstart then count = b end
    reset = math.ceil((wend - now) / 1000)
    if count < requests then
      ok, remaining = true, requests - count - 1
      a, b = wstart, count + 1
    else
      ok, remaining = false, 0
    end
  end
  if not ok then all = false end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = reset
  next[i] = {a, b, c, ttl}
end
if all then
  for i = 1, #KEYS do
    redis.call('HSET', KEYS[i], 'a', next[i][1], 'b', next[i][2], 'c', next[i][3])
    redis.call('PEXPIRE', KEYS[i], next[i][4])
  end
end
return out
"#;

pub struct RedisStore {
    url: String,
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The store for `url`: shared by every plugin naming it, and kept
    /// across reloads while a config holds it. Checks the URL now; connects
    /// on first use.
    pub fn shared(url: &str) -> Result<Arc<RedisStore>, String> {
        static LIVE: Mutex<Vec<Weak<RedisStore>>> = Mutex::new(Vec::new());
        let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|w| w.strong_count() > 0);
        if let Some(existing) = live.iter().filter_map(Weak::upgrade).find(|s| s.url == url) {
            return Ok(existing);
        }
        let client = redis::Client::open(url).map_err(|e| {
            format!(
                "not a Redis URL (redis://host:port/db, rediss:// or unix://): {}",
                e.category()
            )
        })?;
        let store = Arc::new(RedisStore {
            url: url.to_string(),
            client,
            connection: OnceCell::new(),
            script: redis::Script::new(SCRIPT),
        });
        live.push(Arc::downgrade(&store));
        Ok(store)
    }

    pub(crate) async fn connection(&self) -> Result<ConnectionManager, String> {
        self.connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// Checks one request against every `(key, limit)` in one script run.
    /// `bounds` gives each calendar limit's window, in ms since the epoch.
    pub async fn check(
        &self,
        checks: &[(String, &Limit, (u64, u64))],
        timeout: Duration,
    ) -> Result<Vec<Verdict>, String> {
        let run = async {
            let mut connection = self.connection().await?;
            let mut invocation = self.script.prepare_invoke();
            for (key, limit, (start, end)) in checks {
                let (code, burst) = match limit.algorithm {
                    Algorithm::Gcra { burst } => (1, burst),
                    Algorithm::SlidingWindow => (2, 0),
                    Algorithm::Calendar(_) => (3, 0),
                };
                invocation
                    .key(key)
                    .arg(code)
                    .arg(limit.requests)
                    .arg(limit.per.as_millis() as u64)
                    .arg(burst)
                    .arg(*start)
                    .arg(*end)
                    .arg(limit.idle_ttl_ms());
            }
            let flat: Vec<i64> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            Ok(flat
                .chunks(3)
                .map(|v| Verdict {
                    allowed: v.first() == Some(&1),
                    remaining: v.get(1).copied().unwrap_or(0).max(0) as u64,
                    reset_secs: v.get(2).copied().unwrap_or(1).max(0) as u64,
                })
                .collect())
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(format!("Redis did not answer within {timeout:?}")),
        }
    }
}
