//! Graceful shutdown. Every long-lived task holds a [`DrainWatcher`]; the owner of the
//! [`DrainTrigger`] signals them and waits until the last watcher is dropped, or until a
//! deadline passes. A task that must end with whoever started it is held in an
//! [`AbortOnDrop`].

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Starts a drain and waits for it.
pub struct DrainTrigger {
    signal: watch::Sender<bool>,
    /// Yields `None` once every watcher (each holding a sender) is gone.
    done: mpsc::Receiver<()>,
}

/// Held by tasks that must finish before shutdown completes.
#[derive(Clone)]
pub struct DrainWatcher {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every watcher finished in time.
    Complete,
    /// The deadline passed with watchers still alive; the caller should force-close.
    TimedOut,
}

pub fn channel() -> (DrainTrigger, DrainWatcher) {
    let (signal, signal_rx) = watch::channel(false);
    let (alive, done) = mpsc::channel(1);
    (
        DrainTrigger { signal, done },
        DrainWatcher {
            signal: signal_rx,
            _alive: alive,
        },
    )
}

impl DrainTrigger {
    /// Signals every watcher, then waits up to `deadline` for all of them to be dropped.
    pub async fn drain(mut self, deadline: Duration) -> DrainOutcome {
        self.signal.send_replace(true);
        match tokio::time::timeout(deadline, self.done.recv()).await {
            Ok(_) => DrainOutcome::Complete,
            Err(_) => DrainOutcome::TimedOut,
        }
    }
}

impl DrainWatcher {
    /// Resolves once a drain has been signalled (at once if it already was).
    pub async fn signaled(&mut self) {
        // An error means the trigger is gone, which is as final as a signal.
        let _ = self.signal.wait_for(|draining| *draining).await;
    }
}

/// Aborts a task when dropped: its starter's end (or its being dropped mid-way) ends it too.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn completes_when_watchers_finish() {
        let (trigger, watcher) = channel();
        let mut task_watcher = watcher.clone();
        drop(watcher);
        let task = tokio::spawn(async move {
            task_watcher.signaled().await;
        });
        assert_eq!(
            trigger.drain(Duration::from_secs(5)).await,
            DrainOutcome::Complete
        );
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_when_a_watcher_lingers() {
        let (trigger, watcher) = channel();
        let _stuck = watcher;
        assert_eq!(
            trigger.drain(Duration::from_secs(1)).await,
            DrainOutcome::TimedOut
        );
    }
}
