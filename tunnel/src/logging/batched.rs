//! stderr, with the lines of the daemon's runtime threads written in batches.
//!
//! A line logged on a thread that called [`batch_this_thread`] (the daemon's runtime
//! threads) is appended to a buffer of that thread, and the buffer is written in one call
//! when the thread goes idle (the runtime's park hook calls [`flush_this_thread`]), when it
//! holds [`BATCH_BYTES`], or when its oldest line is [`BATCH_AGE`] old. Every other thread
//! (the one-shot commands, the handshake thread, blocking tasks) writes its lines at once.
//!
//! Why: the access log is a line per connection on each daemon, and a write(2) per line was
//! one of the largest items of a new connection's cost (a system call, expensive on CPUs
//! with speculative-execution mitigations). Under load, one write now carries the lines of
//! many connections; idle, a line waits only until the runtime has nothing left to run,
//! which is at once. A line is never dropped: the buffer is written out when the daemon
//! returns and when its thread panics ([`flush_on_panic`]); only a `kill -9` can lose what
//! is buffered, at most the lines since the thread last went idle.
//!
//! Why not a writer thread (tracing-appender's non-blocking writer): each line it is handed
//! while it sleeps costs a wake-up (a futex call and a context switch on these 2 cores),
//! which at the rates the daemon meets costs more than the write it saves.

use std::{
    cell::RefCell,
    io::{self, Write as _},
    time::{Duration, Instant},
};

use tracing_subscriber::fmt::MakeWriter;

/// Written out when a thread's buffer holds this much.
pub const BATCH_BYTES: usize = 32 * 1024;
/// Written out when its oldest line is this old (a thread that is busy without a pause).
pub const BATCH_AGE: Duration = Duration::from_millis(100);

struct Batch {
    bytes: Vec<u8>,
    /// When the oldest buffered line was added.
    since: Option<Instant>,
}

thread_local! {
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// From now on, this thread's lines are batched. Call [`flush_this_thread`] when it goes
/// idle and before it ends.
pub fn batch_this_thread() {
    BATCH.with(|batch| {
        *batch.borrow_mut() = Some(Batch {
            bytes: Vec::with_capacity(BATCH_BYTES),
            since: None,
        })
    });
}

/// A panic writes out the panicking thread's lines before the panic's own message, so the
/// lines that led to it are not lost with the thread (or the process).
pub fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        flush_this_thread();
        previous(panic);
    }));
}

/// Writes what this thread has buffered (nothing on a thread that does not batch).
pub fn flush_this_thread() {
    BATCH.with(|batch| {
        if let Ok(mut batch) = batch.try_borrow_mut()
            && let Some(batch) = batch.as_mut()
        {
            write_out(batch);
        }
    });
}

fn write_out(batch: &mut Batch) {
    if !batch.bytes.is_empty() {
        // Nowhere to say that stderr failed; the lines are gone either way.
        let _ = io::stderr().write_all(&batch.bytes);
        batch.bytes.clear();
    }
    batch.since = None;
}

/// The `MakeWriter` of the stderr layer.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line
    }
}

/// One formatted line (the fmt layer writes each line with one `write_all`).
pub struct Line;

impl io::Write for Line {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let batched = BATCH.with(|batch| {
            let Ok(mut batch) = batch.try_borrow_mut() else {
                return false;
            };
            let Some(batch) = batch.as_mut() else {
                return false;
            };
            let now = Instant::now();
            let since = *batch.since.get_or_insert(now);
            batch.bytes.extend_from_slice(line);
            if batch.bytes.len() >= BATCH_BYTES || now.duration_since(since) >= BATCH_AGE {
                write_out(batch);
            }
            true
        });
        if batched {
            Ok(line.len())
        } else {
            io::stderr().write(line)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered() -> usize {
        BATCH.with(|batch| batch.borrow().as_ref().map_or(0, |b| b.bytes.len()))
    }

    #[test]
    fn a_batching_thread_keeps_its_lines_until_it_flushes_or_the_batch_is_full() {
        std::thread::spawn(|| {
            let mut line = Stderr.make_writer();
            line.write_all(b"not batched: written at once\n").unwrap();
            assert_eq!(buffered(), 0);

            batch_this_thread();
            line.write_all(b"batched\n").unwrap();
            assert_eq!(buffered(), 8, "kept until the thread goes idle");
            flush_this_thread();
            assert_eq!(buffered(), 0);

            let long = vec![b'x'; 1000];
            for _ in 0..BATCH_BYTES / 1000 {
                line.write_all(&long).unwrap();
            }
            assert!(buffered() > 0);
            line.write_all(&long).unwrap();
            assert_eq!(buffered(), 0, "written out once it holds BATCH_BYTES");

            line.write_all(b"old\n").unwrap();
            std::thread::sleep(BATCH_AGE);
            line.write_all(b"new\n").unwrap();
            assert_eq!(
                buffered(),
                0,
                "written out once its oldest line is BATCH_AGE old"
            );
        })
        .join()
        .unwrap();
    }
}
