//! What the plugin talks to and how it is run: a registration server standing in for the
//! tunnel daemon's pod API (the real wire format, over a real Unix socket), and the built
//! plugin binary started as a runtime starts it.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tunnel_pod_api::{PodStatus, Request, Response};

/// The plugin under test (cargo builds it before the tests).
pub const TUNNEL_CNI: &str = env!("CARGO_BIN_EXE_tunnel-cni");

type Answer = dyn FnMut(&Request) -> Option<Response> + Send;

/// A pod API server on a socket in a temp dir. Each connection gets one request read and the
/// answer `answer` gives; `None` means keep silent (the connection stays open, unanswered,
/// until the server is dropped), as a hung daemon would.
pub struct PodApi {
    dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PodApi {
    pub fn start(answer: impl FnMut(&Request) -> Option<Response> + Send + 'static) -> Self {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let socket = dir.path().join("pods.sock");
        let listener = UnixListener::bind(&socket).expect("bind the pod API socket");
        // Non-blocking accept, so that the thread sees `stop` and ends with the test.
        listener.set_nonblocking(true).expect("non-blocking accept");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let (requests, stop) = (requests.clone(), stop.clone());
            let mut answer: Box<Answer> = Box::new(answer);
            move || serve(&listener, &mut *answer, &requests, &stop)
        });
        Self {
            dir,
            socket,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Behaves as the daemon does: registers on Add (repeating an Add is fine), forgets on
    /// Del (unknown uids too), answers Check for registered pods only.
    pub fn daemon() -> Self {
        let mut pods: HashMap<String, PodStatus> = HashMap::new();
        Self::start(move |request| {
            Some(match request {
                Request::Add(spec) => {
                    let status = PodStatus {
                        namespace: spec.namespace.clone(),
                        name: spec.name.clone(),
                        uid: spec.uid.clone(),
                        netns: spec.netns.clone(),
                        spiffe_id: format!("spiffe://example.org/ns/{}/sa/default", spec.namespace),
                        ips: Vec::new(),
                        listeners: vec!["127.0.0.1:15001".into()],
                    };
                    pods.insert(spec.uid.clone(), status.clone());
                    Response::Pod(status)
                }
                Request::Del { uid } => Response::Removed {
                    was_registered: pods.remove(uid).is_some(),
                },
                Request::Check { uid } => match pods.get(uid) {
                    Some(status) => Response::Pod(status.clone()),
                    None => Response::Error {
                        error: format!("pod {uid} is not registered"),
                    },
                },
                Request::List => Response::Pods {
                    pods: pods.values().cloned().collect(),
                },
            })
        })
    }

    /// Refuses everything with `words`.
    pub fn refusing(words: &'static str) -> Self {
        Self::start(move |_| {
            Some(Response::Error {
                error: words.into(),
            })
        })
    }

    /// Accepts connections, reads the request, never answers.
    pub fn silent() -> Self {
        Self::start(|_| None)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("request log").clone()
    }
}

impl Drop for PodApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: &UnixListener,
    answer: &mut Answer,
    requests: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
) {
    let mut unanswered: Vec<UnixStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => panic!("accept on the pod API socket: {e}"),
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let request: Request = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the plugin sent {line:?}, not a request: {e}"));
        requests.lock().expect("request log").push(request.clone());
        match answer(&request) {
            Some(response) => {
                let mut reply = serde_json::to_vec(&response).expect("responses serialize");
                reply.push(b'\n');
                let _ = (&stream).write_all(&reply);
            }
            None => unanswered.push(stream),
        }
    }
}

/// What one run of the plugin did.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// stdout as JSON (a result or a CNI error); panics showing the output if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// The CNI error on stdout; panics if the run succeeded or printed none.
    pub fn cni_error(&self) -> (u64, String) {
        assert!(!self.success, "expected a failure: {self:#?}");
        let error = self.json();
        (
            error["code"]
                .as_u64()
                .unwrap_or_else(|| panic!("no code: {self:#?}")),
            error["msg"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// Runs the plugin as a runtime does: a clean environment with the CNI variables, the
/// network config on stdin.
pub fn plugin(command: &str, env: &[(&str, &str)], stdin: &Value) -> Run {
    let mut process = Command::new(TUNNEL_CNI);
    process
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = process.spawn().expect("start tunnel-cni");
    // VERSION exits without reading stdin; a broken pipe then is no failure of the test.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.to_string().as_bytes());
    let output = child.wait_with_output().expect("wait for tunnel-cni");
    Run {
        elapsed: started.elapsed(),
        ..Run::from(output)
    }
}

/// Runs `tunnel-cni <args>` (the installer).
pub fn tunnel_cni(args: &[&str]) -> Run {
    Run::from(
        Command::new(TUNNEL_CNI)
            .args(args)
            .output()
            .expect("run tunnel-cni"),
    )
}

impl From<std::process::Output> for Run {
    /// For commands whose duration does not matter (`elapsed` is zero).
    fn from(output: std::process::Output) -> Self {
        Self {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: Duration::ZERO,
        }
    }
}
