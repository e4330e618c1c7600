//! The Docker/Swarm API, behind a trait small enough to fake.
//!
//! [`Engine`] is what the deploy needs from a cluster and nothing more: services observed by
//! label, their tasks, Swarm configs (for the stack record and for user configs), networks,
//! image digests, and exec/upload into a running container (for nginx). The bollard
//! implementation is [`docker::DockerEngine`]; [`describe`] builds service specs without I/O;
//! [`auth`] finds registry credentials in the user's Docker CLI config; [`retry::Retrying`]
//! rides out a daemon restarting; [`counting::Counting`] counts calls for the benchmarks;
//! [`fake`] is an in-memory cluster with an nginx in front, for table tests of the deploy.

pub mod auth;
pub mod counting;
pub mod describe;
pub mod docker;
pub mod fake;
pub mod retry;

use std::collections::BTreeMap;
use std::future::Future;

use bollard::models::ServiceSpec;

/// A Swarm service as stackctl sees it.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub id: String,
    pub name: String,
    /// Swarm object version: every update must quote it (optimistic concurrency).
    pub version: u64,
    /// Service-level labels (stackctl's bookkeeping lives here).
    pub labels: BTreeMap<String, String>,
    /// Desired replicas (0 for a retained, scaled-down release).
    pub replicas: u64,
    /// The full spec, needed to update the service without losing anything.
    pub spec: ServiceSpec,
}

impl ServiceInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// One task (one replica's attempt) of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    pub id: String,
    /// The Swarm service it belongs to, so one listing of a stack's tasks serves every service.
    pub service_id: String,
    pub slot: Option<i64>,
    /// Swarm's observed state: `running`, `starting`, `failed`, …
    pub state: String,
    /// What Swarm wants it to be: `running` or `shutdown`.
    pub desired_state: String,
    /// Swarm's error for a failed task (e.g. "task: non-zero exit (1)", "unhealthy container").
    pub error: Option<String>,
    pub message: Option<String>,
    pub container_id: Option<String>,
    pub node_id: Option<String>,
    /// RFC 3339 time of the last status change.
    pub timestamp: Option<String>,
}

impl TaskInfo {
    pub fn is_running(&self) -> bool {
        self.state == "running" && self.desired_state == "running"
    }
}

/// A Swarm config: stackctl's stack record and user configs are both kept as configs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigInfo {
    pub id: String,
    pub name: String,
    pub version: u64,
    pub labels: BTreeMap<String, String>,
}

/// A config with its data, as listed by label (the release history is kept in configs).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConfig {
    pub info: ConfigInfo,
    pub data: Vec<u8>,
}

/// What an exec inside a container printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr, interleaved as Docker delivers them.
    pub output: String,
}

/// Errors from the engine, classified by what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {host}: {detail}. Is dockerd running, and does DOCKER_HOST point at a Swarm manager?")]
    Unreachable { host: String, detail: String },
    #[error("not found: {0}")]
    NotFound(String),
    /// Someone else changed the object first (version out of sequence) or created it first.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("Docker API error ({status}): {message}")]
    Api { status: u16, message: String },
    #[error("{0}")]
    Other(String),
}

impl EngineError {
    /// Worth retrying after a short pause: the daemon is restarting or overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Unreachable { .. } => true,
            EngineError::Api { status, message } => {
                *status >= 500 && !message.contains("out of sequence")
            }
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// The first twelve characters of an id, as `docker ps` shows it. Ids come from the engine,
/// so this cuts on a character boundary rather than trusting them to be hex.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

/// A Swarm object version as the API client sends it; the engine counts in u64, bollard in a
/// narrower type, and a version that does not fit is an error naming the object rather than
/// a silently truncated (and wrong) version.
pub fn version_index<T: TryFrom<u64>>(object: &str, version: u64) -> Result<T> {
    T::try_from(version).map_err(|_| {
        EngineError::Other(format!("{object} has version index {version}, more than the Docker API client can send; nothing was changed"))
    })
}

/// Network to create when missing.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRequest {
    pub name: String,
    pub driver: String,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

/// Swarm objects other than services that a stack owns, listed by label (for `down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    Config,
    Secret,
    Network,
    /// Listed so `down` can say which it keeps; never removed by stackctl.
    Volume,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Config => "config",
            ObjectType::Secret => "secret",
            ObjectType::Network => "network",
            ObjectType::Volume => "volume",
        }
    }
}

/// An object found by label: enough to name it in a report and to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The id to remove it by (a volume's is its name).
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What the deploy needs from a Swarm cluster.
pub trait Engine: Send + Sync {
    /// Fail fast with a clear reason when the engine is not a Swarm manager.
    fn check_swarm(&self) -> impl Future<Output = Result<()>> + Send;
    /// Every service carrying `io.stackctl.stack=<stack>`.
    fn services(&self, stack: &str) -> impl Future<Output = Result<Vec<ServiceInfo>>> + Send;
    fn service(&self, id_or_name: &str) -> impl Future<Output = Result<Option<ServiceInfo>>> + Send;
    fn tasks(&self, service_id: &str) -> impl Future<Output = Result<Vec<TaskInfo>>> + Send;
    /// Every task of every service carrying `io.stackctl.stack=<stack>`, newest first: one
    /// request where [`Engine::tasks`] per service would be one per service.
    fn stack_tasks(&self, stack: &str) -> impl Future<Output = Result<Vec<TaskInfo>>> + Send;
    /// IP addresses of the service's tasks on `network`, by task id: its part of
    /// [`Engine::network_addresses`].
    fn task_addresses(
        &self,
        network: &str,
        service_name: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>>> + Send {
        async move { Ok(self.network_addresses(network).await?.remove(service_name).unwrap_or_default()) }
    }
    /// [`Engine::task_addresses`] of every service on `network` at once, by service name: the
    /// engine answers both with the same request.
    fn network_addresses(
        &self,
        network: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, BTreeMap<String, String>>>> + Send;
    fn create_service(&self, spec: ServiceSpec) -> impl Future<Output = Result<String>> + Send;
    fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: ServiceSpec,
    ) -> impl Future<Output = Result<()>> + Send;
    fn remove_service(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// `name:tag` → `name:tag@sha256:…` as the registry has it now.
    fn resolve_image(&self, reference: &str) -> impl Future<Output = Result<String>> + Send;
    /// Create the network unless one with that name exists; returns its id.
    fn ensure_network(&self, req: &NetworkRequest) -> impl Future<Output = Result<String>> + Send;
    /// Create the config unless one with that name exists; returns its id.
    fn ensure_config(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String>> + Send;
    fn ensure_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Id of an existing (external) config or secret by name.
    fn find_config(&self, name: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    fn find_secret(&self, name: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Id of an existing network by exact name (read only, for `plan`).
    fn find_network(&self, name: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    fn config(&self, name: &str) -> impl Future<Output = Result<Option<ConfigInfo>>> + Send;
    /// Create a config; `Conflict` if the name is taken.
    fn create_config(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<ConfigInfo>> + Send;
    /// Replace a config's labels (the only mutable part); `Conflict` if `version` is stale.
    fn update_config_labels(
        &self,
        info: &ConfigInfo,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Every config carrying all of `labels` (`key` or `key=value`, as `docker config ls
    /// --filter label=...` takes them), with its data.
    fn configs_labelled(&self, labels: &[String]) -> impl Future<Output = Result<Vec<StoredConfig>>> + Send;
    /// Remove a config; one already gone is not an error.
    fn remove_config(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Every object of `kind` carrying the label `label` (`key=value`), as `docker <kind> ls
    /// --filter label=...`.
    fn objects_labelled(&self, kind: ObjectType, label: &str) -> impl Future<Output = Result<Vec<Labelled>>> + Send;
    /// Remove a config, secret or network; one already gone is not an error, one still in use
    /// is (the caller waits and tries again). Volumes are refused: stackctl keeps them.
    fn remove_object(&self, kind: ObjectType, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn exec(&self, container: &str, cmd: &[&str]) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Write files into a directory of a running container, `(name, content)` each, in one
    /// request (one tar upload; no host access needed): a switch of 12 services is one upload
    /// per nginx replica, not 12.
    fn put_files(
        &self,
        container: &str,
        dir: &str,
        files: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<()>> + Send;
    /// [`Engine::put_files`] of one file.
    fn put_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        content: &[u8],
    ) -> impl Future<Output = Result<()>> + Send {
        async move { self.put_files(container, dir, &[(name, content)]).await }
    }
    /// Docker's health status of a container on this node (`healthy`, `unhealthy`,
    /// `starting`), `None` when it has no health check or is not on this node.
    fn container_health(&self, container: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Read one file from a container; `None` when it does not exist.
    fn get_file(&self, container: &str, path: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Read the regular files directly in a container's directory, by name, in one request;
    /// `None` when the directory does not exist.
    fn get_dir(&self, container: &str, dir: &str) -> impl Future<Output = Result<Option<BTreeMap<String, Vec<u8>>>>> + Send;
    /// What a container (running or exited) wrote to its stdout since `since` (unix seconds),
    /// line by line, at most [`MAX_LOG_BYTES`]; `NotFound` when the container is gone.
    fn container_logs(&self, container: &str, since: i64) -> impl Future<Output = Result<Logs>> + Send;
}

/// Most bytes of one container's log read at once: the gate reads a window of nginx's access
/// log, and a flood must not take the machine's memory.
pub const MAX_LOG_BYTES: usize = 64 << 20;

/// Lines of a container's stdout, and whether [`MAX_LOG_BYTES`] cut them short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logs {
    pub lines: Vec<String>,
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_cut_on_a_character_boundary() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
    }

    #[test]
    fn versions_that_do_not_fit_are_errors_naming_the_object() {
        assert_eq!(version_index::<i32>("service x", 7).unwrap(), 7);
        let err = version_index::<i32>("service demo_web-r1", 1 << 31).unwrap_err().to_string();
        assert!(err.contains("service demo_web-r1") && err.contains("2147483648"), "{err}");
        assert!(version_index::<i64>("config c", u64::MAX).is_err());
    }
}
