//! `stavka policy new NAME`: a policy crate to start from, outside this
//! repository, that builds with one command and says how to install it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::policy_settings::is_module_name;

/// Where the new crate's `stavka-policy` dependency comes from.
#[derive(Debug, Clone)]
pub enum Sdk {
    /// The published crate, by version requirement.
    Published(&'static str),
    /// A local copy: this repository's `guest-sdk/` or an unpacked package.
    Path(PathBuf),
}

/// The version requirement a scaffold depends on when no path is given.
pub const SDK_VERSION: &str = "0.2";

/// Write the crate for module `name` into `parent/name`. Refuses a name
/// that cannot name both a module file and a crate, and a directory that
/// already exists: it never overwrites.
pub fn new_policy(parent: &Path, name: &str, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    if !is_module_name(name) || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        bail!(
            "{name:?} cannot name a policy: use letters, digits, '-' and '_', starting with a letter"
        );
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists; nothing was written", dir.display());
    }
    let dependency = match sdk {
        Sdk::Published(version) => format!("\"{version}\""),
        Sdk::Path(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("the SDK at {}", path.display()))?;
            format!("{{ path = {:?} }}", path.display().to_string())
        }
    };
    let library = name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(name, &dependency)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        ("src/lib.rs", lib_rs(name)),
        (&format!("{name}.toml") as &str, SIDECAR.to_owned()),
        ("README.md", readme(name, &library)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

fn cargo_toml(name: &str, dependency: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
stavka-policy = {dependency}

# Small modules load and instantiate faster.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#
    )
}

/// `cargo build` builds the module: policies only run as components.
const CARGO_CONFIG: &str = "[build]\ntarget = \"wasm32-wasip2\"\n";

/// How the module runs; every field is optional.
const SIDECAR: &str = r#"# How stavka runs this module (every line is optional).
mode = "long-lived"   # or "per-request": a fresh instance for every request
# deadline = "5ms"    # CPU time per hook call
# memory = "32MiB"    # linear memory cap
# failure = "open"    # when a call fails: "open" (as if no policy) or "closed" (503)
memo = true           # reuse a decision for requests that agree on every field it read, when
                      # it used nothing else; long-lived: only if instance state never decides
# [init]              # long-lived: passed to init() once per instance
# greeting = "hello"
"#;

fn lib_rs(name: &str) -> String {
    format!(
        r#"//! The `{name}` cache policy for stavka.
//!
//! Each hook has a default that leaves the decision to HTTP caching:
//! implement the ones you need and name them in `HOOKS`, so the host
//! skips the rest. See the `stavka-policy` documentation for every hook
//! (`on_hit`, `on_slice`, `init`) and for the host's key-value store,
//! clock, log, rate limits and metrics. Decisions are pure here (they read
//! only the request), so the sidecar lets the host reuse them.

use stavka_policy::{{
    export_policy, HookSet, Policy, Request, RequestOutcome, Response, ResponseOutcome,
}};

struct Rules;

impl Policy for Rules {{
    const HOOKS: HookSet = HookSet::ON_REQUEST.union(HookSet::ON_RESPONSE);

    /// Before the cache is consulted: look up (maybe under another key),
    /// bypass the cache, or answer here.
    fn on_request(req: &Request) -> RequestOutcome {{
        // Tracking parameters do not change the page: keep them out of
        // the cache key (and away from the origin).
        RequestOutcome::lookup_normalized(req, &["utm_*", "fbclid", "gclid"])
    }}

    /// When the origin's response header arrives, before it is stored.
    fn on_response(_req: &Request, _resp: &Response) -> ResponseOutcome {{
        // Say which policy decided, so `curl -i` shows it ran.
        ResponseOutcome::default().set_header("x-policy", "{name}")
    }}
}}

export_policy!(Rules);
"#
    )
}

fn readme(name: &str, library: &str) -> String {
    format!(
        r#"# {name}

A cache policy for stavka.

Build (needs the `wasm32-wasip2` target: `rustup target add wasm32-wasip2`):

    cargo build --release

Install: copy the module, and its sidecar, into the proxy's `policy.dir`
(write beside it and rename, so the watcher reads it whole), then name it
in a site with `policy = "{name}"`:

    cp target/wasm32-wasip2/release/{library}.wasm /path/to/policies/.{name}.wasm
    mv /path/to/policies/.{name}.wasm /path/to/policies/{name}.wasm
    cp {name}.toml /path/to/policies/{name}.toml

The proxy loads it without a restart; `stavka ctl policies` shows it.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_both_a_module_and_a_crate_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = Sdk::Published(SDK_VERSION);
        for bad in ["", "1st", "-x", "a b", "a/b", "é"] {
            assert!(new_policy(dir.path(), bad, &sdk).is_err(), "{bad:?}");
        }
        let made = new_policy(dir.path(), "my-rules", &sdk).unwrap();
        let cargo = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("stavka-policy = \"0.2\""), "{cargo}");
        assert!(made.join("my-rules.toml").is_file());
        let again = new_policy(dir.path(), "my-rules", &sdk).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
    }
}
