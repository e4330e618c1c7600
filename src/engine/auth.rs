//! Registry credentials, found where the Docker CLI finds them.
//!
//! stackctl reads the user's Docker CLI config, so `docker login <registry>` is all a user
//! does: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (a missing file means no
//! credentials). For a registry the lookup is the CLI's:
//!
//! 1. a credential helper: `credHelpers.<registry>`, else `credsStore`; the helper
//!    `docker-credential-<name>` is run with `get` and the registry on stdin. "credentials not
//!    found" means no credentials (the entry under `auths` is then only a marker, as `docker
//!    login` writes it).
//! 2. otherwise `auths.<registry>`: `auth` (base64 `user:password`), or `username`/`password`,
//!    plus `identitytoken`/`registrytoken`. A key written as a URL (`https://host/v1/`)
//!    matches its host, as in the CLI; an exact key wins.
//!
//! The registry of an image is its host (`127.0.0.1:5001/x:y` → `127.0.0.1:5001`); an image
//! without one is on Docker Hub, whose key is [`DOCKER_HUB`].
//!
//! Secrets never reach a message: [`Credentials`] prints `***` for them (`{:?}` included),
//! errors name files, keys and helpers but never quote config values or helper output, and
//! the raw [`DockerCredentials`] is only handed to bollard by the engine.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

/// The config key and server address the Docker CLI uses for Docker Hub.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// What a credential helper prints (on stdout, exiting non-zero) when it has nothing stored.
const HELPER_NOT_FOUND: &str = "credentials not found";

/// The username a credential helper returns when its secret is an identity token.
const TOKEN_USERNAME: &str = "<token>";

/// Why credentials could not be looked up. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the Docker config {path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error(
        "credential helper docker-credential-{helper} (`{setting}` in {config}) failed for {registry}: {detail}"
    )]
    Helper { helper: String, setting: String, config: PathBuf, registry: String, detail: String },
}

/// Credentials for one registry. `Debug` and `Display` show who and where, never the secret.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    inner: DockerCredentials,
    /// Where they came from, for messages: `auths."…" in /path/config.json` or a helper.
    source: String,
}

impl Credentials {
    /// The registry (config key) these are for; the Docker API's `serveraddress`.
    pub fn registry(&self) -> &str {
        self.inner.serveraddress.as_deref().unwrap_or_default()
    }

    pub fn username(&self) -> Option<&str> {
        self.inner.username.as_deref().filter(|u| !u.is_empty())
    }

    /// True when the secret is an identity (OAuth refresh) token rather than a password.
    pub fn is_identity_token(&self) -> bool {
        self.inner.identitytoken.as_deref().is_some_and(|t| !t.is_empty())
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The raw credentials, for bollard's `X-Registry-Auth` header and nothing else.
    pub(in crate::engine) fn to_docker(&self) -> DockerCredentials {
        self.inner.clone()
    }
}

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("registry", &self.registry())
            .field("username", &self.inner.username)
            .field("password", &redacted(&self.inner.password))
            .field("identitytoken", &redacted(&self.inner.identitytoken))
            .field("registrytoken", &redacted(&self.inner.registrytoken))
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self.username().unwrap_or(if self.is_identity_token() { "<identity token>" } else { "<token>" });
        write!(f, "{who} at {} (secret ***, from {})", self.registry(), self.source)
    }
}

/// The config key of an image's registry: its host, or [`DOCKER_HUB`] for Docker Hub.
///
/// Follows the reference grammar the CLI uses: the part before the first `/` is a host when it
/// contains `.` or `:`, is `localhost`, or has upper-case letters; `docker.io` and
/// `index.docker.io` are Docker Hub.
pub fn registry_key(image: &str) -> String {
    let domain = match image.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            first
        }
        _ => "docker.io",
    };
    match domain {
        "docker.io" | "index.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// The `docker login` command for a registry key (no argument for Docker Hub).
pub fn login_command(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "docker login".to_string()
    } else {
        format!("docker login {registry}")
    }
}

/// A config key as a host: without `http://`/`https://` and anything after the host, which is
/// how the CLI matches keys written by old clients (`https://host/v1/`).
fn key_host(key: &str) -> &str {
    let stripped = key.strip_prefix("http://").or_else(|| key.strip_prefix("https://")).unwrap_or(key);
    stripped.split('/').next().unwrap_or(stripped)
}

/// The Docker CLI config directory: `$DOCKER_CONFIG`, else `<home>/.docker`.
pub fn config_dir(docker_config: Option<OsString>, home: Option<PathBuf>) -> Option<PathBuf> {
    match docker_config.filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => home.filter(|h| !h.as_os_str().is_empty()).map(|h| h.join(".docker")),
    }
}

/// Where credentials are looked up: a Docker CLI config directory, and the search path for
/// credential helpers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    dir: Option<PathBuf>,
    helper_path: Option<OsString>,
    /// How long a credential helper may take before it is killed; an error when
    /// [`HELPER_TIMEOUT_VAR`] does not parse (reported when a helper is needed).
    helper_timeout: Result<Duration, String>,
}

/// Environment variable that sets how long a credential helper may take (`30s`, `2s`).
pub const HELPER_TIMEOUT_VAR: &str = "STACKCTL_CREDENTIAL_HELPER_TIMEOUT";

/// A helper may prompt for a keychain or a hardware key, so it gets some time; but it runs
/// while the deploy lock is held, so never forever.
pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Most a helper may print; credentials are a few hundred bytes.
const HELPER_OUTPUT_LIMIT: u64 = 1 << 20;

/// `docker-credential-<name>`: names as the docker CLI accepts them, so a config value cannot
/// name a path.
fn check_helper_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Ok(())
    } else {
        Err("the helper name may contain only letters, digits, '.', '_' and '-' (as for the docker CLI)".into())
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: Option<BTreeMap<String, Option<AuthEntry>>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
}

/// One `auths` entry. No `Debug`: it holds secrets.
#[derive(Deserialize, Default, Clone)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// What `docker-credential-* get` prints. No `Debug`: it holds the secret.
#[derive(Deserialize)]
struct HelperCredentials {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl DockerConfig {
    /// As the Docker CLI finds it: `$DOCKER_CONFIG`, else `$HOME/.docker`; helpers on `$PATH`.
    pub fn from_env() -> DockerConfig {
        let home = std::env::var_os("HOME").map(PathBuf::from).or_else(std::env::home_dir);
        let helper_timeout = match std::env::var(HELPER_TIMEOUT_VAR) {
            Ok(text) => crate::cli::parse_duration(&text)
                .map_err(|e| format!("{HELPER_TIMEOUT_VAR}: {e}"))
                .and_then(|d| if d.is_zero() { Err(format!("{HELPER_TIMEOUT_VAR} must be more than 0")) } else { Ok(d) }),
            Err(_) => Ok(DEFAULT_HELPER_TIMEOUT),
        };
        DockerConfig { dir: config_dir(std::env::var_os("DOCKER_CONFIG"), home), helper_path: std::env::var_os("PATH"), helper_timeout }
    }

    /// An explicit config directory, and where to find credential helpers (`None`: `$PATH`).
    pub fn new(dir: impl Into<PathBuf>, helper_path: Option<OsString>) -> DockerConfig {
        DockerConfig { dir: Some(dir.into()), helper_path, helper_timeout: Ok(DEFAULT_HELPER_TIMEOUT) }
    }

    /// The same, with helpers killed after `timeout`.
    pub fn with_helper_timeout(self, timeout: Duration) -> DockerConfig {
        DockerConfig { helper_timeout: Ok(timeout), ..self }
    }

    /// The config file read (it need not exist).
    pub fn file(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("config.json"))
    }

    /// A description for messages: the config file, or why there is none.
    pub fn describe(&self) -> String {
        match self.file() {
            Some(f) => f.display().to_string(),
            None => "no Docker config (neither DOCKER_CONFIG nor HOME is set)".to_string(),
        }
    }

    /// Credentials for the registry of `image`.
    pub fn credentials_for_image(&self, image: &str) -> Result<Option<Credentials>, AuthError> {
        self.credentials(&registry_key(image))
    }

    /// Credentials for a registry key (a host such as `127.0.0.1:5001`, or [`DOCKER_HUB`]).
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        let Some(path) = self.file() else { return Ok(None) };
        let Some(config) = read_config(&path)? else { return Ok(None) };
        let helper = config
            .cred_helpers
            .as_ref()
            .and_then(|h| h.get(registry))
            .map(|h| (h.clone(), format!("credHelpers.\"{registry}\"")))
            .or_else(|| config.creds_store.clone().map(|s| (s, "credsStore".to_string())))
            .filter(|(h, _)| !h.is_empty());
        if let Some((helper, setting)) = helper {
            return self.ask_helper(&helper, &setting, &path, registry);
        }
        let auths = config.auths.unwrap_or_default();
        let found = auths.get_key_value(registry).or_else(|| auths.iter().find(|(k, _)| key_host(k) == registry));
        let Some((key, Some(entry))) = found else { return Ok(None) };
        let entry = entry.clone();
        let (mut username, mut password) = (non_empty(entry.username), non_empty(entry.password));
        if let Some(auth) = non_empty(entry.auth) {
            let (u, p) = decode_auth(&auth).ok_or_else(|| AuthError::Config {
                path: path.clone(),
                detail: format!("auths.\"{key}\".auth is not base64 of `user:password`"),
            })?;
            (username, password) = (non_empty(Some(u)), non_empty(Some(p)));
        }
        let creds = DockerCredentials {
            username,
            password,
            identitytoken: non_empty(entry.identitytoken),
            registrytoken: non_empty(entry.registrytoken),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        };
        Ok(usable(creds, format!("auths.\"{key}\" in {}", path.display())))
    }

    fn ask_helper(&self, helper: &str, setting: &str, config: &Path, registry: &str) -> Result<Option<Credentials>, AuthError> {
        let fail = |detail: String| AuthError::Helper {
            helper: helper.to_string(),
            setting: setting.to_string(),
            config: config.to_path_buf(),
            registry: registry.to_string(),
            detail,
        };
        check_helper_name(helper).map_err(fail)?;
        let timeout = self.helper_timeout.clone().map_err(fail)?;
        let program = format!("docker-credential-{helper}");
        let path = self.helper_path.clone().or_else(|| std::env::var_os("PATH")).unwrap_or_default();
        let exe = find_program(&program, &path).ok_or_else(|| fail(format!("{program} is not on PATH")))?;
        let out = run_helper(&exe, registry, timeout).map_err(|e| {
            fail(match e {
                HelperRun::TimedOut => format!(
                    "it did not answer within {timeout:?} and was killed; is it waiting for a keychain or a prompt? \
                     Run `{program} get` with {registry} on stdin to see, or set {HELPER_TIMEOUT_VAR} (e.g. 2m)"
                ),
                HelperRun::Failed(e) => format!("cannot run {}: {e}", exe.display()),
            })
        })?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stdout);
            if said.trim().to_ascii_lowercase().contains(HELPER_NOT_FOUND) {
                return Ok(None);
            }
            // Its output is not shown: a helper may print anything, the secret included.
            return Err(fail(format!(
                "{} (output not shown; run `{program} get` with {registry} on stdin to see it)",
                out.status
            )));
        }
        let got: HelperCredentials = serde_json::from_slice(&out.stdout)
            .map_err(|_| fail("it printed something that is not {\"Username\",\"Secret\"} JSON (not shown)".into()))?;
        let mut creds = DockerCredentials { serveraddress: Some(registry.to_string()), ..Default::default() };
        if got.username == TOKEN_USERNAME {
            creds.identitytoken = non_empty(Some(got.secret));
        } else {
            creds.username = non_empty(Some(got.username));
            creds.password = non_empty(Some(got.secret));
        }
        Ok(usable(creds, format!("credential helper {program} ({setting} in {})", config.display())))
    }
}

/// Why a helper gave no output.
enum HelperRun {
    TimedOut,
    Failed(std::io::Error),
}

/// Run `exe get` with `registry` on stdin, in a process group of its own so that the helper
/// and anything it started are killed when it takes longer than `timeout`.
fn run_helper(exe: &Path, registry: &str, timeout: Duration) -> Result<std::process::Output, HelperRun> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(HelperRun::Failed)?;
    // Killing the group while the helper is not yet reaped: its id cannot have been reused.
    let kill_group = |child: &mut std::process::Child| {
        let group = libc::pid_t::try_from(child.id()).unwrap_or(0);
        if group > 0 {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is judged by its exit status below.
        let _ = stdin.write_all(registry.as_bytes());
    }
    // Read on a thread, so a helper that prints much and one that never ends are both bounded.
    let (sent, received) = std::sync::mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.take(HELPER_OUTPUT_LIMIT).read_to_end(&mut buf);
            let _ = sent.send(buf);
        });
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                return Err(HelperRun::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill_group(&mut child);
                return Err(HelperRun::Failed(e));
            }
        }
    };
    // The helper ended; something it started may still hold its stdout open.
    let stdout = received.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|_| {
        let group = libc::pid_t::try_from(child.id()).unwrap_or(0);
        if group > 0 {
            // SAFETY: as above; the group outlives its leader while a member holds the pipe.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        HelperRun::TimedOut
    })?;
    Ok(std::process::Output { status, stdout, stderr: Vec::new() })
}

/// `None` when there is nothing to authenticate with (e.g. the empty `auths` marker entry).
fn usable(creds: DockerCredentials, source: String) -> Option<Credentials> {
    let any = [&creds.username, &creds.password, &creds.identitytoken, &creds.registrytoken].iter().any(|v| v.is_some());
    any.then_some(Credentials { inner: creds, source })
}

/// The config file; `None` when it does not exist or is empty.
fn read_config(path: &Path) -> Result<Option<ConfigFile>, AuthError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuthError::Config { path: path.to_path_buf(), detail: e.to_string() }),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // serde_json's messages can quote values (secrets); say only where and what kind.
    serde_json::from_slice::<ConfigFile>(&text).map(Some).map_err(|e| AuthError::Config {
        path: path.to_path_buf(),
        detail: format!("invalid at line {} column {} ({:?} error; values not shown)", e.line(), e.column(), e.classify()),
    })
}

/// `auth` as the CLI decodes it: standard base64 of `user:password` (NULs trimmed).
fn decode_auth(auth: &str) -> Option<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64.decode(auth.trim()).or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim())).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.trim_matches('\0').to_string()))
}

/// An executable `name` in one of the directories of `path`.
fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // Relative entries (`.`, `bin`, an empty one) would run whatever the current directory holds.
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    const PASSWORD: &str = "s3cr3t~?~?~?pw";
    const TOKEN: &str = "tok-ABCDEF-123";

    /// Writing a script while another test thread forks can make its exec fail with ETXTBSY;
    /// tests that write or run helpers take this lock.
    static SPAWN: Mutex<()> = Mutex::new(());

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir()
                .join(format!("stackctl-auth-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn config(&self, json: &str) -> DockerConfig {
            std::fs::write(self.0.join("config.json"), json).unwrap();
            DockerConfig::new(&self.0, Some(self.0.join("bin").into_os_string()))
        }
        /// A fake `docker-credential-<name>` in `<dir>/bin` running `body` (sh).
        fn helper(&self, name: &str, body: &str) {
            use std::os::unix::fs::PermissionsExt;
            let bin = self.0.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let path = bin.join(format!("docker-credential-{name}"));
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn lookup(cfg: &DockerConfig, registry: &str) -> Option<DockerCredentials> {
        cfg.credentials(registry).unwrap().map(|c| c.to_docker())
    }

    #[test]
    fn registry_of_an_image_is_its_host_or_docker_hub() {
        for (image, key) in [
            ("127.0.0.1:5001/stackctl-demo:v1", "127.0.0.1:5001"),
            ("127.0.0.1:5001/stackctl-demo:v1@sha256:abcd", "127.0.0.1:5001"),
            ("localhost/app", "localhost"),
            ("localhost:5000/a/b:1", "localhost:5000"),
            ("registry.example.com/team/app/web:2", "registry.example.com"),
            ("Upper/app", "Upper"),
            ("nginx", DOCKER_HUB),
            ("nginx:1.25@sha256:abcd", DOCKER_HUB),
            ("library/nginx", DOCKER_HUB),
            ("myorg/app:1", DOCKER_HUB),
            ("docker.io/myorg/app", DOCKER_HUB),
            ("index.docker.io/myorg/app", DOCKER_HUB),
        ] {
            assert_eq!(registry_key(image), key, "{image}");
        }
        assert_eq!(login_command("127.0.0.1:5001"), "docker login 127.0.0.1:5001");
        assert_eq!(login_command(DOCKER_HUB), "docker login");
    }

    #[test]
    fn config_dir_is_docker_config_else_home_dot_docker() {
        assert_eq!(config_dir(Some("/x/cfg".into()), Some("/home/u".into())), Some(PathBuf::from("/x/cfg")));
        assert_eq!(config_dir(Some("".into()), Some("/home/u".into())), Some(PathBuf::from("/home/u/.docker")));
        assert_eq!(config_dir(None, Some("/home/u".into())), Some(PathBuf::from("/home/u/.docker")));
        assert_eq!(config_dir(None, None), None);
    }

    #[test]
    fn missing_or_empty_config_means_no_credentials() {
        let d = TempDir::new();
        let cfg = DockerConfig::new(&d.0, None);
        assert!(cfg.credentials("127.0.0.1:5001").unwrap().is_none());
        let cfg = d.config("  \n");
        assert!(cfg.credentials("127.0.0.1:5001").unwrap().is_none());
        let cfg = d.config(r#"{"auths": {"127.0.0.1:5001": {}}, "credHelpers": null}"#);
        assert!(cfg.credentials("127.0.0.1:5001").unwrap().is_none(), "the empty marker entry is no credentials");
        assert!(cfg.credentials("127.0.0.1:5002").unwrap().is_none());
    }

    #[test]
    fn auths_auth_field_is_base64_user_colon_password() {
        let d = TempDir::new();
        let cfg = d.config(&format!(r#"{{"auths": {{"127.0.0.1:5001": {{"auth": "{}", "email": "x@y"}}}}}}"#, b64(&format!("stackctl:{PASSWORD}"))));
        let c = lookup(&cfg, "127.0.0.1:5001").unwrap();
        assert_eq!(c.username.as_deref(), Some("stackctl"));
        assert_eq!(c.password.as_deref(), Some(PASSWORD));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5001"));
        assert_eq!(c.identitytoken, None);
        // A password may contain ':'; only the first one separates.
        let cfg = d.config(&format!(r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#, b64("u:a:b")));
        assert_eq!(lookup(&cfg, "r.example").unwrap().password.as_deref(), Some("a:b"));
    }

    #[test]
    fn auths_username_password_and_identity_token() {
        let d = TempDir::new();
        let cfg = d.config(&format!(
            r#"{{"auths": {{
                "127.0.0.1:5001": {{"username": "stackctl", "password": "{PASSWORD}"}},
                "tok.example": {{"auth": "{}", "identitytoken": "{TOKEN}"}},
                "only-token.example": {{"identitytoken": "{TOKEN}"}}
            }}}}"#,
            b64("someone:")
        ));
        let c = lookup(&cfg, "127.0.0.1:5001").unwrap();
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("stackctl"), Some(PASSWORD)));
        let c = lookup(&cfg, "tok.example").unwrap();
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("someone"), None));
        assert_eq!(c.identitytoken.as_deref(), Some(TOKEN));
        let c = cfg.credentials("only-token.example").unwrap().unwrap();
        assert!(c.is_identity_token());
        assert_eq!(c.username(), None);
    }

    #[test]
    fn keys_with_scheme_or_path_match_the_host_and_an_exact_key_wins() {
        let d = TempDir::new();
        let cfg = d.config(&format!(
            r#"{{"auths": {{
                "https://r1.example/v1/": {{"auth": "{}"}},
                "http://127.0.0.1:5001": {{"auth": "{}"}},
                "r2.example/some/path": {{"auth": "{}"}},
                "https://r3.example": {{"auth": "{}"}},
                "r3.example": {{"auth": "{}"}},
                "{DOCKER_HUB}": {{"auth": "{}"}}
            }}}}"#,
            b64("u1:p1"),
            b64("u2:p2"),
            b64("u3:p3"),
            b64("url:wrong"),
            b64("exact:right"),
            b64("hub:hubpw"),
        ));
        assert_eq!(lookup(&cfg, "r1.example").unwrap().username.as_deref(), Some("u1"));
        assert_eq!(lookup(&cfg, "127.0.0.1:5001").unwrap().username.as_deref(), Some("u2"));
        assert_eq!(lookup(&cfg, "r2.example").unwrap().username.as_deref(), Some("u3"));
        assert_eq!(lookup(&cfg, "r3.example").unwrap().username.as_deref(), Some("exact"));
        let hub = cfg.credentials_for_image("nginx:1").unwrap().unwrap();
        assert_eq!((hub.username(), hub.registry()), (Some("hub"), DOCKER_HUB));
        // The port is part of the host.
        assert!(cfg.credentials("127.0.0.1:5000").unwrap().is_none());
        assert!(cfg.credentials("127.0.0.1").unwrap().is_none());
    }

    #[test]
    fn broken_configs_are_errors_that_quote_nothing() {
        let d = TempDir::new();
        let cfg = d.config(&format!(r#"{{"auths": {{"r.example": "{PASSWORD}"}}}}"#));
        let e = cfg.credentials("r.example").unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("line 1"), "{e}");
        assert!(!e.contains(PASSWORD), "{e}");
        let cfg = d.config(&format!(r#"{{"auths": {{"r.example": {{"auth": "{PASSWORD}"}}}}}}"#));
        let e = cfg.credentials("r.example").unwrap_err().to_string();
        assert!(e.contains("auths.\"r.example\".auth"), "{e}");
        assert!(!e.contains(PASSWORD), "{e}");
        let cfg = d.config(&format!(r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#, b64(PASSWORD)));
        let e = cfg.credentials("r.example").unwrap_err().to_string();
        assert!(!e.contains(PASSWORD) && !e.contains(&b64(PASSWORD)), "{e}");
    }

    /// A helper that checks the server address on stdin and answers like the real ones.
    fn fake_helper(d: &TempDir, name: &str) {
        d.helper(
            name,
            &format!(
                r#"[ "$1" = get ] || {{ echo "unknown action $1"; exit 1; }}
server=$(cat)
case "$server" in
  127.0.0.1:5001) echo '{{"ServerURL":"127.0.0.1:5001","Username":"stackctl","Secret":"{PASSWORD}"}}' ;;
  tok.example) echo '{{"ServerURL":"tok.example","Username":"<token>","Secret":"{TOKEN}"}}' ;;
  broken.example) echo "oops, here is {PASSWORD}"; exit 3 ;;
  garbage.example) echo "{PASSWORD}" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac"#
            ),
        );
    }

    #[test]
    fn cred_helpers_and_creds_store_run_the_helper() {
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let d = TempDir::new();
        fake_helper(&d, "stackctltest");
        d.helper("other", r#"echo '{"Username":"other","Secret":"other-secret"}'"#);
        let cfg = d.config(&format!(
            r#"{{"credHelpers": {{"127.0.0.1:5001": "stackctltest", "tok.example": "stackctltest",
                  "nothing.example": "stackctltest", "broken.example": "stackctltest", "garbage.example": "stackctltest",
                  "missing.example": "nosuchhelper"}},
                "credsStore": "other",
                "auths": {{"127.0.0.1:5001": {{}}, "nothing.example": {{"auth": "{}"}}}}}}"#,
            b64("stale:entry")
        ));
        let c = cfg.credentials("127.0.0.1:5001").unwrap().unwrap();
        assert!(c.source().contains("docker-credential-stackctltest"), "{}", c.source());
        let c = c.to_docker();
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("stackctl"), Some(PASSWORD)));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5001"));

        let t = lookup(&cfg, "tok.example").unwrap();
        assert_eq!((t.username, t.password, t.identitytoken.as_deref()), (None, None, Some(TOKEN)));

        // Not found in the helper: no credentials, even with an auths entry (as the CLI does).
        assert!(cfg.credentials("nothing.example").unwrap().is_none());

        // Any other failure: an error naming the helper, without its output.
        for registry in ["broken.example", "garbage.example"] {
            let e = cfg.credentials(registry).unwrap_err().to_string();
            assert!(e.contains("docker-credential-stackctltest") && e.contains(registry), "{e}");
            assert!(e.contains("credHelpers"), "{e}");
            assert!(!e.contains(PASSWORD) && !e.contains("oops"), "{e}");
        }
        let e = cfg.credentials("missing.example").unwrap_err().to_string();
        assert!(e.contains("docker-credential-nosuchhelper is not on PATH"), "{e}");

        // No credHelpers entry: credsStore.
        let o = cfg.credentials("elsewhere.example").unwrap().unwrap();
        assert_eq!(o.username(), Some("other"));
        assert!(o.source().contains("credsStore"), "{}", o.source());
    }

    #[test]
    fn helper_is_found_on_the_given_path_only() {
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let d = TempDir::new();
        fake_helper(&d, "stackctltest");
        std::fs::write(d.0.join("config.json"), r#"{"credsStore": "stackctltest"}"#).unwrap();
        let elsewhere = DockerConfig::new(&d.0, Some(OsString::from("/nonexistent-dir")));
        assert!(elsewhere.credentials("127.0.0.1:5001").is_err());
        let path = std::env::join_paths([PathBuf::from("/nonexistent-dir"), d.0.join("bin")]).unwrap();
        let here = DockerConfig::new(&d.0, Some(path));
        assert_eq!(here.credentials("127.0.0.1:5001").unwrap().unwrap().username(), Some("stackctl"));
    }

    /// Regression (issue 13): a helper that never answers hung the deploy, lock held.
    #[test]
    fn a_helper_that_never_answers_is_killed_after_the_timeout() {
        let d = TempDir::new();
        let pids = d.0.join("pids");
        {
            let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
            // The helper and a child of its own, both recorded, both meant to outlive us.
            d.helper("hang", &format!("sleep 300 &\necho $$ $! > {}\nwait", pids.display()));
        }
        let cfg = d.config(r#"{"credsStore": "hang"}"#).with_helper_timeout(Duration::from_millis(500));
        let started = Instant::now();
        let e = cfg.credentials("127.0.0.1:5001").unwrap_err().to_string();
        let took = started.elapsed();
        assert!(e.contains("did not answer within 500ms and was killed") && e.contains(HELPER_TIMEOUT_VAR), "{e}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let text = std::fs::read_to_string(&pids).unwrap();
        let pids: Vec<u32> = text.split_whitespace().map(|p| p.parse().unwrap()).collect();
        assert_eq!(pids.len(), 2, "{text}");
        // Reaped by us (the helper) or by init (its child): wait for it with a deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&p| crate::record::pid_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids {
            assert!(!crate::record::pid_alive(pid), "process {pid} of the helper is still running");
        }
    }

    #[test]
    fn helper_names_that_are_not_names_are_refused() {
        let d = TempDir::new();
        for bad in ["../../tmp/x", "a/b", "a b", "x;rm", ""] {
            let cfg = d.config(&format!(r#"{{"credHelpers": {{"r.example": {bad:?}}}, "credsStore": {bad:?}}}"#));
            match cfg.credentials("r.example") {
                // An empty name means "no helper", as in the CLI.
                Ok(None) if bad.is_empty() => {}
                Err(e) => assert!(e.to_string().contains("may contain only letters"), "{bad}: {e}"),
                other => panic!("{bad}: {:?}", other.map(|c| c.is_some())),
            }
        }
    }

    #[test]
    fn relative_path_entries_are_skipped() {
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let d = TempDir::new();
        fake_helper(&d, "stackctltest");
        std::fs::write(d.0.join("config.json"), r#"{"credsStore": "stackctltest"}"#).unwrap();
        // `../../…/bin`: reaches the helper from the current directory, but is relative.
        let depth = std::env::current_dir().unwrap().components().count().saturating_sub(1);
        let relative = PathBuf::from("../".repeat(depth)).join(d.0.join("bin").strip_prefix("/").unwrap());
        assert!(relative.join("docker-credential-stackctltest").exists(), "{}", relative.display());
        assert!(find_program("docker-credential-stackctltest", relative.as_os_str()).is_none());
        assert!(find_program("docker-credential-stackctltest", OsStr::new("")).is_none());
        assert!(find_program("docker-credential-stackctltest", d.0.join("bin").as_os_str()).is_some());
    }

    #[test]
    fn debug_and_display_redact_secrets() {
        let d = TempDir::new();
        let cfg = d.config(&format!(
            r#"{{"auths": {{"127.0.0.1:5001": {{"auth": "{}", "identitytoken": "{TOKEN}", "registrytoken": "{TOKEN}"}}}}}}"#,
            b64(&format!("stackctl:{PASSWORD}"))
        ));
        let c = cfg.credentials("127.0.0.1:5001").unwrap().unwrap();
        let encoded = b64(&format!("stackctl:{PASSWORD}"));
        for shown in [format!("{c:?}"), format!("{c:#?}"), format!("{c}"), format!("{:?}", Some(c.clone()))] {
            assert!(!shown.contains(PASSWORD) && !shown.contains(TOKEN) && !shown.contains(&encoded), "{shown}");
            assert!(shown.contains("***") && shown.contains("127.0.0.1:5001"), "{shown}");
        }
        assert!(format!("{c:?}").contains("stackctl"));
    }
}
