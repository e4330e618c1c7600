//! Helpers shared by the integration-test binaries (`tests/e2e*.rs`): the docker CLI, cleanup
//! of a stack by label, plain GETs through nginx, and the lock that keeps tests of one binary
//! from running at once (they share one engine and two cores).

#![allow(dead_code)] // each test binary uses its own subset

pub mod running;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stackctl::health::Probe;

/// Registry of the rig (`tests/rig/setup.sh`).
pub const REGISTRY: &str = "127.0.0.1:5000";

static SERIAL: Mutex<()> = Mutex::new(());

/// Run tests of one binary one at a time (a failed test must not block the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The docker CLI's stdout (errors are the caller's business: most calls are best effort).
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The docker CLI's stdout, or its stderr when it fails: for commands a test expects may fail.
pub fn docker_maybe(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("docker {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
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
            docker(&args);
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
        docker(&args);
        std::thread::sleep(Duration::from_millis(500));
    }
    docker(&["volume", "rm", "-f", &format!("{stack}_stackctl-proxy")]);
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
