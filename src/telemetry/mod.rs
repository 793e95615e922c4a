//! Logs: the access log (JSON lines on stdout) and Portico's own diagnostics (stderr).

pub mod access_log;

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keeps the access log's background writer alive; drop it last to flush.
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Installs the global subscriber. Diagnostics level comes from `RUST_LOG`
/// (default `info`). Access-log lines go to stdout; whether requests write
/// them is the config's `access_log.enabled`, which a reload may change.
pub fn init() -> LogGuard {
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_filter(filter_fn(|meta| meta.target() != access_log::TARGET));
    // Lines are handed to a writer thread so a slow stdout never stalls a request.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let access = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_level(false)
        .with_writer(writer)
        .with_filter(filter_fn(|meta| meta.target() == access_log::TARGET));
    let _ = tracing_subscriber::registry().with(diagnostics).with(access).try_init();
    LogGuard(guard)
}
