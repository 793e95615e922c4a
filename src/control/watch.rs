//! Reloads when the config file changes. The file is polled rather than
//! watched with inotify: polling also sees the symlink swap by which
//! Kubernetes updates a mounted ConfigMap, and one `stat` a second costs
//! nothing. A change is acted on once the file has stayed the same for one
//! more poll, so that an editor's or a deploy tool's partial write is not
//! loaded half-done.

use super::{Control, WATCH_INTERVAL};
use std::path::PathBuf;
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

/// The TLS certificate, key and OCSP files of the running config.
fn certificate_files(control: &Control) -> Vec<PathBuf> {
    control
        .gateway()
        .source
        .listeners
        .iter()
        .filter_map(|listener| listener.tls.as_ref())
        .flat_map(|tls| tls.certificates.iter())
        .flat_map(|pair| [Some(&pair.cert), Some(&pair.key), pair.ocsp.as_ref()])
        .flatten()
        .map(PathBuf::from)
        .collect()
}

/// Polls until the control is dropped. Certificate files are watched too:
/// a renewed certificate is taken without touching the config.
pub(super) fn start(control: Weak<Control>) {
    tokio::spawn(async move {
        let (path, mut certificates) = match control.upgrade() {
            Some(control) => (control.config_path().to_path_buf(), certificate_files(&control)),
            None => return,
        };
        let stamps = |paths: &[PathBuf]| paths.iter().map(|p| stamp(p)).collect::<Vec<_>>();
        let mut seen = (stamp(&path), stamps(&certificates));
        // The certificates' stamps as last loaded.
        let mut loaded = seen.1.clone();
        // A change waits for one quiet poll.
        let mut pending = false;
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            if control.strong_count() == 0 {
                return;
            }
            let now = (stamp(&path), stamps(&certificates));
            if now != seen {
                seen = now;
                pending = true;
                continue;
            }
            if !std::mem::take(&mut pending) {
                continue;
            }
            let Some(control) = control.upgrade() else { return };
            // Touching the file without changing it is not a reload.
            let config_unchanged = std::fs::read(&path)
                .map(|text| crate::config::text_hash(&text) == control.gateway().hash)
                .unwrap_or(false);
            let certificates_changed = seen.1 != loaded;
            if !config_unchanged || certificates_changed {
                let trigger = if config_unchanged {
                    "certificate_changed"
                } else {
                    "file_changed"
                };
                control.reload(trigger).await;
                certificates = certificate_files(&control);
                seen.1 = stamps(&certificates);
                loaded = seen.1.clone();
            }
        }
    });
}
