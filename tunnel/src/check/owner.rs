//! Whose certificate a line is about: its `Owner` (the node, a workload, the pods), and the
//! `Leaf` the certificate lines talk about once it is known where the certificate is.

use crate::identity::{Purpose, SpiffeId};

/// Whose certificate it is.
pub(super) struct Owner<'a> {
    /// `node`, `workload frontend`: the prefix of its check names.
    pub who: String,
    pub id: &'a SpiffeId,
    pub purpose: Purpose,
}

/// Whose certificate, and how to talk about it.
pub(super) struct Leaf<'a> {
    /// The prefix of its check names: `node`, `workload frontend`.
    pub who: &'a str,
    pub id: &'a SpiffeId,
    pub purpose: Purpose,
    /// Where it is, for messages: its file.
    pub origin: String,
    /// How to get a new one, for hints.
    pub reissue: String,
}

impl Leaf<'_> {
    pub(super) fn check(&self, rule: &str) -> String {
        format!("{}: {rule}", self.who)
    }

    pub(super) fn role(&self) -> &'static str {
        match self.purpose {
            Purpose::ClientAuth => "as a caller (clientAuth)",
            Purpose::ServerAuth => "as this host's node (serverAuth)",
        }
    }
}
