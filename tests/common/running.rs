//! A stackctl running in the background (to signal or kill it at a pause point) and load
//! through nginx on a background runtime: shared by the tests that need either.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stackctl::loadgen;

/// A stackctl running in the background; its stderr is echoed and kept, line by line.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
    started: Instant,
}

impl Running {
    /// Start `stackctl args`, with `STACKCTL_TEST_PAUSE=pause` when given.
    pub fn spawn(args: &[String], pause: Option<&str>) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(point) = pause {
            cmd.env("STACKCTL_TEST_PAUSE", point);
        }
        let mut child = cmd.spawn().expect("spawn stackctl");
        let pid = child.id();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[stackctl {pid}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        eprintln!("$ stackctl {} (pid {pid}, pause {pause:?})", args.join(" "));
        Running { child, lines, stderr: Vec::new(), started: Instant::now() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for a stderr line containing `what`.
    pub fn wait_for_line(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(what);
                    self.stderr.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no {what:?} from stackctl within {timeout:?}; stderr so far:\n{}", self.stderr.join("\n")),
            }
        }
    }

    /// Whether the process is still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGKILL, and reap it (a zombie still has a /proc entry).
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Wait for the exit; returns exit code, stdout, all of stderr and the time since spawn.
    pub fn finish(mut self) -> (Option<i32>, String, String, Duration) {
        let mut stdout = String::new();
        use std::io::Read;
        self.child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let status = self.child.wait().unwrap();
        let took = self.started.elapsed();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(line);
        }
        eprintln!("-> {:?} after {took:.1?}\n--- stdout\n{stdout}", status.code());
        (status.code(), stdout, self.stderr.join("\n"), took)
    }
}

/// Load through nginx in the background.
pub struct Load {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Vec<loadgen::Sample>>,
    started: Instant,
}

impl Load {
    /// Two kept-alive and two new-connection workers on `/` of nginx at a loopback port.
    pub fn start(port: u16) -> Load {
        Load::with(loadgen::Config {
            authority: format!("127.0.0.1:{port}"),
            path: "/".into(),
            keepalive_workers: 2,
            fresh_workers: 2,
            timeout: Duration::from_secs(5),
        })
    }

    pub fn with(cfg: loadgen::Config) -> Load {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let handle = rt.spawn(loadgen::run(cfg, rx));
        std::thread::sleep(Duration::from_millis(300));
        Load { rt, stop, handle, started }
    }

    /// Time since the load started, on the samples' clock (give or take a millisecond).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn stop(self) -> Vec<loadgen::Sample> {
        self.stop.send(true).unwrap();
        self.rt.block_on(self.handle).unwrap()
    }
}
