//! Benchmark: throughput and latency through stackctl's route against a hand-written nginx
//! `upstream` with a keep-alive pool to the same tasks, and latency during a switch.
//!
//!     cargo bench --bench throughput        (needs the rig: tests/rig/setup.sh; ~3 minutes)
//!
//! Prints numbers (and `wrk`'s own output) and asserts nothing; under `cargo test` it runs
//! nothing and reports itself ignored, as `benches/switch.rs` does.
//!
//! A stack deployed by the real `stackctl deploy` (the rig's nginx image, two replicas of the
//! backend, nothing throttled) and, beside it, a second nginx service of the same image
//! (`<stack>hand_proxy`) on the same overlay network, whose hand-written config reaches the same
//! two tasks of the same release three ways:
//!
//! - `upstream` listing the tasks' addresses, `keepalive 32`, `proxy_http_version 1.1` and an
//!   empty `Connection` header: the textbook pooled proxy;
//! - what stackctl's route does, written by hand: `resolver 127.0.0.11 valid=1s` and
//!   `proxy_pass http://$variable` to `tasks.<release>` (a connection per request, no pool).
//!   The difference between the two hand-written configs is the upstream block and its pool;
//!   the one between this and stackctl's route is the rest of stackctl's config;
//! - `proxy_pass http://$variable` where the variable (from a `map`, as stackctl's are) names
//!   the `upstream` block: nginx then uses that block and its pool, so a route chosen per
//!   request by variables, as stackctl's switch needs, can keep the pool.
//!
//! Ports: stackctl's nginx on the scenario's port, the hand-written one on the next three.
//!
//! A separate nginx rather than an extra server block in stackctl's: stackctl owns its nginx's
//! config directory and its reloads (a deploy rewrites what it did not write), and the runs are
//! taken one after another, so both nginx services see the same idle machine. Both publish in
//! host mode and run the image's own `nginx.conf` (2 workers on 2 cores).
//!
//! Two backends, each deployed as its own stack:
//! - `tput`: the rig's demo app (busybox httpd). It answers every request with
//!   `Connection: close` and listens with a backlog of 9, so no config can keep a connection to it
//!   and a pool cannot help; when its accept queue is full a SYN is dropped and that request
//!   waits ~1 s for the retransmission (the tail every config shows against it).
//! - `tputka`: the rig's nginx image as the backend (`return 200 "v1"`), which keeps
//!   connections alive: what a pool buys, and what its absence costs stackctl's route. Without
//!   a pool nginx opens a connection per request and closes it itself, so every request leaves
//!   a socket in TIME_WAIT (60 s) in nginx's network namespace, holding a local port towards
//!   that task; the count is printed after each run.
//!
//! For each: `wrk --latency -t2 -c16` on each of the four configs in two rounds of 5 s in
//! rotated order (requests/s; wrk's p50/p99 include its coordinated-omission correction, which
//! adds synthetic samples for every response slower than twice the mean interval, so one stalled
//! second weighs as ~150 samples; its max is the slowest real response), then the project's load
//! generator with as many kept-alive clients for 3 s each (every real request, uncorrected).
//!
//! Then, on `tput`, a switch: `wrk` for 5 s on stackctl's route, and `wrk` from the start of a
//! v1 → v2 `stackctl deploy` until it returns (stopped with SIGINT, on which wrk prints its
//! report); and a v2 → (new v1 release) deploy under the load generator, which times every
//! request, so latency is also given per phase (phase starts from `--events json`).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stackctl::loadgen::{self, Sample, Summary};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{docker, docker_maybe, REGISTRY};

const THREADS: usize = 2;
const CONNECTIONS: usize = 16;
const WRK_RUN: Duration = Duration::from_secs(5);
const ROUNDS: usize = 2;
const LOADGEN_RUN: Duration = Duration::from_secs(3);

/// One stack and the hand-written nginx beside it.
struct Scenario {
    stack: &'static str,
    what: &'static str,
    /// stackctl's nginx; the hand-written one publishes `+1` (pool), `+2` (variable to
    /// `tasks.<release>`) and `+3` (variable naming the pool).
    port: u16,
    /// The backend service's image line and anything else it needs (indented 4); empty: the
    /// demo app at the deploy's tag.
    backend: String,
    /// Top-level lines (e.g. `configs:`).
    top: &'static str,
    dir: PathBuf,
}

/// nginx as a backend that keeps connections: a fixed answer for every path (also /healthz).
const NGINX_BACKEND_CONF: &str = "server {\n    listen 80 default_server;\n    location / {\n        return 200 \"v1\\n\";\n    }\n}\n";

impl Scenario {
    fn new(stack: &'static str, what: &'static str, port: u16, backend: String, top: &'static str) -> Scenario {
        let dir = std::env::temp_dir().join(format!("stackctl-bench-{stack}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("backend.conf"), NGINX_BACKEND_CONF).unwrap();
        Scenario { stack, what, port, backend, top, dir }
    }

    fn hand(&self) -> String {
        format!("{}hand", self.stack)
    }

    /// The stack file, with the demo at `tag` unless the scenario names its own backend;
    /// `extra` lines go into the service (a new spec makes a new release of the same image).
    fn file(&self, tag: &str, extra: &str) -> String {
        let (stack, port, top) = (self.stack, self.port, self.top);
        let backend = if self.backend.is_empty() { format!("    image: {REGISTRY}/stackctl-demo:{tag}\n") } else { self.backend.clone() };
        let path = self.dir.join(format!("{stack}-{tag}.yml"));
        std::fs::write(
            &path,
            format!(
                r#"name: {stack}
x-stackctl:
  proxy: {{ service: proxy, url: "http://127.0.0.1:{port}", listen: 8080 }}
  keep: 1
{top}services:
  proxy:
    image: {REGISTRY}/stackctl-nginx:latest
    ports: [{{ target: 8080, published: {port}, mode: host }}]
  web:
{backend}    deploy: {{ replicas: 2 }}
    stop_grace_period: 2s
{extra}    x-stackctl:
      route:
        port: 80
        health: {{ path: /healthz, interval: 300ms, timeout: 2s, successes: 3, deadline: 60s }}
        drain: 1s
        watch: 3s
"#
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    }

    /// The one release of `web` that runs, and its tasks' addresses on the network it shares
    /// with nginx.
    fn live_release(&self) -> (String, String, Vec<Ipv4Addr>) {
        let prefix = format!("{}_web-r", self.stack);
        let release = common::services(self.stack)
            .into_iter()
            .find(|s| s.starts_with(&prefix) && common::replicas(s) != "0")
            .expect("a running release of web");
        let tasks = docker(&["service", "ps", "-q", "--filter", "desired-state=running", &release]);
        let mut network = String::new();
        let mut ips = Vec::new();
        for task in tasks.split_whitespace() {
            let out = docker(&[
                "inspect",
                "--format",
                "{{range .NetworksAttachments}}{{.Network.Spec.Name}} {{range .Addresses}}{{.}} {{end}}\n{{end}}",
                task,
            ]);
            for line in out.lines() {
                let mut words = line.split_whitespace();
                let (Some(net), Some(addr)) = (words.next(), words.next()) else { continue };
                if net == "ingress" {
                    continue;
                }
                // Parsed, so nothing but an address reaches the config.
                let ip: Ipv4Addr = addr.split('/').next().unwrap().parse().expect("a task's IPv4 address");
                network = net.to_string();
                ips.push(ip);
            }
        }
        assert!(!ips.is_empty(), "no address for {release}");
        (release, network, ips)
    }

    /// The hand-written nginx: its own service of the rig's nginx image on the stack's network.
    fn start_hand_nginx(&self) {
        let (release, network, ips) = self.live_release();
        // The release name reaches the config: the stack's and the service's allowlists.
        let (stack, rest) = release.split_once('_').unwrap();
        let (service, number) = rest.rsplit_once("-r").unwrap();
        stackctl::spec::allow::check_stack_name(stack).unwrap();
        stackctl::spec::allow::check_service_name(service).unwrap();
        assert!(number.chars().all(|c| c.is_ascii_digit()), "release number of {release}");
        let servers: String = ips.iter().map(|ip| format!("    server {ip}:80;\n")).collect();
        let headers = "        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        proxy_set_header Host $host;\n        proxy_set_header X-Real-IP $remote_addr;\n        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n        proxy_set_header X-Forwarded-Proto $scheme;\n";
        let conf = format!(
            "upstream hand_web {{\n{servers}    keepalive 32;\n}}\n\
             server {{\n    listen 8080;\n    location / {{\n        proxy_pass http://hand_web;\n{headers}    }}\n}}\n\
             server {{\n    listen 8081;\n    resolver 127.0.0.11 valid=1s ipv6=off;\n    set $hand_target tasks.{release}:80;\n    location / {{\n        proxy_pass http://$hand_target;\n{headers}    }}\n}}\n\
             map $host $hand_pool {{\n    default hand_web;\n}}\n\
             server {{\n    listen 8082;\n    location / {{\n        proxy_pass http://$hand_pool;\n{headers}    }}\n}}\n"
        );
        let hand = self.hand();
        println!("hand-written nginx config (service {hand}_proxy, same image, network {network}; release {release}):\n{conf}");
        let path = self.dir.join("hand.conf");
        std::fs::write(&path, &conf).unwrap();
        let ns = format!("com.docker.stack.namespace={hand}");
        let config = format!("{hand}_nginx");
        docker(&["config", "create", "--label", &ns, &config, path.to_str().unwrap()]);
        docker(&[
            "service", "create", "-q", "--detach", "--name", &format!("{hand}_proxy"), "--label", &ns, "--network", &network,
            "--publish", &format!("mode=host,target=8080,published={}", self.port + 1),
            "--publish", &format!("mode=host,target=8081,published={}", self.port + 2),
            "--publish", &format!("mode=host,target=8082,published={}", self.port + 3),
            "--config", &format!("source={config},target=/etc/nginx/conf.d/hand.conf"), &format!("{REGISTRY}/stackctl-nginx:latest"),
        ]);
        wait_for(self.port + 1, "v1");
        wait_for(self.port + 2, "v1");
        wait_for(self.port + 3, "v1");
    }

    fn remove_hand_nginx(&self) {
        let label = format!("label=com.docker.stack.namespace={}", self.hand());
        for kind in ["service", "config"] {
            let ids = docker(&[kind, "ls", "-q", "--filter", &label]);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec![kind, "rm"];
                args.extend(ids);
                // A config is still held for a moment by the service just removed.
                for _ in 0..20 {
                    if docker_maybe(&args).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn remove(&self) {
        self.remove_hand_nginx();
        common::remove_stack(self.stack);
        // nginx's volume stays in use until its container has exited (seconds after its service
        // is removed), so remove_stack may have left it.
        let volume = format!("{}_stackctl-proxy", self.stack);
        for _ in 0..20 {
            // `-f`: a volume already gone is no error.
            if docker_maybe(&["volume", "rm", "-f", &volume]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn up(&self) {
        self.remove();
        deploy(&self.file("v1", ""));
        wait_for(self.port, "v1");
        self.start_hand_nginx();
    }

    /// The four configs, `ROUNDS` times each under wrk in rotated order, then once each under
    /// the load generator. Returns stackctl's wrk totals.
    fn steady(&self) -> Wrk {
        let (ours, hand) = (format!("{}_proxy", self.stack), format!("{}_proxy", self.hand()));
        let targets = [
            ("stackctl's route", self.port, &ours),
            ("hand-written upstream + keepalive", self.port + 1, &hand),
            ("hand-written variable proxy_pass", self.port + 2, &hand),
            ("hand-written variable naming the upstream", self.port + 3, &hand),
        ];
        let mut runs: Vec<Vec<Wrk>> = vec![Vec::new(); 4];
        for round in 0..ROUNDS {
            for k in 0..4 {
                let i = (k + round) % 4;
                let (name, port, nginx) = targets[i];
                let mut w = wrk(port, WRK_RUN, &format!("{}: {name}, round {}", self.stack, round + 1));
                w.time_wait = time_wait(nginx);
                runs[i].push(w);
            }
        }
        let raw: Vec<Summary> = targets.iter().map(|(_, port, _)| loadgen_for(*port, LOADGEN_RUN)).collect();
        println!(
            "\n== steady state, backend {} (stack {}): wrk -t{THREADS} -c{CONNECTIONS} -d{}s, {ROUNDS} rounds each",
            self.what,
            self.stack,
            WRK_RUN.as_secs()
        );
        let mut total = [Wrk::default(); 4];
        println!("  (TIME_WAIT: sockets in TIME_WAIT in that nginx's network namespace after the run; both hand-written configs are one nginx)");
        for (i, (name, _, _)) in targets.iter().enumerate() {
            for (r, w) in runs[i].iter().enumerate() {
                row(&format!("{name} (round {})", r + 1), w);
            }
            // The rounds as one: mean requests/s; wrk gives no histogram to merge, so the
            // percentiles are the worse round's and max the max.
            let t = &mut total[i];
            t.requests = runs[i].iter().map(|w| w.requests).sum();
            t.rps = runs[i].iter().map(|w| w.rps).sum::<f64>() / ROUNDS as f64;
            t.p50 = runs[i].iter().map(|w| w.p50).fold(0.0, f64::max);
            t.p99 = runs[i].iter().map(|w| w.p99).fold(0.0, f64::max);
            t.max = runs[i].iter().map(|w| w.max).fold(0.0, f64::max);
            t.errors = runs[i].iter().map(|w| w.errors).sum();
            t.time_wait = runs[i].iter().map(|w| w.time_wait).max().unwrap_or(0);
        }
        println!("  -- wrk, all rounds (p50/p99 with wrk's correction, max real)");
        for (i, (name, _, _)) in targets.iter().enumerate() {
            row(name, &total[i]);
        }
        println!("  -- project load generator, {CONNECTIONS} kept-alive clients, {} s each (every request as measured)", LOADGEN_RUN.as_secs());
        for (i, (name, _, _)) in targets.iter().enumerate() {
            summary_row(name, LOADGEN_RUN.as_secs_f64(), &raw[i]);
        }
        println!(
            "  stackctl / hand-written upstream+keepalive: {:.3}x requests/s with wrk, {:.3}x with the load generator (goal >= 0.9)",
            total[0].rps / total[1].rps,
            raw[0].requests as f64 / raw[1].requests as f64
        );
        println!(
            "  stackctl / hand-written variable proxy_pass: {:.3}x with wrk, {:.3}x with the load generator",
            total[0].rps / total[2].rps,
            raw[0].requests as f64 / raw[2].requests as f64
        );
        println!(
            "  hand-written variable naming the upstream / upstream + keepalive: {:.3}x with wrk, {:.3}x with the load generator",
            total[3].rps / total[1].rps,
            raw[3].requests as f64 / raw[1].requests as f64
        );
        total[0]
    }
}

fn wait_for(port: u16, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if common::get(port, "/").is_ok_and(|b| b.trim() == body) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("127.0.0.1:{port} never answered {body}");
}

/// Removes the stacks and the hand-written nginx services however the benchmark ends.
struct Cleanup<'a>(&'a [&'a Scenario]);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for s in self.0 {
            s.remove();
        }
    }
}

fn wrk_command(port: u16, duration: Duration) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "--latency",
        "-t",
        &THREADS.to_string(),
        "-c",
        &CONNECTIONS.to_string(),
        "-d",
        &format!("{}s", duration.as_secs()),
        &format!("http://127.0.0.1:{port}/"),
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// What wrk reports, read from its own output (durations in ms).
#[derive(Clone, Copy, Default)]
struct Wrk {
    rps: f64,
    requests: u64,
    p50: f64,
    p99: f64,
    max: f64,
    errors: u64,
    /// Sockets in TIME_WAIT in the nginx's network namespace after the run (0: not read).
    time_wait: usize,
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.00m`; in ms.
fn wrk_ms(s: &str) -> f64 {
    for (unit, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0), ("h", 3_600_000.0)] {
        if let Some(n) = s.strip_suffix(unit) {
            if let Ok(v) = n.parse::<f64>() {
                return v * factor;
            }
        }
    }
    panic!("wrk duration {s:?}");
}

fn parse_wrk(out: &str) -> Wrk {
    let mut w = Wrk::default();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _stdev, max, ..] => w.max = wrk_ms(max),
            ["50%", v] => w.p50 = wrk_ms(v),
            ["99%", v] => w.p99 = wrk_ms(v),
            ["Requests/sec:", v] => w.rps = v.parse().unwrap(),
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap(),
            // wrk 4.1 prints "Non-2xx or 3xx responses: N".
            ["Non-2xx", "or", _, "responses:", n] => w.errors += n.parse::<u64>().unwrap(),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest.iter().filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    w
}

fn finish_wrk(child: Child, label: &str) -> Wrk {
    let out = child.wait_with_output().unwrap();
    let text = common::text(&out.stdout);
    println!("--- wrk: {label}\n{}{}", text, common::text(&out.stderr));
    parse_wrk(&text)
}

fn wrk(port: u16, duration: Duration, label: &str) -> Wrk {
    finish_wrk(wrk_command(port, duration).spawn().expect("wrk (apt-get install wrk)"), label)
}

fn row(name: &str, w: &Wrk) {
    let tw = if w.time_wait > 0 { format!(", TIME_WAIT {}", w.time_wait) } else { String::new() };
    println!(
        "  {name:<44} {:>6.0} req/s  p50 {:>7.2}  p99 {:>7.2}  max {:>8.2} ms  ({} requests, {} errors{tw})",
        w.rps, w.p50, w.p99, w.max, w.requests, w.errors
    );
}

/// Sockets in TIME_WAIT (state 06) in the network namespace of a service's container: nginx
/// is the side that closes a connection it does not keep, so each one it opened per request
/// stays there for 60 s, holding a local port towards that backend address.
fn time_wait(service: &str) -> usize {
    let Some(container) = common::containers(service).into_iter().next() else { return 0 };
    let tcp = docker(&["exec", &container, "cat", "/proc/net/tcp"]);
    tcp.lines().filter(|l| l.split_whitespace().nth(3) == Some("06")).count()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary_row(name: &str, secs: f64, s: &Summary) {
    println!(
        "  {name:<44} {:>6.0} req/s  p50 {:>7.2}  p99 {:>7.2}  max {:>8.2} ms  ({} requests, {} failures, {} retries)",
        s.requests as f64 / secs.max(1e-9),
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.requests,
        s.failures,
        s.retried
    );
}

fn loadgen_config(port: u16) -> loadgen::Config {
    loadgen::Config {
        authority: format!("127.0.0.1:{port}"),
        path: "/".into(),
        keepalive_workers: CONNECTIONS,
        fresh_workers: 0,
        timeout: Duration::from_secs(5),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn loadgen_for(port: u16, duration: Duration) -> Summary {
    let rt = runtime();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let load = rt.spawn(loadgen::run(loadgen_config(port), rx));
    std::thread::sleep(duration);
    tx.send(true).unwrap();
    let samples = rt.block_on(load).unwrap();
    // Only what was sent within the run: requests cut short by the stop are not counted.
    loadgen::summarize(samples.iter().filter(|s| s.sent < duration))
}

/// Run `stackctl deploy FILE --output json --events json`; returns the phases as they started
/// (name, seconds since the process started).
fn deploy(file: &str) -> Vec<(String, f64)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .args(["deploy", file, "--output", "json", "--events", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut phases = Vec::new();
        let mut raw = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["event"] == "phase" {
                    phases.push((v["phase"].as_str().unwrap_or("?").to_string(), v["at"].as_f64().unwrap_or(0.0)));
                }
            }
            raw.push_str(&line);
            raw.push('\n');
        }
        (phases, raw)
    });
    let out = child.wait_with_output().unwrap();
    let (phases, raw) = reader.join().unwrap();
    assert!(out.status.success(), "stackctl deploy {file} failed:\n{raw}");
    phases
}

/// wrk on stackctl's route for `WRK_RUN`, then from the start of a deploy until it returns.
fn switch_wrk(s: &Scenario, file: &str) {
    let before = wrk(s.port, WRK_RUN, "stackctl's route, steady, just before the deploy");
    let child = wrk_command(s.port, Duration::from_secs(300)).spawn().unwrap();
    let t = Instant::now();
    let phases = deploy(file);
    let took = t.elapsed();
    // wrk stops on SIGINT and prints its report for the time it ran.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let during = finish_wrk(child, "stackctl's route, from the start of the v1 -> v2 deploy until it returned");
    println!("\n== switch: v1 -> v2 `stackctl deploy` under wrk -t{THREADS} -c{CONNECTIONS}; the deploy took {:.2} s", took.as_secs_f64());
    println!("  phases started at (s): {}", phases.iter().map(|(p, at)| format!("{p} {at:.2}")).collect::<Vec<_>>().join(", "));
    row(&format!("steady (just before, {} s)", WRK_RUN.as_secs()), &before);
    row("during the deploy", &during);
    println!(
        "  during / steady: p99 {:.2}x, max {:.2}x (goal <= 2x); requests/s {:.2}x",
        during.p99 / before.p99,
        during.max / before.max,
        during.rps / before.rps
    );
}

/// The same kind of switch under the project's load generator, every request timed: latency
/// before the deploy, during it, and in each of its phases.
fn switch_loadgen(s: &Scenario, file: &str, what: &str) {
    let rt = runtime();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let load = rt.spawn(loadgen::run(loadgen_config(s.port), rx));
    std::thread::sleep(WRK_RUN);
    let start = t0.elapsed();
    let phases = deploy(file);
    let end = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    tx.send(true).unwrap();
    let samples: Vec<Sample> = rt.block_on(load).unwrap();
    let window = |from: Duration, to: Duration| loadgen::summarize(samples.iter().filter(|x| x.sent >= from && x.sent < to));
    println!("\n== switch: {what} `stackctl deploy` under the project's load generator, {CONNECTIONS} kept-alive clients (requests by when they were sent)");
    let steady = window(Duration::ZERO, start);
    let during = window(start, end);
    summary_row("steady (before)", start.as_secs_f64(), &steady);
    summary_row("whole deploy", (end - start).as_secs_f64(), &during);
    for (i, (phase, at)) in phases.iter().enumerate() {
        let from = start + Duration::from_secs_f64(*at);
        let to = phases.get(i + 1).map(|(_, next)| start + Duration::from_secs_f64(*next)).unwrap_or(end);
        summary_row(&format!("  phase {phase} ({:.2} s)", (to - from).as_secs_f64()), (to - from).as_secs_f64(), &window(from, to));
    }
    println!(
        "  whole deploy / steady: p99 {:.2}x, max {:.2}x (goal <= 2x); failures {:?}",
        during.p99.as_secs_f64() / steady.p99.as_secs_f64(),
        during.max.as_secs_f64() / steady.max.as_secs_f64(),
        loadgen::summarize(&samples).failure_examples
    );
}

fn main() {
    if common::bench_not_run_by_cargo_test("throughput") {
        return;
    }
    assert!(docker_maybe(&["info"]).is_ok(), "no Docker engine: run tests/rig/setup.sh first");
    let began = Instant::now();
    let demo = Scenario::new("tput", "the demo app (busybox httpd, Connection: close)", 19020, String::new(), "");
    let kept = Scenario::new(
        "tputka",
        "nginx (keeps connections alive)",
        19025,
        // The rig's nginx image with its default server replaced by a fixed answer.
        format!("    image: {REGISTRY}/stackctl-nginx:latest\n    configs: [{{ source: backend, target: /etc/nginx/conf.d/default.conf }}]\n"),
        "configs:\n  backend: { file: ./backend.conf }\n",
    );
    let _cleanup = Cleanup(&[&demo, &kept]);

    demo.up();
    demo.steady();
    // Idle from here on; its upstream would name tasks the switch scales away.
    demo.remove_hand_nginx();
    switch_wrk(&demo, &demo.file("v2", ""));
    switch_loadgen(&demo, &demo.file("v1", "    environment: { GENERATION: two }\n"), "v2 -> a new v1 release");
    demo.remove();

    kept.up();
    kept.steady();
    println!("\nbenchmark took {:.0} s (clean-up follows)", began.elapsed().as_secs_f64());
}
