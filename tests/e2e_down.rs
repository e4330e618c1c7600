//! `stackctl down`, end to end: the real binary removes a deployed stack (two releases, nginx,
//! a plain and a stateful service, a config, a secret, a named volume) from the real engine of
//! `tests/rig/setup.sh`, and the cluster is checked with the docker CLI.
//!
//! `#[ignore]`d like tests/e2e.rs; run with `--include-ignored` under the engine lock.
//! Stacks are named `down*` and publish nginx on ports 19000–19009.

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::{docker, serial, stderr, stdout, Running, TestStack};

/// The stack's objects of `kind` (service, config, secret, network) carrying stackctl's label.
fn labelled(kind: &str, stack: &str) -> Vec<String> {
    let out = docker(&[kind, "ls", "--filter", &format!("label=io.stackctl.stack={stack}"), "--format", "{{.Name}}"]);
    let mut names: Vec<String> = out.lines().map(String::from).collect();
    names.sort();
    names
}

fn everything(stack: &str) -> Vec<String> {
    ["service", "config", "secret", "network"].iter().flat_map(|k| labelled(k, stack).into_iter().map(move |n| format!("{k} {n}"))).collect()
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "ls", "-q", "--filter", &format!("name={name}")]).lines().any(|l| l == name)
}

/// The basic stack of `image` plus a config and a secret mounted into `web`, a plain
/// `worker` and a stateful `db` with a named volume.
fn full(s: &TestStack, image: &str) -> PathBuf {
    std::fs::write(s.dir.join("page.txt"), "page\n").unwrap();
    std::fs::write(s.dir.join("token.txt"), "token\n").unwrap();
    s.file_with(image, "full", |yaml| {
        let yaml = yaml.replace(
            "services:\n",
            "configs:\n  page: { file: ./page.txt }\nsecrets:\n  token: { file: ./token.txt }\nvolumes:\n  data: {}\nservices:\n",
        );
        let yaml = yaml.replace(
            "    stop_grace_period: 2s\n    x-stackctl:\n      route:",
            "    stop_grace_period: 2s\n    configs: [{ source: page, target: /etc/page.txt }]\n    secrets: [{ source: token, target: tok }]\n    x-stackctl:\n      route:",
        );
        format!(
            "{yaml}  worker:\n    image: {reg}/stackctl-demo:v1\n    stop_grace_period: 1s\n  db:\n    image: {reg}/stackctl-demo:v1\n    volumes: [\"data:/data\"]\n    stop_grace_period: 1s\n    x-stackctl: {{ stateful: true }}\n",
            reg = common::REGISTRY
        )
    })
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn down_removes_the_stack_keeps_its_volumes_refuses_without_yes_or_while_locked_and_runs_twice() {
    let _g = serial();
    let s = TestStack::new("down", 19000);
    let (v1, v2) = (full(&s, "v1"), full(&s, "v2"));
    for f in [&v1, &v2] {
        let out = s.stackctl(&["deploy", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let before = everything("down");
    for want in ["service down_proxy", "service down_web-r2", "service down_worker", "service down_db", "config down_stackctl-record", "network down_default"] {
        assert!(before.contains(&want.to_string()), "{want} in {before:?}");
    }
    assert!(before.iter().any(|o| o.starts_with("secret down_token")), "{before:?}");
    assert!(before.iter().any(|o| o.starts_with("config down_page")), "{before:?}");
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
    let file = v2.to_str().unwrap();

    // stdin is not a terminal (Command::output gives /dev/null) and no --yes: refused, exit 2.
    let out = s.stackctl(&["down", file]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes") && stderr(&out).contains("down_proxy"), "{}", stderr(&out));
    assert_eq!(everything("down"), before, "a refused down changed something");

    // A deploy holds the lock (paused after creating green): down refuses and names it.
    let mut deploy = Running::spawn(&["deploy".to_string(), v1.to_str().unwrap().to_string()], Some("green-created"));
    deploy.wait_for_line("stackctl: paused at green-created", Duration::from_secs(90));
    let out = s.stackctl(&["down", file, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("being deployed by deploy") && stderr(&out).contains(&format!("pid {}", deploy.pid())), "{}", stderr(&out));
    assert!(labelled("service", "down").contains(&"down_proxy".to_string()), "down removed something while locked");
    assert_eq!(s.get("/").as_deref(), Ok("v2"), "users still reach the live release");
    // Killed mid-deploy: its green r3 and its dead lock are left for down to deal with.
    deploy.kill9();

    let started = Instant::now();
    let out = s.stackctl(&["down", file, "--yes", "--output", "json"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("down JSON");
    let services: Vec<&str> = report["services"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(services.first(), Some(&"down_proxy"), "nginx goes first: {report}");
    for want in ["down_web-r2", "down_web-r3", "down_worker", "down_db"] {
        assert!(services.contains(&want), "{want} in {report}");
    }
    for kind in ["configs", "secrets", "networks"] {
        assert!(!report[kind].as_array().unwrap().is_empty(), "{kind} in {report}");
    }
    assert_eq!(report["record"], true);
    assert!(report["history"].as_u64().unwrap() >= 2, "{report}");
    let kept: Vec<&str> = report["kept_volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(kept.contains(&"down_data"), "{report}");
    eprintln!("MEASURED: down of a stack of {} services took {took:.2?}", services.len());

    assert_eq!(everything("down"), Vec::<String>::new(), "nothing labelled io.stackctl.stack=down remains");
    assert!(volume_exists("down_data"), "the named volume is kept");
    assert!(s.get("/").is_err(), "nginx is gone");
    let out = s.stackctl(&["history", file]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("has no history"), "{}", stdout(&out));
    let status = s.status_json();
    assert!(status["services"].as_array().unwrap().is_empty() && status["live"].as_object().unwrap().is_empty(), "{status}");

    // Again: nothing to remove, nothing asked, exit 0; the volume is still named.
    let out = s.stackctl(&["down", file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("stack down: nothing to remove") && stdout(&out).contains("kept volume down_data"), "{}", stdout(&out));
    assert_eq!(everything("down"), Vec::<String>::new(), "a second down created something (the record?)");

    for v in ["down_data", "down_stackctl-proxy"] {
        let _ = common::docker_maybe(&["volume", "rm", "-f", v]);
    }
}
