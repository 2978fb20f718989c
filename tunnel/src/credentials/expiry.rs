//! The expiry watch: a warning when a certificate in force passes 2/3 of its lifetime (or
//! has less than a day left, if that comes first, for certificates of 36 hours or more), an
//! error when it has expired. Each is said once per certificate, at the moment it becomes true.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::{error, warn};

use super::{Credentials, Owner};
use crate::{identity::timestamp, tls::Credential};

/// How far along its life a certificate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Fresh,
    /// Past the warning point: it should have been replaced by now.
    Aging,
    Expired,
}

/// When a certificate turns `Aging` (unix seconds): 2/3 of its lifetime, or a day before
/// its expiry if that is sooner and the certificate lives 36 hours or more (a short-lived
/// certificate has less than a day left from the start; its 2/3 point is the signal).
pub fn warning_point(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let two_thirds = not_before + lifetime * 2 / 3;
    const DAY: i64 = 86_400;
    if lifetime >= DAY * 3 / 2 {
        two_thirds.min(not_after - DAY)
    } else {
        two_thirds
    }
}

pub fn stage(credential: &Credential, now: i64) -> Stage {
    let leaf = &credential.leaf;
    if now > leaf.not_after {
        Stage::Expired
    } else if now >= warning_point(leaf.not_before, leaf.not_after) {
        Stage::Aging
    } else {
        Stage::Fresh
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Credentials {
    /// Logs each certificate in force as it passes its warning point and its expiry, until
    /// the daemon stops.
    pub async fn watch_expiry(self: Arc<Self>) {
        let mut snapshots = self.subscribe();
        // The stage already said, per (owner, serial).
        let mut said: HashMap<(Owner, String), Stage> = HashMap::new();
        loop {
            let now = unix_now();
            let mut next: Option<i64> = None;
            let snapshot = self.current();
            let in_force = std::iter::once((Owner::Node, &snapshot.node)).chain(
                snapshot
                    .workloads
                    .iter()
                    .map(|(name, c)| (Owner::Workload(name.clone()), c)),
            );
            for (owner, credential) in in_force {
                let leaf = &credential.leaf;
                let stage = stage(credential, now);
                let key = (owner.clone(), leaf.serial.clone());
                let previous = said.get(&key).copied().unwrap_or(Stage::Fresh);
                if stage > previous {
                    report(&owner, credential, stage, now);
                    said.insert(key, stage);
                }
                let upcoming = match stage {
                    Stage::Fresh => Some(warning_point(leaf.not_before, leaf.not_after)),
                    Stage::Aging => Some(leaf.not_after + 1),
                    Stage::Expired => None,
                };
                next = match (next, upcoming) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            // Forget certificates no longer in force.
            said.retain(|(owner, serial), _| {
                snapshot
                    .credential(owner)
                    .is_some_and(|c| &c.leaf.serial == serial)
            });
            let sleep = next.map_or(Duration::from_secs(3600), |at| {
                Duration::from_secs(u64::try_from(at - now).unwrap_or(0).max(1))
            });
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                changed = snapshots.changed() => if changed.is_err() { return },
            }
        }
    }
}

fn report(owner: &Owner, credential: &Credential, stage: Stage, now: i64) {
    let leaf = &credential.leaf;
    let left = crate::duration::format(Duration::from_secs((leaf.not_after - now).max(0) as u64));
    match stage {
        Stage::Fresh => {}
        Stage::Aging => warn!(
            %owner, serial = %leaf.serial, not_after = %timestamp(leaf.not_after),
            "certificate is past 2/3 of its lifetime and expires in {left}: renew it (if it renews itself, its renewals are failing: look for \"renewal failed\")"
        ),
        Stage::Expired => error!(
            %owner, serial = %leaf.serial, not_after = %timestamp(leaf.not_after),
            "certificate has expired: peers refuse it until it is replaced"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_certificates_warn_at_two_thirds_and_long_ones_a_day_before_at_the_latest() {
        let hour = 3600;
        // 1 h: at 40 minutes.
        assert_eq!(warning_point(0, hour), 40 * 60);
        // 30 h: at 20 h, although it has less than a day left from the start.
        assert_eq!(warning_point(0, 30 * hour), 20 * hour);
        // 48 h: a day before expiry (24 h) comes before 2/3 (32 h).
        assert_eq!(warning_point(0, 48 * hour), 24 * hour);
        // 90 days: 2/3 comes first (day 60).
        assert_eq!(warning_point(0, 90 * 24 * hour), 60 * 24 * hour);
    }
}
