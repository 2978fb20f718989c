//! Processes in a host: in a cgroup, in the host's network namespace, output to files, killed
//! and reaped when dropped.

use std::{
    ffi::OsString,
    fs::{self, File},
    io::Write as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};

static NEXT_LOG: AtomicU32 = AtomicU32::new(0);

pub struct HostCommand {
    netns: PathBuf,
    cgroup: PathBuf,
    program: String,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A running process; SIGKILLed and reaped on drop.
pub struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    description: String,
}

impl HostCommand {
    /// A command for any network namespace (`netns`: its path, e.g. a pod's `/run/netns/<name>`).
    pub fn new(netns: PathBuf, cgroup: PathBuf, program: &str) -> Self {
        Self {
            netns,
            cgroup,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn in_cgroup(mut self, cgroup: &std::path::Path) -> Self {
        self.cgroup = cgroup.into();
        self
    }

    pub fn stdin_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    fn describe(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("{} {}", self.program, args.join(" "))
    }

    /// The shell joins the cgroup first (so everything it becomes is in it), then enters the
    /// namespace and becomes the program.
    fn command(&self) -> Command {
        let script = format!(
            "echo $$ > '{}/cgroup.procs' && exec nsenter --net='{}' -- \"$@\"",
            self.cgroup.display(),
            self.netns.display()
        );
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&self.program)
            .args(&self.args);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    pub fn spawn(self) -> Proc {
        let n = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("tt-{}-{n}", std::process::id()));
        let (stdout, stderr) = (base.with_extension("out"), base.with_extension("err"));
        let mut command = self.command();
        command
            .stdout(File::create(&stdout).expect("create stdout log"))
            .stderr(File::create(&stderr).expect("create stderr log"))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.describe()));
        if let Some(bytes) = &self.stdin {
            let mut input = child.stdin.take().expect("piped stdin");
            input.write_all(bytes).expect("write stdin");
        }
        Proc {
            child,
            stdout,
            stderr,
            description: self.describe(),
        }
    }

    /// Runs to completion; panics with the command line and output on timeout.
    pub fn output(self, timeout: Duration) -> Output {
        let started = Instant::now();
        let description = self.describe();
        let mut proc = self.spawn();
        match proc.wait_timeout(timeout) {
            Some(status) => Output {
                status,
                stdout: proc.stdout(),
                stderr: proc.stderr(),
                elapsed: started.elapsed(),
            },
            None => panic!(
                "{description} did not finish in {timeout:?}\nstdout: {}\nstderr: {}",
                proc.stdout(),
                proc.stderr()
            ),
        }
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`). A process that has exited already is
    /// no error: tests signal daemons that may have died of what they test.
    pub fn signal(&self, signal: &str) {
        let signal: Signal = format!("SIG{signal}")
            .parse()
            .unwrap_or_else(|_| panic!("{signal} is not a signal name"));
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pids fit in i32"));
        match kill(pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => panic!("kill -{signal} {pid} ({}): {e}", self.description),
        }
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// stdout and stderr together.
    pub fn logs(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// Waits until the output contains `needle`; panics with everything printed so far.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let started = Instant::now();
        loop {
            if self.logs().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.description,
                    self.logs()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "{} did not print {needle:?} within {timeout:?}:\n{}",
                self.description,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until a line containing every needle appears; returns it.
    pub fn wait_for_line(&self, needles: &[&str], timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .logs()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_string();
            }
            assert!(
                started.elapsed() < timeout,
                "{}: no line with {needles:?} within {timeout:?}:\n{}",
                self.description,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.stderr);
    }
}
