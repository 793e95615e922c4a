//! Reloads when the config file changes. The file is polled rather than
//! watched with inotify: polling also sees the symlink swap by which
//! Kubernetes updates a mounted ConfigMap, and one `stat` a second costs
//! nothing. A change is acted on once the file has stayed the same for one
//! more poll, so that an editor's or a deploy tool's partial write is not
//! loaded half-done.

use super::{Control, WATCH_INTERVAL};
use std::sync::Weak;
use std::time::SystemTime;

/// What `stat` says of the file: a change in any of these is worth a read.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Polls until the control is dropped.
pub(super) fn start(control: Weak<Control>) {
    tokio::spawn(async move {
        let path = match control.upgrade() {
            Some(control) => control.config_path().to_path_buf(),
            None => return,
        };
        let mut seen = stamp(&path);
        // A changed stamp waits here for one quiet poll.
        let mut pending: Option<Option<Stamp>> = None;
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            if control.strong_count() == 0 {
                return;
            }
            let now = stamp(&path);
            if now != seen {
                seen = now;
                pending = Some(now);
                continue;
            }
            if pending.take().is_none() {
                continue;
            }
            let Some(control) = control.upgrade() else { return };
            // Touching the file without changing it is not a reload.
            let unchanged = std::fs::read(&path)
                .map(|text| crate::config::text_hash(&text) == control.gateway().hash)
                .unwrap_or(false);
            if !unchanged {
                control.reload("file_changed").await;
            }
        }
    });
}
