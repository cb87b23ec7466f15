//! Watching certificate files: any change in a directory holding one
//! (a rewrite, a rename into place, a Kubernetes secret's symlink swap)
//! makes [`Certificates::reload_changed`] read them again once the
//! directory has been quiet for [`DEBOUNCE`], so a rotation that writes the
//! chain and then the key is seen whole. Files are also checked every
//! [`RECHECK`], for filesystems that deliver no change events.

use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::Certificates;

/// Quiet time after a change before the files are read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the files are checked without a change event.
pub const RECHECK: Duration = Duration::from_secs(60);

/// Keeps the certificate directories watched; dropping it stops the
/// watching thread. A reload that changes which files are used starts a
/// new one.
pub struct CertWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl CertWatcher {
    /// Watch the directories of `certificates`' files on a thread of its
    /// own (reading and parsing PEM never runs on a request's worker).
    pub fn start(certificates: Arc<Certificates>) -> anyhow::Result<CertWatcher> {
        let (tx, rx) = channel::<notify::Result<notify::Event>>();
        let mut watcher =
            notify::recommended_watcher(tx).context("starting the certificate watcher")?;
        for dir in &certificates.dirs() {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {} for certificate changes", dir.display()))?;
        }
        std::thread::Builder::new()
            .name("stavka-certs".into())
            .spawn(move || {
                let changed = |e: &notify::Result<notify::Event>| {
                    // Our own reads are not changes.
                    !matches!(e, Ok(event) if matches!(event.kind, EventKind::Access(_)))
                };
                loop {
                    match rx.recv_timeout(RECHECK) {
                        Ok(event) if !changed(&event) => continue,
                        Ok(_) => {
                            // Wait for the directory to be quiet.
                            loop {
                                match rx.recv_timeout(DEBOUNCE) {
                                    Ok(_) => continue,
                                    Err(RecvTimeoutError::Timeout) => break,
                                    Err(RecvTimeoutError::Disconnected) => return,
                                }
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    certificates.reload_changed();
                }
            })
            .context("starting the certificate watcher thread")?;
        Ok(CertWatcher { _watcher: watcher })
    }
}
