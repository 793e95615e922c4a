//! The `portico` command: `run`, `validate`, `explain`, `schema`, `hash-password`,
//! `import-openapi`.

use clap::{Parser, Subcommand};

use portico::control::{Control, RunOptions, StartError};
use portico::proxy::Drained;
use portico::telemetry::log_sink::LogSink;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "portico", version, about = "An API gateway: one binary, one YAML file.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway until SIGINT or SIGTERM, then drain in-flight requests.
    /// SIGHUP, `POST /reload` on the admin API, or a change to the file reload
    /// the config; a config with errors is refused and the running one kept.
    Run {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Worker threads serving requests (default: one per CPU core).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// Do not reload when the config file changes (SIGHUP and the admin
        /// API still reload).
        #[arg(long)]
        no_watch: bool,
    },
    /// Check a config file and print every error with its place.
    Validate {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the config file's JSON Schema, for editors. With
    /// yaml-language-server, start a config with
    /// `# yaml-language-server: $schema=portico.schema.json`.
    Schema,
    /// Print a password hash for `consumers[].credentials.basic.password`.
    /// Reads the password from standard input (one line), so that it stays
    /// out of the shell history and the process list.
    HashPassword {
        /// argon2id instead of bcrypt.
        #[arg(long)]
        argon2: bool,
    },
    /// Show what the gateway would do with a request, without sending it:
    /// the route and the near misses, each plugin's decision, the target and
    /// the rewritten path. Example:
    /// portico explain -c portico.yaml GET http://api.example.com/users/7 -H 'X-Api-Key: k'
    Explain {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON (the admin API's `POST /explain` answer) instead of text.
        #[arg(long)]
        json: bool,
        /// The request method, like GET.
        method: String,
        /// A path (/users/7?x=1) or an absolute URL, whose host is matched.
        url: String,
        /// A request header, `Name: value`; repeat for more.
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// The listener the request arrives on (default: the first).
        #[arg(long, value_name = "NAME")]
        listener: Option<String>,
    },
    /// Print a route for every operation of an OpenAPI 3.0/3.1 document, each
    /// validated against it, ready to paste under `routes:`. Example:
    /// portico import-openapi specs/users.yaml --upstream users > routes.yaml
    ImportOpenapi {
        /// The OpenAPI document (JSON or YAML), named in the routes as given.
        spec: String,
        /// The upstream the routes send to.
        #[arg(long, value_name = "NAME")]
        upstream: String,
        /// Publish the routes under this path (stripped before the service).
        #[arg(long, value_name = "PATH")]
        prefix: Option<String>,
        /// Let requests for operations the document lacks pass unchecked
        /// (by default they are refused with 404 or 405).
        #[arg(long)]
        allow_unknown: bool,
    },
}

fn import_openapi(file: &str, upstream: &str, prefix: Option<&str>, allow_unknown: bool) -> ExitCode {
    use portico::openapi::{import, Spec};
    let options = import::ImportOptions {
        spec_path: file,
        upstream,
        prefix,
        reject_unknown: !allow_unknown,
    };
    match Spec::load(file).and_then(|spec| import::routes(&spec, &options)) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("portico import-openapi: {error}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    // Before any thread starts: it reads the environment.
    portico::control::upgrade::adopt_from_env();
    match Cli::parse().command {
        Command::Validate { config } => validate(&config),
        Command::HashPassword { argon2 } => hash_password(argon2),
        Command::Schema => print_json(&portico::schema::config_schema()),
        Command::ImportOpenapi {
            spec,
            upstream,
            prefix,
            allow_unknown,
        } => import_openapi(&spec, &upstream, prefix.as_deref(), allow_unknown),
        Command::Explain {
            config,
            json,
            method,
            url,
            headers,
            listener,
        } => explain(&config, json, (method, url, listener), &headers),
        Command::Run {
            config,
            workers,
            no_watch,
        } => run(&config, workers, RunOptions { watch: !no_watch }),
    }
}

fn validate(path: &Path) -> ExitCode {
    match portico::config::build_file(path) {
        Ok(compiled) => {
            println!(
                "{}: ok ({}, {}, {})",
                path.display(),
                count(compiled.listeners.len(), "listener"),
                count(compiled.gateway.upstreams.len(), "upstream"),
                count(compiled.gateway.routes.iter().count(), "route")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            report(path, &errors);
            ExitCode::from(2)
        }
    }
}

/// `1 route`, `2 routes`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn hash_password(argon2: bool) -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() || line.trim_end_matches(['\r', '\n']).is_empty() {
        eprintln!("portico: give the password on standard input, like: portico hash-password < file");
        return ExitCode::from(2);
    }
    match portico::password::hash(line.trim_end_matches(['\r', '\n']), argon2) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("portico: {error}");
            ExitCode::FAILURE
        }
    }
}

fn explain(
    path: &Path,
    json: bool,
    (method, url, listener): (String, String, Option<String>),
    headers: &[String],
) -> ExitCode {
    let compiled = match portico::config::build_file(path) {
        Ok(compiled) => compiled,
        Err(errors) => {
            report(path, &errors);
            return ExitCode::from(2);
        }
    };
    let mut question = portico::explain::Question {
        method,
        url,
        headers: Default::default(),
        client_ip: None,
        listener,
    };
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            eprintln!("portico: header {header:?} is not `Name: value`");
            return ExitCode::from(2);
        };
        question
            .headers
            .insert(name.trim().to_string(), value.trim().to_string());
    }
    match portico::explain::explain(&compiled.gateway, &question) {
        Ok(explanation) if json => print_json(&explanation),
        Ok(explanation) => {
            print!("{explanation}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("portico: {error}");
            ExitCode::from(2)
        }
    }
}

fn report(path: &Path, errors: &portico::config::ConfigErrors) {
    let count = errors.len();
    eprintln!("{}: {count} error{}", path.display(), if count == 1 { "" } else { "s" });
    for error in errors.iter() {
        eprintln!("  {error}");
    }
}

fn run(path: &Path, workers: Option<usize>, options: RunOptions) -> ExitCode {
    portico::control::memory::tune_allocator();
    let _logs = portico::telemetry::init();
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
        let control = match Control::start(path, options).await {
            Ok(control) => {
                portico::control::upgrade::retire_predecessor();
                control
            }
            Err(StartError::Config(errors)) => {
                report(path, &errors);
                return ExitCode::from(2);
            }
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let signal = match serve_until_stopped(&control).await {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for signals");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(signal, "shutting down: no new connections, draining in-flight requests");
        match control.shutdown().await {
            Drained::Clean => tracing::info!("drained, bye"),
            Drained::TimedOut { open } => {
                tracing::warn!(open, "drain deadline passed; remaining connections closed")
            }
        }
        ExitCode::SUCCESS
    })
}

/// Reloads on SIGHUP, reopens the access log on SIGUSR1 and starts a new
/// binary on SIGUSR2, until SIGINT or SIGTERM arrives; returns which one.
async fn serve_until_stopped(control: &Arc<Control>) -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut reopen_logs = signal(SignalKind::user_defined1())?;
    let mut upgrade = signal(SignalKind::user_defined2())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok("SIGTERM"),
            _ = interrupt.recv() => return Ok("SIGINT"),
            _ = hangup.recv() => {
                control.reload("signal").await;
            }
            _ = upgrade.recv() => match control.upgrade() {
                Ok(pid) => tracing::info!(new_pid = pid, "upgrade: new process started with the listening sockets"),
                Err(error) => tracing::error!(%error, "upgrade: the new process could not be started"),
            },
            _ = reopen_logs.recv() => {
                if let Some(Err(error)) = LogSink::get().map(LogSink::reopen) {
                    tracing::error!(%error, "the access log file could not be reopened; lines go to the old one");
                } else {
                    tracing::info!("access log reopened");
                }
            }
        }
    }
}

/// Prints `value` as indented JSON.
fn print_json(value: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("portico: {error}");
            ExitCode::FAILURE
        }
    }
}
