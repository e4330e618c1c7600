//! What a deploy costs as a stack grows: for stacks of 1, 4, 12 and 24 routed services (plus
//! nginx), a first deploy and a v1 → v2 deploy, each phase's time, the Docker API calls and
//! stackctl's peak memory. A benchmark that prints one table, not a timed test: it asserts
//! only that every deploy succeeded and released every service.
//!
//! Each deploy is the real binary (`stackctl deploy FILE --output json`): the phases come from
//! its JSON result, the calls from `STACKCTL_ENGINE_CALLS` (one per `Engine` method, retries
//! included, see `engine::counting`), the peak memory from `/usr/bin/time` (maximum resident
//! set size of the process).
//!
//! `#[ignore]`d like every engine test; run on the rig (tests/rig/setup.sh) with
//! `cargo test --release --test bench_deploy -- --include-ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{bench_stack_yaml, remove_stack, stderr, stdout, RemovedOnDrop};

/// Routed services per stack.
const SIZES: [usize; 4] = [1, 4, 12, 24];
/// nginx of the i-th stack is published on FIRST_PORT + i.
const FIRST_PORT: u16 = 18950;
/// The phases shown as columns; every phase is printed on the line below each row.
const COLUMNS: [&str; 4] = ["create green", "wait healthy", "preview", "switch"];

/// One deploy measured.
struct Sample {
    services: usize,
    deploy: &'static str,
    /// (phase, seconds), in the order the deploy ran them.
    phases: Vec<(String, f64)>,
    total: f64,
    /// `total N` and one `operation N` line each, as stackctl wrote them.
    calls: Vec<(String, u64)>,
    /// Maximum resident set size, KiB.
    peak_kib: u64,
}

/// `stackctl deploy FILE --output json` under `/usr/bin/time`, counting its engine calls.
fn deploy(file: &Path, dir: &Path, services: usize, what: &'static str) -> Sample {
    let (calls_file, time_file) = (dir.join("calls.txt"), dir.join("time.txt"));
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&time_file)
        .arg(env!("CARGO_BIN_EXE_stackctl"))
        .args(["deploy", file.to_str().unwrap(), "--output", "json"])
        .env("STACKCTL_ENGINE_CALLS", &calls_file)
        .output()
        .expect("run stackctl under /usr/bin/time");
    assert_eq!(out.status.code(), Some(0), "{what} deploy of {services} services: {}\n{}", stderr(&out), stdout(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("deploy JSON");
    assert_eq!(report["switched"].as_array().map(Vec::len), Some(services), "every service released: {report}");
    let phases = (report["phases"].as_array().unwrap().iter())
        .map(|p| (p["phase"].as_str().unwrap().to_string(), p["seconds"].as_f64().unwrap()))
        .collect();
    let calls = std::fs::read_to_string(&calls_file).expect("stackctl wrote its engine calls");
    let calls = (calls.lines())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(op, n)| (op.to_string(), n.parse().expect("a count")))
        .collect();
    let peak_kib = std::fs::read_to_string(&time_file).unwrap().lines().last().unwrap_or_default().trim().parse().expect("max RSS in KiB");
    Sample { services, deploy: what, phases, total: report["total_seconds"].as_f64().unwrap(), calls, peak_kib }
}

fn phase(s: &Sample, name: &str) -> f64 {
    s.phases.iter().filter(|(p, _)| p == name).map(|(_, t)| t).sum()
}

fn calls_total(s: &Sample) -> u64 {
    s.calls.iter().find(|(op, _)| op == "total").map(|(_, n)| *n).unwrap_or(0)
}

#[test]
#[ignore = "benchmark on the rig (tests/rig/setup.sh): a Swarm engine, nginx and demo images"]
fn deploy_cost_by_stack_size() {
    let dir: PathBuf = std::env::temp_dir().join(format!("stackctl-bench-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut samples = Vec::new();
    for (i, n) in SIZES.into_iter().enumerate() {
        let name = format!("flatbench{n}");
        remove_stack(&name);
        let _cleanup = RemovedOnDrop(&name);
        let port = FIRST_PORT + i as u16;
        for (tag, what) in [("v1", "first"), ("v2", "v1 → v2")] {
            let file = dir.join(format!("{name}-{tag}.yml"));
            std::fs::write(&file, bench_stack_yaml(&name, port, n, tag)).unwrap();
            let s = deploy(&file, &dir, n, what);
            eprintln!("{name} {what}: {:.1} s, {} calls", s.total, calls_total(&s));
            samples.push(s);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nstackctl deploy by stack size (seconds; engine API calls; peak RSS of the process)");
    println!(
        "{:>6}  {:<8}  {:>12}  {:>12}  {:>7}  {:>6}  {:>6}  {:>5}  {:>8}",
        "routed", "deploy", COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], "total", "calls", "peak MiB"
    );
    for s in &samples {
        println!(
            "{:>6}  {:<8}  {:>12.2}  {:>12.2}  {:>7.2}  {:>6.2}  {:>6.2}  {:>5}  {:>8.1}",
            s.services,
            s.deploy,
            phase(s, COLUMNS[0]),
            phase(s, COLUMNS[1]),
            phase(s, COLUMNS[2]),
            phase(s, COLUMNS[3]),
            s.total,
            calls_total(s),
            s.peak_kib as f64 / 1024.0
        );
        let all: Vec<String> = s.phases.iter().map(|(p, t)| format!("{p} {t:.2}")).collect();
        println!("{:>18}phases: {}", "", all.join(", "));
        let ops: Vec<String> = s.calls.iter().filter(|(op, _)| op != "total").map(|(op, n)| format!("{op} {n}")).collect();
        println!("{:>18}calls: {}", "", ops.join(", "));
    }
    // The goal, as numbers: preview and switch of 12 services against 1.
    for what in ["first", "v1 → v2"] {
        let of = |n: usize, p: &str| samples.iter().find(|s| s.services == n && s.deploy == what).map(|s| phase(s, p)).unwrap_or(0.0);
        let ratio = |p: &str| of(12, p) / of(1, p).max(0.001);
        println!("{what}: 12 services / 1 service: preview {:.2}×, switch {:.2}×", ratio("preview"), ratio("switch"));
    }
}
