//! The `portico` command: `run`, `validate`.

use clap::{Parser, Subcommand};

// Allocation-heavy request handling (header maps, bodies) runs measurably
// faster on mimalloc than on glibc malloc; see bench/RESULTS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use portico::proxy::{Drained, Server};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "portico", version, about = "An API gateway: one binary, one YAML file.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway until SIGINT or SIGTERM, then drain in-flight requests.
    Run {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Worker threads serving requests (default: one per CPU core).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
    /// Check a config file and print every error with its place.
    Validate {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { config } => validate(&config),
        Command::Run { config, workers } => run(&config, workers),
    }
}

fn validate(path: &PathBuf) -> ExitCode {
    match portico::config::build_file(path) {
        Ok(compiled) => {
            println!(
                "{}: ok ({} listeners, {} upstreams, {} routes)",
                path.display(),
                compiled.listeners.len(),
                compiled.gateway.upstreams.len(),
                compiled.gateway.routes.iter().count()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            report(path, &errors);
            ExitCode::from(2)
        }
    }
}

fn report(path: &PathBuf, errors: &portico::config::ConfigErrors) {
    let count = errors.len();
    eprintln!("{}: {count} error{}", path.display(), if count == 1 { "" } else { "s" });
    for error in errors.iter() {
        eprintln!("  {error}");
    }
}

fn run(path: &PathBuf, workers: Option<usize>) -> ExitCode {
    let compiled = match portico::config::build_file(path) {
        Ok(compiled) => compiled,
        Err(errors) => {
            report(path, &errors);
            return ExitCode::from(2);
        }
    };
    let _logs = portico::telemetry::init(compiled.gateway.access_log);
    // One worker means one thread, as one nginx worker is: the current-thread
    // scheduler skips work-stealing bookkeeping that a single worker never uses.
    let mut runtime = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("portico: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::start(compiled).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down: no new connections, draining in-flight requests");
        match server.shutdown().await {
            Drained::Clean => tracing::info!("drained, bye"),
            Drained::TimedOut { open } => {
                tracing::warn!(open, "drain deadline passed; remaining connections closed")
            }
        }
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
