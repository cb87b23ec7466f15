//! Log output through `tracing`; pingora's own `log` records are bridged in.
//! The process's own lines and text or JSON access lines share stderr, each
//! in its configured format; combined access lines bypass `tracing` (see
//! [`crate::access_log`]).

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::access_log;
use crate::config::{AccessFormat, Log, LogFormat};

/// Install the global subscriber: level from `RUST_LOG` (default `info`),
/// the process's lines in `log.format` and access lines in
/// `log.access_format()` on stderr. A second call is a no-op.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let access_format = log.access_format();
    let mut layers = vec![lines(log.format)
        .with_filter(filter_fn(|m| m.target() != access_log::TARGET))
        .boxed()];
    let traced = match access_format {
        AccessFormat::Text => Some(LogFormat::Text),
        AccessFormat::Json => Some(LogFormat::Json),
        AccessFormat::Combined => None,
    };
    if let Some(format) = traced {
        layers.push(
            lines(format)
                .with_filter(filter_fn(|m| m.target() == access_log::TARGET))
                .boxed(),
        );
    }
    if Registry::default()
        .with(layers)
        .with(filter)
        .try_init()
        .is_ok()
        && log.access_log
    {
        tracing::info!(
            format = access_format.as_str(),
            sample = log.access_sample,
            stream = if traced.is_some() { "stderr" } else { "stdout" },
            "access log"
        );
    }
}

/// A layer writing lines in `format` to stderr.
fn lines(format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    }
}
