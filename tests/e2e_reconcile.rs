//! `stackctl reconcile` on the real engine and nginx: drift made by hand the way people and
//! crashes make it (`docker service scale`, `docker service update --image`, a config edited or
//! deleted in the nginx container, the nginx task killed, the switch file removed, a deploy
//! killed with -9 after creating its green), repaired by one reconcile (exit 6, recorded in the
//! history as who `reconcile`), and the next reconcile in sync (exit 0). The live release's
//! repairs run under load with not one failed request. Two rounds on one stack keep the file
//! well under the CI budget.
//!
//! `#[ignore]`d like every engine test; `tests/run-all.sh` runs them. Stack `rc-a`, port 19200.

use std::time::{Duration, Instant};

mod common;
use common::{assert_load_clean, containers, docker, replicas, serial, stderr, stdout, Load, Running, TestStack};
use stackctl::loadgen::summarize;

const DIR: &str = "/etc/nginx/stackctl";

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// The findings of the stack's report: (kind, result).
fn findings(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = (report["stacks"][0]["findings"].as_array().unwrap().iter())
        .map(|f| (f["kind"].as_str().unwrap().to_string(), f["result"].as_str().unwrap().to_string()))
        .collect();
    f.sort();
    f
}

fn image_of(service: &str) -> String {
    docker(&["service", "inspect", service, "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}"]).trim().to_string()
}

/// The newest history entry of the stack.
fn newest_entry(s: &TestStack, file: &str) -> serde_json::Value {
    let out = s.stackctl(&["history", file, "--output", "json"]);
    json(&out)[0].clone()
}

/// Wait until the proxy service runs a container other than `old`, and nginx in it: without
/// its config it listens on no port of the stack, so users get a connection error.
fn wait_new_nginx(proxy: &str, old: &[String], port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = containers(proxy);
        if !now.is_empty() && now.iter().all(|c| !old.contains(c)) && common::docker_maybe(&["exec", &now[0], "nginx", "-t"]).is_ok() {
            assert!(common::get(port, "/").is_err(), "nginx without its config routes nothing");
            return;
        }
        assert!(Instant::now() < deadline, "nginx did not come back: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn reconcile_repairs_drift_made_by_hand_under_load_and_is_then_in_sync() {
    let _g = serial();
    let started = Instant::now();
    let s = TestStack::new("rc-a", 19200);
    // The third file names an image of the rig the killed deploy gets no further than creating.
    let (v1, v2, v3) = (s.file("v1"), s.file("v2"), s.file("fails"));
    let file = v2.to_str().unwrap();
    for f in [&v1, &v2] {
        let out = s.stackctl(&["deploy", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let (live, proxy) = ("rc-a_web-r2", "rc-a_proxy");
    let recorded_image = image_of(live);

    // In sync: exit 0, and --quiet prints nothing.
    let out = s.stackctl(&["reconcile", file, "--quiet"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""), "{}", stderr(&out));

    // Round 1, the live release must serve throughout: scaled and given another image by hand,
    // and the config edited by hand in nginx (not reloaded, as people leave it).
    docker(&["service", "scale", "--detach=false", &format!("{live}=3")]);
    docker(&["service", "update", "--detach=false", "--image", &format!("{}/stackctl-demo:v1", common::REGISTRY), live]);
    let nginx = containers(proxy);
    docker(&["exec", &nginx[0], "sh", "-c", &format!("echo '# edited by hand' >> {DIR}/live.conf")]);
    let out = s.stackctl(&["reconcile", file, "--dry-run", "--output", "json"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let dry = json(&out);
    assert_eq!(findings(&dry), [("live-changed".into(), "would".into()), ("nginx-config".into(), "would".into())], "{dry}");
    assert_eq!(replicas(live), "3", "a dry run changes nothing");

    let load = Load::steady(&format!("127.0.0.1:{}", s.port));
    load.wait_answers_since(Duration::ZERO, 50);
    let repair_started = load.now();
    let out = s.stackctl(&["reconcile", file, "--output", "json"]);
    let repair_done = load.now();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(findings(&report), [("live-changed".into(), "done".into()), ("nginx-config".into(), "done".into())], "{report}");
    let drift = report["stacks"][0]["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "live-changed").unwrap()["drift"].as_str().unwrap().to_string();
    assert!(drift.contains("image") && drift.contains("replicas 3 (recorded 2)"), "{drift}");
    load.wait_answers_since(repair_done, 100);
    let samples = load.stop().remove(0);
    let sum = summarize(&samples);
    let after: Vec<_> = samples.iter().filter(|x| x.sent >= repair_done).collect();
    eprintln!(
        "round 1 under load: {} requests, repair took {:.1}s, failures {}, retries {}; answers after: {} all v2",
        sum.requests,
        (repair_done - repair_started).as_secs_f64(),
        sum.failures,
        sum.retried,
        after.len()
    );
    // One reload (the config put back).
    assert_load_clean(&sum, 200, 1);
    assert!(after.iter().all(|x| x.result.as_deref() == Ok("v2")), "after the repair users reach the recorded v2");
    assert_eq!((replicas(live), image_of(live)), ("2".to_string(), recorded_image.clone()));
    let text = docker(&["exec", &nginx[0], "cat", &format!("{DIR}/live.conf")]);
    assert!(!text.contains("edited by hand"), "the config in nginx is the recorded one again");
    let entry = newest_entry(&s, file);
    assert_eq!((entry["verb"].as_str(), entry["outcome"].as_str(), entry["who"]["user"].as_str()), (Some("reconcile"), Some("repaired"), Some("reconcile")), "{entry}");
    assert_eq!(entry["repairs"].as_array().map(Vec::len), Some(2), "{entry}");
    let out = s.stackctl(&["reconcile", file]);
    assert_eq!(out.status.code(), Some(0), "in sync after the repair: {}", stdout(&out));
    assert!(stdout(&out).contains("stack rc-a: in sync"), "{}", stdout(&out));

    // Round 2, what crashes leave: the switch file removed (users sent to the retained r1,
    // which runs no task), the config deleted and the nginx task killed (it restarts without
    // one), a deploy killed with -9 right after creating its green (a green never live and a
    // lock whose holder is gone).
    let mut killed = Running::spawn(&["deploy".to_string(), v3.to_str().unwrap().to_string()], Some("green-created"));
    killed.wait_for_line("paused at green-created", Duration::from_secs(60));
    killed.kill9();
    assert!(s.services().contains(&"rc-a_web-r3".to_string()), "{:?}", s.services());
    docker(&["exec", &nginx[0], "sh", "-c", &format!("rm -f {DIR}/live-green-web {DIR}/live.conf")]);
    docker(&["kill", &nginx[0]]);
    wait_new_nginx(proxy, &nginx, s.port);

    // `--all` finds the stack by its record (dry run: other stacks on the engine are not ours).
    // Without the stack file and with no replica holding an intact config, nothing can render
    // nginx's config: that part needs a person (or the file), the rest would be repaired.
    let out = s.stackctl(&["reconcile", "--all", "--dry-run", "--output", "json"]);
    let all = json(&out);
    let mine = all["stacks"].as_array().unwrap().iter().find(|r| r["stack"] == "rc-a").cloned().expect("rc-a among --all");
    let kinds: Vec<&str> = mine["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(mine["status"], "needs-person", "{mine}");
    for k in ["stale-lock", "never-live", "unrepairable"] {
        assert!(kinds.contains(&k), "{k} not in {kinds:?}");
    }
    assert!(s.services().contains(&"rc-a_web-r3".to_string()), "a dry run changes nothing: {:?}", s.services());

    let out = s.stackctl(&["reconcile", file]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let text = stdout(&out);
    for line in ["lock: lock held by deploy", "rc-a_web-r3: release r3 of web was never live", "nginx: replica 1 has no config", "nginx: web: replica(s) [1] send users to blue instead of r2"] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert_eq!(s.get("/").map(|b| b.trim().to_string()).as_deref(), Ok("v2"), "users reach the live release again");
    assert!(!s.services().contains(&"rc-a_web-r3".to_string()), "{:?}", s.services());
    let status = s.status_json();
    assert!(status["lock"].is_null(), "{status}");
    let entry = newest_entry(&s, file);
    assert_eq!((entry["verb"].as_str(), entry["repairs"].as_array().map(Vec::len)), (Some("reconcile"), Some(4)), "{entry}");
    let out = s.stackctl(&["reconcile", file, "--quiet"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""), "{}", stderr(&out));

    // A stack file that differs from the record is reported as pending a deploy, never applied.
    let out = s.stackctl(&["reconcile", v3.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("changes pending a deploy (not applied): web:"), "{}", stdout(&out));
    assert_eq!(s.get("/").map(|b| b.trim().to_string()).as_deref(), Ok("v2"));
    eprintln!("e2e_reconcile took {:.0}s", started.elapsed().as_secs_f64());
}
