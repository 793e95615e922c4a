//! Access-log lines reach stdout or a file in batches, as nginx's
//! `access_log ... buffer=64k flush=1s` does: each worker thread appends to
//! its own buffer (no lock shared with other workers), a full buffer is
//! written at once, and a flusher thread writes out what is left every second
//! and at exit.
//!
//! Writing each line on its own, or waking a writer thread for each line,
//! costs more CPU than proxying a small request.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A thread's buffer is written out when it grows past this.
const BUFFER_LIMIT: usize = 64 * 1024;
/// What a buffer is made with: room for the limit and the line that passes
/// it, so that it never grows (and is never copied) on the way.
const BUFFER_CAPACITY: usize = BUFFER_LIMIT + 8 * 1024;
/// Lines wait at most about this long before they reach stdout.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

type Shard = Arc<Mutex<Vec<u8>>>;

/// The buffers of every thread that has logged, for the flusher, and where
/// their lines go.
#[derive(Default)]
pub struct LogSink {
    shards: Mutex<Vec<Shard>>,
    destination: Mutex<Destination>,
}

/// Where lines go.
#[derive(Default)]
pub enum Destination {
    #[default]
    Stdout,
    File {
        path: PathBuf,
        file: File,
    },
}

static INSTANCE: OnceLock<LogSink> = OnceLock::new();

thread_local! {
    static SHARD: RefCell<Option<Shard>> = const { RefCell::new(None) };
}

impl LogSink {
    /// Creates the process-wide instance and its flusher thread (once).
    pub fn start() -> &'static LogSink {
        INSTANCE.get_or_init(|| {
            let _ = std::thread::Builder::new()
                .name("access-log-flush".into())
                .spawn(|| loop {
                    std::thread::sleep(FLUSH_EVERY);
                    if let Some(sink) = LogSink::get() {
                        sink.flush_all();
                    }
                });
            LogSink::default()
        })
    }

    /// The instance, if [`LogSink::start`] has run. Before that (a
    /// library user that installed no logging, a test) lines are not written,
    /// as a `tracing` event with no subscriber is not.
    pub fn get() -> Option<&'static LogSink> {
        INSTANCE.get()
    }

    /// Writes out every thread's buffered lines.
    pub fn flush_all(&self) {
        let shards = match self.shards.lock() {
            Ok(shards) => shards.clone(),
            Err(_) => return,
        };
        for shard in shards {
            // Written outside the lock, so that the thread logging to it
            // does not wait; it gets a new buffer of full size.
            let pending = match shard.lock() {
                Ok(mut buffer) if !buffer.is_empty() => {
                    std::mem::replace(&mut *buffer, Vec::with_capacity(BUFFER_CAPACITY))
                }
                _ => continue,
            };
            self.write_out(&pending);
        }
    }

    /// Opens where lines should go: `file` (appending), or stdout when
    /// `None`. `Ok(None)` when that is where they go already. Opening comes
    /// apart from [`LogSink::install`] so that a reload can open the file
    /// before it commits to anything.
    pub fn prepare(&self, file: Option<&Path>) -> io::Result<Option<Destination>> {
        let current = self.lock_destination();
        let next = match (file, &*current) {
            (None, Destination::Stdout) => return Ok(None),
            (Some(path), Destination::File { path: open, .. }) if open == path => return Ok(None),
            (None, _) => Destination::Stdout,
            (Some(path), _) => Destination::File {
                path: path.to_path_buf(),
                file: open_log(path)?,
            },
        };
        Ok(Some(next))
    }

    /// Sends lines to `destination` from now on.
    pub fn install(&self, destination: Destination) {
        self.flush_all();
        *self.lock_destination() = destination;
    }

    /// Opens the log file again by its name: after a rotation tool renamed
    /// it, lines go to a new file at the old path (SIGUSR1, as nginx does).
    pub fn reopen(&self) -> io::Result<()> {
        self.flush_all();
        let mut destination = self.lock_destination();
        if let Destination::File { path, file } = &mut *destination {
            *file = open_log(path)?;
        }
        Ok(())
    }

    fn lock_destination(&self) -> std::sync::MutexGuard<'_, Destination> {
        self.destination.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_out(&self, bytes: &[u8]) {
        // A closed or full output must not take the gateway down: lines are dropped.
        match &mut *self.lock_destination() {
            Destination::Stdout => {
                let mut stdout = io::stdout().lock();
                let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
            }
            Destination::File { file, .. } => {
                let _ = file.write_all(bytes);
            }
        }
    }

    /// Runs `use_shard` with the calling thread's buffer, made on its first line.
    fn with_shard<R>(&self, use_shard: impl FnOnce(&Shard) -> R) -> R {
        SHARD.with(|slot| {
            let mut slot = slot.borrow_mut();
            let shard = slot.get_or_insert_with(|| {
                let shard = Shard::new(Mutex::new(Vec::with_capacity(BUFFER_CAPACITY)));
                if let Ok(mut shards) = self.shards.lock() {
                    shards.push(shard.clone());
                }
                shard
            });
            use_shard(shard)
        })
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogSink {
    /// Appends one line made by `write` (which returns false to drop it) to
    /// the calling thread's buffer, writing the buffer out when it is full.
    /// A full buffer is written where it is and emptied, keeping its memory:
    /// only this thread and, once a second, the flusher lock it.
    pub fn write_line(&self, write: impl FnOnce(&mut Vec<u8>) -> bool) {
        self.with_shard(|shard| {
            let Ok(mut buffer) = shard.lock() else { return };
            let start = buffer.len();
            if write(&mut buffer) {
                buffer.push(b'\n');
            } else {
                buffer.truncate(start);
            }
            if buffer.len() >= BUFFER_LIMIT {
                self.write_out(&buffer);
                buffer.clear();
            }
        });
    }
}
