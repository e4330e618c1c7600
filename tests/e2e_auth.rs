//! End to end with a registry that requires a login: the real `stackctl` binary deploys an
//! image from 127.0.0.1:5001 (htpasswd, set up by `tests/rig/setup.sh`; the proxy image stays
//! on the open registry 127.0.0.1:5000), with credentials from a throwaway `DOCKER_CONFIG`:
//! `auths`, none at all, and a credential helper. Every output stackctl produces, the nginx
//! config it installs and the stack record are searched for the password and for its base64
//! `user:password` form.
//!
//! The rig leaves no local reference to 127.0.0.1:5001 images, and each test removes the ones
//! a previous deploy pulled: Swarm has to pull, which the registry allows only with the
//! credentials stackctl passed along. `#[ignore]`d like tests/e2e.rs; run by tests/run-all.sh.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use stackctl::health::Probe;

static SERIAL: Mutex<()> = Mutex::new(());

/// The open registry (proxy image).
const REGISTRY: &str = "127.0.0.1:5000";
const STACK: &str = "e2eauth";
const PORT: u16 = 18090;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry with login, as tests/rig/setup.sh describes it in the environment (run-all.sh)
/// or in `$STACKCTL_RIG_DIR/rig.env`.
struct Rig {
    registry: String,
    user: String,
    password: String,
    password_file: PathBuf,
}

fn rig() -> Rig {
    let dir = std::env::var("STACKCTL_RIG_DIR").unwrap_or_else(|_| "/tmp/stackctl-rig".into());
    let file = std::fs::read_to_string(Path::new(&dir).join("rig.env")).unwrap_or_default();
    let var = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            file.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')).map(str::to_string))
        })
    };
    let registry = var("STACKCTL_AUTH_REGISTRY").expect("STACKCTL_AUTH_REGISTRY (run tests/rig/setup.sh)");
    let user = var("STACKCTL_AUTH_USER").expect("STACKCTL_AUTH_USER");
    let password_file = var("STACKCTL_AUTH_PASSWORD_FILE").expect("STACKCTL_AUTH_PASSWORD_FILE");
    let password = std::fs::read_to_string(&password_file).expect("password file").trim_end_matches('\n').to_string();
    assert!(password.len() >= 8, "rig password too short to search for");
    Rig { registry, user, password, password_file: PathBuf::from(password_file) }
}

impl Rig {
    fn basic(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password))
    }

    /// Assert that `text` (one of stackctl's outputs, named by `what`) holds no secret.
    fn assert_clean(&self, what: &str, text: &str) {
        assert!(!text.contains(&self.password), "{what} contains the registry password");
        assert!(!text.contains(&self.basic()), "{what} contains base64(user:password)");
    }

    /// References to the registry's images held by the local engine (tags or digests).
    fn local_refs(&self) -> Vec<String> {
        let repo = format!("{}/stackctl-demo", self.registry);
        docker(&["image", "ls", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}", &repo])
            .split_whitespace()
            .filter(|r| !r.ends_with(":<none>") && !r.ends_with("@<none>"))
            .map(String::from)
            .collect()
    }

    /// Forget what earlier deploys pulled, so the next task has to pull again (untag only:
    /// the image stays under its 127.0.0.1:5000 name).
    fn forget_pulls(&self) {
        for r in self.local_refs() {
            docker(&["image", "rm", &r]);
        }
        assert_eq!(self.local_refs(), Vec::<String>::new(), "local refs of {} remain", self.registry);
    }
}

/// The environment of one stackctl run: its Docker config directory, and a directory put
/// first on PATH (credential helpers).
struct Env {
    dir: PathBuf,
    config: PathBuf,
    bin: PathBuf,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("stackctl-e2e-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (config, bin) = (dir.join("docker-config"), dir.join("bin"));
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        Env { dir, config, bin }
    }

    fn write_config(&self, json: &serde_json::Value) {
        std::fs::write(self.config.join("config.json"), serde_json::to_vec_pretty(json).unwrap()).unwrap();
    }

    fn apply(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.bin.clone()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("DOCKER_CONFIG", &self.config).env("PATH", std::env::join_paths(dirs).unwrap());
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct TestStack {
    dir: PathBuf,
    rig: Rig,
}

impl TestStack {
    fn new() -> TestStack {
        let dir = std::env::temp_dir().join(format!("stackctl-e2e-{STACK}"));
        std::fs::create_dir_all(&dir).unwrap();
        let s = TestStack { dir, rig: rig() };
        s.remove_everything();
        s.rig.forget_pulls();
        s
    }

    /// The stack file with `web` on the registry with login, at `tag` (v1 | v2).
    fn file(&self, tag: &str) -> PathBuf {
        let yaml = format!(
            r#"name: {STACK}
x-stackctl:
  proxy:
    service: proxy
    url: http://127.0.0.1:{PORT}
    listen: 8080
  keep: 1
services:
  proxy:
    image: {REGISTRY}/stackctl-nginx:latest
    ports:
      - target: 8080
        published: {PORT}
        mode: host
  web:
    image: {auth}/stackctl-demo:{tag}
    deploy:
      replicas: 2
    stop_grace_period: 2s
    x-stackctl:
      route:
        port: 80
        health: {{ path: /healthz, interval: 300ms, timeout: 2s, successes: 3, deadline: 45s }}
        drain: 1s
"#,
            auth = self.rig.registry
        );
        let path = self.dir.join("stack.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Run stackctl in `env`; every output is checked for secrets.
    fn stackctl(&self, env: &Env, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
        cmd.args(args);
        env.apply(&mut cmd);
        let out = cmd.output().expect("run stackctl");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("$ stackctl {}\n-> {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}", args.join(" "), out.status.code());
        self.rig.assert_clean(&format!("stdout of stackctl {}", args.join(" ")), &stdout);
        self.rig.assert_clean(&format!("stderr of stackctl {}", args.join(" ")), &stderr);
        out
    }

    fn deploy(&self, env: &Env, tag: &str) -> Output {
        let file = self.file(tag);
        self.stackctl(env, &["deploy", file.to_str().unwrap(), "--output", "json"])
    }

    /// A successful deploy of `tag`: exit 0, a JSON report, nginx serving it, no secret in
    /// status, the installed nginx config or the stack's Swarm configs.
    fn deploy_ok(&self, env: &Env, tag: &str) {
        let out = self.deploy(env, tag);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("deploy JSON");
        assert_eq!(report["outcome"], "deployed", "{report}");
        let image = report["switched"][0]["image"].as_str().unwrap_or_default();
        assert!(image.starts_with(&format!("{}/stackctl-demo:{tag}@sha256:", self.rig.registry)), "{report}");
        assert_eq!(self.get("/").as_deref(), Ok(tag));
        self.check_leaks(env);
    }

    fn check_leaks(&self, env: &Env) {
        let file = self.dir.join("stack.yml");
        let status = self.stackctl(env, &["status", file.to_str().unwrap(), "--output", "json"]);
        assert_eq!(status.status.code(), Some(0));
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
        assert_eq!(status["problems"].as_array().map(Vec::len), Some(0), "{status}");

        let proxy = docker(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={STACK}_proxy")]);
        let proxy = proxy.split_whitespace().next().expect("a running nginx container").to_string();
        let live = docker(&["exec", &proxy, "cat", "/etc/nginx/stackctl/live.conf"]);
        assert!(live.contains("upstream") || live.contains("server"), "live.conf looks empty: {live}");
        self.rig.assert_clean("live.conf in nginx", &live);
        let all = docker(&["exec", &proxy, "sh", "-c", "cat /etc/nginx/stackctl/* /etc/nginx/nginx.conf /etc/nginx/conf.d/*"]);
        self.rig.assert_clean("nginx configuration", &all);

        // The stack record and any other Swarm config stackctl wrote (data and labels).
        for id in docker(&["config", "ls", "-q", "--filter", &format!("label=io.stackctl.stack={STACK}")]).split_whitespace() {
            let spec = docker(&["config", "inspect", id, "--format", "{{json .Spec}}"]);
            self.rig.assert_clean(&format!("Swarm config {id}"), &spec);
            let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
            let data = base64::engine::general_purpose::STANDARD.decode(spec["Data"].as_str().unwrap_or_default()).unwrap();
            self.rig.assert_clean(&format!("data of Swarm config {id}"), &String::from_utf8_lossy(&data));
        }
    }

    fn get(&self, path: &str) -> Result<String, String> {
        let probe = Probe {
            authority: format!("127.0.0.1:{PORT}"),
            path: path.into(),
            host: None,
            headers: vec![],
            timeout: Duration::from_secs(3),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(probe.send())?;
        if r.status == 200 { Ok(r.body) } else { Err(format!("HTTP {}: {}", r.status, r.body)) }
    }

    fn services(&self) -> Vec<String> {
        let out = docker(&["service", "ls", "--filter", &format!("label=io.stackctl.stack={STACK}"), "--format", "{{.Name}}"]);
        let mut v: Vec<String> = out.lines().map(String::from).collect();
        v.sort();
        v
    }

    fn remove_everything(&self) {
        let label = format!("label=io.stackctl.stack={STACK}");
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
        docker(&["volume", "rm", "-f", &format!("{STACK}_stackctl-proxy")]);
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.remove_everything();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images, the registry with login on 127.0.0.1:5001 (tests/rig/setup.sh); run tests/run-all.sh"]
fn auths_in_docker_config_let_swarm_pull_from_the_registry_with_login() {
    let _g = serial();
    let s = TestStack::new();
    // The rig's password is built so that the standard base64 of the X-Registry-Auth JSON has
    // '+' and '/', which the engine (base64url) would silently drop.
    let json = format!(r#"{{"username":"{}","password":"{}""#, s.rig.user, s.rig.password);
    let standard = base64::engine::general_purpose::STANDARD.encode(&json);
    assert!(standard.contains('+') || standard.contains('/'), "the rig password does not exercise base64url");

    let env = Env::new("auths");
    env.write_config(&serde_json::json!({ "auths": { &s.rig.registry: { "auth": s.rig.basic() } } }));
    s.deploy_ok(&env, "v1");
    let pulled = s.rig.local_refs();
    assert!(!pulled.is_empty(), "Swarm pulled nothing from {}", s.rig.registry);
    eprintln!("pulled by Swarm with the credentials: {pulled:?}");

    s.deploy_ok(&env, "v2");
    assert_eq!(s.services(), vec![format!("{STACK}_proxy"), format!("{STACK}_web-r1"), format!("{STACK}_web-r2")]);
    assert!(s.rig.local_refs().len() > pulled.len(), "v2 was pulled too: {:?}", s.rig.local_refs());
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images, the registry with login on 127.0.0.1:5001 (tests/rig/setup.sh); run tests/run-all.sh"]
fn without_credentials_the_deploy_is_refused_with_a_docker_login_hint() {
    let _g = serial();
    let s = TestStack::new();
    let env = Env::new("none"); // an empty DOCKER_CONFIG directory: no config.json
    let out = s.deploy(&env, "v1");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("docker login {}", s.rig.registry)), "{err}");
    assert!(err.contains(&env.config.join("config.json").display().to_string()), "names the config it read: {err}");
    assert!(s.services().is_empty(), "nothing deployed: {:?}", s.services());
    let nets = docker(&["network", "ls", "-q", "--filter", &format!("label=io.stackctl.stack={STACK}")]);
    assert!(nets.trim().is_empty(), "no networks: {nets}");
    let configs = docker(&["config", "ls", "--format", "{{.Name}}", "--filter", &format!("label=io.stackctl.stack={STACK}")]);
    assert!(configs.lines().all(|c| c == format!("{STACK}_stackctl-record")), "only the lock's record: {configs}");

    // Wrong credentials: refused too, saying they were rejected.
    env.write_config(&serde_json::json!({ "auths": { &s.rig.registry: {
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("{}:not-the-password", s.rig.user)) } } }));
    let out = s.deploy(&env, "v1");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected the credentials") && err.contains(&format!("docker login {}", s.rig.registry)), "{err}");
    assert!(s.services().is_empty());
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images, the registry with login on 127.0.0.1:5001 (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_credential_helper_supplies_the_login() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let s = TestStack::new();
    let env = Env::new("helper");
    let asked = env.dir.join("helper-asked-for");
    // Answers for the rig registry only, like docker-credential-pass & co; records what it was asked.
    let helper = env.bin.join("docker-credential-stackctltest");
    std::fs::write(
        &helper,
        format!(
            r#"#!/bin/sh
[ "$1" = get ] || exit 1
server=$(cat)
printf '%s\n' "$server" >>'{asked}'
if [ "$server" = '{registry}' ]; then
  printf '{{"ServerURL":"%s","Username":"%s","Secret":"%s"}}\n' "$server" '{user}' "$(cat '{password_file}')"
else
  echo "credentials not found in native keychain"; exit 1
fi
"#,
            asked = asked.display(),
            registry = s.rig.registry,
            user = s.rig.user,
            password_file = s.rig.password_file.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A stale `auths` entry must not matter: the helper is asked first (as the CLI does).
    env.write_config(&serde_json::json!({
        "auths": { &s.rig.registry: {} },
        "credHelpers": { &s.rig.registry: "stackctltest" }
    }));
    s.deploy_ok(&env, "v1");
    assert!(!s.rig.local_refs().is_empty(), "Swarm pulled nothing from {}", s.rig.registry);
    let asked = std::fs::read_to_string(&asked).unwrap();
    // Once per registry per process: the resolve, the green service and its later updates share it.
    assert_eq!(asked.lines().filter(|l| *l == s.rig.registry).count(), 1, "helper calls: {asked}");
}
