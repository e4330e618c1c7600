//! End to end with a registry that requires a login: the real `stackctl` binary deploys an
//! image from 127.0.0.1:5001 (htpasswd, set up by `tests/rig/setup.sh`; the proxy image stays
//! on the open registry 127.0.0.1:5000), with credentials from a throwaway `DOCKER_CONFIG`:
//! `auths`, none at all, and a credential helper. Every output stackctl produces, the nginx
//! config it installs and the stack record are searched for the password and for its base64
//! `user:password` form.
//!
//! Swarm must really pull with the credentials: the engine keeps the manifests it has pulled,
//! and a task pulling a digest the engine already knows runs without any login. So the tests
//! that deploy push images nobody has pulled yet (the demo image of a version plus a unique
//! label, pushed with a throwaway login, removed from the engine, deleted from the registry
//! afterwards), and check that the engine pulled them. `#[ignore]`d like tests/e2e.rs; run by
//! tests/run-all.sh.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::{docker, docker_maybe, serial, REGISTRY};

use base64::Engine as _;


/// The open registry (proxy image).
const STACK: &str = "e2eauth";
const PORT: u16 = 18090;

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

    /// `curl` with the registry's login (given on stdin, not in the process list).
    fn curl(&self, args: &[&str]) -> String {
        use std::io::Write;
        let mut child = Command::new("curl")
            .args(["-s", "-K", "-"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "user = \"{}:{}\"", self.user, self.password).unwrap();
        drop(stdin);
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    }

    /// Push an image nobody has pulled: `127.0.0.1:5000/stackctl-demo:<version>` plus a unique
    /// label, as `<registry>/stackctl-demo:<version>-<nonce>`. Nothing of it stays in the
    /// engine but the shared layers: a task needs the registry (and so the login) for it.
    fn push_fresh(&self, version: &str) -> String {
        use std::io::Write;
        let nonce = format!("{}x{}", std::process::id(), now_nanos());
        let image = format!("{}/stackctl-demo:{version}-e2e{nonce}", self.registry);
        let login = Env::new(&format!("push-{nonce}"));
        let run = |args: &[&str], input: &str| {
            let mut child = Command::new("docker")
                .args(args)
                .env("DOCKER_BUILDKIT", "0") // the classic builder: offline, no buildx needed
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("docker CLI");
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        };
        let config = login.config.to_str().unwrap();
        run(&["--config", config, "login", "-u", &self.user, "--password-stdin", &self.registry], &self.password);
        run(&["build", "-q", "-t", &image, "-"], &format!("FROM {REGISTRY}/stackctl-demo:{version}\nLABEL io.stackctl.test.nonce={nonce}\n"));
        run(&["--config", config, "push", "-q", &image], "");
        run(&["image", "rm", &image], "");
        image
    }

    /// The manifest digest of `image` in the registry.
    fn digest(&self, image: &str) -> Option<String> {
        let (repo, tag) = image.strip_prefix(&format!("{}/", self.registry))?.split_once(':')?;
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.registry);
        let head = self.curl(&["-I", "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json", &url]);
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest").then(|| v.trim().to_string())
        })
    }

    /// Delete the images [`Rig::push_fresh`] pushed from the registry (best effort).
    fn delete_fresh(&self, images: &[String]) {
        for image in images {
            if let Some(digest) = self.digest(image) {
                let repo = image.strip_prefix(&format!("{}/", self.registry)).unwrap().split(':').next().unwrap();
                self.curl(&["-X", "DELETE", &format!("http://{}/v2/{repo}/manifests/{digest}", self.registry)]);
            }
        }
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

    /// Remove what earlier deploys pulled from the registry. Best effort: an image stays while
    /// a container of a removed service still uses it, for up to 20 s.
    fn forget_pulls(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for r in self.local_refs() {
                // Refused while a stopping container still uses it: tried again below.
                let _ = docker_maybe(&["image", "rm", &r]);
            }
            if self.local_refs().is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
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
    /// Images pushed for this test, deleted from the registry at the end.
    pushed: Vec<String>,
}

impl TestStack {
    fn new() -> TestStack {
        let dir = std::env::temp_dir().join(format!("stackctl-e2e-{STACK}"));
        std::fs::create_dir_all(&dir).unwrap();
        let s = TestStack { dir, rig: rig(), pushed: Vec::new() };
        s.remove_everything();
        s.rig.forget_pulls();
        s
    }

    /// A never-pulled image of `version` on the registry with login.
    fn fresh(&mut self, version: &str) -> String {
        let image = self.rig.push_fresh(version);
        self.pushed.push(image.clone());
        let digest = self.rig.digest(&image).expect("pushed image in the registry");
        let known = self.rig.local_refs();
        assert!(!known.iter().any(|r| r.ends_with(&digest)), "{image} still known to the engine: {known:?}");
        image
    }

    /// The stack file with `web` at `image`.
    fn file(&self, image: &str) -> PathBuf {
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
    image: {image}
    deploy:
      replicas: 2
    stop_grace_period: 2s
    x-stackctl:
      route:
        port: 80
        health: {{ path: /healthz, interval: 300ms, timeout: 2s, successes: 3, deadline: 45s }}
        drain: 1s
"#
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

    fn deploy(&self, env: &Env, image: &str) -> Output {
        let file = self.file(image);
        self.stackctl(env, &["deploy", file.to_str().unwrap(), "--output", "json"])
    }

    /// A successful deploy of `image` (of `version`): exit 0, a JSON report, the engine pulled
    /// the image, nginx serves it, and no secret in status, the installed nginx config or the
    /// stack's Swarm configs.
    fn deploy_ok(&self, env: &Env, image: &str, version: &str) {
        let out = self.deploy(env, image);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("deploy JSON");
        assert_eq!(report["outcome"], "deployed", "{report}");
        let pinned = report["switched"][0]["image"].as_str().unwrap_or_default();
        assert!(pinned.starts_with(&format!("{image}@sha256:")), "{report}");
        let digest = pinned.rsplit('@').next().unwrap();
        let pulled = self.rig.local_refs();
        assert!(pulled.iter().any(|r| r.ends_with(digest)), "Swarm did not pull {pinned}: {pulled:?}");
        assert_eq!(self.get("/").as_deref(), Ok(version));
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
        let all = docker(&["exec", &proxy, "sh", "-c", "for f in /etc/nginx/stackctl/* /etc/nginx/stackctl/.[!.]* /etc/nginx/nginx.conf /etc/nginx/conf.d/*; do if [ -f \"$f\" ]; then cat \"$f\"; fi; done"]);
        self.rig.assert_clean("nginx configuration", &all);

        // The stack record and any other Swarm config stackctl wrote (data and labels).
        let configs = docker(&["config", "ls", "-q", "--filter", &format!("label=io.stackctl.stack={STACK}")]);
        assert!(!configs.trim().is_empty(), "no Swarm config of {STACK} to search: the stack record at least is one");
        for id in configs.split_whitespace() {
            let spec = docker(&["config", "inspect", id, "--format", "{{json .Spec}}"]);
            self.rig.assert_clean(&format!("Swarm config {id}"), &spec);
            let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
            let data = base64::engine::general_purpose::STANDARD.decode(spec["Data"].as_str().unwrap_or_default()).unwrap();
            self.rig.assert_clean(&format!("data of Swarm config {id}"), &String::from_utf8_lossy(&data));
        }
    }

    fn get(&self, path: &str) -> Result<String, String> {
        common::get(PORT, path)
    }

    fn services(&self) -> Vec<String> {
        common::services(STACK)
    }

    fn remove_everything(&self) {
        common::remove_stack(STACK);
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.remove_everything();
            self.rig.forget_pulls();
        }
        self.rig.delete_fresh(&self.pushed);
    }
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images, the registry with login on 127.0.0.1:5001 (tests/rig/setup.sh); run tests/run-all.sh"]
fn auths_in_docker_config_let_swarm_pull_from_the_registry_with_login() {
    let _g = serial();
    let mut s = TestStack::new();
    let (v1, v2) = (s.fresh("v1"), s.fresh("v2"));
    // The rig's password is built so that the standard base64 of the X-Registry-Auth JSON has
    // '+' and '/', which the engine (base64url) would silently drop.
    let json = format!(r#"{{"username":"{}","password":"{}""#, s.rig.user, s.rig.password);
    let standard = base64::engine::general_purpose::STANDARD.encode(&json);
    assert!(standard.contains('+') || standard.contains('/'), "the rig password does not exercise base64url");

    let env = Env::new("auths");
    env.write_config(&serde_json::json!({ "auths": { &s.rig.registry: { "auth": s.rig.basic() } } }));
    s.deploy_ok(&env, &v1, "v1");
    s.deploy_ok(&env, &v2, "v2");
    assert_eq!(s.services(), vec![format!("{STACK}_proxy"), format!("{STACK}_web-r1"), format!("{STACK}_web-r2")]);
    eprintln!("pulled by Swarm with the credentials: {:?}", s.rig.local_refs());
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images, the registry with login on 127.0.0.1:5001 (tests/rig/setup.sh); run tests/run-all.sh"]
fn without_credentials_the_deploy_is_refused_with_a_docker_login_hint() {
    let _g = serial();
    let s = TestStack::new();
    let env = Env::new("none"); // an empty DOCKER_CONFIG directory: no config.json
    let image = format!("{}/stackctl-demo:v1", s.rig.registry);
    let out = s.deploy(&env, &image);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("docker login {}", s.rig.registry)), "{err}");
    assert!(err.contains(&env.config.join("config.json").display().to_string()), "names the config it read: {err}");
    assert!(s.services().is_empty(), "nothing deployed: {:?}", s.services());
    let nets = docker(&["network", "ls", "-q", "--filter", &format!("label=io.stackctl.stack={STACK}")]);
    assert!(nets.trim().is_empty(), "no networks: {nets}");
    let configs = docker(&["config", "ls", "--format", "{{.Name}}", "--filter", &format!("label=io.stackctl.stack={STACK}")]);
    // The refused deploy is in the release history (after the lock, so it is recorded).
    let ours = |c: &str| c == format!("{STACK}_stackctl-record") || c.starts_with(&format!("{STACK}_stackctl-history-"));
    assert!(configs.lines().all(ours), "only the lock's record and the history: {configs}");

    // Wrong credentials: refused too, saying they were rejected.
    env.write_config(&serde_json::json!({ "auths": { &s.rig.registry: {
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("{}:not-the-password", s.rig.user)) } } }));
    let out = s.deploy(&env, &image);
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
    let mut s = TestStack::new();
    let v1 = s.fresh("v1");
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
    s.deploy_ok(&env, &v1, "v1");
    let asked = std::fs::read_to_string(&asked).unwrap();
    // Once per registry per process: the resolve, the green service and its later updates share it.
    assert_eq!(asked.lines().filter(|l| *l == s.rig.registry).count(), 1, "helper calls: {asked}");
}
