//! `/healthz/ready`: 200 when the daemon can carry traffic, 503 with every reason otherwise.
//!
//! Ready means: startup finished (every listener bound, the capture programs attached,
//! every certificate loaded; `Daemon::start` does all of it or stops), the daemon is not
//! draining, the capture's link pins are all still there (removed by `tunnel uninstall`
//! or by hand, those programs are detached and capture is off), and the node and every
//! workload have a certificate in force.
//!
//! What can be seen from outside: the admin port is bound with the other listeners but
//! served only once startup has completed, so during startup a probe's connection waits
//! in the accept queue and is answered `ready` when startup ends (or reset if startup
//! fails and the process exits). After that, 503 means draining (shutdown under way) or
//! capture removed under the running daemon. `Starting` is what a server started before
//! [`Readiness::set_ready`] answers (the in-process tests do).

use std::sync::Mutex;

use super::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    Draining,
}

/// Where the daemon is in its life.
#[derive(Debug)]
pub struct Readiness {
    phase: Mutex<Phase>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Starting),
        }
    }

    /// Startup completed: listeners bound, capture attached, certificates loaded.
    pub fn set_ready(&self) {
        *self.phase.lock().expect("readiness lock poisoned") = Phase::Ready;
    }

    /// Shutdown began: no new connections.
    pub fn set_draining(&self) {
        *self.phase.lock().expect("readiness lock poisoned") = Phase::Draining;
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().expect("readiness lock poisoned")
    }
}

/// `Ok` when ready; otherwise every reason, one per line.
pub fn check(state: &State) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    match state.readiness.phase() {
        Phase::Ready => {}
        Phase::Starting => reasons
            .push("starting: listeners, capture and certificates are not all in place yet".into()),
        Phase::Draining => {
            reasons.push("draining: shutting down, no new connections are accepted".into())
        }
    }
    if let Some(capture) = &state.capture {
        let missing = capture.missing_links();
        if !missing.is_empty() {
            reasons.push(format!(
                "capture removed: the link pins of {} are gone (tunnel uninstall?), so those \
                 programs are detached; restart the daemon to install capture again",
                missing.join(", ")
            ));
        }
    }
    let snapshot = state.credentials.current();
    for workload in &state.config.workloads {
        if !snapshot.workloads.contains_key(&workload.name) {
            reasons.push(format!(
                "no certificate in force for workload {:?}",
                workload.name
            ));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}
