//! Handing a config build's scratch memory back to the system.
//!
//! Reading a large config allocates far more than the compiled gateway
//! keeps: at 10,000 routes the YAML parser's whole-document event list and
//! value tree peak near 50 MB, against 33 MB the gateway serves from. glibc
//! keeps freed memory inside its heaps for later use, so without this the
//! process stays at its peak for the rest of its life (and a reload, which
//! reads the whole config again while the old one serves, ratchets it up).
//! `malloc_trim(0)` returns every whole free page of every arena, the middle
//! of a heap included (glibc 2.8 and later). It runs after a build, never on
//! the request path: it walks the heaps' free lists, a few milliseconds.

/// Returns the heap's free pages to the system. A no-op but on glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only reorganises the
    // allocator's own free memory; glibc serialises it with allocation by
    // each arena's lock.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fixes glibc's thresholds for trimming a heap's free top and for serving
/// an allocation by `mmap` (4 MiB each). Left to itself glibc raises both
/// whenever a large block is freed, up to 64 and 32 MiB, and a config
/// build frees many: afterwards an emptied thread arena kept its free top
/// (`malloc_trim` hands back a thread arena's free pages in the middle, not
/// its top), about 11 MiB after every other reload at 10,000 routes. Call
/// before the runtime starts. A no-op but on glibc.
pub fn tune_allocator() {
    const FOUR_MIB: i32 = 4 << 20;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and sets the allocator's own
    // parameters, under its lock.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, FOUR_MIB);
        libc::mallopt(libc::M_MMAP_THRESHOLD, FOUR_MIB);
    }
}

/// Two threads that take turns building configs, each with the allocator
/// arena glibc gives a thread of its own. A build allocates among whatever
/// it finds free; on one shared heap that is among the serving config's
/// live data, so when the old config is freed after the swap, the new one's
/// pieces pin most of its pages (at 10,000 routes eight reloads took the
/// process from 50 to 77 MiB). Taking turns, a config is built in the arena
/// the config before the serving one was freed from: the serving config's
/// arena and the emptied one never share a page (bench/reload_rss.py).
pub struct BuildArenas {
    turns: [std::sync::mpsc::Sender<Job>; 2],
    next: std::sync::atomic::AtomicUsize,
}

type Job = Box<dyn FnOnce() + Send>;

impl BuildArenas {
    pub fn start() -> std::io::Result<BuildArenas> {
        let turn = |i: usize| -> std::io::Result<std::sync::mpsc::Sender<Job>> {
            let (sender, jobs) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name(format!("config-build-{i}"))
                .spawn(move || {
                    for job in jobs {
                        job();
                    }
                })?;
            Ok(sender)
        };
        Ok(BuildArenas {
            turns: [turn(0)?, turn(1)?],
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Runs `build` on the next thread in turn; `None` if it panicked.
    /// Awaited from a blocking task, so that tokio counts the build as
    /// work in flight (a paused test clock does not jump ahead over it).
    pub async fn run<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        build: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let arenas = self.clone();
        tokio::task::spawn_blocking(move || {
            let (done, result) = std::sync::mpsc::channel();
            let job: Job = Box::new(move || {
                // A panicking build leaves the thread to take its next turn.
                if let Ok(built) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)) {
                    let _ = done.send(built);
                }
            });
            let turn = arenas.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2;
            if arenas.turns[turn].send(job).is_ok() {
                result.recv().ok()
            } else {
                None
            }
        })
        .await
        .ok()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn builds_take_turns_and_a_panic_loses_no_turn() {
        let arenas = Arc::new(BuildArenas::start().unwrap());
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(arenas.run(thread_name).await.unwrap());
        }
        assert_eq!(
            names,
            ["config-build-0", "config-build-1", "config-build-0", "config-build-1"]
        );
        let panicked = arenas.run(|| -> u8 { panic!("a bug in a build") }).await;
        assert_eq!(panicked, None);
        assert_eq!(arenas.run(thread_name).await.unwrap(), "config-build-1");
        assert_eq!(
            arenas.run(thread_name).await.unwrap(),
            "config-build-0",
            "the thread that panicked"
        );
    }
}
