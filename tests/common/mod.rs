//! Helpers shared by the integration-test binaries (`tests/e2e*.rs`): the docker CLI, cleanup
//! of a stack by label, plain GETs through nginx, load through nginx and the bounds a load test
//! asserts, stackctl running in the background, nginx's workers and reloads, and the lock that
//! keeps tests of one binary from running at once (they share one engine and two cores).

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stackctl::health::Probe;
use stackctl::loadgen::{self, Sample, Summary};

/// Registry of the rig (`tests/rig/setup.sh`).
pub const REGISTRY: &str = "127.0.0.1:5000";

static SERIAL: Mutex<()> = Mutex::new(());

/// Run tests of one binary one at a time (a failed test must not block the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The docker CLI's stdout; a failed command panics with the command, exit status and stderr.
pub fn docker(args: &[&str]) -> String {
    docker_maybe(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The docker CLI's stdout, or the command, exit status and stderr when it failed: for the
/// calls a test tolerates failing (clean-up of what may not exist).
pub fn docker_maybe(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("docker {}: cannot run the docker CLI: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!("docker {} failed ({}): {}", args.join(" "), out.status, text(&out.stderr).trim()))
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Names of a stack's Swarm services, found by label as stackctl finds them, sorted.
pub fn services(stack: &str) -> Vec<String> {
    let out = docker(&["service", "ls", "--filter", &format!("label=io.stackctl.stack={stack}"), "--format", "{{.Name}}"]);
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

/// The replica count a Swarm service's spec asks for.
pub fn replicas(swarm_name: &str) -> String {
    docker(&["service", "inspect", swarm_name, "--format", "{{.Spec.Mode.Replicated.Replicas}}"]).trim().to_string()
}

/// Running containers of one Swarm service, sorted.
pub fn containers(swarm_name: &str) -> Vec<String> {
    let filter = format!("label=com.docker.swarm.service.name={swarm_name}");
    let mut ids: Vec<String> = docker(&["ps", "-q", "--no-trunc", "--filter", &filter]).split_whitespace().map(String::from).collect();
    ids.sort();
    ids
}

/// Remove everything stackctl created for `stack`: services, configs, secrets, networks (once
/// their tasks are gone) and the proxy's volume.
pub fn remove_stack(stack: &str) {
    let label = format!("label=io.stackctl.stack={stack}");
    for kind in ["service", "config", "secret"] {
        let ids = docker(&[kind, "ls", "-q", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec![kind, "rm"];
            args.extend(ids);
            if kind == "service" {
                docker(&args);
            } else {
                // A config or secret still used by a service being removed: the next run removes it.
                let _ = docker_maybe(&args);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let nets = docker(&["network", "ls", "-q", "--filter", &label]);
        let nets: Vec<&str> = nets.split_whitespace().collect();
        if nets.is_empty() {
            break;
        }
        let mut args = vec!["network", "rm"];
        args.extend(nets);
        // Fails while the removed services' tasks still hold the network: tried again.
        let _ = docker_maybe(&args);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Fails while nginx's container still holds it; a leftover volume is emptied by the next
    // proxy install anyway.
    let _ = docker_maybe(&["volume", "rm", "-f", &format!("{stack}_stackctl-proxy")]);
}

/// The benchmarks' stack file: nginx, and `n` routed services of the demo image at `tag`, one
/// replica each, each on its own host name (the demo answers `/healthz` at its root, so routes
/// differ by host, not by path), probed every 300 ms until 2 pass; no watch, no drain.
pub fn bench_stack_yaml(name: &str, port: u16, n: usize, tag: &str) -> String {
    let mut yaml = format!(
        r#"name: {name}
x-stackctl:
  proxy: {{ service: proxy, url: "http://127.0.0.1:{port}", listen: 8080 }}
  keep: 1
services:
  proxy:
    image: {REGISTRY}/stackctl-nginx:latest
    ports:
      - {{ target: 8080, published: {port}, mode: host }}
"#
    );
    for i in 1..=n {
        yaml.push_str(&format!(
            r#"  s{i:02}:
    image: {REGISTRY}/stackctl-demo:{tag}
    deploy: {{ replicas: 1 }}
    stop_grace_period: 1s
    x-stackctl:
      route:
        port: 80
        hosts: [s{i:02}.bench.test]
        health: {{ path: /healthz, interval: 300ms, timeout: 2s, successes: 2, deadline: 120s }}
        drain: 0s
        watch: 0s
"#
        ));
    }
    yaml
}

/// A benchmark's `main` (harness = false) calls this first. `cargo bench` passes `--bench`;
/// `cargo test --all-targets` runs the binary without it, and then nothing is measured: this
/// says so as libtest says it of an ignored test, not as a pass, and returns true.
pub fn bench_not_run_by_cargo_test(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return false;
    }
    println!("\nrunning 1 test");
    println!("test {name} ... ignored, a benchmark: not run under `cargo test`; run `cargo bench --bench {name}` with the rig up");
    println!("\ntest result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n");
    true
}

/// Removes a stack when dropped, however the test or benchmark ends: a failed assertion must
/// not leave dozens of services running on the rig.
pub struct RemovedOnDrop<'a>(pub &'a str);

impl Drop for RemovedOnDrop<'_> {
    fn drop(&mut self) {
        remove_stack(self.0);
    }
}

/// GET through nginx on a loopback port: the body on 200, else the status or error.
pub fn get(port: u16, path: &str) -> Result<String, String> {
    let probe = Probe { authority: format!("127.0.0.1:{port}"), path: path.into(), host: None, headers: vec![], timeout: Duration::from_secs(3) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(probe.send())?;
    if r.status == 200 { Ok(r.body) } else { Err(format!("HTTP {}: {}", r.status, r.body)) }
}

/// A throwaway stack with its own name, nginx port and directory.
pub struct TestStack {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
}

impl TestStack {
    pub fn new(name: &str, port: u16) -> TestStack {
        let dir = std::env::temp_dir().join(format!("stackctl-e2e-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let s = TestStack { name: name.to_string(), port, dir };
        s.remove_everything();
        s
    }

    /// Write the stack file for `image` (a tag of stackctl-demo) and return its path.
    pub fn file(&self, image: &str) -> PathBuf {
        let yaml = format!(
            r#"name: {name}
x-stackctl:
  proxy:
    service: proxy
    url: http://127.0.0.1:{port}
    listen: 8080
  keep: 1
services:
  proxy:
    image: {REGISTRY}/stackctl-nginx:latest
    ports:
      - target: 8080
        published: {port}
        mode: host
  web:
    image: {REGISTRY}/stackctl-demo:{image}
    deploy:
      replicas: 2
    stop_grace_period: 2s
    x-stackctl:
      route:
        port: 80
        health: {{ path: /healthz, interval: 300ms, timeout: 2s, successes: 3, deadline: 45s }}
        drain: 1s
"#,
            name = self.name,
            port = self.port
        );
        let path = self.dir.join(format!("stack-{image}.yml"));
        // Written aside and renamed into place: a deploy running meanwhile (two at once in the
        // concurrency test) reads the old or the new file, never a half-written one.
        let tmp = self.dir.join(format!(".stack-{image}.yml.{:?}", std::thread::current().id()));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// The stack file for `image`, changed by `edit`, written as `stack-<image>-<variant>.yml`.
    pub fn file_with(&self, image: &str, variant: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let yaml = edit(std::fs::read_to_string(self.file(image)).unwrap());
        let path = self.dir.join(format!("stack-{image}-{variant}.yml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    pub fn stackctl(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_stackctl")).args(args).output().expect("run stackctl");
        eprintln!(
            "$ stackctl {}\n-> {:?}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn deploy(&self, image: &str, extra: &[&str]) -> Output {
        let file = self.file(image);
        let mut args = vec!["deploy", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.stackctl(&args)
    }

    pub fn status_json(&self) -> serde_json::Value {
        let file = self.file("v1");
        let out = self.stackctl(&["status", file.to_str().unwrap(), "--output", "json"]);
        assert_eq!(out.status.code(), Some(0));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    pub fn get(&self, path: &str) -> Result<String, String> {
        get(self.port, path)
    }

    /// Names of the stack's Swarm services, found by label as stackctl finds them.
    pub fn services(&self) -> Vec<String> {
        services(&self.name)
    }

    pub fn remove_everything(&self) {
        remove_stack(&self.name);
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.remove_everything();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// Client retries a load test accepts per nginx reload. README, "Faults, and what they cost":
/// a reload's old nginx workers close idle kept-alive connections, and a request crossing that
/// close is retried by the client; each of the tests' 4 kept-alive clients meets at most one
/// such close per reload. A deploy whose routes stay as they were reloads nothing, so a load
/// test over ordinary deploys allows none. Both kinds of retry count (`Summary::retried`): one
/// resent after nothing was written, and one resent after the request was written but before
/// any answer, which a client that never retries would have seen fail.
pub const MAX_RETRIES_PER_RELOAD: usize = 4;

/// Assert the retries of a load run stay within README's bound for `reloads` nginx reloads.
pub fn assert_retries_bounded(sum: &Summary, reloads: usize) {
    assert!(
        sum.retried <= MAX_RETRIES_PER_RELOAD * reloads,
        "{} client retries ({} after the request was written, {} before) over {reloads} nginx reload(s); README allows {MAX_RETRIES_PER_RELOAD} per reload: {sum:?}",
        sum.retried,
        sum.retried_no_response,
        sum.retried_unsent
    );
}

/// What every load test asserts of a run that must not fail: enough requests to prove
/// something, not one failure of any kind, and retries within README's bound.
pub fn assert_load_clean(sum: &Summary, min_requests: usize, reloads: usize) {
    assert!(sum.requests >= min_requests, "the load generator sent too little to prove anything: {sum:?}");
    assert_eq!(
        (sum.failures, sum.partial, sum.no_response, sum.unsent),
        (0, 0, 0, 0),
        "failed requests (all, cut mid-response, no response, unsent): {:?}",
        sum.failure_examples
    );
    assert_retries_bounded(sum, reloads);
}

/// What a deploy whose green failed its watch window ends with: exit 1, the failed watch's
/// message (`reason` in it), users back on `blue` (`r1`) with the live release intact, and in
/// its `--output json` result the phases `watch` and `switch back` but no `retire`. Returns the
/// phases with their seconds.
pub fn assert_switched_back_in_watch(out: &Output, reason: &str, blue: &str) -> Vec<(String, f64)> {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("failed while watching green after the switch"), "{err}");
    assert!(err.contains(&format!("green failed after the switch: {reason}")) && err.contains(&format!("traffic is back on {blue}")), "{err}");
    assert!(err.contains("The live release is intact"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    let phases: Vec<(String, f64)> =
        report["phases"].as_array().unwrap().iter().map(|p| (p["phase"].as_str().unwrap().to_string(), p["seconds"].as_f64().unwrap())).collect();
    let has = |name: &str| phases.iter().any(|p| p.0 == name);
    assert!(has("watch") && has("switch back") && !has("retire"), "{phases:?}");
    phases
}

/// Load through nginx on a background runtime, one or more runs of workers; samples are
/// visible while it runs, so tests wait for answers instead of sleeping.
pub struct Load {
    rt: tokio::runtime::Runtime,
    stops: Vec<tokio::sync::watch::Sender<bool>>,
    runs: Vec<(tokio::task::JoinHandle<()>, loadgen::Sink)>,
    /// Sample times count from here (give or take the spawn).
    pub started: Instant,
}

impl Load {
    /// Runs of `(path, kept-alive workers, new-connection workers, timeout)`; returns once the
    /// first run has answered a request per worker, so the load is flowing.
    pub fn start(authority: &str, runs: &[(&str, usize, usize, Duration)]) -> Load {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let started = Instant::now();
        let (mut stops, mut handles) = (Vec::new(), Vec::new());
        for (path, keepalive_workers, fresh_workers, timeout) in runs {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let cfg = loadgen::Config {
                authority: authority.into(),
                path: path.to_string(),
                keepalive_workers: *keepalive_workers,
                fresh_workers: *fresh_workers,
                timeout: *timeout,
            };
            let sink = loadgen::Sink::default();
            handles.push((rt.spawn(loadgen::run_into(cfg, rx, sink.clone())), sink));
            stops.push(tx);
        }
        let load = Load { rt, stops, runs: handles, started };
        let (_, k, f, _) = runs[0];
        load.wait_answers_since(Duration::ZERO, k + f);
        load
    }

    /// The usual load: 4 kept-alive and 4 new-connection clients on `/`.
    pub fn steady(authority: &str) -> Load {
        Load::start(authority, &[("/", 4, 4, Duration::from_secs(5))])
    }

    /// Time since the load started, on the samples' clock.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wait (30 s at most) until the first run has `n` answers to requests sent at or after
    /// `since`, so a window of the run is really observed.
    pub fn wait_answers_since(&self, since: Duration, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.runs[0].1.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|s| s.sent >= since && s.result.is_ok()).count();
            if got >= n {
                return;
            }
            assert!(Instant::now() < deadline, "only {got} of {n} answers to requests sent after {since:?} within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop every run; their samples, in the order the runs were given.
    pub fn stop(self) -> Vec<Vec<Sample>> {
        for s in &self.stops {
            s.send(true).unwrap();
        }
        self.runs
            .into_iter()
            .map(|(h, sink)| {
                self.rt.block_on(h).expect("load run");
                std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()))
            })
            .collect()
    }
}

/// A stackctl running in the background; its stderr is echoed and kept, line by line.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
    pub started: Instant,
}

impl Running {
    /// Spawn the binary with `args`, and `STACKCTL_TEST_PAUSE=pause` when given.
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

    /// Whether the process is still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
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

/// PIDs of an nginx container's active worker processes (not those shutting down after a
/// reload), read from /proc through `docker exec`: the image has no `ps`, and `docker top`
/// needs one.
pub fn nginx_workers(container: &str) -> Vec<u32> {
    let script = r#"for d in /proc/[0-9]*; do [ "$(tr -d '\000' <"$d/cmdline" 2>/dev/null)" = "nginx: worker process" ] && echo "${d#/proc/}"; done; true"#;
    let mut pids: Vec<u32> = docker(&["exec", container, "sh", "-c", script]).split_whitespace().map(|p| p.parse().expect("a pid")).collect();
    pids.sort();
    pids
}

/// The active workers of a starting nginx, once there are some (20 s at most).
pub fn wait_for_workers(container: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let workers = nginx_workers(container);
        if !workers.is_empty() {
            return workers;
        }
        assert!(Instant::now() < deadline, "{container}: no nginx worker within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many reloads (SIGHUP) the nginx master of `container` has handled: it logs each one at
/// `notice` level, which the test image's nginx.conf logs to stderr.
pub fn nginx_reloads(container: &str) -> usize {
    let out = Command::new("docker").args(["logs", container]).output().expect("docker CLI");
    assert!(out.status.success(), "docker logs {container}: {}", text(&out.stderr));
    text(&out.stderr).lines().filter(|l| l.contains("(SIGHUP) received")).count()
}

/// Wait (20 s at most) until `container`'s nginx has handled `reloads` reloads in all and its
/// active workers share no PID with `old`: a reload happened and its new workers took over.
/// Returns the new workers.
pub fn wait_for_reload(container: &str, reloads: usize, old: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (done, workers) = (nginx_reloads(container), nginx_workers(container));
        if done >= reloads && !workers.is_empty() && workers.iter().all(|p| !old.contains(p)) {
            assert_eq!(done, reloads, "{container}: nginx handled more reloads than the test made");
            return workers;
        }
        assert!(Instant::now() < deadline, "{container}: no reload {reloads} within 20 s (handled {done}; workers {workers:?}, before {old:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}
