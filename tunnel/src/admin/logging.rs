//! `/logging`: the log filter in force, on every listener; changed only through the control
//! socket, by root (`POST /logging?level=...`, what `tunnel log-level` sends). The admin port
//! answers a change with where to go instead: any local process reaches it, and a process
//! that could set the filter could silence the access log and the auth-failure stream, or
//! fill the disk.
//!
//! A change is checked strictly ([`crate::logging::directives`]) and may not lower the audit
//! streams unless the config allows it; each one taken is logged with who made it (the
//! caller's uid and pid from the socket's peer credentials, and its command name), and each
//! one refused too.

use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tracing::{Level, debug, info, warn};

use super::{
    State,
    control::Operator,
    server::{Access, plain},
    serving::Reply,
};
use crate::logging::LoggingError;

/// A `POST /logging` body is not used (the filter is in the query); anything past this is
/// refused rather than buffered.
const MAX_BODY: usize = 4096;
/// How long the body of a `POST /logging` may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) async fn answer(state: &State, access: &Access, request: Request<Incoming>) -> Reply {
    let method = request.method().clone();
    let level = request.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == "level").then(|| percent_decode(value))
        })
    });
    let operator = match access {
        Access::Operator(operator) => Some(operator),
        Access::Port => None,
    };
    match (&method, level, operator) {
        (&Method::GET, None, _) => plain(
            StatusCode::OK,
            format!("{}\n", state.telemetry.logging.current()),
        ),
        (&Method::GET | &Method::POST, Some(_), None) | (&Method::POST, None, None) => {
            debug!("a change of the log filter asked on the admin port, refused");
            let status = if method == Method::POST {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::FORBIDDEN
            };
            with_allow(
                plain(
                    status,
                    format!(
                        "the admin port is read-only: the log filter is changed through the \
                         control socket {}, by root: tunnel log-level <filter> (or POST \
                         /logging?level=<filter> on that socket)\n",
                        state.config.listen.control.display()
                    ),
                ),
                "GET",
            )
        }
        (&Method::GET, Some(_), Some(_)) => with_allow(
            plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET shows the log filter; change it with POST /logging?level=<filter>\n".into(),
            ),
            "GET, POST",
        ),
        (&Method::POST, None, Some(_)) => plain(
            StatusCode::BAD_REQUEST,
            "no filter: POST /logging?level=<a level (debug) or a directive list \
             (warn,tunnel=debug)>\n"
                .into(),
        ),
        (&Method::POST, Some(level), Some(operator)) => {
            if too_big(request).await {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the filter goes in the query: /logging?level=...\n".into(),
                );
            }
            match level {
                Ok(level) => change(state, operator, &level),
                Err(e) => plain(StatusCode::BAD_REQUEST, format!("level: {e}\n")),
            }
        }
        _ => with_allow(
            plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on /logging; use GET, or POST to change it\n"),
            ),
            if operator.is_some() {
                "GET, POST"
            } else {
                "GET"
            },
        ),
    }
}

/// The target of the lines that record a change: the daemon's, which a change may quiet.
const RECORD_TARGET: &str = module_path!();

fn change(state: &State, operator: &Operator, level: &str) -> Reply {
    let control = &state.telemetry.logging;
    let allow = state.config.logging.allow_lowering_access_and_auth;
    let prepared = match control.prepare(level, allow) {
        Ok(prepared) => prepared,
        Err(e) => return refused(operator, level, &e),
    };
    // Said under whichever filter shows it: the new one, or else the one it replaces (a
    // change that quiets the daemon is still recorded).
    let said_after = prepared.shows(RECORD_TARGET, Level::WARN);
    let from = control.current();
    if !said_after {
        record(operator, &from, prepared.directives());
    }
    match control.apply(prepared) {
        Ok(change) => {
            if said_after {
                record(operator, &change.from, &change.to);
            }
            plain(StatusCode::OK, format!("{}\n", change.to))
        }
        Err(e) => {
            warn!(uid = operator.uid, pid = operator.pid, command = operator.command.as_deref(), error = %e, "the log filter could not be changed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

fn record(operator: &Operator, from: &str, to: &str) {
    warn!(
        uid = operator.uid,
        pid = operator.pid,
        command = operator.command.as_deref(),
        %from,
        %to,
        "log filter changed through the control socket"
    );
}

fn refused(operator: &Operator, level: &str, e: &LoggingError) -> Reply {
    info!(
        uid = operator.uid,
        pid = operator.pid,
        command = operator.command.as_deref(),
        filter = %level,
        reason = %e,
        "log filter change refused"
    );
    let status = match e {
        LoggingError::LowersAudit { .. } => StatusCode::FORBIDDEN,
        LoggingError::Reload { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        LoggingError::Refused { .. } | LoggingError::InvalidFilter { .. } => {
            StatusCode::BAD_REQUEST
        }
    };
    plain(status, format!("{e}\n"))
}

fn with_allow(mut reply: Reply, allow: &'static str) -> Reply {
    reply
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    reply
}

/// A query value that does not decode. Both are leaves: the message says it all.
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
    #[error("bad percent escape at byte {at} of {text:?}")]
    BadEscape { at: usize, text: String },
    #[error("{text:?} does not decode to UTF-8")]
    NotUtf8 { text: String },
}

/// `%XX` escapes and `+` (a space, as HTML forms and `curl --data-urlencode` write it). A `%`
/// not followed by two hex digits is refused (`percent-encoding` would keep it as it is).
pub(super) fn percent_decode(text: &str) -> Result<String, DecodeError> {
    let bad_escape = text.match_indices('%').map(|(at, _)| at).find(|&at| {
        !text
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if let Some(at) = bad_escape {
        return Err(DecodeError::BadEscape {
            at,
            text: text.into(),
        });
    }
    let spaced = text.replace('+', " ");
    match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(decoded) => Ok(decoded.into_owned()),
        Err(_) => Err(DecodeError::NotUtf8 { text: text.into() }),
    }
}

/// Reads at most [`MAX_BODY`] of a body nobody uses, within [`BODY_TIMEOUT`], so the
/// connection can be reused; `true` when it is longer or slower than that.
async fn too_big(request: Request<Incoming>) -> bool {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    !matches!(
        tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::errors;

    #[test]
    fn queries_decode_escapes_and_plus() {
        assert_eq!(
            percent_decode("warn%2Ctunnel%3Ddebug").unwrap(),
            "warn,tunnel=debug"
        );
        assert_eq!(percent_decode("a+b").unwrap(), "a b");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
    }

    #[test]
    fn an_escaped_plus_stays_a_plus_and_escapes_are_decoded_once() {
        assert_eq!(percent_decode("a%2Bb").unwrap(), "a+b");
        assert_eq!(percent_decode("%2541").unwrap(), "%41");
        assert_eq!(percent_decode("caf%C3%A9").unwrap(), "café");
        assert_eq!(percent_decode("").unwrap(), "");
    }

    /// Both variants are leaves: the message is the whole story, with no source to repeat.
    #[test]
    fn each_decode_error_says_it_once() {
        let bad = percent_decode("debug%+5").unwrap_err();
        assert!(bad.source().is_none());
        assert_eq!(
            errors::chain(&bad),
            r#"bad percent escape at byte 5 of "debug%+5""#
        );
        let not_utf8 = percent_decode("%FF%FE").unwrap_err();
        assert!(not_utf8.source().is_none());
        assert_eq!(
            errors::chain(&not_utf8),
            r#""%FF%FE" does not decode to UTF-8"#
        );
    }
}
