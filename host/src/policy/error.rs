//! Why a module version was rejected (the message an operator sees in the
//! log, in `stavka_policy_last_load_error` and in `/policies`), and why a
//! hook call did not complete.

use std::path::PathBuf;
use std::sync::Arc;

use super::metrics::FailureKind;
use super::sidecar::SidecarError;

/// A module version that could not be loaded; the previous version (if any)
/// keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The module file or its sidecar could not be read.
    #[error("cannot read {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The sidecar file was refused.
    #[error("{file}: {error}")]
    Sidecar {
        /// The sidecar's file name, `<name>.toml`.
        file: String,
        /// What is wrong with it.
        error: SidecarError,
    },
    /// The bytes are not a WebAssembly component (or are truncated).
    #[error("not a valid component: {0}")]
    NotAComponent(String),
    /// It exports a `stavka:policy` interface this host does not know, or
    /// of an incompatible version.
    #[error("exports {0}, which this host does not speak (it speaks stavka:policy@0.1.0 to @0.1.z and @0.2.0 to @{version}, one series per module)", version = super::module::WIT_VERSION)]
    ForeignInterface(String),
    /// It imports something the host does not provide.
    #[error("does not satisfy the stavka:policy world: {0}")]
    WorldMismatch(String),
    /// Instantiating it (and, for a long-lived module, `init`) failed.
    #[error(
        "the first instance failed in {} ({}): {}",
        .0.hook,
        .0.kind.as_str(),
        .0.message
    )]
    FirstInstance(CallFailure),
    /// A hook export has the right name and the wrong type.
    #[error("hook signature mismatch: {0}")]
    Signature(String),
    /// Its `hooks.implemented` export failed.
    #[error("hooks.implemented failed: {0}")]
    Implemented(String),
}

impl LoadError {
    /// A read of `path` that failed with `error`.
    pub fn read(path: PathBuf, error: &std::io::Error) -> LoadError {
        LoadError::Read {
            path,
            message: error.to_string(),
        }
    }
}

/// A hook call that did not complete.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy {module} {hook}: {}: {message}", .kind.as_str())]
pub struct CallFailure {
    /// The module.
    pub module: Arc<str>,
    /// The hook.
    pub hook: &'static str,
    /// Why.
    pub kind: FailureKind,
    /// The trap or error, for the log.
    pub message: String,
}
