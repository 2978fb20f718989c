//! The fields of a text line without colours: `message name=value name=value ...`, what
//! tracing-subscriber's default field formatter writes when colours are off, in fewer
//! formatting steps. The default writes each field as three formatted pieces (its name and
//! the `=` through the colour styles, plain or not, then the value); here the name and the
//! `=` are copied as they are. The access log writes about twenty fields per connection on
//! each daemon, so this was a visible part of a new connection's cost. A terminal keeps the
//! default, with its colours.
//!
//! As the default does, the message is written first without its name, with the control
//! characters a terminal would act on escaped (a message can carry text a peer chose), and
//! every other value is written with `Debug` (strings quoted) or `Display` (`%` fields) as
//! the event recorded it.

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::{
    field::MakeExt as _,
    fmt::{
        FormatFields,
        format::{Writer, debug_fn},
    },
};

/// The field formatter of the text format without colours.
pub fn plain() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    debug_fn(write_field).delimited(" ")
}

fn write_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    if field.name() == "message" {
        return write!(Escaping(writer), "{value:?}");
    }
    writer.write_str(field.name())?;
    writer.write_char('=')?;
    write!(writer, "{value:?}")
}

/// Writes through, with the characters that start or act as terminal control sequences
/// written as escapes (ESC, BEL, BS, FF, DEL and the C1 controls), as tracing-subscriber
/// escapes a message.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(is_control) {
            self.0.write_str(&rest[..at])?;
            let control = rest[at..].chars().next().expect("found at this index");
            match control {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                c1 => write!(self.0, "\\u{{{:x}}}", c1 as u32)?,
            }
            rest = &rest[at + control.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn is_control(c: char) -> bool {
    matches!(
        c,
        '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt, layer::SubscriberExt as _};

    use super::*;

    /// The lines one event makes with the default formatter and with [`plain`].
    fn both(log: impl Fn()) -> (String, String) {
        let line = |plain_fields: bool| {
            let written = Arc::new(Mutex::new(Vec::new()));
            let sink = written.clone();
            let make = move || Sink(sink.clone());
            let layer = fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(make);
            let subscriber = tracing_subscriber::registry();
            if plain_fields {
                tracing::subscriber::with_default(subscriber.with(layer.fmt_fields(plain())), &log);
            } else {
                tracing::subscriber::with_default(subscriber.with(layer), &log);
            }
            String::from_utf8(written.lock().unwrap().clone()).unwrap()
        };
        (line(false), line(true))
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_is_written_as_the_default_formatter_writes_it() {
        let src: std::net::SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let (default, plain) = both(|| {
            tracing::info!(
                target: "tunnel::access",
                direction = "outbound",
                %src,
                bytes_sent = 5u64,
                peer_identity = "spiffe://example.org/b",
                ok = true,
                close_reason = "reset: \x1b[31mred",
                "connection closed"
            );
            tracing::warn!(reason = %"a peer's \x1b]0;title\x07 text", "refused {}: \x1b[2J\u{9b}", "x");
        });
        assert_eq!(plain, default);
        assert!(plain.contains("refused x: \\x1b[2J\\u{9b}"), "{plain}");
    }
}
