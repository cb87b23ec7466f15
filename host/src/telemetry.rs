//! Log output through `tracing`; pingora's own `log` records are bridged in.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber: level from `RUST_LOG` (default `info`),
/// text or JSON lines on stderr. A second call is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
