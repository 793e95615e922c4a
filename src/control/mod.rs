//! A running Portico: the server, its config file, and the ways the config
//! changes while it runs (SIGHUP, `POST /reload`, the file changing). Every
//! trigger goes through [`Control::reload`]: the new config is read and
//! compiled off the serving threads, checked whole, and only then swapped in;
//! a config with errors is refused and the running one kept.

pub mod memory;
pub mod upgrade;
mod watch;

pub use crate::admin::ReloadReport;
use crate::admin::{AdminListener, Operated};
use crate::config::{BuildContext, ConfigErrors};
use crate::gateway::{AdminSettings, Gateway};
use crate::plugins::PluginState;
use crate::proxy::{Drained, Server};
use crate::ratelimit::local::LocalStore;
use crate::telemetry::log_sink::{Destination, LogSink};
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwapOption;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// How often the config file is looked at for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub struct Control {
    config_path: PathBuf,
    server: Server,
    metrics: Arc<Metrics>,
    /// Rate-limit counters of the local store: they outlive reloads.
    local_limits: Arc<LocalStore>,
    plugin_state: Arc<PluginState>,
    started: SystemTime,
    /// When the running config was loaded, and the last reload's result.
    status: Mutex<Status>,
    /// One reload at a time: each builds on the config the last one left.
    reloading: tokio::sync::Mutex<()>,
    admin_settings: ArcSwapOption<AdminSettings>,
    admin: Mutex<Option<AdminListener>>,
    /// Where configs are built, taking turns.
    build_arenas: Arc<memory::BuildArenas>,
}

#[derive(Debug, Clone)]
struct Status {
    loaded_at: SystemTime,
    last_reload: Option<ReloadReport>,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Options of `portico run` that are not in the config file.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Reload when the config file changes.
    pub watch: bool,
}

impl Control {
    /// Loads the config file and starts serving it.
    pub async fn start(config_path: &Path, options: RunOptions) -> Result<Arc<Control>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let local_limits = Arc::new(LocalStore::default());
        let plugin_state = Arc::new(PluginState::default());
        let build_arenas = Arc::new(memory::BuildArenas::start()?);
        let compiled = build(
            &build_arenas,
            config_path.to_path_buf(),
            metrics.clone(),
            (local_limits.clone(), plugin_state.clone()),
            None,
        )
        .await
        .map_err(StartError::Config)?;
        let admin_settings = compiled.admin.clone();
        install_log(prepare_log(&compiled.gateway)?);
        metrics.set_config_hash(&compiled.gateway.hash);
        let server = Server::start(compiled).await?;
        let control = Arc::new(Control {
            config_path: config_path.to_path_buf(),
            server,
            metrics,
            local_limits,
            plugin_state,
            started: SystemTime::now(),
            status: Mutex::new(Status {
                loaded_at: SystemTime::now(),
                last_reload: None,
            }),
            reloading: tokio::sync::Mutex::new(()),
            admin_settings: ArcSwapOption::from(admin_settings.clone().map(Arc::new)),
            admin: Mutex::new(None),
            build_arenas,
        });
        if let Some(settings) = admin_settings {
            let admin = AdminListener::start(settings.addr, Arc::downgrade(&control) as Weak<dyn Operated>)?;
            *control.lock_admin() = Some(admin);
        }
        if options.watch {
            watch::start(Arc::downgrade(&control));
        }
        Ok(control)
    }

    /// Reads, checks and swaps in the config file. A config with errors, or
    /// whose new listeners cannot bind, changes nothing.
    pub async fn reload(self: &Arc<Self>, trigger: &'static str) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.server.gateway();
        let outcome = match build(
            &self.build_arenas,
            self.config_path.clone(),
            self.metrics.clone(),
            (self.local_limits.clone(), self.plugin_state.clone()),
            Some(previous.clone()),
        )
        .await
        {
            Ok(compiled) => self.commit(compiled),
            Err(errors) => Err(errors.iter().map(|e| e.to_string()).collect()),
        };
        // The old config is freed here unless requests still hold it; what
        // it held goes back to the system with the build's scratch memory.
        drop(previous);
        if outcome.is_ok() {
            tokio::task::spawn_blocking(memory::release_free_memory);
        }
        let report = ReloadReport {
            trigger,
            at: SystemTime::now(),
            ok: outcome.is_ok(),
            hash: self.server.gateway().hash.clone(),
            errors: outcome.err().unwrap_or_default(),
        };
        self.metrics.reloaded(report.ok);
        if report.ok {
            self.metrics.set_config_hash(&report.hash);
            tracing::info!(trigger, config = %self.config_path.display(), hash = %report.hash, "config reloaded");
        } else {
            tracing::error!(
                trigger,
                config = %self.config_path.display(),
                "reload refused, the running config stays:\n  {}",
                report.errors.join("\n  ")
            );
        }
        let mut status = self.lock_status();
        if report.ok {
            status.loaded_at = report.at;
        }
        status.last_reload = Some(report.clone());
        report
    }

    fn commit(self: &Arc<Self>, compiled: crate::gateway::Compiled) -> Result<(), Vec<String>> {
        let admin = compiled.admin.clone();
        // A new admin address is bound before anything changes.
        let moved = admin.as_ref().map(|a| a.addr) != self.admin_settings.load().as_ref().map(|a| a.addr);
        let new_admin = match (&admin, moved) {
            (Some(settings), true) => {
                match AdminListener::start(settings.addr, Arc::downgrade(self) as Weak<dyn Operated>) {
                    Ok(listener) => Some(listener),
                    Err(e) => return Err(vec![format!("admin.addr: cannot bind {}: {e}", settings.addr)]),
                }
            }
            _ => None,
        };
        let log = prepare_log(&compiled.gateway).map_err(|e| vec![e.to_string()])?;
        self.server.apply(compiled).map_err(|e| vec![e.to_string()])?;
        install_log(log);
        self.admin_settings.store(admin.map(Arc::new));
        if moved {
            let mut slot = self.lock_admin();
            if let Some(old) = slot.take() {
                old.stop();
            }
            *slot = new_admin;
        }
        Ok(())
    }

    /// Starts the binary again (the new one, if it was replaced) with this
    /// process's listening sockets; once it serves, it tells this process to
    /// drain and exit. Returns the new process's pid.
    pub fn upgrade(&self) -> std::io::Result<u32> {
        let mut sockets = self.server.sockets()?;
        if let Some(admin) = self.lock_admin().as_ref() {
            sockets.push(("admin".to_string(), admin.socket()?));
        }
        let mut child = upgrade::spawn_successor(sockets)?;
        let pid = child.id();
        // Reaped here, so that a successor that fails to start is reported
        // (and does not linger as a zombie); this process keeps serving.
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                if !status.success() {
                    tracing::error!(pid, %status, "upgrade: the new process exited; this one keeps serving");
                }
            }
        });
        Ok(pid)
    }

    /// Stops the admin API and drains the listeners.
    pub async fn shutdown(&self) -> Drained {
        if let Some(admin) = self.lock_admin().take() {
            admin.stop();
        }
        self.server.shutdown().await
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// State plugins keep for the life of the process (the cache's memory store).
    pub fn plugin_state(&self) -> &PluginState {
        &self.plugin_state
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.server.gateway()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The token the admin API asks for now.
    pub fn admin_settings(&self) -> Option<Arc<AdminSettings>> {
        self.admin_settings.load_full()
    }

    /// The admin API's bound address (port 0 resolved).
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.lock_admin().as_ref().map(AdminListener::addr)
    }

    /// When the running config was loaded, and the last reload's report.
    pub fn reload_status(&self) -> (SystemTime, Option<ReloadReport>) {
        let status = self.lock_status();
        (status.loaded_at, status.last_reload.clone())
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_admin(&self) -> std::sync::MutexGuard<'_, Option<AdminListener>> {
        self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Opens the config's access-log file (or picks stdout), when it is not
/// where lines go already. Only a process that installed the log sink
/// (`portico run`) writes access logs at all.
fn prepare_log(gateway: &Gateway) -> std::io::Result<Option<Destination>> {
    let Some(sink) = LogSink::get() else { return Ok(None) };
    let file = gateway.source.access_log.file.as_deref().map(Path::new);
    sink.prepare(file).map_err(|e| {
        let path = file.map(|f| f.display().to_string()).unwrap_or_default();
        std::io::Error::new(e.kind(), format!("access_log.file: cannot open {path}: {e}"))
    })
}

fn install_log(destination: Option<Destination>) {
    if let (Some(sink), Some(destination)) = (LogSink::get(), destination) {
        sink.install(destination);
    }
}

/// Reads and compiles the config on a build thread (`memory::BuildArenas`):
/// parsing, regexes and discovery files stay off the threads that serve
/// requests.
async fn build(
    arenas: &Arc<memory::BuildArenas>,
    path: PathBuf,
    metrics: Arc<Metrics>,
    (local_limits, plugin_state): (Arc<LocalStore>, Arc<PluginState>),
    previous: Option<Arc<Gateway>>,
) -> Result<crate::gateway::Compiled, ConfigErrors> {
    let built = arenas
        .run(move || {
            let text = crate::config::read_file(&path)?;
            let context = BuildContext {
                metrics: &metrics,
                local_limits: &local_limits,
                plugin_state: &plugin_state,
                previous: previous.as_deref(),
            };
            let built = crate::config::build_with(&text, &context);
            drop(text);
            memory::release_free_memory();
            built
        })
        .await;
    built.unwrap_or_else(|| {
        let mut errors = ConfigErrors::default();
        errors.push("", "the config build failed (a panic; this is a bug, please report it)");
        Err(errors)
    })
}

/// The admin API's view of the controller.
impl Operated for Control {
    fn gateway(&self) -> Arc<Gateway> {
        Control::gateway(self)
    }

    fn metrics(&self) -> &Metrics {
        Control::metrics(self)
    }

    fn reload(
        self: Arc<Self>,
        trigger: &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ReloadReport> + Send>> {
        Box::pin(async move { Control::reload(&self, trigger).await })
    }

    fn admin_settings(&self) -> Option<Arc<AdminSettings>> {
        Control::admin_settings(self)
    }

    fn listeners(&self) -> Vec<(Arc<str>, std::net::SocketAddr)> {
        self.server.addrs()
    }

    fn plugin_state(&self) -> &PluginState {
        Control::plugin_state(self)
    }

    fn reload_status(&self) -> (SystemTime, Option<ReloadReport>) {
        Control::reload_status(self)
    }

    fn started(&self) -> SystemTime {
        Control::started(self)
    }

    fn config_path(&self) -> &Path {
        Control::config_path(self)
    }
}
