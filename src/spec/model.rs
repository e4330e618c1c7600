//! The validated stack: what the user asked for, after interpolation, merge keys and validation.
//!
//! Everything here has already been checked: names are safe to render into nginx config,
//! durations are parsed, ports are in range. Code downstream of `spec::load` never re-validates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A whole stack file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Stack name (`name:` at the top level or `--name`); prefixes every Swarm object, as
    /// `docker stack deploy` does, and is the value of `com.docker.stack.namespace`.
    pub name: String,
    /// The file it came from, for messages.
    pub source: PathBuf,
    /// Services by their name in the file (without the stack prefix).
    pub services: BTreeMap<String, Service>,
    /// Top-level `networks:`; the implicit `default` network is added when a service uses it.
    pub networks: BTreeMap<String, Network>,
    /// Top-level `volumes:` (named volumes).
    pub volumes: BTreeMap<String, Volume>,
    /// Top-level `configs:`.
    pub configs: BTreeMap<String, FileObject>,
    /// Top-level `secrets:`.
    pub secrets: BTreeMap<String, FileObject>,
    /// The top-level `x-stackctl` block.
    pub x: StackX,
    /// Which environment this is (`--env`) and the engine it names.
    pub environment: Environment,
}

/// The environment a stack file was loaded for: `--env NAME` merged the overlay
/// `<stem>.NAME.yml` over the file. Default: no environment, no context named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    /// `--env NAME`; recorded in the release history and shown by `status`.
    pub name: Option<String>,
    /// `x-stackctl.context`: the Docker context (as `docker context ls` lists it) whose engine
    /// this stack goes to, unless `--context` or `DOCKER_HOST`/`DOCKER_CONTEXT` say otherwise.
    pub context: Option<String>,
}

/// Top-level `x-stackctl`.
#[derive(Debug, Clone, PartialEq)]
pub struct StackX {
    /// Which service is the nginx proxy and how stackctl reaches it.
    pub proxy: ProxyX,
    /// Default number of old releases kept (scaled to zero) per routed service.
    pub keep: u32,
    /// How many release-history entries the cluster keeps (`history: N`); older ones are
    /// pruned after each append, so the history never grows without bound.
    pub history: u32,
    /// What `stackctl gate` checks before a release moves on (`x-stackctl.gate`).
    pub gate: GateSpec,
    /// What users get while `stackctl maintenance on` holds a service (`x-stackctl.maintenance`).
    pub maintenance: MaintenanceSpec,
}

/// `x-stackctl.maintenance`: the answer nginx gives instead of the release while a service is
/// in maintenance. Both fields have defaults, so every stack can be put in maintenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceSpec {
    /// The `Retry-After` header, in whole seconds (it is rendered into nginx's config, so a
    /// change reaches nginx with the next deploy).
    pub retry_after: Duration,
    /// The page's bytes (`page:`, a file read relative to the stack file); `None`: a short
    /// built-in text. Written into nginx's config directory by `maintenance on`, never into the
    /// config itself, so changing it needs no reload.
    pub page: Option<Vec<u8>>,
}

impl Default for MaintenanceSpec {
    fn default() -> MaintenanceSpec {
        MaintenanceSpec { retry_after: Duration::from_secs(DEFAULT_RETRY_AFTER_SECS), page: None }
    }
}

/// `Retry-After` when the file does not say.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 60;

/// `x-stackctl.gate`: the checks of `stackctl gate`. Every field has a default, so a stack
/// without the block is still gated on its tasks and its users' answers.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSpec {
    /// How long the live release must have been live (from the history) before it passes.
    pub soak: Duration,
    /// How far back the nginx access log is read for the 5xx share and the p99.
    pub window: Duration,
    /// Highest share of 5xx answers from the live release, in percent, that still passes.
    pub max_5xx_percent: f64,
    /// Fewer user requests than this in the window: "inconclusive", which holds. Too few
    /// requests say nothing about a release.
    pub min_requests: u64,
    /// Highest 99th percentile of nginx's request time that still passes; `None`: not checked.
    pub p99: Option<Duration>,
    /// Requests sent through the live route, each of which must answer as declared.
    pub smoke: Vec<Smoke>,
}

impl Default for GateSpec {
    fn default() -> GateSpec {
        GateSpec { soak: Duration::ZERO, window: Duration::from_secs(300), max_5xx_percent: 1.0, min_requests: 20, p99: None, smoke: Vec::new() }
    }
}

/// One smoke check of `x-stackctl.gate.smoke`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smoke {
    /// `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `PATCH` or `OPTIONS` (sent without a body).
    pub method: String,
    /// `Host` header, so nginx picks the route's server; `None`: the default server.
    pub host: Option<String>,
    /// Path, with an optional query string (the health path's allowlist).
    pub path: String,
    pub status: u16,
    /// A regular expression (the `regex` crate's syntax) the body must match; checked when
    /// the file is read.
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyX {
    /// Name of the service (in this file) that runs nginx.
    pub service: String,
    /// Base URL stackctl uses to reach nginx for probes and verification, e.g.
    /// `http://127.0.0.1:8080`. Scheme http only (for now); host and port required.
    pub url: String,
    /// Port nginx listens on inside its container for the routed traffic (the `listen` line).
    pub listen: u16,
    /// Directory inside the nginx container where stackctl writes its config; a named volume
    /// is mounted there so a restarted nginx task finds the live config.
    pub config_dir: String,
}

/// What stackctl does with a service.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// The nginx proxy: created when missing, never replaced by a deploy.
    Proxy,
    /// Behind nginx: every change is a new versioned Swarm service (blue-green).
    Routed(Route),
    /// Created once, then left alone (databases and the like); changes are reported, not applied.
    Stateful,
    /// Anything else: updated in place by Swarm's rolling update (start-first unless the file
    /// says otherwise, or the service publishes a host-mode port, which old and new task could
    /// not both bind).
    Plain,
}

/// Service-level `x-stackctl` for a routed service.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Container port nginx sends traffic to.
    pub port: u16,
    /// `server_name`s; empty means the default server (any host).
    pub hosts: Vec<String>,
    /// URL path prefix routed to this service, starting with `/`.
    pub path: String,
    pub health: HealthProbe,
    /// How long the old release keeps running after the switch, so requests in flight finish.
    pub drain: Duration,
    /// How long green is watched after the switch (probed through the live route while blue
    /// still runs); failing there switches back to blue. Zero disables the watch.
    pub watch: Duration,
    /// Old releases kept (scaled to zero) for fast rollback.
    pub keep: u32,
    /// How long the old release keeps its full scale after a switch (a standby), so that a
    /// rollback within it is a verified flip in nginx instead of a scale-up. Zero: none.
    pub rollback_window: Duration,
    /// How nginx handles this route's requests (body size, timeouts, buffering, headers).
    pub settings: RouteSettings,
}

/// Per-route nginx settings (`x-stackctl.route`), each checked against [`super::allow`]'s
/// bounds when loading and again when rendering. `None` leaves nginx's own default.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    /// `client_max_body_size`: the largest request body in bytes (nginx's default is 1m, which
    /// turns most uploads into a 413). 0: no limit.
    pub client_max_body_size: Option<u64>,
    /// `read_timeout`: the longest wait between two reads from the release (nginx's default
    /// 60s). For a WebSocket or an event stream, how long it may stay silent before nginx
    /// closes it.
    pub read_timeout: Option<Duration>,
    /// `send_timeout`: the longest wait between two writes of a request to the release.
    pub send_timeout: Option<Duration>,
    /// `buffering: false` passes each part of a response to the client as it arrives, which
    /// server-sent events and long polls need; nginx buffers by default (`true`).
    pub buffering: bool,
    /// `headers`: extra request headers set on the way to the release, in the order of the
    /// file's keys (sorted). An empty value removes a header the client sent.
    pub headers: Vec<(String, String)>,
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings { client_max_body_size: None, read_timeout: None, send_timeout: None, buffering: true, headers: Vec::new() }
    }
}

/// The HTTP probe sent through nginx (preview route) before the switch.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthProbe {
    pub path: String,
    pub status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes required.
    pub successes: u32,
    /// Give up after this long (measured from the creation of green).
    pub deadline: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Name in the file (`web`), without the stack prefix.
    pub name: String,
    pub role: Role,
    /// Image reference exactly as written (after interpolation and `--image` overrides).
    pub image: String,
    /// `command:` (shell form is split like Compose does: `sh -c` is NOT added).
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `environment:` merged over `env_file:` (environment wins); `None` values (`- FOO` with
    /// FOO unset) are dropped, as Compose does.
    pub environment: BTreeMap<String, String>,
    /// Container labels (`labels:`).
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    pub networks: Vec<ServiceNetwork>,
    pub volumes: Vec<Mount>,
    pub configs: Vec<FileRef>,
    pub secrets: Vec<FileRef>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub init: Option<bool>,
    pub read_only: bool,
    pub deploy: Deploy,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PublishMode {
    /// Swarm routing mesh; needs ip_vs in the kernel. A warning is emitted when used.
    Ingress,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub target: u16,
    pub published: Option<u16>,
    pub protocol: Protocol,
    pub mode: PublishMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// Network name in the file (`default` for the implicit one).
    pub name: String,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub driver: String,
    pub attachable: bool,
    /// `external: true`: must exist, never created; `name:` gives the real name.
    pub external: bool,
    /// Real name when `name:` is set (otherwise `<stack>_<key>`), resolved by the loader.
    pub real_name: String,
    pub labels: BTreeMap<String, String>,
    pub driver_opts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub driver: Option<String>,
    pub external: bool,
    pub real_name: String,
    pub labels: BTreeMap<String, String>,
    pub driver_opts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// Named volume; `source` is the key in top-level `volumes:` (resolved to the real name by
    /// the engine layer), or empty for an anonymous volume.
    Volume,
    /// Host path; `source` is absolute (relative paths are resolved against the stack file).
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// A top-level config or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    /// `file:` contents, read at load time (relative to the stack file). `None` when external.
    pub content: Option<Vec<u8>>,
    pub external: bool,
    /// Real Swarm object name: `name:` if set, else `<stack>_<key>`.
    pub real_name: String,
    pub labels: BTreeMap<String, String>,
}

/// A service's reference to a config or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Key in the top-level `configs:`/`secrets:`.
    pub source: String,
    /// Path in the container (default `/<source>` for configs, `/run/secrets/<source>` for secrets).
    pub target: String,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// File mode, default 0o444.
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]` disables the image's check; otherwise `CMD`/`CMD-SHELL` form as Docker wants.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deploy {
    /// Default 1.
    pub replicas: u64,
    pub resources: Resources,
    pub placement: Placement,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub endpoint_mode: EndpointMode,
    /// Service labels (`deploy.labels`), as opposed to container labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointMode {
    /// Needs ip_vs in the kernel; a warning is emitted for routed services, whose traffic
    /// never uses the VIP anyway (nginx talks to task IPs).
    Vip,
    /// DNS round robin. Default for routed services and the proxy.
    #[default]
    Dnsrr,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    pub limits: ResourceSet,
    pub reservations: ResourceSet,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceSet {
    /// CPUs as nano-CPUs (`cpus: "0.5"` → 500_000_000).
    pub nano_cpus: Option<i64>,
    /// Bytes (`memory: 64M`).
    pub memory_bytes: Option<i64>,
    /// `pids` (limits only).
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub constraints: Vec<String>,
    /// Spread preferences, as their descriptor: `- spread: node.labels.zone` in the file is
    /// `node.labels.zone` here.
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    pub condition: String,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    pub parallelism: Option<u64>,
    pub delay: Option<Duration>,
    /// `pause`, `continue` or `rollback`.
    pub failure_action: Option<String>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<f64>,
    /// `stop-first` or `start-first`.
    pub order: Option<String>,
}

/// Something the loader accepted but wants the user to know (ignored keys, ingress ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub location: Location,
    pub message: String,
}

/// Where in a file something is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    /// Dotted path of the field, e.g. `services.web.ports[0].published`.
    pub field: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.display().to_string();
        write!(f, "{}:{}:{}", super::validate::printable(&file), self.line, self.column)?;
        // YAML syntax errors have a position but no field. Keys come from the file: escaped.
        if !self.field.is_empty() {
            write!(f, ": {}", super::validate::printable(&self.field))?;
        }
        Ok(())
    }
}
