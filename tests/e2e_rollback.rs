//! `stackctl rollback` against the real engine, real nginx and the real registry, under load.
//!
//! Stacks e2eroll*, nginx ports 18840-18859.

mod common;

use std::time::{Duration, Instant};

use common::*;
use stackctl::loadgen;

/// Run `rollback` under the steady load; the samples, the command's output and when (on the
/// samples' clock) it started and returned.
fn rollback_under_load(s: &TestStack, args: &[&str]) -> (std::process::Output, Vec<loadgen::Sample>, Duration, Duration) {
    let load = Load::steady(&format!("127.0.0.1:{}", s.port));
    let file = s.file("v1");
    let mut argv = vec!["rollback", file.to_str().unwrap()];
    argv.extend_from_slice(args);
    let started = load.now();
    let out = s.stackctl(&argv);
    let returned = load.now();
    load.wait_answers_since(returned, 100);
    (out, load.stop().remove(0), started, returned)
}

/// When, after `started`, the last request answered by `old` was sent: how long users kept
/// getting the release being left.
fn last_answer_of(samples: &[loadgen::Sample], old: &str, started: Duration) -> Duration {
    samples.iter().filter(|x| x.result.as_deref() == Ok(old)).map(|x| x.sent.saturating_sub(started)).max().unwrap_or_default()
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn rollback_to_a_retained_release_and_forward_again_under_load_drops_nothing() {
    let _g = serial();
    let s = TestStack::new("e2eroll", 18840);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    assert_eq!(s.deploy("v2", &[]).status.code(), Some(0));
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
    assert_eq!(replicas("e2eroll_web-r1"), "0", "r1 retained at zero");

    // Back: r1 is scaled up, gated through the preview route, switched to.
    let t = Instant::now();
    let (out, samples, started, _) = rollback_under_load(&s, &["--output", "json"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["verb"].as_str(), report["switched"][0]["from"].as_u64(), report["switched"][0]["to"].as_u64()), (Some("rollback"), Some(2), Some(1)));
    assert!(report["switched"][0]["image"].as_str().unwrap().contains("stackctl-demo:v1@sha256:"), "{report}");
    let sum = loadgen::summarize(&samples);
    let last_v2 = last_answer_of(&samples, "v2", started);
    eprintln!("ROLLBACK retained: command {took:.2?}, last v2 answer {last_v2:.2?} after the command started; {sum:?}");
    assert_load_clean(&sum, 200, 0);
    let back = loadgen::backwards(&samples, "v2", "v1");
    assert!(back.is_empty(), "{} requests answered by v2 after a client saw v1: {:?}", back.len(), back.first());
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    assert_eq!(s.status_json()["live"]["web"], 1);
    // The release it came from is retained at zero for going forward again; nothing removed.
    assert_eq!(s.services(), vec!["e2eroll_proxy", "e2eroll_web-r1", "e2eroll_web-r2"]);
    assert_eq!((replicas("e2eroll_web-r1").as_str(), replicas("e2eroll_web-r2").as_str()), ("2", "0"));

    // The history in the cluster records the rollback, from and to.
    let out = s.stackctl(&["history", s.file("v1").to_str().unwrap(), "--output", "json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let last = &entries[0];
    assert_eq!((last["verb"].as_str(), last["outcome"].as_str()), (Some("rollback"), Some("deployed")), "{last}");
    let web = last["services"].as_array().unwrap().iter().find(|x| x["service"] == "web").unwrap();
    assert_eq!((web["from"].as_u64(), web["release"].as_u64(), web["switched"].as_bool()), (Some(2), Some(1), Some(true)), "{web}");

    // Nothing older than r1: refused, nothing changed.
    let file = s.file("v1");
    let out = s.stackctl(&["rollback", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no release older than its live r1"), "{}", stderr(&out));
    assert_eq!(s.get("/").as_deref(), Ok("v1"));

    // Already there: exit 0, nothing to do.
    let out = s.stackctl(&["rollback", file.to_str().unwrap(), "--to", "r1"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("nothing to roll back"), "{}", stdout(&out));

    // Forward again to r2 by number.
    let (out, samples, started, _) = rollback_under_load(&s, &["--to", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sum = loadgen::summarize(&samples);
    eprintln!("ROLLBACK forward: last v1 answer {:.2?} after the command started; {sum:?}", last_answer_of(&samples, "v1", started));
    assert_load_clean(&sum, 200, 0);
    assert!(loadgen::backwards(&samples, "v1", "v2").is_empty());
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
    assert_eq!((replicas("e2eroll_web-r1").as_str(), replicas("e2eroll_web-r2").as_str()), ("0", "2"));

    // A deploy after rollbacks numbers on: r3, never a reused number.
    let out = s.deploy("v1", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["switched"][0]["to"], 3);
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_rollback_that_cannot_become_healthy_leaves_the_live_release_and_the_retained_one_as_they_were() {
    let _g = serial();
    let s = TestStack::new("e2erollbad", 18841);
    // r1 is a broken deploy (removed; numbers go on), r2 is v1, r3 is v2.
    assert_eq!(s.deploy("broken", &["--timeout", "1s"]).status.code(), Some(1), "broken is refused");
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    assert_eq!(s.deploy("v2", &[]).status.code(), Some(0));
    // Someone changed the retained r2 behind stackctl's back so that it cannot become healthy.
    let retained = s.services().into_iter().find(|n| n.ends_with("-r2")).expect("retained v1 release");
    docker(&["service", "update", "--detach", "--image", &format!("{REGISTRY}/stackctl-demo:broken"), &retained]);
    let file = s.file("v1");
    let load = Load::steady(&format!("127.0.0.1:{}", s.port));
    let out = s.stackctl(&["rollback", file.to_str().unwrap(), "--timeout", "5s"]);
    let samples = load.stop().remove(0);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("The live release is intact"), "{}", stderr(&out));
    let sum = loadgen::summarize(&samples);
    assert_load_clean(&sum, 50, 0);
    assert_eq!(sum.versions.keys().collect::<Vec<_>>(), vec!["v2"], "users stayed on the live release");
    // The retained release is back at zero, not removed; the live one untouched.
    assert_eq!(replicas(&retained), "0");
    assert_eq!(s.status_json()["live"]["web"], 3);
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
}

fn spawn(s: &TestStack, verb: &str, image: &str, extra: &[&str]) -> Running {
    let mut args = vec![verb.to_string(), s.file(image).to_str().unwrap().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    Running::spawn(&args, None)
}

/// README, `stackctl rollback`: a rollback takes the stack's lock like a deploy. Asked while a
/// deploy runs, it is refused (or waits, with --lock-wait); what "back" means is fixed when the
/// command starts, so a deploy that switches meanwhile makes the waiting rollback refuse instead
/// of going back further than asked; one asked during the deploy's watch window (the new
/// release already recorded live) goes back once the deploy has finished.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_rollback_asked_during_a_deploy_waits_for_it_and_never_goes_back_further_than_asked() {
    let _g = serial();
    let s = TestStack::new("e2erollrace", 18842);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));

    // Before the deploy's switch: the live release is r1 when the rollback is asked.
    let mut d = spawn(&s, "deploy", "v2", &[]);
    d.wait_for_line("wait healthy ...", Duration::from_secs(60));
    let out = s.stackctl(&["rollback", s.file("v1").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("deploy"), "names the deploy holding the lock: {}", stderr(&out));
    let mut r = spawn(&s, "rollback", "v1", &["--lock-wait", "90s"]);
    let (code, _, err, _) = d.finish();
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err, _) = r.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the live release changed while this rollback waited for the lock (web: r1 → r2); nothing was done"), "{err}");
    assert_eq!(s.get("/").as_deref(), Ok("v2"));

    // During the watch window of the next deploy (r3 already recorded live): the rollback waits,
    // then goes back to r2 once the deploy has finished.
    let mut d = spawn(&s, "deploy", "v1", &[]);
    d.wait_for_line("watching the new release through the live route", Duration::from_secs(60));
    assert_eq!(s.status_json()["live"]["web"], 3);
    r = spawn(&s, "rollback", "v1", &["--lock-wait", "90s"]);
    let (code, _, err, _) = d.finish();
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err, _) = r.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("e2erollrace_web-r2"), "{err}");
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
    assert_eq!(s.status_json()["live"]["web"], 2);
}

/// The third kind: a release removed after `keep` comes back from the spec the history recorded,
/// with the same pinned image (no tag is resolved again), under load without a failed request.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn rollback_to_a_release_no_longer_kept_recreates_it_from_the_history_under_load() {
    let _g = serial();
    let s = TestStack::new("e2erollgone", 18843);
    for image in ["v1", "v2", "v1", "v2"] {
        assert_eq!(s.deploy(image, &[]).status.code(), Some(0));
    }
    // keep: 1 → r4 live, r3 retained, r1 and r2 removed.
    assert_eq!(s.services(), vec!["e2erollgone_proxy", "e2erollgone_web-r3", "e2erollgone_web-r4"]);
    let file = s.file("v1");
    let out = s.stackctl(&["history", file.to_str().unwrap(), "--output", "json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let first = entries.iter().find(|e| e["number"] == 1).expect("entry 1");
    let recorded_image = first["services"][0]["image"].as_str().unwrap().to_string();
    assert!(recorded_image.contains("stackctl-demo:v1@sha256:"), "{recorded_image}");

    let t = Instant::now();
    let (out, samples, started, _) = rollback_under_load(&s, &["--to", "r1"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("recreating from the history e2erollgone_web-r1"), "{}", stderr(&out));
    let sum = loadgen::summarize(&samples);
    eprintln!("ROLLBACK recreated: command {took:.2?}, last v2 answer {:.2?} after the command started; {sum:?}", last_answer_of(&samples, "v2", started));
    assert_load_clean(&sum, 200, 0);
    assert!(loadgen::backwards(&samples, "v2", "v1").is_empty());
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    assert_eq!(s.status_json()["live"]["web"], 1);
    let image = docker(&["service", "inspect", "e2erollgone_web-r1", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}"]);
    assert_eq!(image.trim(), recorded_image, "the recorded digest, not a tag resolved again");
    assert_eq!(replicas("e2erollgone_web-r1"), "2");
    assert_eq!(replicas("e2erollgone_web-r4"), "0", "the release left is retained");
}

/// The stack file for `image` plus a plain service whose environment says `generation`, and a
/// stateful one.
fn with_plain_and_stateful(s: &TestStack, image: &str, generation: &str) -> std::path::PathBuf {
    s.file_with(image, generation, |yaml| {
        yaml + &format!(
            "  worker:\n    image: {REGISTRY}/stackctl-demo:v1\n    environment:\n      GENERATION: {generation}\n    deploy:\n      update_config: {{ order: start-first }}\n  db:\n    image: {REGISTRY}/stackctl-demo:v1\n    environment:\n      GENERATION: {generation}\n    x-stackctl:\n      stateful: true\n"
        )
    })
}

fn env_of(swarm_name: &str) -> String {
    docker(&["service", "inspect", "-f", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}", swarm_name])
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_whole_stack_rollback_puts_plain_services_back_and_leaves_stateful_ones_alone() {
    let _g = serial();
    let s = TestStack::new("e2erollplain", 18844);
    let one = with_plain_and_stateful(&s, "v1", "one");
    let two = with_plain_and_stateful(&s, "v2", "two");
    assert_eq!(s.stackctl(&["deploy", one.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(s.stackctl(&["deploy", two.to_str().unwrap()]).status.code(), Some(0));
    assert!(env_of("e2erollplain_worker").contains("GENERATION=two"), "{}", env_of("e2erollplain_worker"));
    let db_before = env_of("e2erollplain_db");
    assert!(db_before.contains("GENERATION=one"), "stateful services are created once: {db_before}");

    let out = s.stackctl(&["rollback", two.to_str().unwrap(), "--output", "json", "--events", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    // Progress came as one JSON object per line.
    let events: Vec<serde_json::Value> = stderr(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON event per line")).collect();
    assert!(events.iter().any(|e| e["event"] == "phase_done" && e["phase"] == "switch"), "{events:?}");
    // The plain service is back to its spec of the first deploy, by a rolling update.
    assert!(env_of("e2erollplain_worker").contains("GENERATION=one"), "{}", env_of("e2erollplain_worker"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = report["changes"].to_string();
    assert!(changes.contains("e2erollplain_worker back to its spec of history entry 1"), "{report}");
    // The stateful one is never changed, and the run says so.
    assert_eq!(env_of("e2erollplain_db"), db_before);
    let said = |text: &str| events.iter().any(|e| e["event"] == "info" && e["message"].as_str().is_some_and(|m| m.contains(text)));
    assert!(said("stateful service db left as it is"), "{events:?}");

    // A rollback of one service leaves plain services where they are.
    let out = s.stackctl(&["rollback", two.to_str().unwrap(), "--to", "2", "--service", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
    assert!(env_of("e2erollplain_worker").contains("GENERATION=one"), "{}", env_of("e2erollplain_worker"));
    s.remove_everything();
}

/// The stack file for `image` with a rollback window: blue stays up as a standby after a switch.
fn with_rollback_window(s: &TestStack, image: &str, window: &str) -> std::path::PathBuf {
    s.file_with(image, "window", |yaml| {
        let edited = yaml.replace("        drain: 1s\n", &format!("        drain: 1s\n        rollback_window: {window}\n"));
        assert!(edited.contains("rollback_window"), "{edited}");
        edited
    })
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_rollback_within_the_rollback_window_is_a_flip_back_to_the_standby_under_load() {
    let _g = serial();
    let s = TestStack::new("e2erollstandby", 18845);
    let one = with_rollback_window(&s, "v1", "5m");
    let two = with_rollback_window(&s, "v2", "5m");
    assert_eq!(s.stackctl(&["deploy", one.to_str().unwrap()]).status.code(), Some(0));
    let out = s.stackctl(&["deploy", two.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The release it switched from stays up, as a standby.
    assert_eq!((replicas("e2erollstandby_web-r1").as_str(), replicas("e2erollstandby_web-r2").as_str()), ("2", "2"));
    assert!(stderr(&out).contains("e2erollstandby_web-r1 stays up for 300s as a standby"), "{}", stderr(&out));
    // Planning again leaves the standby alone.
    let out = s.stackctl(&["plan", two.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "no changes pending while the standby is in its window: {}", stdout(&out));

    let load = Load::steady(&format!("127.0.0.1:{}", s.port));
    let started = load.now();
    let t = Instant::now();
    let out = s.stackctl(&["rollback", two.to_str().unwrap(), "--output", "json"]);
    let took = t.elapsed();
    let returned = load.now();
    load.wait_answers_since(returned, 100);
    let samples = load.stop().remove(0);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases: Vec<&str> = report["phases"].as_array().unwrap().iter().filter_map(|p| p["phase"].as_str()).collect();
    assert!(phases.contains(&"flip back") && !phases.contains(&"wait healthy"), "a flip, not a scale-up: {phases:?}");
    assert_eq!((report["switched"][0]["from"].as_u64(), report["switched"][0]["to"].as_u64()), (Some(2), Some(1)), "{report}");
    let sum = loadgen::summarize(&samples);
    let last_v2 = last_answer_of(&samples, "v2", started);
    eprintln!("ROLLBACK standby: command {took:.2?}, last v2 answer {last_v2:.2?} after the command started; {sum:?}");
    assert_load_clean(&sum, 100, 0);
    assert!(loadgen::backwards(&samples, "v2", "v1").is_empty(), "nobody went back to v2 after seeing v1");
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    assert_eq!(s.status_json()["live"]["web"], 1);
    // The release it left is retained at zero, as after any rollback.
    assert_eq!((replicas("e2erollstandby_web-r1").as_str(), replicas("e2erollstandby_web-r2").as_str()), ("2", "0"));
    s.remove_everything();
}
