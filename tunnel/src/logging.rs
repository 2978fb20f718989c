//! Where the daemon's lines go and in which shape: stderr, as readable text (the default) or
//! one JSON object per line (`--log-format json`), with a filter root can change at run time
//! through the control socket (`tunnel log-level`). Two kinds of line have targets of their
//! own, so they can be kept, dropped or shipped apart:
//!
//! - [`ACCESS`]: one line per carried connection when it closes (on by default, at info);
//! - [`AUTH`]: refused handshakes and identities, with the precise reason (optionally also
//!   written to a file of their own).
//!
//! Together they are the daemon's audit trail, so a change of the filter at run time may
//! not drop lines either wrote at start unless the config allows it ([`Control::prepare`]).
//!
//! The daemon's runtime threads write their lines in batches, when they go idle
//! ([`batched`]).

mod batched;
pub mod directives;
mod fields;
pub mod targets;
mod windows;

use std::{fs::OpenOptions, io::IsTerminal as _, path::Path, sync::Mutex};

use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{LevelFilter, ParseError, Targets},
    fmt,
    layer::SubscriberExt as _,
    reload,
    util::SubscriberInitExt as _,
};

pub use batched::{batch_this_thread, flush_on_panic, flush_this_thread};
pub use windows::{LogNow, LogWindows};

/// The access log's target.
pub const ACCESS: &str = "tunnel::access";
/// The auth-failure stream's target.
pub const AUTH: &str = "tunnel::auth";
/// A value of a line that may be unknown, written as `-` then (as the access log writes
/// what it does not know), without formatting it into a `String` first.
pub struct OrDash<T>(pub Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The level of the access log's lines.
const ACCESS_LINES: LevelFilter = LevelFilter::INFO;
/// The level of the auth-failure stream's lines.
const AUTH_LINES: LevelFilter = LevelFilter::WARN;

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

/// Why the filter was not changed. The control socket answers with the message alone, so
/// each says its cause in it: `tracing-subscriber`'s errors are values here, not sources (a
/// `ParseError` prints its cause and returns it from `source()` too).
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{level:?} is not a level or a filter directive list: {reason}")]
    InvalidFilter { level: String, reason: ParseError },
    #[error("{reason}")]
    Refused { reason: directives::DirectiveError },
    #[error(
        "{filter:?} would lower {}: the access log and the auth-failure stream keep every line \
         they wrote at start unless the config sets [logging] allow_lowering_access_and_auth = \
         true; to quiet the rest, keep them: {suggestion}",
        .lowered.iter().map(|l| format!("{} from {} to {}", l.target, l.started, l.asked)).collect::<Vec<_>>().join(" and ")
    )]
    LowersAudit {
        filter: String,
        lowered: Vec<Lowered>,
        /// The same filter with the lowered streams kept at their level.
        suggestion: String,
    },
    #[error("cannot change the log filter: {reason}")]
    Reload { reason: reload::Error },
}

/// A stream a refused filter would have set below its level at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    pub target: &'static str,
    pub started: LevelFilter,
    pub asked: LevelFilter,
}

/// A filter change that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from: String,
    pub to: String,
}

/// A filter checked by [`Control::prepare`], not yet in force.
pub struct Prepared {
    filter: EnvFilter,
    directives: String,
    in_force: Vec<directives::Directive>,
}

impl Prepared {
    /// The directives it puts in force.
    pub fn directives(&self) -> &str {
        &self.directives
    }

    /// Whether it lets events of `target` at `level` through.
    pub fn shows(&self, target: &str, level: tracing::Level) -> bool {
        directives::level_of(&self.in_force, target) >= level
    }
}

/// The floor of a change for [`ACCESS`] and [`AUTH`]: the level each had when the daemon
/// started, but no more verbose than the level of its lines (a daemon started at `debug`
/// may go back to `info`: the access log's lines are all `info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AuditFloor {
    access: LevelFilter,
    auth: LevelFilter,
}

impl AuditFloor {
    fn of(filter: &str) -> Self {
        let in_force = directives::parse_in_force(filter);
        Self {
            access: directives::level_of(&in_force, ACCESS).min(ACCESS_LINES),
            auth: directives::level_of(&in_force, AUTH).min(AUTH_LINES),
        }
    }
}

/// Changes the filter of a running daemon.
pub struct Control {
    filter: reload::Handle<EnvFilter, Registry>,
    access_log: bool,
    floor: AuditFloor,
    /// The directives in force, as given (for the admin API to show). Held while the filter
    /// is replaced, so two changes at once leave it saying what is in force.
    current: Mutex<String>,
}

impl Control {
    fn new(
        filter: reload::Handle<EnvFilter, Registry>,
        access_log: bool,
        directives: String,
    ) -> Self {
        Self {
            filter,
            access_log,
            floor: AuditFloor::of(&directives),
            current: Mutex::new(directives),
        }
    }

    /// Checks an operator's filter, to [`apply`](Self::apply) it: `level` is a bare level
    /// (for tunnel's own lines, as at start) or a directive list, read strictly
    /// ([`directives::parse`]). Unless `allow_lowering_audit` (`[logging]
    /// allow_lowering_access_and_auth`), a filter that would give [`ACCESS`] or [`AUTH`] a
    /// lower level than at start (or than its lines', if lower) is refused, with the same
    /// filter keeping them as the suggestion.
    pub fn prepare(
        &self,
        level: &str,
        allow_lowering_audit: bool,
    ) -> Result<Prepared, LoggingError> {
        let parsed = directives::parse(level).map_err(|reason| LoggingError::Refused { reason })?;
        let directives = directives(&directives::to_text(&parsed), self.access_log);
        let in_force = directives::parse_in_force(&directives);
        let lowered: Vec<Lowered> = [(ACCESS, self.floor.access), (AUTH, self.floor.auth)]
            .into_iter()
            .filter_map(|(target, started)| {
                let asked = directives::level_of(&in_force, target);
                (asked < started).then_some(Lowered {
                    target,
                    started,
                    asked,
                })
            })
            .collect();
        if !lowered.is_empty() && !allow_lowering_audit {
            let mut kept: Vec<directives::Directive> = in_force
                .into_iter()
                .filter(|d| {
                    !lowered
                        .iter()
                        .any(|l| d.target.as_deref() == Some(l.target))
                })
                .collect();
            kept.extend(lowered.iter().map(|l| directives::Directive {
                target: Some(l.target.into()),
                level: l.started,
            }));
            return Err(LoggingError::LowersAudit {
                filter: level.trim().into(),
                lowered,
                suggestion: directives::to_text(&kept),
            });
        }
        let filter =
            EnvFilter::try_new(&directives).map_err(|reason| LoggingError::InvalidFilter {
                level: level.into(),
                reason,
            })?;
        Ok(Prepared {
            filter,
            directives,
            in_force,
        })
    }

    /// Puts a checked filter in force. Returns the directives before and after.
    pub fn apply(&self, prepared: Prepared) -> Result<Change, LoggingError> {
        let mut current = self.current.lock().expect("log filter lock poisoned");
        self.filter
            .reload(prepared.filter)
            .map_err(|reason| LoggingError::Reload { reason })?;
        let from = std::mem::replace(&mut *current, prepared.directives.clone());
        Ok(Change {
            from,
            to: prepared.directives,
        })
    }

    /// [`prepare`](Self::prepare), then [`apply`](Self::apply).
    pub fn change(&self, level: &str, allow_lowering_audit: bool) -> Result<Change, LoggingError> {
        self.apply(self.prepare(level, allow_lowering_audit)?)
    }

    /// A control attached to no logger (tools and tests): `change` reports that the filter
    /// cannot be changed.
    pub fn detached() -> Self {
        let (_layer, filter) = reload::Layer::new(EnvFilter::new("info"));
        Self::new(filter, true, "info".into())
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
    Control::new(handle, true, directives)
}

/// Installs the process's logger. A failure to open the auth log file is said on stderr and
/// the daemon goes on without it (the lines still reach stderr).
pub fn init(options: &Options) -> Control {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| options.level.clone());
    let mut directives = directives(&level, options.access_log);
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("tunnel: log filter {level:?}: {e}; using info");
        directives = self::directives("info", options.access_log);
        EnvFilter::new(&directives)
    });
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let stderr = match options.format {
        Format::Text if ansi => fmt::layer()
            .with_writer(batched::Stderr)
            .with_ansi(true)
            .boxed(),
        Format::Text => fmt::layer()
            .with_writer(batched::Stderr)
            .with_ansi(false)
            .fmt_fields(fields::plain())
            .boxed(),
        Format::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(batched::Stderr)
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
    Control::new(handle, options.access_log, directives)
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
            .fmt_fields(fields::plain())
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
        let e = detached("info").change("tunnel=loud", false).unwrap_err();
        assert!(matches!(e, LoggingError::Refused { .. }), "{e:?}");
        let chain = crate::errors::chain(&e);
        assert_eq!(chain, e.to_string(), "a leaf: the cause is in its message");
        assert!(
            chain.starts_with("\"tunnel=loud\": \"loud\" is not a level"),
            "{chain}"
        );

        let e = Control::detached().change("debug", false).unwrap_err();
        assert!(matches!(e, LoggingError::Reload { .. }), "{e:?}");
        let chain = crate::errors::chain(&e);
        assert_eq!(chain, e.to_string());
        assert!(
            chain.starts_with("cannot change the log filter: "),
            "{chain}"
        );
    }

    /// The examples, against a daemon started at the default `info`.
    #[test]
    fn raising_is_taken_garbage_and_span_filters_are_not_and_the_audit_trail_keeps_its_level() {
        let control = detached("info");
        let change = control.change("trace", false).unwrap();
        assert_eq!(
            change,
            Change {
                from: "warn,tunnel=info".into(),
                to: "warn,tunnel=trace".into()
            }
        );
        for refused in ["garbage%%%", "tunnel[{x}]=debug"] {
            let e = control.change(refused, false).unwrap_err();
            assert!(
                matches!(e, LoggingError::Refused { .. }),
                "{refused}: {e:?}"
            );
        }
        let e = control
            .change("warn,tunnel=info,tunnel::access=off", false)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"warn,tunnel=info,tunnel::access=off\" would lower tunnel::access from info to \
             off: the access log and the auth-failure stream keep every line they wrote at \
             start unless the config sets [logging] allow_lowering_access_and_auth = true; to \
             quiet the rest, keep them: warn,tunnel=info,tunnel::access=info"
        );
        // A list replaces the whole filter: naming one target leaves the others off.
        let e = control.change("tunnel::access=off", false).unwrap_err();
        assert!(
            e.to_string().contains(
                "lower tunnel::access from info to off and tunnel::auth from warn to off"
            ),
            "{e}"
        );
        // A bare `warn` quiets tunnel, the two streams with it.
        let e = control.change("warn", false).unwrap_err();
        let LoggingError::LowersAudit {
            lowered,
            suggestion,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            lowered,
            &[Lowered {
                target: ACCESS,
                started: LevelFilter::INFO,
                asked: LevelFilter::WARN
            }],
            "{e}: the auth stream's lines are warnings"
        );
        assert_eq!(suggestion, "warn,tunnel=warn,tunnel::access=info");
        assert_eq!(
            control.current(),
            "warn,tunnel=trace",
            "refusals change nothing"
        );
        // The suggestion is taken, and so is lowering when the config allows it.
        control.change(suggestion, false).unwrap();
        assert_eq!(
            control
                .change("warn,tunnel=info,tunnel::access=off", true)
                .unwrap()
                .to,
            "warn,tunnel=info,tunnel::access=off"
        );
    }

    /// The floor is what the streams wrote at start: a daemon started at `debug` may go back
    /// to `info`, not below.
    #[test]
    fn a_daemon_started_at_debug_may_go_back_to_info() {
        let control = detached("debug");
        assert_eq!(
            control.change("info", false).unwrap().to,
            "warn,tunnel=info"
        );
        assert!(matches!(
            control.change("warn", false),
            Err(LoggingError::LowersAudit { .. })
        ));
    }

    #[test]
    fn with_the_access_log_off_it_stays_off_and_its_floor_is_off() {
        let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
        Box::leak(Box::new(tracing_subscriber::registry().with(filter)));
        let control = Control::new(handle, false, directives("info", false));
        let change = control.change("tunnel::access=debug,error", false);
        // `error` lowers tunnel::auth (warn, its lines' level, at start).
        assert!(
            matches!(change, Err(LoggingError::LowersAudit { .. })),
            "{change:?}"
        );
        let change = control
            .change("tunnel::access=debug,tunnel::auth=warn,error", false)
            .unwrap();
        assert_eq!(
            change.to,
            "tunnel::access=debug,tunnel::auth=warn,error,tunnel::access=off"
        );
    }
}
