//! A pod's listeners, opened inside its namespace and served by the node's proxies, and the
//! steering of its inbound plaintext to its own plaintext listener.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd as _,
    sync::Arc,
};

use tokio::task::JoinHandle;

use super::{PodError, PodManager};
use crate::{
    drain::DrainWatcher,
    ebpf::Steered,
    identity::SpiffeId,
    netns::{self, PodNetwork},
    proxy::{
        inbound::PodServer,
        outbound::{self, OutboundWorkload, PodCaller},
        plaintext,
    },
    sys,
};

impl PodManager {
    /// Binds every listener first (so a failure leaves nothing open), steers the pod's
    /// inbound plaintext to its own plaintext listeners, then serves them all.
    pub(super) async fn open_listeners(
        &self,
        uid: &str,
        name: &str,
        id: &SpiffeId,
        ips: &[IpAddr],
        network: &PodNetwork,
        drain: &DrainWatcher,
    ) -> Result<Opened, PodError> {
        let Bound {
            outbound: outbound_listeners,
            hbone: hbone_listeners,
            plaintext: plaintext_listeners,
        } = self.bind(ips, network).await?;
        let steered = self.steer(uid, ips, network, &plaintext_listeners)?;
        let mut described = Vec::new();
        let mut tasks = Vec::new();
        let caller = Arc::new(PodCaller {
            workload: Arc::new(OutboundWorkload::new(name.into(), id.clone())),
            network: network.clone(),
        });
        for (listener, cookie) in outbound_listeners {
            described.push(format!("outbound {}", listener_addr(&listener)));
            tasks.push(tokio::spawn(outbound::serve_pod(
                listener,
                cookie,
                caller.clone(),
                self.outbound.clone(),
                drain.clone(),
            )));
        }
        let server = Arc::new(PodServer {
            name: name.into(),
            identity: id.to_string().into(),
            ips: ips.to_vec(),
            network: network.clone(),
        });
        for listener in hbone_listeners {
            described.push(format!("hbone {}", listener_addr(&listener)));
            tasks.push(tokio::spawn(self.inbound.clone().serve_pod(
                listener,
                server.clone(),
                drain.clone(),
            )));
        }
        for listener in plaintext_listeners {
            described.push(format!("plaintext {}", listener_addr(&listener)));
            tasks.push(tokio::spawn(plaintext::serve_pod(
                listener,
                server.clone(),
                self.plaintext.clone(),
                drain.clone(),
            )));
        }
        Ok(Opened {
            tasks,
            described,
            steered,
        })
    }

    /// Binds the pod's listeners inside its namespace: outbound on loopback (where
    /// `connect4` sends the pod's connects), HBONE on each pod address, plaintext on
    /// loopback (nothing reaches it but what `steer_inbound` hands over).
    async fn bind(&self, ips: &[IpAddr], network: &PodNetwork) -> Result<Bound, PodError> {
        let ports = &self.ports;
        let listen = |kind: &'static str, addrs: Vec<SocketAddr>| async move {
            let mut listeners = Vec::new();
            for addr in addrs {
                let listener = network
                    .listen(addr, ports.backlog)
                    .await
                    .map_err(|source| PodError::Listen { kind, addr, source })?;
                // As the node's listeners (`ebpf/queue_migration`): at a takeover, what is
                // queued on the old daemon's listener moves to this one.
                self.queue_migration
                    .attach(&listener)
                    .map_err(|source| PodError::MigrateQueue { kind, addr, source })?;
                listeners.push(listener);
            }
            Ok::<_, PodError>(listeners)
        };
        let v4 = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let v6 = |port| SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let outbound_addrs = std::iter::once(v4(ports.outbound))
            .chain(ports.outbound_v6.map(v6))
            .collect();
        let mut outbound = Vec::new();
        for listener in listen("outbound", outbound_addrs).await? {
            let cookie = sys::netns_cookie(&listener).map_err(PodError::NetnsCookie)?;
            outbound.push((listener, cookie));
        }
        let hbone_addrs = ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, ports.hbone))
            .collect();
        let hbone = listen("HBONE", hbone_addrs).await?;
        let ipv6 = ips.iter().any(IpAddr::is_ipv6);
        let plaintext_addrs = std::iter::once(v4(ports.plaintext))
            .chain(ipv6.then(|| v6(ports.plaintext)))
            .collect();
        let plaintext = listen("plaintext", plaintext_addrs).await?;
        Ok(Bound {
            outbound,
            hbone,
            plaintext,
        })
    }

    /// Points `steer_inbound` at the pod's plaintext listeners and attaches it in the pod's
    /// namespace; the node's own addresses (whose connections, the kubelet's probes, are
    /// not steered) are read again first, since a bridge plugin may have just made one.
    fn steer(
        &self,
        uid: &str,
        ips: &[IpAddr],
        network: &PodNetwork,
        listeners: &[tokio::net::TcpListener],
    ) -> Result<Steered, PodError> {
        let node_addresses = netns::interface_addresses().map_err(PodError::NodeAddresses)?;
        self.steering
            .set_node_addresses(&node_addresses)
            .map_err(PodError::RecordNodeAddresses)?;
        let sockets: Vec<_> = listeners
            .iter()
            .map(|l| (l.local_addr().is_ok_and(|a| a.is_ipv6()), l.as_fd()))
            .collect();
        let steered = self
            .steering
            .steer(ips, self.ports.hbone, &sockets)
            .map_err(PodError::Steer)?;
        if let Err(e) = self.steering.attach(uid, network.netns.file()) {
            self.steering.unsteer(&steered);
            return Err(PodError::AttachSteering(e));
        }
        Ok(steered)
    }
}

/// A pod's listeners, bound and not served yet.
struct Bound {
    /// With the cookie of the namespace they are in.
    outbound: Vec<(tokio::net::TcpListener, u64)>,
    hbone: Vec<tokio::net::TcpListener>,
    plaintext: Vec<tokio::net::TcpListener>,
}

/// What opening a pod's listeners gave: their tasks, their addresses for status, and the
/// pod's steering.
pub(super) struct Opened {
    pub tasks: Vec<JoinHandle<()>>,
    pub described: Vec<String>,
    pub steered: Steered,
}

fn listener_addr(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}
