//! Benchmark: what users see while a release goes live, stackctl against the usual Swarm way.
//!
//!     cargo bench --bench switch            (needs the rig: tests/rig/setup.sh)
//!
//! Prints numbers. It fails only when stackctl's own run breaks what the tests assert of every
//! deploy under load (no failed request, client retries within README's bound, the shared
//! `tests/common` constant); the baseline is reported, never judged. Two runs under the same
//! load (4 kept-alive + 4 new-connection clients sending without pause through nginx):
//! 1. stackctl: `stackctl deploy` from v1 to v2 (blue-green; the switch is a file nginx checks).
//! 2. baseline: nginx with `resolver 127.0.0.11 valid=1s` and a variable `proxy_pass` to
//!    `tasks.<service>` in front of a dnsrr service, updated with
//!    `docker service update --update-order start-first --image …:v2`.
//!
//! Under `cargo test` (e.g. `--all-targets`) it runs nothing and says so, the way libtest
//! reports an ignored test: a benchmark takes minutes and needs the rig.
//!
//! Reported: requests, failures and client retries by kind (see `src/loadgen.rs`), latency p50/p99
//! during the switch against steady state, the mixed-version window (first v2 answer to last
//! v1 answer), and the deploy's wall time by phase.

use std::process::Command;
use std::time::{Duration, Instant};

use stackctl::loadgen::{self, Sample};

// The bound on retries and the load assertions every e2e test makes.
#[path = "../tests/common/mod.rs"]
mod common;

const REGISTRY: &str = "127.0.0.1:5000";
const OURS_PORT: u16 = 18180;
const BASE_PORT: u16 = 18181;

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn stackctl() -> String {
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/switch-… → target/release/stackctl
    let release = exe.parent().and_then(|p| p.parent()).unwrap().join("stackctl");
    if !release.exists() {
        let ok = Command::new("cargo").args(["build", "--release", "--bin", "stackctl"]).status().unwrap().success();
        assert!(ok, "cargo build --release failed");
    }
    release.to_string_lossy().into_owned()
}

fn cleanup(stack: &str) {
    let label = format!("label=com.docker.stack.namespace={stack}");
    for kind in ["service", "config"] {
        let (_, ids) = docker(&[kind, "ls", "-q", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec![kind, "rm"];
            args.extend(ids);
            docker(&args);
        }
    }
    for _ in 0..40 {
        let (_, nets) = docker(&["network", "ls", "-q", "--filter", &label]);
        if nets.trim().is_empty() {
            break;
        }
        let mut args = vec!["network", "rm"];
        args.extend(nets.split_whitespace());
        docker(&args);
        std::thread::sleep(Duration::from_millis(500));
    }
    docker(&["volume", "rm", "-f", &format!("{stack}_stackctl-proxy")]);
}

fn wait_for(port: u16, body: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let probe = stackctl::health::Probe {
        authority: format!("127.0.0.1:{port}"),
        path: "/".into(),
        host: None,
        headers: vec![],
        timeout: Duration::from_secs(2),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if rt.block_on(probe.send()).is_ok_and(|r| r.status == 200 && r.body == body) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("127.0.0.1:{port} never answered {body}");
}

/// Load during `action`; returns samples, when the action started and ended (load clock).
fn measure(port: u16, action: impl FnOnce() -> String) -> (Vec<Sample>, Duration, Duration, String) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let cfg = loadgen::Config {
        authority: format!("127.0.0.1:{port}"),
        path: "/".into(),
        keepalive_workers: 4,
        fresh_workers: 4,
        timeout: Duration::from_secs(5),
    };
    let t0 = Instant::now();
    let load = rt.spawn(loadgen::run(cfg, rx));
    std::thread::sleep(Duration::from_secs(3)); // steady state
    let start = t0.elapsed();
    let out = action();
    let end = t0.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    tx.send(true).unwrap();
    (rt.block_on(load).unwrap(), start, end, out)
}

fn report(name: &str, samples: &[Sample], start: Duration, end: Duration) {
    let all = loadgen::summarize(samples);
    let steady = loadgen::summarize(samples.iter().filter(|s| s.sent < start));
    let during = loadgen::summarize(samples.iter().filter(|s| s.sent >= start && s.sent <= end));
    let window = loadgen::mixed_window(samples, "v1", "v2");
    println!("== {name}");
    println!("  requests          {:>8}  (v1 {}, v2 {})", all.requests, all.versions.get("v1").unwrap_or(&0), all.versions.get("v2").unwrap_or(&0));
    println!(
        "  failures          {:>8}  ({} cut mid-response, {} written but unanswered, {} unsent) {:?}",
        all.failures, all.partial, all.no_response, all.unsent, all.failure_examples
    );
    println!(
        "  client retries    {:>8}  ({} after the request was written: a client that never retries fails these; {} before it)",
        all.retried, all.retried_no_response, all.retried_unsent
    );
    println!("  latency steady    p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests)", ms(steady.p50), ms(steady.p99), steady.requests);
    println!("  latency switch    p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} requests)", ms(during.p50), ms(during.p99), ms(during.max), during.requests);
    println!("  mixed-version window  {:>9.1} ms", ms(window));
    // What makes up the window: old-version answers that arrived after the first new one.
    let done = |s: &Sample| s.sent + s.latency;
    if let Some(first_new) = samples.iter().filter(|s| s.result.as_deref() == Ok("v2")).map(done).min() {
        let late: Vec<&Sample> = samples.iter().filter(|s| s.result.as_deref() == Ok("v1") && done(s) > first_new).collect();
        let sent_after = late.iter().filter(|s| s.sent > first_new).count();
        let keepalive = late.iter().filter(|s| s.keepalive).count();
        let worst = late.iter().map(|s| s.latency).max().unwrap_or_default();
        println!(
            "    v1 answers after the first v2: {} ({} sent after it, {} on kept-alive connections, slowest {:.1} ms)",
            late.len(),
            sent_after,
            keepalive,
            ms(worst)
        );
    }
    println!("  deploy wall time      {:>9.2} s", (end - start).as_secs_f64());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stack_file(dir: &std::path::Path, image: &str) -> String {
    stack_file_as(dir, "benchsc", image, "")
}

/// The benchmark's stack as `name`, with `extra` lines added after the web route (indented
/// by 8 spaces they belong to the route, by 4 to the service).
fn stack_file_as(dir: &std::path::Path, name: &str, image: &str, extra: &str) -> String {
    let path = dir.join(format!("{name}-{image}.yml"));
    std::fs::write(
        &path,
        format!(
            r#"name: {name}
x-stackctl:
  proxy: {{ service: proxy, url: "http://127.0.0.1:{OURS_PORT}", listen: 8080 }}
  keep: 1
services:
  proxy:
    image: {REGISTRY}/stackctl-nginx:latest
    ports: [{{ target: 8080, published: {OURS_PORT}, mode: host }}]
  web:
    image: {REGISTRY}/stackctl-demo:{image}
    deploy: {{ replicas: 2 }}
    x-stackctl:
      route:
        port: 80
        health: {{ path: /healthz, interval: 300ms, successes: 3 }}
        drain: 2s
{extra}"#
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn ours() {
    let bin = stackctl();
    cleanup("benchsc");
    let dir = std::env::temp_dir().join("stackctl-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let deploy = |image: &str| {
        let out = Command::new(&bin).args(["deploy", &stack_file(&dir, image), "--output", "json"]).output().unwrap();
        assert!(out.status.success(), "stackctl deploy {image} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    deploy("v1");
    wait_for(OURS_PORT, "v1");
    let (samples, start, end, json) = measure(OURS_PORT, || deploy("v2"));
    report("stackctl deploy (blue-green, switch by a file between two colours, no reload)", &samples, start, end);
    common::assert_load_clean(&loadgen::summarize(&samples), 1000, 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    print!("  phases:");
    for p in report["phases"].as_array().unwrap() {
        print!(" {} {:.2}s;", p["phase"].as_str().unwrap(), p["seconds"].as_f64().unwrap());
    }
    println!();
    cleanup("benchsc");
}

/// The three kinds of rollback under the same load, one after another on one stack:
/// 1. to a standby (blue still up within `rollback_window`): a flip;
/// 2. to a retained release (scaled to zero): scale up, gate, switch;
/// 3. to a release no longer kept: recreated from the history's spec and digest.
/// Each from v2 back to v1: the time from the command to the last answer of v2, failures and
/// retries, and for the retained kind Swarm's own start-to-healthy time (the `wait healthy`
/// phase) to compare with.
fn rollbacks() {
    let bin = stackctl();
    let stack = "benchrb";
    cleanup(stack);
    let dir = std::env::temp_dir().join("stackctl-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        assert!(out.status.success(), "stackctl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let windowed = |image: &str| stack_file_as(&dir, stack, image, "        rollback_window: 5m\n");
    let plain = |image: &str| stack_file_as(&dir, stack, image, "");
    let rollback = |kind: &str, file: &str, to: Option<&str>| {
        wait_for(OURS_PORT, "v2");
        let mut args = vec!["rollback", file, "--output", "json"];
        args.extend(to.map(|t| ["--to", t]).into_iter().flatten());
        let (samples, start, end, json) = measure(OURS_PORT, || run(&args));
        let sum = loadgen::summarize(&samples);
        let last_v2 = samples.iter().filter(|x| x.result.as_deref() == Ok("v2")).map(|x| x.sent.saturating_sub(start)).max().unwrap_or_default();
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        let phase = |name: &str| report["phases"].as_array().unwrap().iter().find(|p| p["phase"] == name).and_then(|p| p["seconds"].as_f64());
        println!("== rollback to {kind}");
        println!("  last v2 answer    {:>8.2} s after the command started (command took {:.2} s)", last_v2.as_secs_f64(), (end - start).as_secs_f64());
        if let Some(healthy) = phase("wait healthy") {
            println!("  wait healthy phase {:>7.2} s; last v2 answer {:+.2} s beyond it", healthy, last_v2.as_secs_f64() - healthy);
            // Swarm's own time, from its records: the first task created to the last one
            // running. The phase above understates it when the scale-up began during the plan.
            if let Some(swarm) = swarm_start_to_running(&format!("{stack}_web-r1")) {
                println!("  Swarm start-to-running {:>4.2} s (its tasks' timestamps); last v2 answer {:+.2} s beyond it", swarm, last_v2.as_secs_f64() - swarm);
            }
        }
        println!("  requests          {:>8}  (v1 {}, v2 {})", sum.requests, sum.versions.get("v1").unwrap_or(&0), sum.versions.get("v2").unwrap_or(&0));
        println!("  failures          {:>8}  {:?}", sum.failures, sum.failure_examples);
        println!("  client retries    {:>8}  ({} after the request was written)", sum.retried, sum.retried_no_response);
        print!("  phases:");
        for p in report["phases"].as_array().unwrap() {
            print!(" {} {:.2}s;", p["phase"].as_str().unwrap(), p["seconds"].as_f64().unwrap());
        }
        println!();
        common::assert_load_clean(&sum, 200, 0);
    };

    // 1. r1 v1, r2 v2 with r1 kept up as a standby: the rollback is a flip.
    run(&["deploy", &windowed("v1")]);
    run(&["deploy", &windowed("v2")]);
    rollback("a standby (flip within rollback_window)", &windowed("v2"), None);
    // 2. Forward to r2 again without a window: r1 is retained at zero.
    run(&["deploy", &plain("v2")]);
    rollback("a retained release (scaled to zero)", &plain("v2"), None);
    // 3. A v1 under another spec (a new release) pushes r1 out of `keep: 1`; forward to v2
    //    again; back to r1, which only the history still holds.
    run(&["deploy", &stack_file_as(&dir, stack, "v1", "    environment: { GENERATION: three }\n")]);
    run(&["deploy", &plain("v2")]);
    rollback("a release no longer kept (recreated from the history)", &plain("v2"), Some("r1"));
    cleanup(stack);
}

/// Seconds from the creation of the first running task of `service` to the last one's
/// start, as Swarm recorded them.
fn swarm_start_to_running(service: &str) -> Option<f64> {
    let (ok, ids) = docker(&["service", "ps", "-q", "--filter", "desired-state=running", service]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ok || ids.is_empty() {
        return None;
    }
    let mut args = vec!["inspect", "--format", "{{.CreatedAt.UnixNano}} {{.Status.Timestamp.UnixNano}}"];
    args.extend(&ids);
    let (ok, out) = docker(&args);
    let stamps: Vec<(i128, i128)> = out.lines().filter_map(|l| l.split_once(' ')).filter_map(|(c, r)| Some((c.parse().ok()?, r.parse().ok()?))).collect();
    let first = stamps.iter().map(|s| s.0).min()?;
    let last = stamps.iter().map(|s| s.1).max()?;
    (ok && last > first).then(|| (last - first) as f64 / 1e9)
}

fn baseline() {
    let stack = "benchbase";
    cleanup(stack);
    let ns = format!("com.docker.stack.namespace={stack}");
    let net = format!("{stack}_default");
    assert!(docker(&["network", "create", "-d", "overlay", "--attachable", "--label", &ns, &net]).0);
    let conf = format!(
        "server {{\n  listen 8080;\n  resolver 127.0.0.11 valid=1s;\n  location / {{\n    set $backend tasks.{stack}_web;\n    proxy_pass http://$backend:80;\n  }}\n}}\n"
    );
    let conf_path = std::env::temp_dir().join("stackctl-bench-baseline.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let cfg_name = format!("{stack}_nginx");
    assert!(docker(&["config", "create", "--label", &ns, &cfg_name, conf_path.to_str().unwrap()]).0);
    let web = format!("{stack}_web");
    let (ok, out) = docker(&[
        "service", "create", "-q", "--detach", "--name", &web, "--label", &ns, "--network", &net, "--endpoint-mode", "dnsrr",
        "--replicas", "2", "--update-order", "start-first", "--update-parallelism", "1", &format!("{REGISTRY}/stackctl-demo:v1"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = docker(&[
        "service", "create", "-q", "--detach", "--name", &format!("{stack}_proxy"), "--label", &ns, "--network", &net,
        "--endpoint-mode", "dnsrr", "--publish", &format!("mode=host,target=8080,published={BASE_PORT}"),
        "--config", &format!("source={cfg_name},target=/etc/nginx/conf.d/baseline.conf"), &format!("{REGISTRY}/stackctl-nginx:latest"),
    ]);
    assert!(ok, "{out}");
    wait_for(BASE_PORT, "v1");
    std::thread::sleep(Duration::from_secs(2));
    let (samples, start, end, _) = measure(BASE_PORT, || {
        let (ok, out) = docker(&["service", "update", "--quiet", "--image", &format!("{REGISTRY}/stackctl-demo:v2"), &web]);
        assert!(ok, "{out}");
        out
    });
    report("baseline: docker service update --update-order start-first (nginx resolver valid=1s)", &samples, start, end);
    cleanup(stack);
}

fn main() {
    if common::bench_not_run_by_cargo_test("switch") {
        return;
    }
    assert!(docker(&["info"]).0, "no Docker engine: run tests/rig/setup.sh first");
    let only = std::env::var("STACKCTL_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "stackctl" {
        ours();
    }
    if only.is_empty() || only == "rollback" {
        rollbacks();
    }
    if only.is_empty() || only == "baseline" {
        baseline();
    }
}
