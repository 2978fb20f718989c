//! The data-plane runtimes beside the main one (`[runtime] threads`). Each is an OS thread
//! with a current-thread runtime of its own, serving its own outbound and inbound listeners
//! with its own pool. Its listeners are bound beside the main runtime's, one `SO_REUSEPORT`
//! group per address, so the kernel spreads new connections over the group by their
//! addresses' hash; a connection, its stream and the pooled connection it rides then stay
//! on one thread, without cross-thread wakeups.
//!
//! What is not per connection stays on the main runtime: admin, reload, certificates, the
//! pods' listeners and the plaintext port. The inbound TLS handshakes of every runtime are
//! computed on the one handshake thread, as they are with one runtime.

use std::{io, sync::Arc, thread::JoinHandle};

use tokio::sync::oneshot;
use tracing::error;

use crate::{
    drain::DrainWatcher,
    logging,
    proxy::{
        inbound::{Inbound, InboundService},
        outbound::{Outbound, OutboundInputs},
    },
    telemetry::Telemetry,
};

/// One more runtime's listeners, bound on the main runtime (so that a bind failure stops
/// the start) and handed over to it.
pub struct RuntimeListeners {
    pub outbound: Outbound,
    pub inbound: Inbound,
}

/// The runtimes started and waiting for [`Runtimes::serve`].
pub struct Runtimes {
    waiting: Vec<Waiting>,
}

struct Waiting {
    thread: JoinHandle<()>,
    go: oneshot::Sender<Go>,
}

/// What a runtime waits for before it accepts.
struct Go {
    drain: DrainWatcher,
    stop: oneshot::Receiver<()>,
}

/// Runtimes serving; [`Serving::stop`] ends them.
pub struct Serving {
    running: Vec<(JoinHandle<()>, oneshot::Sender<()>)>,
}

impl Runtimes {
    /// Starts a thread and runtime for each set of listeners, which it takes over; each then
    /// waits for [`Runtimes::serve`]. Fails if a thread cannot be started or cannot register
    /// its listeners, before anything is accepted.
    pub async fn start(
        listeners: Vec<RuntimeListeners>,
        outbound: &OutboundInputs,
        inbound: &InboundService,
        telemetry: &Arc<Telemetry>,
    ) -> io::Result<Self> {
        let mut waiting = Vec::new();
        for (index, listeners) in listeners.into_iter().enumerate() {
            let inputs = Arc::new(outbound.for_another_runtime());
            let service = inbound.clone();
            let telemetry = telemetry.clone();
            let (ready, started) = oneshot::channel();
            let (go, went) = oneshot::channel();
            let thread = std::thread::Builder::new()
                // The main runtime is the first.
                .name(format!("tunnel-data-{}", index + 2))
                .spawn(move || run(listeners, inputs, service, &telemetry, ready, went))?;
            match started.await {
                Ok(Ok(())) => waiting.push(Waiting { thread, go }),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a data-plane runtime ended as it started")),
            }
        }
        Ok(Self { waiting })
    }

    /// Lets every runtime accept, its connections holding `drain`.
    pub fn serve(self, drain: &DrainWatcher) -> Serving {
        let running = self
            .waiting
            .into_iter()
            .filter_map(|Waiting { thread, go }| {
                let (stop_sender, stop) = oneshot::channel();
                let word = Go {
                    drain: drain.clone(),
                    stop,
                };
                // A runtime already gone (it panicked, and the panic said so) takes no word.
                go.send(word).ok().map(|()| (thread, stop_sender))
            })
            .collect();
        Serving { running }
    }
}

impl Serving {
    /// Ends every runtime (what a drain left open is closed) and waits for their threads,
    /// whose last log lines are then written.
    pub async fn stop(self) {
        let threads: Vec<_> = self
            .running
            .into_iter()
            .map(|(thread, stop)| {
                let _ = stop.send(());
                thread
            })
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

/// A data-plane runtime's thread: registers its listeners, says so, waits for the word to
/// serve and serves until told to stop.
fn run(
    listeners: RuntimeListeners,
    inputs: Arc<OutboundInputs>,
    service: InboundService,
    telemetry: &Telemetry,
    ready: oneshot::Sender<io::Result<()>>,
    go: oneshot::Receiver<Go>,
) {
    logging::batch_this_thread();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A runtime thread's log lines are written when it has nothing left to run.
        .on_thread_park(logging::flush_this_thread)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let rehomed = listeners
            .outbound
            .rehome()
            .and_then(|outbound| Ok((outbound, listeners.inbound.rehome()?)));
        let (outbound, inbound) = match rehomed {
            Ok(rehomed) => rehomed,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        telemetry
            .metrics
            .runtimes
            .follow(tokio::runtime::Handle::current());
        if ready.send(Ok(())).is_err() {
            return;
        }
        // No word: the daemon did not get to serve.
        let Ok(Go { drain, stop }) = go.await else {
            return;
        };
        tokio::spawn(outbound.run(inputs, drain.clone()));
        tokio::spawn(inbound.accept(service, drain));
        if stop.await.is_err() {
            error!("a data-plane runtime lost its daemon; stopping it");
        }
    });
    // Dropping the runtime ends what the drain left open.
    drop(runtime);
    logging::flush_this_thread();
}
