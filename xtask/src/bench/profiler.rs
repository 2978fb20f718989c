//! perf around the daemons during a measurement: a call-graph profile of both (`--perf`) or
//! each one's system-call counts (`--syscalls`).

use std::{path::PathBuf, time::Duration};

/// Records perf profiles (or system-call counts) of both daemons.
pub struct Profiler {
    pub pids: [u32; 2],
    pub dir: PathBuf,
    /// `perf trace -s` per daemon instead of one `perf record` of both.
    pub syscalls: bool,
}

/// Running `perf` processes; they stop (and write their files) when dropped.
pub struct Recording(Vec<std::process::Child>);

impl Profiler {
    pub fn record(&self, measurement: &str, run: usize) -> Recording {
        let perf = |args: &[&str], pids: &str| {
            std::process::Command::new("perf")
                .args(args)
                .args(["-p", pids])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("perf starts (linux-perf is installed by --perf and --syscalls)")
        };
        let children = if self.syscalls {
            self.pids
                .iter()
                .zip(["a", "b"])
                .map(|(pid, host)| {
                    let file = self
                        .dir
                        .join(format!("syscalls-{measurement}-{run}-{host}.txt"));
                    perf(
                        &["trace", "-s", "-o", &file.to_string_lossy()],
                        &pid.to_string(),
                    )
                })
                .collect()
        } else {
            let file = self.dir.join(format!("perf-{measurement}-{run}.data"));
            let pids = format!("{},{}", self.pids[0], self.pids[1]);
            // DWARF unwinding: the release build has no frame pointers, so `-g` would stop
            // every user-space stack at its first frame (a `malloc` or `memmove` without the
            // code that called it). It copies 32 KiB of stack per sample, so half the rate.
            vec![perf(
                &[
                    "record",
                    "-q",
                    "--call-graph=dwarf,32768",
                    "-F",
                    "499",
                    "-o",
                    &file.to_string_lossy(),
                ],
                &pids,
            )]
        };
        std::thread::sleep(Duration::from_millis(300));
        Recording(children)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // SIGINT makes perf write out its file.
        for child in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}
