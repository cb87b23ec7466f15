//! `stavka policy try`: run a built module through the real host runtime
//! on a request (and a response) given on the command line, and print what
//! each hook decided — what will actually run at the edge, without a proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use pingora_http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};

use crate::config;
use crate::metrics::Metrics;
use crate::policy::{
    HeaderEdits, Loaded, PolicyMetrics, PolicyModule, PolicyRegistry, ResponseDecision,
    SliceDecision,
};
use crate::proxy::PolicyDecisions;

/// What to try the module on: `stavka policy try`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Trial {
    /// The module file (`NAME.wasm`).
    pub module: PathBuf,
    /// Its sidecar file (mode, limits, `[init]`).
    #[arg(long)]
    pub sidecar: Option<PathBuf>,
    /// The request: `METHOD TARGET`, e.g. `GET /path?q=1`.
    #[arg(long, default_value = "GET /")]
    pub request: String,
    /// The request's Host.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// A request header field, `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Also try `on-response` with the origin answering this status.
    #[arg(long)]
    pub response: Option<u16>,
    /// A response header field, `name: value` (repeatable).
    #[arg(short = 'R', long = "response-header")]
    pub response_headers: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Run `trial` and return its report: lines for people, or JSON.
pub fn run(trial: &Trial) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(decide(trial))?;
    Ok(if trial.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    })
}

/// Load the module as the proxy would (its own directory, its sidecar).
async fn load(trial: &Trial) -> anyhow::Result<Arc<PolicyModule>> {
    let stem = trial
        .module
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the module's file name")?;
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let dir = tempfile::tempdir()?;
    copy(&trial.module, &dir.path().join(format!("{name}.wasm")))?;
    if let Some(sidecar) = &trial.sidecar {
        copy(sidecar, &dir.path().join(format!("{name}.toml")))?;
    }
    let settings = config::Policy {
        dir: dir.path().to_owned(),
        ..config::Policy::default()
    };
    let metrics = Metrics::new();
    let registry = PolicyRegistry::new(
        &settings,
        Arc::new(PolicyMetrics::new(
            metrics.registry(),
            metrics.events.clone(),
        )),
    )?;
    match registry.load(&name).await {
        Ok(Loaded::New(module)) => Ok(Arc::from(module)),
        Ok(Loaded::Unchanged | Loaded::Absent) => {
            bail!("{}: nothing to load", trial.module.display())
        }
        Err(e) => bail!("{} does not load: {e}", trial.module.display()),
    }
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("reading {}", from.display()))?;
    Ok(())
}

/// Run each hook the module exports, in the proxy's order.
async fn decide(trial: &Trial) -> anyhow::Result<Value> {
    let module = load(trial).await?;
    let (method, target) = trial
        .request
        .split_once(' ')
        .context("--request is `METHOD TARGET`, e.g. `GET /path?q=1`")?;
    let mut req = RequestHeader::build(method.trim(), target.trim().as_bytes(), None)
        .map_err(|e| anyhow::anyhow!("--request {:?}: {e}", trial.request))?;
    for (name, value) in fields(&trial.headers, "-H")? {
        req.append_header(name, value)?;
    }
    let mut report = json!({
        "module": {
            "name": module.name(),
            "hash": module.hash,
            "mode": module.settings.mode.as_str(),
            "hooks": module.exported_hooks(),
        },
    });
    let mut p = PolicyDecisions::new(module, "http", &trial.host, None, None, 0);
    let synthetic = p
        .decide_request(&req)
        .await
        .map_err(|e| anyhow::anyhow!("on-request failed closed: {e}"))?;
    report["on-request"] = match (&synthetic, p.bypass) {
        (Some(s), _) => json!({
            "decision": "respond",
            "status": s.status,
            "headers": s.headers,
            "body_bytes": s.body.len(),
        }),
        (None, true) => json!({ "decision": "bypass" }),
        (None, false) => json!({
            "decision": "lookup",
            "key": p.key,
            "variance": p.variance,
        }),
    };
    if let Some(edits) = &p.origin_edits {
        report["on-request"]["origin_request"] = edits_json(edits);
    }
    if synthetic.is_some() {
        return Ok(report);
    }
    if p.module.decides_slicing() {
        report["slicing"] = match p
            .decide_slicing(&req)
            .await
            .map_err(|e| anyhow::anyhow!("slicing failed closed: {e}"))?
        {
            None | Some(SliceDecision::Default) => json!({ "decision": "default" }),
            Some(SliceDecision::Whole) => json!({ "decision": "whole" }),
            Some(SliceDecision::Slice(s)) => json!({
                "decision": "slice",
                "block_kib": s.block_kib,
                "read_ahead": s.read_ahead,
            }),
        };
    }
    let Some(status) = trial.response else {
        return Ok(report);
    };
    let mut resp = ResponseHeader::build(status, None)?;
    for (name, value) in fields(&trial.response_headers, "-R")? {
        resp.append_header(name, value)?;
    }
    p.decide_response(Some(&req), &mut resp)
        .await
        .map_err(|e| anyhow::anyhow!("on-response failed closed: {e}"))?;
    let headers = crate::admin::report::field_pairs(&resp.headers);
    report["on-response"] = match &p.response {
        Some(ResponseDecision::Store(s)) => json!({
            "decision": "store",
            "ttl_seconds": s.ttl_seconds,
            "stale_while_revalidate_seconds": s.stale_while_revalidate_seconds,
            "stale_if_error_seconds": s.stale_if_error_seconds,
            "tags": s.tags,
        }),
        Some(ResponseDecision::NoStore) => json!({ "decision": "no-store" }),
        Some(ResponseDecision::Default) | None => json!({ "decision": "default" }),
    };
    report["on-response"]["status"] = json!(status);
    report["on-response"]["headers"] = json!(headers);
    Ok(report)
}

/// `name: value` fields from `flag`'s values.
fn fields<'a>(given: &'a [String], flag: &str) -> anyhow::Result<Vec<(String, &'a str)>> {
    given
        .iter()
        .map(|field| {
            let (name, value) = field
                .split_once(':')
                .with_context(|| format!("{flag} {field:?}: write `name: value`"))?;
            Ok((name.trim().to_ascii_lowercase(), value.trim()))
        })
        .collect()
}

fn edits_json(edits: &HeaderEdits) -> Value {
    json!({ "set": edits.set, "remove": edits.remove })
}

/// The report as lines for people.
fn render(report: &Value) -> String {
    let mut out = String::new();
    let module = &report["module"];
    out += &format!(
        "module {} ({}, {}; hooks: {})\n",
        module["name"].as_str().unwrap_or("?"),
        module["hash"].as_str().unwrap_or("?"),
        module["mode"].as_str().unwrap_or("?"),
        module["hooks"]
            .as_array()
            .map(|h| h
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
    );
    for hook in ["on-request", "slicing", "on-response"] {
        let decided = &report[hook];
        if decided.is_null() {
            continue;
        }
        let mut line = format!("{hook}: {}", decided["decision"].as_str().unwrap_or("?"));
        if let Some(object) = decided.as_object() {
            for (key, value) in object {
                if key != "decision" && !value.is_null() {
                    line += &format!("; {key} {value}");
                }
            }
        }
        out += &line;
        out.push('\n');
    }
    out
}
