//! Reload without a restart, on SIGHUP or when anything changes in a watched directory: the
//! config file's, each `policy_files` entry's (one in a directory added by a reload is
//! watched from the next start), and those of every certificate, key, bundle, CRL and
//! issuer file. Directories, not files: editors write a temporary file and rename it, and
//! Kubernetes swaps a `..data` symlink, so the file's own name may not appear in the event.
//!
//! - The config file is read again and the policy and modes are swapped whole; a file that
//!   does not parse keeps the policy in force. Streams the new policy denies are closed.
//! - The certificates are read again ([`Credentials::reload`]): what changed and passes the
//!   checks replaces the old, what fails keeps it.
//!
//! `notify` (inotify here) rather than polling: a rotation is seen within the settle time,
//! and an idle daemon does no work.

use std::{path::PathBuf, sync::Arc, time::Duration};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{
    config::{Config, PodCertificates},
    credentials::Credentials,
    policy::{LivePolicy, Policy},
    proxy::inbound::live::LiveStreams,
    systemd,
};

/// Changes closer together than this make one reload (a save is several events).
const SETTLE: Duration = Duration::from_millis(200);

/// What a reload replaces: the policy and modes, read again from the config file.
pub struct Reload {
    file: PathBuf,
    /// The `policy_files` at start; their directories are watched too.
    policy_files: Vec<PathBuf>,
    policy: Arc<LivePolicy>,
    live: Arc<LiveStreams>,
    credentials: Arc<Credentials>,
    /// Where registered pods' certificates come from (`[pods]`), and whether to watch it
    /// with its subdirectories (one per identity, for `cert_dir`).
    pod_certificates: Option<(PathBuf, RecursiveMode)>,
    /// The files' text at the last reload: a change event with the same text (another file
    /// in the directory, a touch) reloads nothing, so a busy directory cannot make a loop.
    last_text: Option<String>,
}

impl Reload {
    /// Reloads of the config `config` was read from, into `policy`, judging `live`.
    pub fn new(
        config: &Config,
        policy: Arc<LivePolicy>,
        live: Arc<LiveStreams>,
        credentials: Arc<Credentials>,
    ) -> Self {
        let mut reload = Self {
            file: config.file.clone(),
            policy_files: config.policy_files.clone(),
            policy,
            live,
            credentials,
            pod_certificates: config.pods.as_ref().map(|pods| {
                let recursive = match pods.certificates {
                    PodCertificates::Files { .. } => RecursiveMode::Recursive,
                    PodCertificates::Issuer { .. } => RecursiveMode::NonRecursive,
                };
                (pods.certificates.dir().to_path_buf(), recursive)
            }),
            last_text: None,
        };
        reload.last_text = std::fs::read_to_string(&reload.file)
            .ok()
            .map(|text| reload.all_text(&text));
        reload
    }

    /// Re-reads the config file; a file that does not parse keeps the policy in force. Only
    /// `[[policy]]` and the modes are taken: other changes need a restart.
    fn apply(&mut self, why: &str, even_if_unchanged: bool) {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(text) => text,
            Err(e) => {
                return error!(
                    file = %self.file.display(), trigger = why,
                    "policy reload failed, the policy in force stays: cannot read the file: {e}"
                );
            }
        };
        let all_text = self.all_text(&text);
        if !even_if_unchanged && self.last_text.as_ref() == Some(&all_text) {
            return;
        }
        let parsed = Config::parse(&text, &self.file);
        self.last_text = Some(all_text);
        match parsed {
            Ok(config) => {
                self.policy_files.clone_from(&config.policy_files);
                let policy = Policy::from_config(&config);
                let rules = policy.rule_count();
                let closed = self.live.enforce(&policy);
                self.policy.replace(policy);
                info!(
                    file = %self.file.display(), trigger = why, rules, closed_connections = closed,
                    "policy reloaded (other config changes need a restart)"
                );
            }
            Err(e) => error!(
                file = %self.file.display(), trigger = why,
                "policy reload failed, the policy in force stays: {e}"
            ),
        }
    }

    /// The config file's text and its policy files' (as far as they read), to tell a real
    /// change from an event that changed nothing.
    fn all_text(&self, config_text: &str) -> String {
        let mut all = config_text.to_string();
        for file in &self.policy_files {
            all.push('\0');
            all.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        all
    }

    /// Reloads on every SIGHUP and every settled change in the config file's directory,
    /// until the daemon stops. SIGHUP is taken from the call on, not from the task's first
    /// poll: the daemon says it is ready right after, and a `systemctl reload` then must not
    /// meet the signal's default action (which ends the process).
    pub fn run(self) -> impl Future<Output = ()> + Send + 'static {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(e) => {
                warn!(error = %e, "cannot install a SIGHUP handler: reload by signal is off");
                None
            }
        };
        self.serve(hangups)
    }

    async fn serve(mut self, mut hangups: Option<tokio::signal::unix::Signal>) {
        let (changed_tx, mut changed) = mpsc::unbounded_channel();
        // Kept alive for as long as this task runs; dropping it stops the watch.
        let _watcher = self.watch_directories(changed_tx);
        loop {
            let signalled = tokio::select! {
                Some(_) = async { hangups.as_mut()?.recv().await } => true,
                Some(()) = changed.recv() => {
                    // Let the rest of a save arrive, then reload once.
                    tokio::time::sleep(SETTLE).await;
                    while changed.try_recv().is_ok() {}
                    false
                }
                else => return,
            };
            let why = if signalled { "SIGHUP" } else { "file change" };
            // A reload by signal (systemctl reload sends SIGHUP) is announced to the service
            // manager: RELOADING=1 now, READY=1 once the policy and certificates are read.
            if signalled {
                systemd::reloading();
            }
            self.apply(why, signalled);
            self.credentials.reload(why);
            if signalled {
                systemd::reloaded();
            }
        }
    }

    /// Watches the directories of the config file and of its policy files; `None` (logged)
    /// if the watch cannot be set up.
    fn watch_directories(
        &self,
        changed: mpsc::UnboundedSender<()>,
    ) -> Option<notify::RecommendedWatcher> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Opening and reading (ours included) are not changes.
            if let Ok(event) = event
                && !matches!(event.kind, EventKind::Access(_))
            {
                let _ = changed.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(e) => {
                warn!(error = %e, "cannot watch the config files: reload by SIGHUP only");
                return None;
            }
        };
        let certificate_files = self.credentials.files();
        let mut dirs: Vec<&std::path::Path> = std::iter::once(&self.file)
            .chain(&self.policy_files)
            .chain(&certificate_files)
            .filter_map(|f| f.parent())
            .filter(|d| !d.as_os_str().is_empty())
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch a config directory: its changes need a SIGHUP");
            }
        }
        // Pods come and go after this watch is set: their certificates' directory is watched
        // whole.
        if let Some((dir, mode)) = &self.pod_certificates
            && let Err(e) = watcher.watch(dir, *mode)
        {
            warn!(dir = %dir.display(), error = %e, "cannot watch the pods' certificate directory: its changes need a SIGHUP");
        }
        Some(watcher)
    }
}
