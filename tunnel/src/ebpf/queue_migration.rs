//! A closing listener's accept queue handed to the listeners that share its port, not
//! reset: `migrate_queued` (see `tunnel-ebpf/src/migrate.rs`) attached to the
//! `SO_REUSEPORT` group of every listener the daemon opens, in the node's namespace and in
//! each pod's.
//!
//! Without it, a takeover (a rolling update, an upgrade in place) could reset the few
//! connections that the kernel had queued on the old daemon's listener at the instant that
//! daemon closed it: each listener of a group has a queue of its own, and a connection in it
//! is already established on the caller's side. The kernel moves them only when
//! `net.ipv4.tcp_migrate_req` is set or when the group has a program of this kind; the
//! program needs no change to a node's or a pod's settings.
//!
//! The group keeps the program attached last: a new daemon's attach replaces the old one's
//! with its own (identical in effect), and a group outlives neither its sockets nor the
//! program while any socket holds it.

use std::{io, os::fd::AsFd};

use aya::{
    Ebpf,
    programs::{ProgramFd, SkReuseport},
};
use tunnel_common::PROGRAM_MIGRATE_QUEUED;

use super::EbpfError;

/// The loaded `migrate_queued`, to attach to listeners as they are opened.
#[derive(Debug)]
pub struct QueueMigration {
    program: ProgramFd,
}

impl QueueMigration {
    /// Loads `migrate_queued` from the capture object.
    pub(super) fn load(ebpf: &mut Ebpf) -> Result<Self, EbpfError> {
        let name = PROGRAM_MIGRATE_QUEUED;
        let failed = |step| {
            move |e: aya::programs::ProgramError| EbpfError::Program {
                step,
                name,
                source: e.into(),
            }
        };
        let program: &mut SkReuseport = ebpf
            .program_mut(name)
            .ok_or(EbpfError::MissingProgram(name))?
            .try_into()
            .map_err(failed("find"))?;
        program.load().map_err(failed("load"))?;
        let program = program
            .fd()
            .map_err(failed("hold"))?
            .try_clone()
            .map_err(|e| EbpfError::Program {
                step: "hold",
                name,
                source: aya::programs::ProgramError::from(e).into(),
            })?;
        Ok(Self { program })
    }

    /// Attaches the program to the `SO_REUSEPORT` group of `listener` (bound, with
    /// `SO_REUSEPORT` set), for the whole group.
    pub fn attach(&self, listener: &impl AsFd) -> io::Result<()> {
        crate::sys::attach_reuseport_program(listener, &self.program)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{SocketAddr, TcpListener, TcpStream},
    };

    use super::*;

    const CONNECTIONS: usize = 64;

    /// Two listeners share a port; connections queue on both (none accepted); one
    /// listener closes. Counts what the other then accepts, each connection still carrying
    /// the byte its caller wrote.
    fn accepted_after_one_closes(migration: Option<&QueueMigration>) -> usize {
        let first = crate::sys::listen_socket("127.0.0.1:0".parse().unwrap(), 256).unwrap();
        let addr: SocketAddr = first.local_addr().unwrap();
        let second = crate::sys::listen_socket(addr, 256).unwrap();
        if let Some(migration) = migration {
            migration.attach(&second).unwrap();
        }
        let mut callers: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        for caller in &mut callers {
            caller.write_all(b"x").unwrap();
        }
        drop(first);
        let mut accepted = 0;
        while let Ok((mut stream, _)) = accept_within(&second) {
            stream.set_nonblocking(false).unwrap();
            let mut byte = [0u8];
            stream.read_exact(&mut byte).unwrap();
            assert_eq!(&byte, b"x");
            accepted += 1;
        }
        accepted
    }

    /// Accepts one queued connection, allowing the kernel a moment to finish moving them.
    fn accept_within(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        for _ in 0..50 {
            match listener.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                other => return other,
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn migration() -> QueueMigration {
        let mut ebpf = Ebpf::load(super::super::OBJECT).expect("the capture object loads");
        QueueMigration::load(&mut ebpf).expect("migrate_queued loads")
    }

    #[test]
    fn a_closing_listeners_queue_moves_to_the_one_left() {
        let migration = migration();
        let accepted = accepted_after_one_closes(Some(&migration));
        assert_eq!(accepted, CONNECTIONS, "every queued connection moved");
        // Without the program, what was queued on the closed listener is reset (unless this
        // machine sets the sysctl that migrates without one): the case the program is for.
        let sysctl = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req");
        if sysctl.is_ok_and(|value| value.trim() == "0") {
            let without = accepted_after_one_closes(None);
            println!(
                "accepted after one of two listeners closed: {accepted} with migration, {without} without"
            );
            assert!(without < CONNECTIONS, "the control lost nothing: {without}");
        }
    }
}
