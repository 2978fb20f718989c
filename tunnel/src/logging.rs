//! Where the daemon's lines go and in which shape: stderr, as readable text (the default) or
//! one JSON object per line (`--log-format json`), with a filter the admin API can change at
//! run time (`/logging?level=...`). Two kinds of line have targets of their own, so they can
//! be kept, dropped or shipped apart:
//!
//! - [`ACCESS`]: one line per carried connection when it closes (on by default, at info);
//! - [`AUTH`]: refused handshakes and identities, with the precise reason (optionally also
//!   written to a file of their own).

mod windows;

use std::{fs::OpenOptions, io::IsTerminal as _, path::Path, sync::Mutex};

use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{ParseError, Targets},
    fmt,
    layer::SubscriberExt as _,
    reload,
    util::SubscriberInitExt as _,
};

pub use windows::{LogNow, LogWindows};

/// The access log's target.
pub const ACCESS: &str = "tunnel::access";
/// The auth-failure stream's target.
pub const AUTH: &str = "tunnel::auth";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `timestamp LEVEL target: message key=value ...`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and every field.
    Json,
}

/// What `init` sets up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A bare level (`debug`) for tunnel's own lines (libraries stay at `warn`), or a full
    /// directive list. RUST_LOG, when set, overrides it.
    pub level: String,
    pub format: Format,
    /// The access log (`tunnel::access` at info); off drops it whatever the level.
    pub access_log: bool,
    /// Also append the auth-failure stream to this file.
    pub auth_log: Option<std::path::PathBuf>,
}

/// Why the filter was not changed. The admin API answers with the message alone, so each
/// says its cause in it: `tracing-subscriber`'s errors are values here, not sources (a
/// `ParseError` prints its cause and returns it from `source()` too).
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{level:?} is not a level or a filter directive list: {reason}")]
    InvalidFilter { level: String, reason: ParseError },
    #[error("cannot change the log filter: {reason}")]
    Reload { reason: reload::Error },
}

/// Changes the filter of a running daemon.
pub struct Control {
    filter: reload::Handle<EnvFilter, Registry>,
    access_log: bool,
    /// The directives in force, as given (for the admin API to show).
    current: Mutex<String>,
}

impl Control {
    /// Replaces the filter; `level` is read as at start (a bare level or directives).
    /// Returns the directives now in force.
    pub fn set(&self, level: &str) -> Result<String, LoggingError> {
        let directives = directives(level, self.access_log);
        let filter =
            EnvFilter::try_new(&directives).map_err(|reason| LoggingError::InvalidFilter {
                level: level.into(),
                reason,
            })?;
        self.filter
            .reload(filter)
            .map_err(|reason| LoggingError::Reload { reason })?;
        *self.current.lock().expect("log filter lock poisoned") = directives.clone();
        Ok(directives)
    }

    /// A control attached to no logger (tools and tests): `set` reports that the filter
    /// cannot be changed.
    pub fn detached() -> Self {
        let (_layer, filter) = reload::Layer::new(EnvFilter::new("info"));
        Self {
            filter,
            access_log: true,
            current: Mutex::new("info".into()),
        }
    }

    pub fn current(&self) -> String {
        self.current
            .lock()
            .expect("log filter lock poisoned")
            .clone()
    }
}

/// A [`Control`] of a filter that no installed logger uses (the process's logger is left
/// alone): for in-process tests of what changes the filter.
#[cfg(test)]
pub fn detached(level: &str) -> Control {
    let directives = directives(level, true);
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&directives));
    // Kept alive for the handle to reload; never installed.
    Box::leak(Box::new(tracing_subscriber::registry().with(filter)));
    Control {
        filter: handle,
        access_log: true,
        current: Mutex::new(directives),
    }
}

/// Installs the process's logger. A failure to open the auth log file is said on stderr and
/// the daemon goes on without it (the lines still reach stderr).
pub fn init(options: &Options) -> Control {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| options.level.clone());
    let directives = directives(&level, options.access_log);
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("tunnel: log filter {level:?}: {e}; using info");
        EnvFilter::new(self::directives("info", options.access_log))
    });
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let stderr = match options.format {
        Format::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        Format::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let auth_file = options.auth_log.as_deref().and_then(|path| {
        auth_file_layer(path, options.format)
            .map_err(|e| eprintln!("tunnel: cannot open the auth log {}: {e}", path.display()))
            .ok()
    });
    let mut layers = vec![stderr.with_filter(filter).boxed()];
    layers.extend(auth_file);
    // A second init (tests) keeps the first logger.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Control {
        filter: handle,
        access_log: options.access_log,
        current: Mutex::new(directives),
    }
}

/// The auth-failure stream alone, appended to `path`.
fn auth_file_layer(
    path: &Path,
    format: Format,
) -> std::io::Result<Box<dyn Layer<Registry> + Send + Sync>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let writer = Mutex::new(file);
    let only_auth = Targets::new().with_target(AUTH, tracing::Level::INFO);
    Ok(match format {
        Format::Text => fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(only_auth)
            .boxed(),
        Format::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .with_filter(only_auth)
            .boxed(),
    })
}

/// A bare level applies to tunnel's own lines, with libraries kept at `warn` (h2 and rustls
/// are very chatty below that); anything else is a full directive list. The access log
/// follows the level unless it is switched off.
fn directives(level: &str, access_log: bool) -> String {
    let mut directives = match level {
        "error" | "warn" | "info" | "debug" | "trace" => format!("warn,tunnel={level}"),
        other => other.to_string(),
    };
    if !access_log {
        directives.push_str(&format!(",{ACCESS}=off"));
    }
    directives
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_keeps_libraries_quiet_and_the_access_log_can_be_dropped() {
        assert_eq!(directives("debug", true), "warn,tunnel=debug");
        assert_eq!(
            directives("info", false),
            "warn,tunnel=info,tunnel::access=off"
        );
        assert_eq!(directives("h2=trace", true), "h2=trace");
    }

    #[test]
    fn a_refused_filter_says_why_once() {
        let e = detached("info").set("tunnel=loud").unwrap_err();
        assert!(matches!(e, LoggingError::InvalidFilter { .. }), "{e:?}");
        let chain = crate::errors::chain(&e);
        assert_eq!(chain, e.to_string(), "a leaf: the cause is in its message");
        assert!(
            chain.starts_with("\"tunnel=loud\" is not a level or a filter directive list: "),
            "{chain}"
        );
        assert_eq!(chain.matches("loud").count(), 1, "{chain}");

        let e = Control::detached().set("debug").unwrap_err();
        assert!(matches!(e, LoggingError::Reload { .. }), "{e:?}");
        let chain = crate::errors::chain(&e);
        assert_eq!(chain, e.to_string());
        assert!(
            chain.starts_with("cannot change the log filter: "),
            "{chain}"
        );
    }
}
