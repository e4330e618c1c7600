//! The Docker daemon restarts in the middle of a deploy.
//!
//! This test stops and restarts the rig's own dockerd (started by `tests/rig/setup.sh`, pid in
//! `$STACKCTL_RIG_DIR/dockerd.pid`), so it lives in its own test binary: cargo runs test
//! binaries one after another, and nothing else uses the engine meanwhile. Without
//! live-restore, a stopping dockerd stops every container, nginx included: requests fail
//! while it is down, so this test asserts what the issue asks — the deploy finishes or fails
//! cleanly, and routing is correct afterwards — not zero failures.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{docker, REGISTRY};

const PORT: u16 = 18300;

fn rig_dir() -> PathBuf {
    PathBuf::from(std::env::var("STACKCTL_RIG_DIR").unwrap_or_else(|_| "/tmp/stackctl-rig".into()))
}

fn get(path: &str) -> Result<String, String> {
    common::get(PORT, path)
}

fn stack_file(dir: &std::path::Path, image: &str) -> PathBuf {
    let path = dir.join("stack.yml");
    std::fs::write(
        &path,
        format!(
            r#"name: e2edaemon
x-stackctl:
  proxy: {{ service: proxy, url: "http://127.0.0.1:{PORT}" }}
services:
  proxy:
    image: {REGISTRY}/stackctl-nginx:latest
    ports: [{{ target: 8080, published: {PORT}, mode: host }}]
  web:
    image: {REGISTRY}/stackctl-demo:{image}
    deploy: {{ replicas: 2 }}
    stop_grace_period: 1s
    x-stackctl:
      route:
        port: 80
        health: {{ path: /healthz, interval: 300ms, successes: 3, deadline: 90s }}
        drain: 1s
"#
        ),
    )
    .unwrap();
    path
}

fn cleanup() {
    common::remove_stack("e2edaemon");
}

#[test]
#[ignore = "needs the rig's own dockerd, which it restarts (tests/rig/setup.sh); run tests/run-all.sh"]
fn daemon_restart_during_a_deploy_ends_clean_and_routed() {
    let pidfile = rig_dir().join("dockerd.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|_| panic!("{} missing: this test restarts the rig's dockerd and needs it to be the running engine", pidfile.display()));
    let pid = pid.trim().to_string();
    cleanup();
    let dir = std::env::temp_dir().join("stackctl-e2e-daemon");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_stackctl");

    let first = Command::new(bin).args(["deploy", stack_file(&dir, "v1").to_str().unwrap()]).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(get("/").as_deref(), Ok("v1"));

    // Deploy v2, and stop dockerd while green is being brought up.
    let deploy = Command::new(bin)
        .args(["deploy", stack_file(&dir, "v2").to_str().unwrap(), "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let stopped_at = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    while Command::new("kill").args(["-0", &pid]).stderr(Stdio::null()).status().unwrap().success() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let down_for = stopped_at.elapsed();
    let setup = Command::new("tests/rig/setup.sh").current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(setup.status.success(), "restarting the rig failed: {}", String::from_utf8_lossy(&setup.stderr));
    let restarted_after = stopped_at.elapsed();

    let out = deploy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("deploy during restart -> {:?}\n{stderr}", out.status.code());
    eprintln!("dockerd stopped in {down_for:?}, answering again after {restarted_after:?}");
    // Finished (0) or failed cleanly with the live release intact (1); never 3, never a panic.
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "{stderr}");

    // Afterwards the cluster is consistent and serves what the record says, within a bound.
    let status_of = || {
        let s = Command::new(bin).args(["status", stack_file(&dir, "v2").to_str().unwrap(), "--output", "json"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&s.stdout).ok()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Some(st) = status_of() {
            let live = st["live"]["web"].as_u64().unwrap_or(0);
            let want = if out.status.code() == Some(0) { "v2" } else { "v1" };
            let ok = st["lock"].is_null() && st["problems"].as_array().is_some_and(|p| p.is_empty()) && get("/").as_deref() == Ok(want);
            last = format!("live r{live}, want {want}, status {st}");
            if ok {
                eprintln!("serving {want} (r{live}) again {:?} after dockerd was stopped", stopped_at.elapsed());
                break;
            }
        }
        assert!(Instant::now() < deadline, "not routed correctly 90 s after the restart: {last}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // And the next deploy converges: nothing left half-done.
    let again = Command::new(bin).args(["deploy", stack_file(&dir, "v2").to_str().unwrap()]).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(get("/").as_deref(), Ok("v2"));
    let services = docker(&["service", "ls", "--filter", "label=io.stackctl.stack=e2edaemon", "--format", "{{.Name}} {{.Replicas}}"]);
    eprintln!("{services}");
    cleanup();
}
