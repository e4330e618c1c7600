//! The watch window judges green by its users too (issue 9 item 4): the real binary against
//! the real engine, nginx and registry of `tests/rig/setup.sh`. `stackctl-demo:fails` answers
//! its health path (`/healthz`) 200 and every user on `/` 500, so the health probes pass
//! through the preview, the switch and the whole watch; only nginx's access log shows that
//! users fail. Under the load generator's steady load the deploy switches back to blue during
//! the watch, exits 1 as a failed watch does, and the history says why.
//!
//! `#[ignore]`d like tests/e2e.rs; run with `--include-ignored` under the engine lock.

use std::time::Duration;

mod common;
use common::{serial, Load, TestStack};
use stackctl::loadgen::{self, Sample};

/// A stack file with a 20 s watch (long enough that only users can end it early) and the
/// gate's limits the watch reuses.
fn file(s: &TestStack, image: &str) -> std::path::PathBuf {
    s.file_with(image, "watched", |yaml| {
        yaml.replace("  keep: 1\n", "  keep: 1\n  gate: { max_5xx: 5%, min_requests: 20 }\n").replace("        drain: 1s\n", "        drain: 1s\n        watch: 20s\n")
    })
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_green_whose_probes_pass_but_whose_users_get_5xx_is_switched_back_during_the_watch() {
    let _g = serial();
    let s = TestStack::new("watchlog1", 19120);
    let v1 = file(&s, "v1");
    assert_eq!(s.stackctl(&["deploy", v1.to_str().unwrap()]).status.code(), Some(0));

    let load = Load::steady(&format!("127.0.0.1:{}", s.port));
    let fails = file(&s, "fails");
    let deployed_at = load.now();
    let out = s.stackctl(&["deploy", fails.to_str().unwrap(), "--output", "json"]);
    let returned = load.now();
    load.wait_answers_since(returned, 50);
    let samples = load.stop().remove(0);

    // Exit code and message as for a failed watch probe, with the users' figures as the reason.
    let phases = common::assert_switched_back_in_watch(&out, "watchlog1_web-r2: users' requests failed: ", "r1");
    let seconds = |name: &str| phases.iter().find(|p| p.0 == name).unwrap().1;
    let (watched, back) = (seconds("watch"), seconds("switch back"));
    // The health probes never failed, so only the users ended the 20 s watch, and early.
    assert!(watched < 10.0, "the watch ran {watched:.1}s of its 20s: {phases:?}");

    // Users got 500 from green, then only v1 again.
    let sum = loadgen::summarize(&samples);
    let failed: Vec<&Sample> = samples.iter().filter(|x| x.result.is_err()).collect();
    assert!(!failed.is_empty() && failed.iter().all(|x| x.result.as_ref().unwrap_err().starts_with("HTTP 500")), "{:?}", sum.failure_examples);
    let first_fail = failed.iter().map(|x| x.sent).min().unwrap();
    let last_fail = failed.iter().map(|x| x.sent + x.latency).max().unwrap();
    let after: Vec<&Sample> = samples.iter().filter(|x| x.sent > returned).collect();
    assert!(!after.is_empty() && after.iter().all(|x| x.result.as_deref() == Ok("v1")), "only v1 once the deploy returned");
    assert_eq!(sum.retried, 0, "client retries over the switch and the switch back: {sum:?}");
    eprintln!(
        "MEASURED: deploy of `fails` took {:.1?} (watch {watched:.2}s, switch back {back:.2}s); load: {} requests, {} got 500 (from {:.2?} to {:.2?} after the deploy started: {:.2?} of failures), versions {:?}",
        returned - deployed_at,
        sum.requests,
        sum.failures,
        first_fail.saturating_sub(deployed_at),
        last_fail.saturating_sub(deployed_at),
        last_fail - first_fail,
        sum.versions
    );
    assert!(last_fail - first_fail < Duration::from_secs(8), "users saw failures for {:?}", last_fail - first_fail);

    // Users end on blue, the record says so, and the history says why.
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    assert_eq!(s.status_json()["live"]["web"], 1);
    let history = s.stackctl(&["history", v1.to_str().unwrap(), "--output", "json"]);
    let entries: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let newest = &entries[0];
    assert_eq!((newest["verb"].as_str(), newest["outcome"].as_str(), newest["exit_code"].as_i64()), (Some("deploy"), Some("switched-back"), Some(1)), "{newest}");
    let reason = newest["reason"].as_str().unwrap();
    assert!(reason.contains("users' requests failed: ") && reason.contains("% 5xx of "), "{reason}");
    eprintln!("history reason: {reason}");
}
