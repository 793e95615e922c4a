//! Access-log lines reach stdout in batches, as nginx's `access_log ...
//! buffer=64k flush=1s` does: each worker thread appends to its own buffer
//! (no lock shared with other workers), a full buffer is written at once, and
//! a flusher thread writes out what is left every second and at exit.
//!
//! Writing each line on its own, or waking a writer thread for each line,
//! costs more CPU than proxying a small request.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A thread's buffer is written out when it grows past this.
const BUFFER_LIMIT: usize = 64 * 1024;
/// Lines wait at most about this long before they reach stdout.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

type Shard = Arc<Mutex<Vec<u8>>>;

/// The buffers of every thread that has logged, for the flusher.
#[derive(Default)]
pub struct BufferedStdout {
    shards: Mutex<Vec<Shard>>,
}

static INSTANCE: OnceLock<BufferedStdout> = OnceLock::new();

thread_local! {
    static SHARD: RefCell<Option<Shard>> = const { RefCell::new(None) };
}

impl BufferedStdout {
    /// Creates the process-wide instance and its flusher thread (once).
    pub fn start() -> &'static BufferedStdout {
        INSTANCE.get_or_init(|| {
            let _ = std::thread::Builder::new()
                .name("access-log-flush".into())
                .spawn(|| loop {
                    std::thread::sleep(FLUSH_EVERY);
                    if let Some(stdout) = BufferedStdout::get() {
                        stdout.flush_all();
                    }
                });
            BufferedStdout::default()
        })
    }

    /// The instance, if [`BufferedStdout::start`] has run. Before that (a
    /// library user that installed no logging, a test) lines are not written,
    /// as a `tracing` event with no subscriber is not.
    pub fn get() -> Option<&'static BufferedStdout> {
        INSTANCE.get()
    }

    /// Writes out every thread's buffered lines.
    pub fn flush_all(&self) {
        let shards = match self.shards.lock() {
            Ok(shards) => shards.clone(),
            Err(_) => return,
        };
        for shard in shards {
            let pending = match shard.lock() {
                Ok(mut buffer) if !buffer.is_empty() => std::mem::take(&mut *buffer),
                _ => continue,
            };
            write_out(&pending);
        }
    }

    fn shard(&self) -> Shard {
        SHARD.with(|slot| {
            slot.borrow_mut()
                .get_or_insert_with(|| {
                    let shard = Shard::default();
                    if let Ok(mut shards) = self.shards.lock() {
                        shards.push(shard.clone());
                    }
                    shard
                })
                .clone()
        })
    }
}

fn write_out(bytes: &[u8]) {
    let mut stdout = io::stdout().lock();
    // A closed or full stdout must not take the gateway down: lines are dropped.
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
}

impl BufferedStdout {
    /// Appends one line made by `write` (which returns false to drop it) to
    /// the calling thread's buffer, writing the buffer out when it is full.
    pub fn write_line(&self, write: impl FnOnce(&mut Vec<u8>) -> bool) {
        let shard = self.shard();
        let full = {
            let Ok(mut buffer) = shard.lock() else { return };
            let start = buffer.len();
            if write(&mut buffer) {
                buffer.push(b'\n');
            } else {
                buffer.truncate(start);
            }
            (buffer.len() >= BUFFER_LIMIT).then(|| std::mem::take(&mut *buffer))
        };
        if let Some(full) = full {
            write_out(&full);
        }
    }
}
