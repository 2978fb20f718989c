//! What the daemon logs during a test.

use std::{
    io,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use tracing::{Dispatch, subscriber::NoSubscriber};

/// The tunnel's log lines (`tunnel=debug`) while it lives, for tests that check what a
/// user would read. Captures this thread's events: a current-thread runtime runs the
/// daemon's tasks here too.
pub struct Logs {
    text: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn capture() -> Self {
        ask_every_subscriber();
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("tunnel=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Self {
            text,
            _guard: guard,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// The lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to `within`) for a line containing `needle`; panics with the log if none.
    pub async fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.lines_with(needle).pop() {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needle:?} within {within:?}; the log:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// tracing caches, per log statement, whether any subscriber wants it. While at most one
/// subscriber is registered it asks the current thread's only, so a test thread without a
/// capture that reaches a statement first caches "nobody" for every thread, and a capture
/// elsewhere misses that line for good. Two subscribers registered for the whole run make
/// it ask all of them, and each line then checks the capture of the thread it is on.
fn ask_every_subscriber() {
    static NOBODY: OnceLock<[Dispatch; 2]> = OnceLock::new();
    NOBODY.get_or_init(|| {
        [
            Dispatch::new(NoSubscriber::default()),
            Dispatch::new(NoSubscriber::default()),
        ]
    });
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

mod tests {
    use super::*;

    fn log_once() {
        tracing::info!(target: "tunnel::kit", "a line to capture");
    }

    #[test]
    fn a_line_is_captured_although_a_thread_without_a_capture_logged_it_first() {
        let logs = Logs::capture();
        std::thread::spawn(log_once).join().unwrap();
        log_once();
        assert!(logs.text().contains("a line to capture"), "{}", logs.text());
    }
}
