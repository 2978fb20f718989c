//! Each test runs the notifications in a child process (this test binary again, running
//! [`child`] alone) with `NOTIFY_SOCKET` naming a datagram socket the test holds, as systemd
//! does: the environment is the process's own, so setting it here would leak into every
//! other test of the binary.

use std::{
    os::{fd::FromRawFd as _, unix::net::UnixDatagram},
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use super::*;

/// The scenario a child runs, by name.
const SCENARIO: &str = "TUNNEL_SYSTEMD_TEST_SCENARIO";

/// Runs in the child: what `SCENARIO` names.
#[test]
#[ignore = "a child process of the other tests of this module; run by them"]
fn child() {
    let scenario = std::env::var(SCENARIO).expect("run by the other tests of this module");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match scenario.as_str() {
            "lifecycle" => {
                ready();
                reloading();
                reloaded();
                stopping();
            }
            "watchdog" => {
                tokio::spawn(watchdog().expect("WATCHDOG_USEC is set"));
                tokio::time::sleep(Duration::from_millis(550)).await;
                // A hung runtime: this thread is the runtime's only one.
                std::thread::sleep(Duration::from_millis(700));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            "no watchdog" => {
                assert!(watchdog().is_none(), "a watchdog meant for another pid");
            }
            "became main" => {
                became_main(4242).await;
                println!("became_main returned");
            }
            other => panic!("no scenario {other:?}"),
        }
    });
}

/// A socket standing in for systemd's, and the path to put in `NOTIFY_SOCKET`.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (socket, path)
}

fn spawn_child(scenario: &str, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "systemd::tests::child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(SCENARIO, scenario)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdout(std::process::Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

fn finish(child: Child) -> String {
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "the child failed:\n{stdout}");
    stdout
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Closes a descriptor received with a message, as systemd closes a barrier's.
#[allow(
    unsafe_code,
    reason = "sendfd hands received descriptors over as raw numbers"
)]
fn close_received(fd: std::os::fd::RawFd) {
    // SAFETY: the descriptor was just received and nothing else owns it.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
}

fn monotonic_usec() -> i128 {
    match NotifyState::monotonic_usec_now().unwrap() {
        NotifyState::MonotonicUsec(usec) => usec,
        _ => unreachable!(),
    }
}

#[test]
fn ready_reload_and_stop_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = notify_socket(dir.path());
    let before = monotonic_usec();
    let child = spawn_child("lifecycle", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let messages: Vec<String> = (0..4).map(|_| receive(&socket)).collect();
    let after = monotonic_usec();
    finish(child);
    println!("received: {messages:?}");
    assert!(
        messages[0].starts_with("READY=1\nSTATUS=ready"),
        "{messages:?}"
    );
    let reloading: Vec<&str> = messages[1].lines().collect();
    assert_eq!(reloading[0], "RELOADING=1", "{messages:?}");
    let stamp: i128 = reloading[1]
        .strip_prefix("MONOTONIC_USEC=")
        .expect("MONOTONIC_USEC= follows RELOADING=1")
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} is not CLOCK_MONOTONIC now ({before}..{after})"
    );
    assert!(messages[2].starts_with("READY=1\n"), "{messages:?}");
    assert!(messages[3].starts_with("STOPPING=1\n"), "{messages:?}");
}

#[test]
fn the_watchdog_is_pinged_at_half_its_period_and_missed_while_the_runtime_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = notify_socket(dir.path());
    let child = spawn_child(
        "watchdog",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            // 200 ms: a ping every 100 ms.
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let started = Instant::now();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut pings = Vec::new();
    let mut buf = [0u8; 64];
    while started.elapsed() < Duration::from_millis(3000) {
        if let Ok(n) = socket.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1\n");
            pings.push(started.elapsed());
        }
    }
    finish(child);
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    println!("pings at {pings:?}");
    let longest = gaps.iter().max().copied().unwrap_or_default();
    // 550 ms of a running runtime: pings at 0, 100, ..., 500 ms.
    assert!(pings.len() >= 7, "too few pings: {pings:?}");
    assert!(
        longest >= Duration::from_millis(600),
        "the pings went on while the runtime was blocked: longest gap {longest:?}"
    );
    let regular = gaps
        .iter()
        .filter(|g| **g < Duration::from_millis(200))
        .count();
    assert!(
        regular >= 5,
        "a running runtime pings every 100 ms: {gaps:?}"
    );
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let child = spawn_child(
        "no watchdog",
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    finish(child);
}

#[test]
fn nothing_is_sent_or_awaited_without_a_notify_socket() {
    let started = Instant::now();
    let child = spawn_child("became main", &[]);
    let stdout = finish(child);
    assert!(stdout.contains("became_main returned"), "{stdout}");
    assert!(
        started.elapsed() < BARRIER_TIMEOUT,
        "it waited for a barrier"
    );
}

#[test]
fn a_new_main_process_waits_until_the_service_manager_has_read_it() {
    use sendfd::RecvWithFd as _;
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = notify_socket(dir.path());
    let mut child = spawn_child("became main", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let pid = child.id();
    let first = receive(&socket);
    assert!(
        first.starts_with(&format!("MAINPID={pid}\nREADY=1\n")),
        "{first:?}"
    );
    let mut bytes = [0u8; 64];
    let mut fds = [-1; 2];
    let (n, nfds) = socket.recv_with_fd(&mut bytes, &mut fds).unwrap();
    assert_eq!(&bytes[..n], b"BARRIER=1\n");
    assert_eq!(nfds, 1, "BARRIER=1 carries one descriptor");
    // Hold the barrier as a busy service manager would: the child must wait.
    let held = Duration::from_millis(400);
    std::thread::sleep(held);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child did not wait for the barrier"
    );
    let waited = Instant::now();
    close_received(fds[0]);
    let stdout = finish(child);
    assert!(stdout.contains("became_main returned"), "{stdout}");
    println!(
        "the child returned {:?} after the barrier was released",
        waited.elapsed()
    );
}
