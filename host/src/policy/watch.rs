//! Watching the policy directory: a change to `<name>.wasm` or
//! `<name>.toml` reloads `<name>` once the file has been quiet for the
//! debounce interval. Every load — the first, the watched ones and those an
//! operator asks for — runs on this module's own thread and runtime, so
//! compilation never runs on a request or on the admin API's workers.
//!
//! Only content changes load. Opening or reading a file (the watcher's own
//! reads among them) is not a change, and files whose content is what the
//! last attempt saw are not compiled again: a version that loaded stays,
//! and one that failed is retried only after a backoff that doubles with
//! each failure of the same content ([`FIRST_BACKOFF`] up to
//! [`MAX_BACKOFF`]), and only if something touched its files. New content
//! loads at once and starts the backoff over. An operator's reload
//! (`POST /policies/{module}/reload`) always loads.

use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::metrics::LoadResult;
use super::module::content_hash;
use super::{module_name_of, PolicyRegistry};

/// How long the same content that failed to load waits before it is tried
/// again, after its first failure; doubled after each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between tries of the same failing content.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

enum Message {
    Changed(notify::Result<notify::Event>),
    Reload(String, tokio::sync::oneshot::Sender<()>),
}

/// Keeps the directory watched; dropping it stops the watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    reloader: Reloader,
}

/// Asks the watcher thread to load a module now.
#[derive(Clone)]
pub struct Reloader(Sender<Message>);

impl Reloader {
    /// Load `name` from disk again and wait until it is done.
    pub async fn reload(&self, name: &str) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.0.send(Message::Reload(name.to_owned(), done)).is_ok() {
            let _ = wait.await;
        }
    }
}

impl Watcher {
    /// Load every module in `registry`'s directory, then keep watching it.
    /// Returns once the first load is done, so the server starts with its
    /// policies in place.
    pub fn start(registry: Arc<PolicyRegistry>, debounce: Duration) -> anyhow::Result<Watcher> {
        let dir = registry.dir().to_path_buf();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("policy.dir: cannot create {}", dir.display()))?;
        let (tx, rx) = channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(Message::Changed(event));
        })
        .context("policy.dir: cannot watch")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("policy.dir: cannot watch {}", dir.display()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("policy loader runtime")?;
        let (ready, started) = channel();

        std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || {
                runtime.block_on(registry.load_all());
                let _ = ready.send(());
                let mut loads = Loads {
                    registry,
                    runtime,
                    attempts: HashMap::new(),
                };
                // When each changed module is due to load.
                let mut pending: HashMap<String, Instant> = HashMap::new();
                loop {
                    let wait = pending
                        .values()
                        .map(|due| due.saturating_duration_since(Instant::now()))
                        .min()
                        .unwrap_or(Duration::from_secs(3600));
                    match rx.recv_timeout(wait) {
                        Ok(Message::Changed(Ok(event))) if changes_content(&event.kind) => {
                            for name in event.paths.iter().filter_map(|p| module_name_of(p)) {
                                pending.insert(name, Instant::now() + debounce);
                            }
                        }
                        Ok(Message::Changed(Ok(_))) => {}
                        Ok(Message::Changed(Err(e))) => {
                            tracing::warn!(error = %e, "policy directory watch error")
                        }
                        Ok(Message::Reload(name, done)) => {
                            loads.load(&name, Content::read(loads.registry.dir(), &name));
                            let _ = done.send(());
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = Instant::now();
                    let due: Vec<String> = pending
                        .iter()
                        .filter(|(_, due)| **due <= now)
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in due {
                        pending.remove(&name);
                        if let Some(later) = loads.changed(&name) {
                            pending.insert(name, later);
                        }
                    }
                }
            })
            .context("policy watcher thread")?;
        started
            .recv()
            .context("policy watcher stopped during the first load")?;
        Ok(Watcher {
            _watcher: watcher,
            reloader: Reloader(tx),
        })
    }

    /// A handle to ask for reloads.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }
}

/// Whether a watch event can mean new content: anything but opening,
/// reading, or closing a file that was only read.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(access) => *access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

/// What a module's files held: the hashes of `<name>.wasm` and
/// `<name>.toml`, `None` for one that is absent or unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    wasm: Option<String>,
    sidecar: Option<String>,
}

impl Content {
    fn read(dir: &std::path::Path, name: &str) -> Content {
        let hash = |extension: &str| {
            std::fs::read(dir.join(format!("{name}.{extension}")))
                .ok()
                .map(|bytes| content_hash(&bytes))
        };
        Content {
            wasm: hash("wasm"),
            sidecar: hash("toml"),
        }
    }
}

/// The last load of one module, as the watcher saw it.
struct Attempt {
    content: Content,
    /// Loads of this same content that failed in a row; 0 once it loaded.
    failures: u32,
    /// When it may be tried again, after a failure.
    retry_at: Instant,
}

/// The watcher thread's loads, and what it remembers of each module's last.
struct Loads {
    registry: Arc<PolicyRegistry>,
    runtime: tokio::runtime::Runtime,
    attempts: HashMap<String, Attempt>,
}

impl Loads {
    /// `name`'s files changed: load them if their content is new, or if it
    /// failed before and its backoff is over. Returns when to look again,
    /// if that backoff is not over yet.
    fn changed(&mut self, name: &str) -> Option<Instant> {
        let content = Content::read(self.registry.dir(), name);
        match self.attempts.get(name) {
            Some(last) if last.content == content && last.failures == 0 => {
                self.registry.metrics().load(name, LoadResult::Unchanged);
                None
            }
            Some(last) if last.content == content && Instant::now() < last.retry_at => {
                Some(last.retry_at)
            }
            _ => {
                self.load(name, content);
                None
            }
        }
    }

    /// Load `name`, whose files hold `content`, and remember how it went.
    fn load(&mut self, name: &str, content: Content) {
        let metrics = self.registry.metrics();
        let rejected_before = metrics.rejections(name);
        self.runtime.block_on(self.registry.reload(name));
        let failed = metrics.rejections(name) > rejected_before;
        let failures = match self.attempts.get(name) {
            Some(last) if failed && last.content == content => last.failures + 1,
            _ => u32::from(failed),
        };
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        if failed {
            tracing::info!(
                module = name,
                failures,
                retry_after = ?backoff,
                "the same content is tried again only after a backoff, new content at once"
            );
        }
        self.attempts.insert(
            name.to_owned(),
            Attempt {
                content,
                failures,
                retry_at: Instant::now() + backoff,
            },
        );
    }
}
