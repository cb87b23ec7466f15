//! stavka: a Wasm-programmable HTTP caching reverse proxy for CDN points of
//! presence, built on pingora.
//!
//! The binary is a thin CLI over [`server::run`]; the modules are public so
//! the end-to-end tests and benches can reach the same pieces.

pub mod access_log;
pub mod admin;
pub mod cache;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod error_kind;
pub mod events;
pub mod hop_by_hop;
pub mod host_name;
pub mod host_table;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod policy_settings;
pub mod policy_trial;
pub mod pool;
pub mod prefetch;
pub mod proxy;
pub mod reload;
pub mod scaffold;
pub mod server;
pub mod shutdown;
pub mod sites;
pub mod slice;
pub mod status_class;
pub mod systemd;
pub mod telemetry;
pub mod tier;
pub mod tls;
pub mod top;
pub mod upgrade;
