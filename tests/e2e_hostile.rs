//! End to end for issue 13 (hostile input): the real binary against the real engine and nginx.
//!
//! - Routed services whose nginx variable names collided (`echo` took the header-echo map;
//!   `web` + `_target` was `web-target`'s map) each answer with their own release.
//! - A route on `*.example.com` passes the health gate (the probe used to send
//!   `Host: example.com`, which another server answers).
//! - A credential helper that never answers fails the deploy after the helper timeout, and the
//!   helper is killed.
//!
//! `#[ignore]`d like tests/e2e.rs; stack names `e2ehost*`, nginx ports 18600-18619.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{serial, stderr, TestStack, REGISTRY};

use stackctl::health::Probe;

/// A stack of four routed services on one nginx: `echo` on `/`, `web` on `/index.html`,
/// `web-target` (flaky, whose CGI answers its version steadily) on `/cgi-bin`, and `wild`
/// (v2) on `*.example.com`. The demo images answer their version on `/`, `/index.html` and
/// `/cgi-bin/slow?0`.
fn routes_yaml(s: &TestStack, echo_image: &str, web_image: &str) -> String {
    let route = |image: &str, route: &str| {
        format!(
            "    image: {REGISTRY}/stackctl-demo:{image}\n    networks: [edge]\n    stop_grace_period: 1s\n    x-stackctl:\n      route:\n{route}        drain: 0s\n        watch: 0s\n"
        )
    };
    let health = |path: &str| format!("        health: {{ path: \"{path}\", interval: 300ms, timeout: 2s, successes: 3, deadline: 60s }}\n");
    format!(
        "name: {name}\nx-stackctl:\n  proxy: {{ service: proxy, url: \"http://127.0.0.1:{port}\", listen: 8080 }}\n  keep: 1\n\
         networks:\n  edge: {{}}\n\
         services:\n  proxy:\n    image: {REGISTRY}/stackctl-nginx:latest\n    networks: [edge]\n    ports:\n      - {{ target: 8080, published: {port}, mode: host }}\n\
         \x20 echo:\n{echo}\
         \x20 web:\n{web}\
         \x20 web-target:\n{web_target}\
         \x20 wild:\n{wild}",
        name = s.name,
        port = s.port,
        echo = route(echo_image, &format!("        port: 80\n        path: /\n{}", health("/healthz"))),
        web = route(web_image, &format!("        port: 80\n        path: /index.html\n{}", health("/index.html"))),
        web_target = route("flaky", &format!("        port: 80\n        path: /cgi-bin\n{}", health("/cgi-bin/slow?0"))),
        wild = route("v2", &format!("        port: 80\n        hosts: [\"*.example.com\"]\n        path: /\n{}", health("/"))),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// GET through nginx with a `Host` of our choosing: the body on 200, else the status.
fn get(port: u16, host: Option<&str>, path: &str) -> Result<String, String> {
    let probe = Probe {
        authority: format!("127.0.0.1:{port}"),
        path: path.into(),
        host: host.map(String::from),
        headers: vec![],
        timeout: Duration::from_secs(5),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(probe.send())?;
    if r.status == 200 { Ok(r.body) } else { Err(format!("HTTP {}: {}", r.status, r.body)) }
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn services_whose_nginx_names_collided_and_a_wildcard_host_each_reach_their_own_release() {
    let _g = serial();
    let s = TestStack::new("e2ehost-routes", 18600);
    // The first deploy, then a switch of echo and web (previews and switch files by name).
    for (echo, web) in [("v1", "v2"), ("v2", "v1")] {
        let file = write(&s.dir, "routes.yml", &routes_yaml(&s, echo, web));
        let out = s.stackctl(&["deploy", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        // Each request, several times over new connections, reaches its own service.
        for _ in 0..5 {
            assert_eq!(get(s.port, None, "/").as_deref(), Ok(echo), "echo on /");
            assert_eq!(get(s.port, None, "/index.html").as_deref(), Ok(web), "web on /index.html");
            assert_eq!(get(s.port, None, "/cgi-bin/slow?0").as_deref(), Ok("flaky"), "web-target on /cgi-bin");
            assert_eq!(get(s.port, Some("a.example.com"), "/").as_deref(), Ok("v2"), "wild on *.example.com");
            assert_eq!(get(s.port, Some("b.c.example.com"), "/index.html").as_deref(), Ok("v2"), "wild on *.example.com");
        }
    }
    // A backend's own X-Stackctl-Upstream never reaches a client: nginx hides it and only
    // adds its own for stackctl's token, which this request lacks.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let probe = Probe { authority: format!("127.0.0.1:{}", s.port), path: "/".into(), host: None, headers: vec![], timeout: Duration::from_secs(5) };
    let answer = rt.block_on(probe.send()).unwrap();
    assert_eq!(answer.upstream, None, "{answer:?}");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_credential_helper_that_never_answers_fails_the_deploy_and_is_killed() {
    let _g = serial();
    let s = TestStack::new("e2ehost-helper", 18601);
    let file = s.file("v1");
    // A Docker config whose credsStore is a helper that sleeps, with a child of its own.
    let config = s.dir.join("docker-config");
    let bin = s.dir.join("bin");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    write(&config, "config.json", r#"{"credsStore": "e2ehang"}"#);
    let pids = s.dir.join("helper.pids");
    let _ = std::fs::remove_file(&pids);
    let helper = write(&bin, "docker-credential-e2ehang", &format!("#!/bin/sh\nsleep 600 &\necho $$ $! > {}\nwait\n", pids.display()));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .args(["deploy", file.to_str().unwrap()])
        .env("DOCKER_CONFIG", &config)
        .env("PATH", &path)
        .env("STACKCTL_CREDENTIAL_HELPER_TIMEOUT", "2s")
        .output()
        .expect("run stackctl");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("docker-credential-e2ehang") && err.contains("did not answer within 2s and was killed"), "{err}");
    assert!(err.contains("STACKCTL_CREDENTIAL_HELPER_TIMEOUT"), "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    // Nothing was created, and the lock was given back: a deploy without the helper works.
    assert!(s.services().is_empty(), "{:?}", s.services());
    let text = std::fs::read_to_string(&pids).expect("the helper ran");
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |pid: &str| Path::new(&format!("/proc/{pid}")).exists() && stackctl::record::pid_alive(pid.parse().unwrap());
    while text.split_whitespace().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in text.split_whitespace() {
        assert!(!alive(pid), "process {pid} of the helper still runs");
    }
    let out = s.deploy("v1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
