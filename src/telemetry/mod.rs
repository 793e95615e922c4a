//! Logs: the access log (JSON lines on stdout, batched) and Portico's own
//! diagnostics (stderr, through `tracing`).

pub mod access_log;
pub mod live;
pub mod log_sink;
pub mod metrics;
mod route_series;
pub mod traces;

use log_sink::LogSink;

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Flushes buffered access-log lines when dropped: keep it until exit.
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(stdout) = LogSink::get() {
            stdout.flush_all();
        }
    }
}

/// Installs the diagnostics subscriber, its level from `RUST_LOG` (default
/// `info`). Returns the guard that flushes the access log at exit.
pub fn init() -> LogGuard {
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let _ = tracing_subscriber::registry().with(diagnostics).try_init();
    LogSink::start();
    LogGuard(())
}
