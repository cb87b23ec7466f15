//! Watching the policy directory: a change to `<name>.wasm` or
//! `<name>.toml` reloads `<name>` once the file has been quiet for the
//! debounce interval. Every load — the first, the watched ones and those an
//! operator asks for — runs on this module's own thread and runtime, so
//! compilation never runs on a request or on the admin API's workers.

use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::{RecursiveMode, Watcher as _};

use super::{module_name_of, PolicyRegistry};

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
                let mut pending: HashMap<String, Instant> = HashMap::new();
                loop {
                    let wait = pending
                        .values()
                        .map(|at| (*at + debounce).saturating_duration_since(Instant::now()))
                        .min()
                        .unwrap_or(Duration::from_secs(3600));
                    match rx.recv_timeout(wait) {
                        Ok(Message::Changed(Ok(event))) => {
                            for name in event.paths.iter().filter_map(|p| module_name_of(p)) {
                                pending.insert(name, Instant::now());
                            }
                        }
                        Ok(Message::Changed(Err(e))) => {
                            tracing::warn!(error = %e, "policy directory watch error")
                        }
                        Ok(Message::Reload(name, done)) => {
                            runtime.block_on(registry.reload(&name));
                            let _ = done.send(());
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let due: Vec<String> = pending
                        .iter()
                        .filter(|(_, at)| at.elapsed() >= debounce)
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in due {
                        pending.remove(&name);
                        runtime.block_on(registry.reload(&name));
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
