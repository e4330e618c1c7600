//! What `stackctl plan` costs as a stack grows: wall time and engine API calls for stacks of
//! 1, 5 and 20 routed services (plus nginx), against a cluster without the stack and against
//! the stack deployed. A benchmark that prints a table, not a timed test: it asserts only that
//! every plan succeeded and listed every service of the file.
//!
//! Two clocks: the real binary (`stackctl plan FILE`, what a user waits for: process start,
//! connecting and negotiating the API version, the plan, printing) and the library's
//! `dry_run::plan` in this process, whose engine is wrapped in `Counting` to count the calls.
//!
//! `#[ignore]`d like every engine test; run on the rig (tests/rig/setup.sh) with
//! `cargo test --release --test bench_plan -- --include-ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{bench_stack_yaml, remove_stack, stderr, stdout, RemovedOnDrop};

use stackctl::dry_run::{self, PlanReport};
use stackctl::engine::counting::{Calls, Counting};
use stackctl::engine::docker::DockerEngine;
use stackctl::engine::retry::{Backoff, Retrying};
use stackctl::events::{Events, PhaseTime};
use stackctl::spec::{self, LoadOptions, Stack};

/// Routed services per stack.
const SIZES: [usize; 3] = [1, 5, 20];
/// nginx of the i-th stack is published on FIRST_PORT + i (18900–18949 are this benchmark's).
const FIRST_PORT: u16 = 18900;
/// Plans measured per stack and cluster state; the table shows the median.
const RUNS: usize = 5;

/// One plan measured both ways.
struct Sample {
    binary: Duration,
    library: Duration,
    calls: Calls,
    /// Where the in-process plan spent its time, by phase (preflight, resolve, observe, nginx).
    phases: Vec<PhaseTime>,
}

fn stackctl(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackctl")).args(args).output().expect("run stackctl");
    let took = started.elapsed();
    (out.status.code(), stdout(&out), stderr(&out), took)
}

/// The services of the file a plan speaks of (it also lists objects such as networks).
fn planned_services(report: &PlanReport, stack: &Stack) -> Vec<String> {
    let mut names: Vec<String> = report.steps.iter().map(|s| s.service.clone()).filter(|s| stack.services.contains_key(s)).collect();
    names.sort();
    names.dedup();
    names
}

/// `RUNS` plans of `file`, each through the binary and through the library; asserts that each
/// succeeded with `changes` (exit 10) or without (exit 0) and spoke of every service.
fn measure(rt: &tokio::runtime::Runtime, file: &Path, stack: &Stack, changes: bool) -> Vec<Sample> {
    let all: Vec<String> = stack.services.keys().cloned().collect();
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let (code, out, err, binary) = stackctl(&["plan", file.to_str().unwrap(), "--output", "json"]);
        assert_eq!(code, Some(if changes { dry_run::EXIT_CHANGES } else { 0 }), "stackctl plan: {err}\n{out}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
        assert_eq!(report["changes"], changes, "{out}");

        let events = Events::silent();
        let (report, library, calls) = rt.block_on(async {
            let counting = Counting::new(DockerEngine::connect().await.expect("the rig's engine"));
            // As `main` builds it, with the counter inside so retries count as calls.
            let engine = Retrying::new(counting.clone(), Backoff::default());
            let started = Instant::now();
            let report = dry_run::plan(&engine, stack, &events).await.expect("plan");
            (report, started.elapsed(), counting.take())
        });
        assert_eq!(report.changes, changes, "{:?}", report.steps);
        assert_eq!(planned_services(&report, stack), all, "{:?}", report.steps);
        if !changes {
            assert!(report.steps.iter().all(|s| s.action == "nothing"), "{:?}", report.steps);
        }
        samples.push(Sample { binary, library, calls, phases: events.phases() });
    }
    samples
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// `median (min–max)` in milliseconds.
fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("{} ({}–{})", ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]))
}

/// Median time of each phase, in the order the plan ran them.
fn phase_medians(samples: &[Sample]) -> String {
    let names: Vec<&str> = samples[0].phases.iter().map(|p| p.phase.as_str()).collect();
    let median = |name: &str| {
        let mut v: Vec<f64> = samples.iter().flat_map(|s| s.phases.iter().filter(|p| p.phase == name).map(|p| p.seconds)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1000.0
    };
    names.iter().map(|n| format!("{n} {:.0}", median(n))).collect::<Vec<_>>().join(", ")
}

fn row(services: usize, cluster: &str, samples: &[Sample]) -> String {
    let calls: Vec<u64> = samples.iter().map(|s| s.calls.total()).collect();
    let (lo, hi) = (calls.iter().min().unwrap(), calls.iter().max().unwrap());
    let count = if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") };
    format!(
        "{services:>8}  {cluster:<8}  {:>18}  {:>18}  {count:>5}  {}\n{:>40}phases (ms): {}",
        spread(samples.iter().map(|s| s.binary).collect()),
        spread(samples.iter().map(|s| s.library).collect()),
        samples[0].calls,
        "",
        phase_medians(samples)
    )
}

#[test]
#[ignore = "benchmark on the rig (tests/rig/setup.sh): a Swarm engine, nginx and demo images"]
fn plan_cost_by_stack_size() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir: PathBuf = std::env::temp_dir().join(format!("stackctl-bench-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows = Vec::new();
    for (i, n) in SIZES.into_iter().enumerate() {
        let name = format!("bench-plan-{n}");
        remove_stack(&name);
        let _cleanup = RemovedOnDrop(&name);
        let file = dir.join(format!("{name}.yml"));
        std::fs::write(&file, bench_stack_yaml(&name, FIRST_PORT + i as u16, n, "v1")).unwrap();
        let opts = LoadOptions { env: std::env::vars().collect(), ..Default::default() };
        let stack = spec::load(&file, &opts).expect("the generated stack file loads").stack;
        assert_eq!(stack.services.len(), n + 1);

        rows.push(row(n, "empty", &measure(&rt, &file, &stack, true)));

        let (code, out, err, took) = stackctl(&["deploy", file.to_str().unwrap()]);
        assert_eq!(code, Some(0), "deploy of {name}: {err}\n{out}");
        eprintln!("deployed {name} in {took:.1?}");

        rows.push(row(n, "deployed", &measure(&rt, &file, &stack, false)));
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nstackctl plan, {RUNS} runs each: median (min–max) ms; engine calls per plan, by operation");
    println!("routed    cluster   {:>18}  {:>18}  {:>5}  by operation", "binary wall", "dry_run::plan", "calls");
    for r in rows {
        println!("{r}");
    }
}
