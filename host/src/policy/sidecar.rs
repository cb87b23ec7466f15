//! A module's optional sidecar file, `<name>.toml`: how it runs.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::config;

/// How long an instance lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A fresh instance for every request; nothing carries over.
    PerRequest,
    /// Instances kept in a pool across requests, each initialised once.
    LongLived,
}

impl Mode {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::PerRequest => "per-request",
            Mode::LongLived => "long-lived",
        }
    }
}

/// What a request gets when its policy traps, overruns its deadline or
/// exceeds its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Carry on as if the module had no opinion.
    Open,
    /// Answer 503.
    Closed,
}

/// The sidecar file as written; absent fields take the `[policy]` defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarFile {
    mode: Option<Mode>,
    #[serde(default, with = "humantime_serde")]
    deadline: Option<Duration>,
    memory: Option<ByteSize>,
    failure: Option<Failure>,
    instances: Option<usize>,
    #[serde(default)]
    init: BTreeMap<String, toml::Value>,
}

/// The settings a module runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Instance lifetime.
    pub mode: Mode,
    /// CPU time one hook call may use (wall time capped at ten times it).
    pub deadline: Duration,
    /// Largest linear memory an instance may grow to.
    pub memory: usize,
    /// What a failed call means for the request.
    pub failure: Failure,
    /// Long-lived: how many idle instances the pool keeps.
    pub instances: usize,
    /// Long-lived: the `init` argument.
    pub init: Vec<(String, String)>,
}

impl Settings {
    /// The defaults, for a module without a sidecar.
    pub fn defaults(d: &config::Policy) -> Settings {
        Settings {
            mode: Mode::PerRequest,
            deadline: d.deadline,
            memory: usize::try_from(d.memory.as_u64()).unwrap_or(usize::MAX),
            failure: d.failure,
            instances: d.instances,
            init: Vec::new(),
        }
    }

    /// Parse a sidecar file over the defaults.
    pub fn parse(text: &str, d: &config::Policy) -> Result<Settings, String> {
        let file: SidecarFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let base = Settings::defaults(d);
        let settings = Settings {
            mode: file.mode.unwrap_or(base.mode),
            deadline: file.deadline.unwrap_or(base.deadline),
            memory: file.memory.map_or(base.memory, |m| {
                usize::try_from(m.as_u64()).unwrap_or(usize::MAX)
            }),
            failure: file.failure.unwrap_or(base.failure),
            instances: file.instances.unwrap_or(base.instances),
            init: file
                .init
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        };
        if settings.deadline.is_zero() {
            return Err("deadline must be greater than 0".into());
        }
        if settings.memory < 65536 {
            return Err("memory must be at least 64KiB (one Wasm page)".into());
        }
        if settings.memory > config::Policy::MAX_MEMORY {
            return Err(format!(
                "memory may be at most {}",
                ByteSize(config::Policy::MAX_MEMORY as u64)
            ));
        }
        if settings.instances == 0 {
            return Err("instances must be at least 1".into());
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_over_defaults() {
        let d = config::Policy::default();
        let s = Settings::parse(
            "mode = \"long-lived\"\ndeadline = \"2ms\"\nfailure = \"closed\"\n[init]\nrequests = 5\nname = \"x\"\n",
            &d,
        )
        .unwrap();
        assert_eq!(s.mode, Mode::LongLived);
        assert_eq!(s.deadline, Duration::from_millis(2));
        assert_eq!(s.failure, Failure::Closed);
        assert_eq!(
            s.init,
            vec![("name".into(), "x".into()), ("requests".into(), "5".into())]
        );
        assert!(Settings::parse("mode = \"forever\"", &d).is_err());
        assert!(Settings::parse("memory = \"1KiB\"", &d).is_err());
        assert!(Settings::parse("bogus = 1", &d).is_err());
    }
}
