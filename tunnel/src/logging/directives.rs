//! Filters as an operator may set them at run time, strictly: `LEVEL` or `TARGET=LEVEL`
//! items, comma-separated, each target one the daemon knows ([`super::targets`]), each
//! level a name. What `tracing-subscriber` would also take is refused: span and field
//! filters (`tunnel[{x}]=debug`, evaluated against every span and event), a target without
//! a level (all of them, `trace`), numeric levels, targets that match nothing.
//!
//! And what a filter does to one target, as `EnvFilter` decides it for events: the
//! directive with the longest target that the event's target starts with (a plain string
//! prefix), a later directive replacing an earlier one of the same target; the bare level
//! for targets no directive names; nothing at all without a bare level.

use tracing_subscriber::filter::LevelFilter;

use super::targets;

/// One item of a filter: `target=level`, or a bare level (`target` `None`), which applies
/// to every target no other item names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub target: Option<String>,
    pub level: LevelFilter,
}

/// Why a filter was refused. Each message names the item at fault and what would be taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("the filter is empty; give a level (debug) or a directive list (warn,tunnel=debug)")]
    Empty,
    #[error("{filter:?} has an empty item (two commas, or one at an end)")]
    EmptyItem { filter: String },
    #[error(
        "{item:?}: span and field filters ([...], {{...}}) are not taken at run time (they are \
         evaluated against every span and event); give TARGET=LEVEL"
    )]
    Dynamic { item: String },
    #[error(
        "{item:?}: {level:?} is not a level; the levels are off, error, warn, info, debug, trace"
    )]
    Level { item: String, level: String },
    #[error("{item:?} has no level; give TARGET=LEVEL, e.g. {item}=debug")]
    NoLevel { item: String },
    #[error(
        "{target:?} is not a log target of this daemon; the targets are tunnel, its modules \
         (tunnel::proxy, tunnel::proxy::inbound, tunnel::pods, ...), tunnel::access (the \
         access log), tunnel::auth (the auth-failure stream), and the libraries {}",
        targets::LIBRARIES.join(", ")
    )]
    UnknownTarget { target: String },
    #[error("{what} is given twice")]
    Twice { what: String },
}

/// The level names an operator may write, in any case.
fn level(text: &str) -> Option<LevelFilter> {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .find(|name| name.eq_ignore_ascii_case(text))
        .and_then(|name| name.parse().ok())
}

/// An operator's filter, checked item by item.
pub fn parse(filter: &str) -> Result<Vec<Directive>, DirectiveError> {
    if filter.trim().is_empty() {
        return Err(DirectiveError::Empty);
    }
    let mut parsed: Vec<Directive> = Vec::new();
    for item in filter.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(DirectiveError::EmptyItem {
                filter: filter.into(),
            });
        }
        if item.contains(['[', ']', '{', '}']) {
            return Err(DirectiveError::Dynamic { item: item.into() });
        }
        let directive = match item.split_once('=') {
            Some((target, level_text)) => {
                let target = target.trim();
                let level_text = level_text.trim();
                if !targets::known(target) {
                    return Err(DirectiveError::UnknownTarget {
                        target: target.into(),
                    });
                }
                let Some(level) = level(level_text) else {
                    return Err(DirectiveError::Level {
                        item: item.into(),
                        level: level_text.into(),
                    });
                };
                Directive {
                    target: Some(target.into()),
                    level,
                }
            }
            None => match level(item) {
                Some(level) => Directive {
                    target: None,
                    level,
                },
                None if targets::known(item) => {
                    return Err(DirectiveError::NoLevel { item: item.into() });
                }
                None if item.chars().all(|c| c.is_ascii_digit()) => {
                    return Err(DirectiveError::Level {
                        item: item.into(),
                        level: item.into(),
                    });
                }
                None => {
                    return Err(DirectiveError::UnknownTarget {
                        target: item.into(),
                    });
                }
            },
        };
        if parsed.iter().any(|d| d.target == directive.target) {
            return Err(DirectiveError::Twice {
                what: match &directive.target {
                    Some(target) => target.clone(),
                    None => "a bare level".into(),
                },
            });
        }
        parsed.push(directive);
    }
    Ok(parsed)
}

/// A filter the daemon already runs with (`--log-level`, `RUST_LOG`), read for the levels
/// it gives targets: span and field items are left out (they only add to what events inside
/// those spans show), and an item that does not parse is skipped, as `EnvFilter` would have
/// refused the whole filter before it came to be in force.
pub fn parse_in_force(filter: &str) -> Vec<Directive> {
    filter
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty() && !item.contains(['[', '{']))
        .filter_map(|item| match item.rsplit_once('=') {
            Some((target, level)) => Some(Directive {
                target: (!target.is_empty()).then(|| target.to_string()),
                level: level.parse().ok()?,
            }),
            None => Some(match item.parse() {
                Ok(level) => Directive {
                    target: None,
                    level,
                },
                // A target alone enables all of its levels.
                Err(_) => Directive {
                    target: Some(item.into()),
                    level: LevelFilter::TRACE,
                },
            }),
        })
        .collect()
}

/// The level `directives` give events of `target`.
pub fn level_of(directives: &[Directive], target: &str) -> LevelFilter {
    let mut best: Option<(usize, LevelFilter)> = None;
    for directive in directives {
        let specificity = match &directive.target {
            None => 0,
            Some(t) if target.starts_with(t.as_str()) => t.len() + 1,
            Some(_) => continue,
        };
        if best.is_none_or(|(s, _)| specificity >= s) {
            best = Some((specificity, directive.level));
        }
    }
    best.map_or(LevelFilter::OFF, |(_, level)| level)
}

/// The directives as a filter string, levels in lower case.
pub fn to_text(directives: &[Directive]) -> String {
    directives
        .iter()
        .map(|d| match &d.target {
            Some(target) => format!("{target}={}", d.level),
            None => d.level.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(filter: &str) -> DirectiveError {
        parse(filter).expect_err(filter)
    }

    #[test]
    fn levels_and_known_targets_are_taken_in_any_case_and_written_back_in_lower_case() {
        let parsed = parse(" Warn , tunnel=DEBUG,h2=trace, tunnel::access=info ").unwrap();
        assert_eq!(
            to_text(&parsed),
            "warn,tunnel=debug,h2=trace,tunnel::access=info"
        );
        assert_eq!(to_text(&parse("trace").unwrap()), "trace");
        assert_eq!(
            to_text(&parse("tunnel::proxy::inbound::connection=debug").unwrap()),
            "tunnel::proxy::inbound::connection=debug"
        );
    }

    /// The examples: each took effect with HTTP 200 before.
    #[test]
    fn what_tracing_would_take_but_names_nothing_real_is_refused() {
        assert_eq!(
            refused("garbage%%%"),
            DirectiveError::UnknownTarget {
                target: "garbage%%%".into()
            }
        );
        assert_eq!(
            refused("tunnel[{x}]=debug"),
            DirectiveError::Dynamic {
                item: "tunnel[{x}]=debug".into()
            }
        );
        assert!(matches!(
            refused("warn,tunnel[span]=trace"),
            DirectiveError::Dynamic { .. }
        ));
        assert!(matches!(
            refused("tunnel=loud"),
            DirectiveError::Level { .. }
        ));
        assert!(matches!(refused("tunnel=5"), DirectiveError::Level { .. }));
        assert!(matches!(refused("3"), DirectiveError::Level { .. }));
        assert!(matches!(refused("tunnel"), DirectiveError::NoLevel { .. }));
        assert!(matches!(
            refused("tunnel::pro=debug"),
            DirectiveError::UnknownTarget { .. }
        ));
        assert!(matches!(
            refused("rustls=debug"),
            DirectiveError::UnknownTarget { .. }
        ));
        assert!(matches!(
            refused("warn,,tunnel=info"),
            DirectiveError::EmptyItem { .. }
        ));
        assert!(matches!(refused("warn,"), DirectiveError::EmptyItem { .. }));
        assert_eq!(refused("  "), DirectiveError::Empty);
        assert_eq!(
            refused("tunnel=info,tunnel=off"),
            DirectiveError::Twice {
                what: "tunnel".into()
            }
        );
        assert!(matches!(refused("info,warn"), DirectiveError::Twice { .. }));
    }

    #[test]
    fn each_refusal_names_the_item_and_what_is_taken() {
        let unknown = refused("garbage%%%").to_string();
        assert!(
            unknown.starts_with("\"garbage%%%\" is not a log target of this daemon")
                && unknown.contains("tunnel::access (the access log)")
                && unknown.contains("h2, hyper_util"),
            "{unknown}"
        );
        let dynamic = refused("tunnel[{x}]=debug").to_string();
        assert!(dynamic.contains("give TARGET=LEVEL"), "{dynamic}");
        let level = refused("tunnel=loud").to_string();
        assert_eq!(
            level,
            "\"tunnel=loud\": \"loud\" is not a level; the levels are off, error, warn, info, \
             debug, trace"
        );
    }

    #[test]
    fn the_longest_matching_target_decides_then_the_bare_level_then_nothing() {
        let filter = parse_in_force("warn,tunnel=info,tunnel::access=off,h2=trace");
        assert_eq!(level_of(&filter, "tunnel::access"), LevelFilter::OFF);
        assert_eq!(level_of(&filter, "tunnel::auth"), LevelFilter::INFO);
        assert_eq!(level_of(&filter, "tunnel::proxy::pool"), LevelFilter::INFO);
        assert_eq!(level_of(&filter, "h2::codec"), LevelFilter::TRACE);
        assert_eq!(level_of(&filter, "kube_client"), LevelFilter::WARN);
        // A plain string prefix, as EnvFilter matches.
        let filter = parse_in_force("tunnel::a=debug");
        assert_eq!(level_of(&filter, "tunnel::auth"), LevelFilter::DEBUG);
        assert_eq!(level_of(&filter, "tunnel::proxy"), LevelFilter::OFF);
        // The later of two items for one target wins (the access log switched off).
        let filter = parse_in_force("tunnel::access=debug,tunnel::access=off");
        assert_eq!(level_of(&filter, "tunnel::access"), LevelFilter::OFF);
    }

    #[test]
    fn a_filter_in_force_is_read_as_env_filter_reads_it() {
        let filter = parse_in_force("INFO,tunnel::pods,h2=2,tunnel[{x}]=trace,bad=loud");
        assert_eq!(
            filter,
            vec![
                Directive {
                    target: None,
                    level: LevelFilter::INFO
                },
                Directive {
                    target: Some("tunnel::pods".into()),
                    level: LevelFilter::TRACE
                },
                Directive {
                    target: Some("h2".into()),
                    level: LevelFilter::WARN
                },
            ]
        );
    }
}
