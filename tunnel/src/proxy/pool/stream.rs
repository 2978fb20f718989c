//! One CONNECT stream on a pooled connection.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::proxy::budget::Chunk;
use h2::{RecvStream, SendStream, client::SendRequest};

use super::{
    super::hbone::{self},
    *,
};
use crate::{
    identity::SpiffeId,
    tls::{self, Phase},
};

pub(super) enum StreamFailure {
    /// The connection died under us (GOAWAY, I/O error): worth one retry. `cleanly`: the
    /// peer sent a GOAWAY without error (it is draining, or its certificate was replaced),
    /// which is never its verdict on our certificate.
    ConnectionGone {
        reason: String,
        cleanly: bool,
    },
    /// No answer within the connect timeout: the connection is silent; worth one retry.
    Unanswered,
    Refused(PoolError),
}

/// Opens one stream; `phase` says how to word a connection that ends under it (on a fresh
/// connection that is the server refusing our certificate, see [`Pool::open`]).
pub(super) async fn connect_stream(
    sender: &SendRequest<Chunk>,
    peer: SocketAddr,
    peer_identity: Option<&SpiffeId>,
    connect: hbone::Connect<'_>,
    early: Bytes,
    phase: Phase,
) -> Result<(SendStream<Chunk>, RecvStream), StreamFailure> {
    let gone = |e: h2::Error| {
        let reason = tls::describe_connection_error(&e, phase);
        if e.is_io() || e.is_go_away() {
            StreamFailure::ConnectionGone {
                reason,
                cleanly: ended_cleanly(&e),
            }
        } else {
            StreamFailure::Refused(PoolError::Stream { peer, reason })
        }
    };
    let destination = connect.destination;
    let mut sender = sender.clone().ready().await.map_err(gone)?;
    let (response, mut send) = sender
        .send_request(hbone::connect_request(&connect), false)
        .map_err(gone)?;
    if !early.is_empty() {
        // Small (one read) and far inside the stream's window: h2 sends it with the request.
        send.send_data(Chunk::from(early), false).map_err(gone)?;
    }
    let response = response.await.map_err(gone)?;
    if response.status() != http::StatusCode::OK {
        return Err(StreamFailure::Refused(PoolError::Refused {
            peer,
            peer_identity: peer_identity.cloned(),
            destination,
            status: response.status(),
            reason: hbone::refusal_reason(&response),
        }));
    }
    Ok((send, response.into_body()))
}

/// Whether the peer ended the connection with a GOAWAY that reports no error: it closes
/// the connection in good order (a drain, a replaced certificate), having processed none of
/// the streams past the GOAWAY's last one.
pub(super) fn ended_cleanly(e: &h2::Error) -> bool {
    e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR)
}
