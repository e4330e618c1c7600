//! End to end: the real `stackctl` binary against a real dockerd in Swarm mode, a real nginx
//! and the real registry on 127.0.0.1:5000 (all set up by `tests/rig/setup.sh`).
//!
//! These tests are `#[ignore]`d so that a plain `cargo test` on a machine without the rig
//! reports them as *ignored* rather than passing them; `tests/run-all.sh` (and CI) run them
//! with `--include-ignored`. They run one at a time: they share one engine and two cores.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{assert_load_clean, docker, serial, stderr, stdout, Load, TestStack, REGISTRY};

use stackctl::loadgen;

/// Run load through nginx (4 kept-alive and 4 new-connection clients) while `during` runs,
/// until `answers_after` requests sent after it returned were answered. Returns its result,
/// the samples, and when it returned on the samples' clock.
fn with_load<T>(port: u16, answers_after: usize, during: impl FnOnce() -> T) -> (T, Vec<loadgen::Sample>, Duration) {
    let load = Load::steady(&format!("127.0.0.1:{port}"));
    let result = during();
    let returned_at = load.now();
    load.wait_answers_since(returned_at, answers_after);
    (result, load.stop().remove(0), returned_at)
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn first_deploy_serves_v1_and_is_visible_to_docker_stack() {
    let _g = serial();
    let s = TestStack::new("e2efirst", 18081);
    let out = s.deploy("v1", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "deployed");
    assert_eq!(report["switched"][0]["to"], 1);
    assert!(report["switched"][0]["image"].as_str().unwrap().contains("@sha256:"), "image pinned by digest");
    assert!(report["phases"].as_array().unwrap().iter().any(|p| p["phase"] == "wait healthy"));

    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    assert_eq!(s.services(), vec!["e2efirst_proxy".to_string(), "e2efirst_web-r1".to_string()]);
    // docker's own stack commands see it.
    assert!(docker(&["stack", "ls", "--format", "{{.Name}}"]).lines().any(|l| l == "e2efirst"));
    assert!(docker(&["stack", "services", "e2efirst", "--format", "{{.Name}}"]).contains("e2efirst_web-r1"));
    let labels = docker(&["service", "inspect", "e2efirst_web-r1", "--format", "{{json .Spec.Labels}}"]);
    for want in ["io.stackctl.release\":\"1", "io.stackctl.color\":\"blue", "io.stackctl.spec-hash", "io.stackctl.service\":\"web"] {
        assert!(labels.contains(want), "{want} in {labels}");
    }

    let status = s.status_json();
    assert_eq!(status["live"]["web"], 1);
    assert_eq!(status["serving"]["web"], 1);
    assert_eq!(status["problems"].as_array().unwrap().len(), 0, "{status}");
    let web = status["services"].as_array().unwrap().iter().find(|x| x["name"] == "e2efirst_web-r1").unwrap();
    assert_eq!(web["live"], true);
    assert_eq!(web["tasks"].as_array().unwrap().len(), 2);
    assert!(web["tasks"].as_array().unwrap().iter().all(|t| t["state"] == "running" && t["health"] == "healthy"), "{web}");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn identical_redeploy_is_a_noop() {
    let _g = serial();
    let s = TestStack::new("e2enoop", 18082);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    let ids = || docker(&["service", "ls", "--filter", "label=io.stackctl.stack=e2enoop", "--format", "{{.ID}}"]);
    let versions = || docker(&["service", "inspect", "e2enoop_web-r1", "e2enoop_proxy", "--format", "{{.Version.Index}}"]);
    let (before, versions_before) = (ids(), versions());
    assert_eq!(before.lines().count(), 2, "proxy and web-r1: {before}");
    assert_eq!(versions_before.lines().count(), 2, "{versions_before}");
    let out = s.deploy("v1", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "unchanged");
    assert_eq!(report["switched"].as_array().unwrap().len(), 0);
    let text = s.deploy("v1", &[]);
    assert!(stdout(&text).contains("unchanged"), "{}", stdout(&text));
    assert_eq!(ids(), before);
    assert_eq!(versions(), versions_before);
    // The control: a deploy that does change something shows in both.
    assert_eq!(s.deploy("v2", &[]).status.code(), Some(0));
    assert_ne!(ids(), before, "a new release is a new service");
    assert_ne!(versions(), versions_before, "blue scaled down is a new version");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn v1_to_v2_under_load_drops_nothing() {
    let _g = serial();
    let s = TestStack::new("e2eload", 18083);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    assert_eq!(s.get("/").as_deref(), Ok("v1"));

    let (out, samples, returned_at) = with_load(s.port, 200, || s.deploy("v2", &["--output", "json"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sum = loadgen::summarize(&samples);
    let window = loadgen::mixed_window(&samples, "v1", "v2");
    eprintln!("load during v1→v2: {sum:?}, mixed-version window {window:?}");
    assert_load_clean(&sum, 200, 0);
    assert!(sum.versions.get("v1").copied().unwrap_or(0) > 0 && sum.versions.get("v2").copied().unwrap_or(0) > 0, "{sum:?}");
    // The switch is one-way: no request sent after a client saw v2 is answered by v1.
    let back = loadgen::backwards(&samples, "v1", "v2");
    assert!(back.is_empty(), "{} requests went back to v1 after v2 was seen: {:?}", back.len(), back.first());
    // Once the deploy has returned, only v2 answers.
    let late: Vec<_> = samples.iter().filter(|x| x.sent > returned_at).collect();
    assert!(!late.is_empty());
    assert!(late.iter().all(|x| x.result.as_deref() == Ok("v2")), "{:?}", late.iter().find(|x| x.result.as_deref() != Ok("v2")));

    // Blue is kept for rollback, scaled to zero.
    assert_eq!(s.services(), vec!["e2eload_proxy", "e2eload_web-r1", "e2eload_web-r2"]);
    assert_eq!(docker(&["service", "inspect", "e2eload_web-r1", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]).trim(), "0");
    let labels = docker(&["service", "inspect", "e2eload_web-r2", "--format", "{{.Spec.Labels}}"]);
    assert!(labels.contains("io.stackctl.color:green"), "the second release is green: {labels}");
    // nginx reaches it by its colour's network alias, which only it carries now.
    let networks = docker(&["service", "inspect", "e2eload_web-r2", "--format", "{{json .Spec.TaskTemplate.Networks}}"]);
    assert!(networks.contains("\"e2eload_web.green\"") && !networks.contains("e2eload_web.blue"), "{networks}");

    // A third release prunes r1 (keep: 1).
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    assert_eq!(s.services(), vec!["e2eload_proxy", "e2eload_web-r2", "e2eload_web-r3"]);
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
}

/// Issue 7's goal, under the load generator: ten deploys in a row (v1 and v2 in turn, each a
/// new release), under 4 kept-alive and 4 new-connection clients, with not one failed request
/// and not one client retry: the switch is a file, and nginx is never reloaded.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn ten_deploys_under_load_without_a_failure_or_a_retry() {
    let _g = serial();
    let s = TestStack::new("e2eten", 19040);
    let file = |image: &str| {
        let text = std::fs::read_to_string(s.file(image)).unwrap().replace("        drain: 1s\n", "        drain: 1s\n        watch: 1s\n");
        let path = s.dir.join(format!("ten-{image}.yml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let deploy = |image: &str| s.stackctl(&["deploy", file(image).to_str().unwrap()]);
    assert_eq!(deploy("v1").status.code(), Some(0));
    let nginx = common::containers("e2eten_proxy").pop().expect("an nginx container");
    let workers = common::wait_for_workers(&nginx);
    let (outs, samples, _) = with_load(s.port, 100, || (0..10).map(|i| deploy(if i % 2 == 0 { "v2" } else { "v1" })).collect::<Vec<_>>());
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.status.code(), Some(0), "deploy {}: {}", i + 1, stderr(out));
        assert!(!stderr(out).contains("reloaded"), "deploy {} reloaded nginx: {}", i + 1, stderr(out));
    }
    let sum = loadgen::summarize(&samples);
    eprintln!("TEN DEPLOYS: requests {} failures {} retried {} versions {:?}", sum.requests, sum.failures, sum.retried, sum.versions);
    assert_load_clean(&sum, 1000, 0);
    assert_eq!(common::wait_for_workers(&nginx), workers, "the same nginx workers throughout: no reload");
    assert_eq!(s.status_json()["live"]["web"], 11);
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn broken_release_is_refused_while_v1_keeps_serving() {
    let _g = serial();
    let s = TestStack::new("e2ebroken", 18084);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    let (out, samples, _) = with_load(s.port, 50, || s.deploy("broken", &["--timeout", "20s"]));
    assert_eq!(out.status.code(), Some(1), "exit 1: refused, live intact");
    let err = stderr(&out);
    assert!(err.contains("waiting for green to become healthy"), "{err}");
    assert!(err.contains("The live release is intact"), "{err}");
    let sum = loadgen::summarize(&samples);
    eprintln!("load during the refused deploy: {sum:?}");
    assert_load_clean(&sum, 100, 0);
    assert_eq!(sum.versions.keys().collect::<Vec<_>>(), vec!["v1"]);
    // Green is gone; blue untouched; the record still says r1.
    assert_eq!(s.services(), vec!["e2ebroken_proxy", "e2ebroken_web-r1"]);
    assert_eq!(s.status_json()["live"]["web"], 1);
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    // The next good deploy gets a fresh number: r2 was handed out to the broken one.
    assert_eq!(s.deploy("v2", &[]).status.code(), Some(0));
    assert_eq!(s.services(), vec!["e2ebroken_proxy", "e2ebroken_web-r1", "e2ebroken_web-r3"]);
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn killed_nginx_task_comes_back_serving_the_live_release() {
    let _g = serial();
    let s = TestStack::new("e2enginx", 18085);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    assert_eq!(s.deploy("v2", &[]).status.code(), Some(0));
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
    let container = docker(&["ps", "-q", "--filter", "label=com.docker.swarm.service.name=e2enginx_proxy"]);
    let container = container.trim();
    assert!(!container.is_empty());
    let killed = Instant::now();
    docker(&["kill", container]);
    let deadline = killed + Duration::from_secs(60);
    let mut recovered = None;
    while Instant::now() < deadline {
        if s.get("/").as_deref() == Ok("v2") && docker(&["ps", "-q", "--filter", "label=com.docker.swarm.service.name=e2enginx_proxy"]).trim() != container {
            recovered = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let recovered = recovered.expect("nginx came back serving v2 within 60s");
    eprintln!("nginx task killed; serving v2 again after {recovered:?}");
    let status = s.status_json();
    assert_eq!(status["serving"]["web"], 2, "{status}");
    assert_eq!(status["colours"]["web"], "green", "{status}");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn bad_stack_file_exits_2_naming_file_and_line_and_changes_nothing() {
    let _g = serial();
    let s = TestStack::new("e2ebad", 18086);
    let file = s.file("v1");
    let text = std::fs::read_to_string(&file).unwrap().replace("port: 80\n", "port: 80; evil\n");
    std::fs::write(&file, text).unwrap();
    let out = s.stackctl(&["deploy", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:", file.display())), "{err}");
    assert!(err.contains("services.web.x-stackctl.route.port"), "{err}");
    assert!(s.services().is_empty());
}

/// Every shape of config the renderer produces is accepted by the real nginx.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn rendered_configs_pass_nginx_t() {
    let _g = serial();
    let dir = std::env::temp_dir().join("stackctl-e2e-render");
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        r#"name: render
x-stackctl:
  proxy: {{ service: proxy, url: "http://127.0.0.1:18099" }}
services:
  proxy:
    image: {REGISTRY}/stackctl-nginx:latest
  web:
    image: {REGISTRY}/stackctl-demo:v1
    x-stackctl: {{ route: {{ port: 80, hosts: [www.example.com, "*.example.org"] }} }}
  api:
    image: {REGISTRY}/stackctl-demo:v1
    x-stackctl: {{ route: {{ port: 8080, hosts: [www.example.com], path: /api/v1 }} }}
  admin:
    image: {REGISTRY}/stackctl-demo:v1
    x-stackctl: {{ route: {{ port: 80, path: /admin }} }}
"#
    );
    let file = dir.join("render.yml");
    std::fs::write(&file, &yaml).unwrap();
    let stack = stackctl::spec::load(&file, &Default::default()).expect("valid stack").stack;
    let route = |name: &str| match &stack.services[name].role {
        stackctl::spec::Role::Routed(r) => (name.to_string(), r.clone()),
        _ => unreachable!(),
    };
    let cases = [vec![route("web")], vec![route("web"), route("api"), route("admin")]];
    for (i, routing) in cases.iter().enumerate() {
        let conf = stackctl::proxy::render_routes(&stack, routing, "0123456789abcdef0123").unwrap();
        let path = dir.join(format!("case{i}.conf"));
        std::fs::write(&path, &conf).unwrap();
        let out = Command::new("docker")
            .args(["run", "--rm", "-v", &format!("{}:/etc/nginx/conf.d/stackctl.conf:ro", path.display())])
            .args([&format!("{REGISTRY}/stackctl-nginx:latest"), "nginx", "-t"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "case {i}: nginx -t failed:\n{text}\n{conf}");
        assert!(!text.contains("conflicting server name"), "case {i}: {text}");
    }
}

/// `DOCKER_HOST` over TCP, and over TLS with `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, as the
/// Docker CLI reads them. socat stands in for a daemon listening on TCP: it forwards to the
/// rig's unix socket, and for TLS it terminates TLS and demands a client certificate.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn docker_host_over_tcp_and_tls() {
    let _g = serial();
    let s = TestStack::new("e2etcp", 18087);
    let file = s.file("v1");
    let dir = s.dir.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-ec").arg(script).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // A CA, a server certificate for 127.0.0.1 and a client certificate, as `docker` expects
    // them in DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem).
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=stackctl-test-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -extfile server.ext -out server.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout key.pem -out client.csr 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\\n' > client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -extfile client.ext -out cert.pem 2>/dev/null");
    let spawn = |listen: String| {
        // socat logs every rustls attempt to resume a TLS session ("session id context
        // uninitialized"; the client then does a full handshake): noise, kept out of the log.
        let child = Command::new("socat")
            .args([&listen, "UNIX-CONNECT:/var/run/docker.sock"])
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat (tests/rig/setup.sh installs it)");
        // Listening once a connection is accepted (socat forks a child for it and goes on).
        let port: u16 = listen.split([':', ',']).nth(1).and_then(|p| p.parse().ok()).expect("a port in the listen address");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let status = |envs: &[(&str, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
        cmd.args(["status", file.to_str().unwrap(), "--output", "json"]).env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };

    let mut tcp = spawn("TCP-LISTEN:23750,bind=127.0.0.1,reuseaddr,fork".into());
    let out = status(&[("DOCKER_HOST", "tcp://127.0.0.1:23750".into())]);
    tcp.kill().unwrap();
    tcp.wait().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["stack"], "e2etcp");

    let mut tls = spawn(format!(
        "OPENSSL-LISTEN:23751,bind=127.0.0.1,reuseaddr,fork,cert={0}/server.pem,key={0}/server-key.pem,cafile={0}/ca.pem,verify=1",
        dir.display()
    ));
    let tls_env = |cert_dir: &std::path::Path| {
        vec![
            ("DOCKER_HOST", "tcp://127.0.0.1:23751".to_string()),
            ("DOCKER_TLS_VERIFY", "1".to_string()),
            ("DOCKER_CERT_PATH", cert_dir.display().to_string()),
        ]
    };
    let ok = status(&tls_env(&dir));
    // Without the client certificate the server refuses the handshake: a clear exit 1.
    let empty = s.dir.join("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(dir.join("ca.pem"), empty.join("ca.pem")).unwrap();
    let refused = status(&tls_env(&empty));
    tls.kill().unwrap();
    tls.wait().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&ok.stdout).unwrap()["stack"], "e2etcp");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
}

/// Someone removed the live release's service by hand (`docker service rm`): the record names a
/// release that no longer exists. The next deploy treats it as nothing live and deploys again,
/// instead of failing forever looking for its tasks.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_live_release_removed_by_hand_is_replaced_by_the_next_deploy() {
    let _g = serial();
    let s = TestStack::new("e2egone", 18090);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    docker(&["service", "rm", "e2egone_web-r1"]);
    let out = s.deploy("v1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("web: nothing → r2"), "{}", stdout(&out));
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    assert_eq!(s.status_json()["live"]["web"], 2);
}

/// A stack of six routed services released v1 → v2 together under load on every route: the
/// preview gate probes all six greens at once and the switch verifies all six at once, and no
/// request fails. `s1` is the default route (`/`, whose page is the image's version); `s2`–`s6`
/// are path routes (`/sN/`) whose page, mounted from a config, names the service, so each load
/// also proves that its route reaches its own service. Six new releases, one per service, are
/// live afterwards and recorded.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn six_services_v1_to_v2_under_load_drop_nothing() {
    let _g = serial();
    let s = TestStack::new("flate2esix", 18960);
    const N: usize = 6;
    let file = |image: &str| {
        let mut yaml = format!(
            "name: {name}\nx-stackctl:\n  proxy: {{ service: proxy, url: \"http://127.0.0.1:{port}\", listen: 8080 }}\n  keep: 1\nconfigs:\n",
            name = s.name,
            port = s.port
        );
        for i in 2..=N {
            std::fs::write(s.dir.join(format!("s{i}.txt")), format!("s{i}\n")).unwrap();
            yaml.push_str(&format!("  page{i}: {{ file: ./s{i}.txt }}\n"));
        }
        yaml.push_str(&format!(
            "services:\n  proxy:\n    image: {REGISTRY}/stackctl-nginx:latest\n    ports: [{{ target: 8080, published: {}, mode: host }}]\n",
            s.port
        ));
        for i in 1..=N {
            let (path, health, configs) = match i {
                1 => (String::new(), "/healthz".to_string(), String::new()),
                _ => (format!("path: /s{i}, "), format!("/s{i}/"), format!("    configs: [{{ source: page{i}, target: /www/s{i}/index.html }}]\n")),
            };
            yaml.push_str(&format!(
                "  s{i}:\n    image: {REGISTRY}/stackctl-demo:{image}\n{configs}    deploy: {{ replicas: 1 }}\n    stop_grace_period: 2s\n    x-stackctl:\n      route: {{ port: 80, {path}health: {{ path: {health}, interval: 300ms, timeout: 2s, successes: 3, deadline: 60s }}, watch: 1s, drain: 1s }}\n"
            ));
        }
        let path = s.dir.join(format!("six-{image}.yml"));
        std::fs::write(&path, yaml).unwrap();
        path
    };
    let v1 = file("v1");
    let out = s.stackctl(&["deploy", v1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.get("/").as_deref(), Ok("v1"));
    for i in 2..=N {
        assert_eq!(s.get(&format!("/s{i}/")), Ok(format!("s{i}")), "route /s{i}/ reaches s{i}");
    }

    let authority = format!("127.0.0.1:{}", s.port);
    let paths: Vec<String> = (1..=N).map(|i| if i == 1 { "/".to_string() } else { format!("/s{i}/") }).collect();
    // One kept-alive and one new-connection client per route.
    let runs: Vec<(&str, usize, usize, Duration)> = paths.iter().map(|p| (p.as_str(), 1, 1, Duration::from_secs(5))).collect();
    let load = Load::start(&authority, &runs);
    let v2 = file("v2");
    let out = s.stackctl(&["deploy", v2.to_str().unwrap(), "--output", "json"]);
    let returned_at = load.now();
    load.wait_answers_since(returned_at, 20);
    let samples = load.stop();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut switched: Vec<(String, u64, u64)> = (report["switched"].as_array().unwrap().iter())
        .map(|x| (x["service"].as_str().unwrap().to_string(), x["from"].as_u64().unwrap(), x["to"].as_u64().unwrap()))
        .collect();
    switched.sort();
    assert_eq!(switched, (1..=N).map(|i| (format!("s{i}"), 1, 2)).collect::<Vec<_>>(), "every service released r1 → r2");
    let phase = |name: &str| report["phases"].as_array().unwrap().iter().find(|p| p["phase"] == name).map(|p| p["seconds"].as_f64().unwrap());
    eprintln!("phases: preview {:?} s, switch {:?} s, total {} s", phase("preview"), phase("switch"), report["total_seconds"]);

    for (path, samples) in paths.iter().zip(&samples) {
        let sum = loadgen::summarize(samples);
        eprintln!("LOAD {path}: requests {} failures {} retried {} versions {:?}", sum.requests, sum.failures, sum.retried, sum.versions);
        // Each route has its own kept-alive client, and each reload may close its idle
        // connection: README's bound holds per load, as in the other load tests.
        assert_load_clean(&sum, 20, 0);
        let want: Vec<&str> = if path == "/" { vec!["v1", "v2"] } else { vec![path.trim_matches('/')] };
        assert_eq!(sum.versions.keys().map(String::as_str).collect::<Vec<_>>(), want, "{path} answered only by its own service");
    }
    assert!(loadgen::backwards(&samples[0], "v1", "v2").is_empty(), "no v1 answer after v2 was seen");
    let late: Vec<_> = samples[0].iter().filter(|x| x.sent > returned_at).collect();
    assert!(!late.is_empty() && late.iter().all(|x| x.result.as_deref() == Ok("v2")), "only v2 once the deploy returned");

    let out = s.stackctl(&["status", v2.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for i in 1..=N {
        assert_eq!(status["live"][format!("s{i}")], 2, "{status}");
        assert_eq!(docker(&["service", "inspect", &format!("{}_s{i}-r1", s.name), "--format", "{{.Spec.Mode.Replicated.Replicas}}"]).trim(), "0");
    }
}
