//! [`Engine`] over the Docker API with bollard.
//!
//! Connection follows the Docker CLI's conventions: `DOCKER_HOST` (unix://, tcp://, https://),
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` for TLS; otherwise the local socket. The API
//! version is always negotiated, so a 20.10 daemon (API 1.41) and newer ones both work.
//!
//! Registry credentials come from the user's Docker config ([`super::auth`]), looked up once per
//! registry, and go to the engine in the `X-Registry-Auth` header: for resolving digests, and
//! with every service create/update so Swarm tasks can pull (what `docker stack deploy
//! --with-registry-auth` does). They are never formatted into a message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ConfigSpec, ExecConfig, NetworkCreateRequest, SecretSpec, ServiceSpec};
use bollard::query_parameters::{
    DownloadFromContainerOptions, InspectNetworkOptions, LogsOptions, InspectServiceOptions, ListConfigsOptions,
    ListNetworksOptions, ListSecretsOptions, ListServicesOptions, ListTasksOptions, ListVolumesOptions,
    UpdateConfigOptions, UpdateServiceOptions, UploadToContainerOptions,
};
use bollard::{BollardRequest, Docker};
use futures_util::{StreamExt, TryStreamExt};
use hyper::header::HeaderValue;

use super::auth::{self, Credentials, DockerConfig};
use super::{ConfigInfo, Engine, EngineError, ExecOutput, Labelled, Logs, NetworkRequest, ObjectType, Result, ServiceInfo, StoredConfig, TaskInfo};

/// The real engine.
#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// Where we connected, for messages.
    host: String,
    /// Where registry credentials are looked up.
    auth: DockerConfig,
    /// Credentials by registry key, looked up once per process (`None`: the config has none).
    credentials: Arc<tokio::sync::Mutex<HashMap<String, Option<Credentials>>>>,
}

impl DockerEngine {
    /// The tar archive of a path in a container; `None` when it does not exist.
    async fn download(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let opts = DownloadFromContainerOptions { path: path.to_string() };
        let chunks: std::result::Result<Vec<_>, _> = self.docker.download_from_container(container, Some(opts)).try_collect().await;
        match chunks {
            Ok(c) => Ok(Some(c.concat())),
            Err(e) => match self.map(&format!("read {path} in {}", short(container)), e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Connect as the Docker CLI would and negotiate the API version.
    pub async fn connect() -> Result<DockerEngine> {
        Self::connect_to(&std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())).await
    }

    /// Connect to `host` (`unix://…`, `tcp://…`; a Docker context's endpoint).
    pub async fn connect_to(host: &str) -> Result<DockerEngine> {
        let host = host.to_string();
        let unreachable = |e: BollardError| EngineError::Unreachable { host: host.clone(), detail: e.to_string() };
        let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?.with_request_modifier(registry_auth_base64url);
        Ok(DockerEngine { docker, host, auth: DockerConfig::from_env(), credentials: Default::default() })
    }

    /// Tasks matching `filters`, newest first, so callers reporting "the last error" see the
    /// latest attempt.
    async fn list_tasks(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<TaskInfo>> {
        let list = self
            .docker
            .list_tasks(Some(ListTasksOptions { filters: Some(filters) }))
            .await
            .map_err(|e| self.map("list tasks", e))?;
        let mut tasks: Vec<TaskInfo> = list
            .into_iter()
            .map(|t| {
                let status = t.status.unwrap_or_default();
                TaskInfo {
                    id: t.id.unwrap_or_default(),
                    service_id: t.service_id.unwrap_or_default(),
                    slot: t.slot,
                    state: status.state.map(|s| s.to_string()).unwrap_or_default(),
                    desired_state: t.desired_state.map(|s| s.to_string()).unwrap_or_default(),
                    error: status.err,
                    message: status.message,
                    container_id: status.container_status.and_then(|c| c.container_id),
                    node_id: t.node_id,
                    timestamp: status.timestamp.map(|t| t.to_string()),
                }
            })
            .collect();
        tasks.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
        Ok(tasks)
    }

    /// Credentials for the registry of `image`, looked up once per registry.
    async fn credentials_for(&self, image: &str) -> Result<Option<Credentials>> {
        if image.is_empty() {
            return Ok(None);
        }
        let key = auth::registry_key(image);
        let mut cache = self.credentials.lock().await;
        if let Some(known) = cache.get(&key) {
            return Ok(known.clone());
        }
        let (config, k) = (self.auth.clone(), key.clone());
        // A credential helper is a process that may take a moment (keychains, gpg).
        let found = tokio::task::spawn_blocking(move || config.credentials(&k))
            .await
            .map_err(|e| EngineError::Other(format!("looking up credentials for {key}: {e}")))?
            .map_err(|e| EngineError::Other(e.to_string()))?;
        cache.insert(key, found.clone());
        Ok(found)
    }

    /// The registry refused access (no or wrong credentials): say how to log in. Other errors
    /// pass through. Built from the registry key and the config path only.
    fn unauthorized_hint(&self, err: EngineError, image: &str, sent: Option<&Credentials>) -> EngineError {
        let message = match &err {
            EngineError::Api { status, message } if looks_unauthorized(Some(*status), message) => message,
            EngineError::NotFound(message) | EngineError::Other(message) if looks_unauthorized(None, message) => message,
            _ => return err,
        };
        let registry = auth::registry_key(image);
        let login = auth::login_command(&registry);
        EngineError::Other(match sent {
            Some(creds) => format!(
                "{message}. The registry {registry} rejected the credentials from {}: run `{login}` again",
                creds.source()
            ),
            None => format!(
                "{message}. The registry {registry} requires a login and there are no credentials for it in {}: run `{login}` (stackctl reads docker's config)",
                self.auth.describe()
            ),
        })
    }

    fn map(&self, what: &str, e: BollardError) -> EngineError {
        match e {
            BollardError::DockerResponseServerError { status_code, message } => match status_code {
                404 => EngineError::NotFound(format!("{what}: {message}")),
                409 => EngineError::Conflict(format!("{what}: {message}")),
                _ if message.contains("out of sequence") => EngineError::Conflict(format!("{what}: {message}")),
                _ => EngineError::Api { status: status_code, message: format!("{what}: {message}") },
            },
            BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_) => {
                EngineError::Unreachable { host: self.host.clone(), detail: format!("{what}: {e}") }
            }
            other => EngineError::Other(format!("{what}: {other}")),
        }
    }
}

/// The engine decodes `X-Registry-Auth` (and `X-Registry-Config`) as base64url and silently
/// drops a header it cannot decode, while bollard encodes them with the standard alphabet: a
/// secret whose encoding has a `+` or `/` would reach the engine as "no credentials".
/// Re-encode to base64url (same padding) before every request.
fn registry_auth_base64url(mut req: BollardRequest) -> BollardRequest {
    for name in ["x-registry-auth", "x-registry-config"] {
        let fixed = req
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.contains(['+', '/']))
            .map(|v| v.replace('+', "-").replace('/', "_"));
        if let Some(Ok(mut value)) = fixed.map(|f| HeaderValue::from_str(&f)) {
            value.set_sensitive(true);
            req.headers_mut().insert(name, value);
        }
    }
    req
}

/// Does an engine error say the registry wants (other) credentials? The engine reports a 401
/// as 401, but a missing login as a 500 quoting the registry ("no basic auth credentials").
fn looks_unauthorized(status: Option<u16>, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    matches!(status, Some(401 | 403))
        || ["no basic auth credentials", "unauthorized", "authentication required", "access to the resource is denied", "denied: "]
            .iter()
            .any(|s| m.contains(s))
}

/// The image of a service spec (what Swarm tasks pull).
fn spec_image(spec: &ServiceSpec) -> Option<&str> {
    spec.task_template.as_ref()?.container_spec.as_ref()?.image.as_deref()
}

fn label_filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{key}={value}")])])
}

fn to_btree(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

fn to_hash(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn service_info(s: bollard::models::Service) -> ServiceInfo {
    let spec = s.spec.unwrap_or_default();
    let replicas = spec
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0)
        .max(0) as u64;
    ServiceInfo {
        id: s.id.unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        version: s.version.and_then(|v| v.index).unwrap_or(0),
        labels: to_btree(spec.labels.clone()),
        replicas,
        spec,
    }
}

impl Engine for DockerEngine {
    async fn check_swarm(&self) -> Result<()> {
        let info = self.docker.info().await.map_err(|e| self.map("docker info", e))?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm.local_node_state.map(|s| s.to_string()).unwrap_or_default();
        if state != "active" {
            return Err(EngineError::Other(format!(
                "the engine at {} is not part of a Swarm (state: {state:?}). Run `docker swarm init` (for one machine: `docker swarm init --advertise-addr 127.0.0.1`)",
                self.host
            )));
        }
        if swarm.control_available != Some(true) {
            return Err(EngineError::Other(format!(
                "the engine at {} is a Swarm worker; point DOCKER_HOST at a manager",
                self.host
            )));
        }
        Ok(())
    }

    async fn services(&self, stack: &str) -> Result<Vec<ServiceInfo>> {
        let opts = ListServicesOptions { filters: Some(label_filter(crate::release::STACK, stack)), status: None };
        let list = self.docker.list_services(Some(opts)).await.map_err(|e| self.map("list services", e))?;
        Ok(list.into_iter().map(service_info).collect())
    }

    async fn service(&self, id_or_name: &str) -> Result<Option<ServiceInfo>> {
        match self.docker.inspect_service(id_or_name, None::<InspectServiceOptions>).await {
            Ok(s) => Ok(Some(service_info(s))),
            Err(e) => match self.map("inspect service", e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskInfo>> {
        self.list_tasks(HashMap::from([("service".to_string(), vec![service_id.to_string()])])).await
    }

    async fn stack_tasks(&self, stack: &str) -> Result<Vec<TaskInfo>> {
        // Swarm matches a task's `label` filter against its service's labels.
        self.list_tasks(label_filter(crate::release::STACK, stack)).await
    }

    async fn network_addresses(&self, network: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        // bollard's Task model drops `NetworksAttachments`; the verbose network inspect lists
        // every task endpoint of every service on a swarm-scoped network instead.
        let opts = InspectNetworkOptions { verbose: true, scope: Some("swarm".into()) };
        let net = self.docker.inspect_network(network, Some(opts)).await.map_err(|e| self.map("inspect network", e))?;
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (service_name, svc) in net.services.iter().flatten() {
            let addrs = out.entry(service_name.clone()).or_default();
            for task in svc.get("Tasks").and_then(|t| t.as_array()).into_iter().flatten() {
                let name = task.get("Name").and_then(|v| v.as_str()).unwrap_or_default();
                let ip = task.get("EndpointIP").and_then(|v| v.as_str()).unwrap_or_default();
                // Task names are `<service>.<slot>.<task id>`.
                if let (Some(id), false) = (name.rsplit('.').next(), ip.is_empty()) {
                    addrs.insert(id.to_string(), ip.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<String> {
        let name = spec.name.clone().unwrap_or_default();
        let image = spec_image(&spec).unwrap_or_default().to_string();
        // Stored by Swarm with the service so its tasks can pull (on any node).
        let creds = self.credentials_for(&image).await?;
        let resp = self
            .docker
            .create_service(spec, creds.as_ref().map(Credentials::to_docker))
            .await
            .map_err(|e| self.unauthorized_hint(self.map(&format!("create service {name}"), e), &image, creds.as_ref()))?;
        Ok(resp.id.unwrap_or_default())
    }

    async fn update_service(&self, id: &str, version: u64, spec: ServiceSpec) -> Result<()> {
        let image = spec_image(&spec).unwrap_or_default().to_string();
        // Without credentials the engine keeps the ones stored with the service.
        let creds = self.credentials_for(&image).await?;
        let opts = UpdateServiceOptions { version: super::version_index(&format!("service {id}"), version)?, ..Default::default() };
        self.docker
            .update_service(id, spec, opts, creds.as_ref().map(Credentials::to_docker))
            .await
            .map_err(|e| self.unauthorized_hint(self.map(&format!("update service {id}"), e), &image, creds.as_ref()))?;
        Ok(())
    }

    async fn remove_service(&self, id: &str) -> Result<()> {
        match self.docker.delete_service(id).await {
            Ok(()) => Ok(()),
            Err(e) => match self.map(&format!("remove service {id}"), e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn resolve_image(&self, reference: &str) -> Result<String> {
        if reference.contains("@sha256:") {
            return Ok(reference.to_string());
        }
        let creds = self.credentials_for(reference).await?;
        let inspect = self
            .docker
            .inspect_registry_image(reference, creds.as_ref().map(Credentials::to_docker))
            .await
            .map_err(|e| {
                self.unauthorized_hint(self.map(&format!("resolve image {reference} in its registry"), e), reference, creds.as_ref())
            })?;
        let digest = inspect.descriptor.digest.unwrap_or_default();
        if digest.is_empty() {
            return Err(EngineError::Other(format!("the registry returned no digest for {reference}")));
        }
        Ok(format!("{reference}@{digest}"))
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> Result<String> {
        if let Some(id) = self.find_network(&req.name).await? {
            return Ok(id);
        }
        let create = NetworkCreateRequest {
            name: req.name.clone(),
            driver: Some(req.driver.clone()),
            scope: Some("swarm".into()),
            attachable: Some(req.attachable),
            labels: Some(to_hash(&req.labels)),
            options: Some(to_hash(&req.options)),
            ..Default::default()
        };
        let resp = self
            .docker
            .create_network(create)
            .await
            .map_err(|e| self.map(&format!("create network {}", req.name), e))?;
        Ok(resp.id)
    }

    async fn ensure_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        if let Some(id) = self.find_config(name).await? {
            return Ok(id);
        }
        match self.create_config(name, data, labels).await {
            Ok(info) => Ok(info.id),
            // Created by someone else meanwhile: same name means same content (names carry a hash).
            Err(EngineError::Conflict(_)) => self.find_config(name).await?.ok_or_else(|| EngineError::NotFound(name.into())),
            Err(e) => Err(e),
        }
    }

    async fn ensure_secret(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        if let Some(id) = self.find_secret(name).await? {
            return Ok(id);
        }
        let spec = SecretSpec {
            name: Some(name.to_string()),
            labels: Some(to_hash(labels)),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.docker.create_secret(spec).await {
            Ok(r) => Ok(r.id),
            Err(e) => match self.map(&format!("create secret {name}"), e) {
                EngineError::Conflict(_) => self.find_secret(name).await?.ok_or_else(|| EngineError::NotFound(name.into())),
                other => Err(other),
            },
        }
    }

    async fn find_config(&self, name: &str) -> Result<Option<String>> {
        Ok(self.config(name).await?.map(|c| c.id))
    }

    async fn find_network(&self, name: &str) -> Result<Option<String>> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let list = self
            .docker
            .list_networks(Some(ListNetworksOptions { filters: Some(filters) }))
            .await
            .map_err(|e| self.map("list networks", e))?;
        // The name filter matches substrings; only an exact name counts.
        Ok(list.into_iter().find(|n| n.name.as_deref() == Some(name)).map(|n| n.id.unwrap_or_default()))
    }

    async fn find_secret(&self, name: &str) -> Result<Option<String>> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let list = self
            .docker
            .list_secrets(Some(ListSecretsOptions { filters: Some(filters) }))
            .await
            .map_err(|e| self.map("list secrets", e))?;
        Ok(list
            .into_iter()
            .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
            .and_then(|s| s.id))
    }

    async fn config(&self, name: &str) -> Result<Option<ConfigInfo>> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let list = self
            .docker
            .list_configs(Some(ListConfigsOptions { filters: Some(filters) }))
            .await
            .map_err(|e| self.map("list configs", e))?;
        Ok(list.into_iter().find_map(|c| {
            let spec = c.spec.unwrap_or_default();
            (spec.name.as_deref() == Some(name)).then(|| ConfigInfo {
                id: c.id.unwrap_or_default(),
                name: name.to_string(),
                version: c.version.and_then(|v| v.index).unwrap_or(0),
                labels: to_btree(spec.labels),
            })
        }))
    }

    async fn create_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<ConfigInfo> {
        let spec = ConfigSpec {
            name: Some(name.to_string()),
            labels: Some(to_hash(labels)),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        let resp = self
            .docker
            .create_config(spec)
            .await
            .map_err(|e| self.map(&format!("create config {name}"), e))?;
        // Read back for the version the next update must quote.
        let info = self.config(name).await?;
        info.filter(|i| i.id == resp.id)
            .ok_or_else(|| EngineError::Conflict(format!("config {name} was replaced right after creation")))
    }

    async fn update_config_labels(&self, info: &ConfigInfo, labels: &BTreeMap<String, String>) -> Result<()> {
        // Swarm allows only labels to change; the name must be repeated and data left out.
        let spec = ConfigSpec { name: Some(info.name.clone()), labels: Some(to_hash(labels)), ..Default::default() };
        let opts = UpdateConfigOptions { version: super::version_index(&format!("config {}", info.name), info.version)? };
        self.docker
            .update_config(&info.id, spec, opts)
            .await
            .map_err(|e| self.map(&format!("update config {}", info.name), e))
    }

    async fn configs_labelled(&self, labels: &[String]) -> Result<Vec<StoredConfig>> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let list = self
            .docker
            .list_configs(Some(ListConfigsOptions { filters: Some(filters) }))
            .await
            .map_err(|e| self.map("list configs", e))?;
        list.into_iter()
            .map(|c| {
                let spec = c.spec.unwrap_or_default();
                let name = spec.name.unwrap_or_default();
                // The list carries each config's data (base64), so one call reads them all.
                let data = base64::engine::general_purpose::STANDARD
                    .decode(spec.data.unwrap_or_default())
                    .map_err(|e| EngineError::Other(format!("config {name}: its data is not base64 ({e})")))?;
                let info = ConfigInfo {
                    id: c.id.unwrap_or_default(),
                    name,
                    version: c.version.and_then(|v| v.index).unwrap_or(0),
                    labels: to_btree(spec.labels),
                };
                Ok(StoredConfig { info, data })
            })
            .collect()
    }

    async fn remove_config(&self, id: &str) -> Result<()> {
        match self.docker.delete_config(id).await {
            Ok(()) => Ok(()),
            Err(e) => match self.map(&format!("remove config {id}"), e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn objects_labelled(&self, kind: ObjectType, label: &str) -> Result<Vec<Labelled>> {
        let filters = Some(HashMap::from([("label".to_string(), vec![label.to_string()])]));
        let what = format!("list {}s", kind.as_str());
        let found = |id: Option<String>, name: Option<String>, labels| Labelled {
            id: id.unwrap_or_default(),
            name: name.unwrap_or_default(),
            labels: to_btree(labels),
        };
        Ok(match kind {
            ObjectType::Config => {
                let list = self.docker.list_configs(Some(ListConfigsOptions { filters })).await.map_err(|e| self.map(&what, e))?;
                list.into_iter()
                    .map(|c| {
                        let spec = c.spec.unwrap_or_default();
                        found(c.id, spec.name, spec.labels)
                    })
                    .collect()
            }
            ObjectType::Secret => {
                let list = self.docker.list_secrets(Some(ListSecretsOptions { filters })).await.map_err(|e| self.map(&what, e))?;
                list.into_iter()
                    .map(|c| {
                        let spec = c.spec.unwrap_or_default();
                        found(c.id, spec.name, spec.labels)
                    })
                    .collect()
            }
            ObjectType::Network => {
                let list = self.docker.list_networks(Some(ListNetworksOptions { filters })).await.map_err(|e| self.map(&what, e))?;
                list.into_iter().map(|n| found(n.id, n.name, n.labels)).collect()
            }
            ObjectType::Volume => {
                let list = self.docker.list_volumes(Some(ListVolumesOptions { filters })).await.map_err(|e| self.map(&what, e))?;
                list.volumes.unwrap_or_default().into_iter().map(|v| found(Some(v.name.clone()), Some(v.name), Some(v.labels))).collect()
            }
        })
    }

    async fn remove_object(&self, kind: ObjectType, id: &str) -> Result<()> {
        let result = match kind {
            ObjectType::Config => self.docker.delete_config(id).await,
            ObjectType::Secret => self.docker.delete_secret(id).await,
            ObjectType::Network => self.docker.remove_network(id).await,
            ObjectType::Volume => return Err(EngineError::Other(format!("volume {id}: stackctl never removes volumes"))),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => match self.map(&format!("remove {} {id}", kind.as_str()), e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let what = format!("exec {:?} in {}", cmd.join(" "), short(container));
        let created = self.docker.create_exec(container, config).await.map_err(|e| self.map(&what, e))?;
        let mut output = String::new();
        if let StartExecResults::Attached { output: mut stream, .. } =
            self.docker.start_exec(&created.id, None::<StartExecOptions>).await.map_err(|e| self.map(&what, e))?
        {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.map(&what, e))?;
                output.push_str(&chunk.to_string());
            }
        }
        let inspect = self.docker.inspect_exec(&created.id).await.map_err(|e| self.map(&what, e))?;
        Ok(ExecOutput { exit_code: inspect.exit_code.unwrap_or(-1), output })
    }

    async fn put_files(&self, container: &str, dir: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let entries: Vec<(&str, Option<&[u8]>)> = files.iter().map(|(n, c)| (*n, Some(*c))).collect();
        self.upload(container, dir, &entries).await
    }

    async fn put_dirs(&self, container: &str, dir: &str, names: &[&str]) -> Result<()> {
        let entries: Vec<(&str, Option<&[u8]>)> = names.iter().map(|n| (*n, None)).collect();
        self.upload(container, dir, &entries).await
    }

    async fn container_health(&self, container: &str) -> Result<Option<String>> {
        match self.docker.inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>).await {
            Ok(c) => Ok(c.state.and_then(|s| s.health).and_then(|h| h.status).map(|s| s.to_string())),
            Err(e) => match self.map("inspect container", e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn get_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(bytes) = self.download(container, path).await? else { return Ok(None) };
        let mut archive = tar::Archive::new(&bytes[..]);
        let bad = |e: std::io::Error| EngineError::Other(format!("reading tar of {path}: {e}"));
        // The archive of a single file holds exactly that file.
        let Some(entry) = archive.entries().map_err(bad)?.next() else { return Ok(None) };
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut entry.map_err(bad)?, &mut buf).map_err(bad)?;
        Ok(Some(buf))
    }

    async fn get_dir(&self, container: &str, dir: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let Some(bytes) = self.download(container, dir).await? else { return Ok(None) };
        files_in_dir(&bytes).map(Some).map_err(|e| EngineError::Other(format!("reading tar of {dir}: {e}")))
    }

    async fn container_logs(&self, container: &str, since: i64) -> Result<Logs> {
        let since = i32::try_from(since.max(0)).unwrap_or(i32::MAX);
        let opts = LogsOptions { stdout: true, stderr: false, since, ..Default::default() };
        let what = format!("read the log of {}", short(container));
        let mut stream = self.docker.logs(container, Some(opts));
        let (mut logs, mut bytes, mut partial) = (Logs::default(), 0usize, String::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.map(&what, e))?;
            let data = chunk.into_bytes();
            bytes += data.len();
            if bytes > super::MAX_LOG_BYTES {
                logs.truncated = true;
                break;
            }
            partial.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = partial.find('\n') {
                logs.lines.push(partial[..end].to_string());
                partial.drain(..=end);
            }
        }
        if !partial.is_empty() && !logs.truncated {
            logs.lines.push(partial);
        }
        Ok(logs)
    }
}

use super::short_id as short;

/// The regular files one level below the top of a directory's archive, by name: the archive
/// of `/etc/stackctl` holds `stackctl/`, `stackctl/live.conf`, ...
impl DockerEngine {
    /// One tar upload into `dir`: a file for `(name, Some(content))`, an empty directory for
    /// `(name, None)`. Each entry replaces what had its name, a file by a directory too (the
    /// engine does that only when told it may).
    async fn upload(&self, container: &str, dir: &str, entries: &[(&str, Option<&[u8]>)]) -> Result<()> {
        let names = entries.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let bad = |e: std::io::Error| EngineError::Other(format!("building tar for {names}: {e}"));
        let mtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(mtime);
            match content {
                Some(content) => {
                    header.set_size(content.len() as u64);
                    header.set_mode(0o644);
                    header.set_cksum();
                    builder.append_data(&mut header, name, *content).map_err(bad)?;
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_cksum();
                    builder.append_data(&mut header, format!("{name}/"), std::io::empty()).map_err(bad)?;
                }
            }
        }
        let archive = builder.into_inner().map_err(bad)?;
        let opts = UploadToContainerOptions { path: dir.to_string(), no_overwrite_dir_non_dir: Some("false".into()), ..Default::default() };
        self.docker
            .upload_to_container(container, Some(opts), bollard::body_full(archive.into()))
            .await
            .map_err(|e| self.map(&format!("write {names} in {dir} of {}", short(container)), e))
    }
}

fn files_in_dir(tar_bytes: &[u8]) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let mut parts = path.components();
        let (Some(_dir), Some(name), None) = (parts.next(), parts.next(), parts.next()) else { continue };
        let name = name.as_os_str().to_string_lossy().into_owned();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut buf)?;
        files.insert(name, buf);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: &str) -> BollardRequest {
        hyper::Request::builder()
            .uri("http://localhost/v1.41/services/create")
            .header("X-Registry-Auth", auth)
            .header("X-Other", "a+b/c")
            .body(bollard::body_full(Default::default()))
            .unwrap()
    }

    #[test]
    fn registry_auth_header_is_reencoded_as_base64url() {
        use base64::Engine as _;
        // '~' and '?' at every offset mod 3: the standard encoding has both '+' and '/'.
        let json = r#"{"username":"stackctl","password":"pw~?~?~?","serveraddress":"127.0.0.1:5001"}"#;
        let standard = base64::engine::general_purpose::STANDARD.encode(json);
        assert!(standard.contains('+') && standard.contains('/'), "{standard}");
        let req = registry_auth_base64url(request(&standard));
        let sent = req.headers()["x-registry-auth"].to_str().unwrap().to_string();
        assert_eq!(base64::engine::general_purpose::URL_SAFE.decode(&sent).unwrap(), json.as_bytes());
        assert!(req.headers()["x-registry-auth"].is_sensitive());
        assert_eq!(req.headers()["x-other"], "a+b/c", "other headers untouched");
        // Already base64url-clean values are left alone.
        let req = registry_auth_base64url(request("eyJ1c2VybmFtZSI6InUifQ=="));
        assert_eq!(req.headers()["x-registry-auth"], "eyJ1c2VybmFtZSI6InUifQ==");
    }

    #[test]
    fn unauthorized_is_recognised_in_the_engines_words() {
        assert!(looks_unauthorized(Some(500), "resolve image x: Head \"http://127.0.0.1:5001/v2/x/manifests/v1\": no basic auth credentials"));
        assert!(looks_unauthorized(Some(401), "unauthorized: authentication required"));
        assert!(looks_unauthorized(Some(500), "denied: requested access to the resource is denied"));
        assert!(!looks_unauthorized(Some(404), "manifest unknown: manifest unknown"));
        assert!(!looks_unauthorized(Some(500), "Get \"http://127.0.0.1:5009/v2/\": dial tcp 127.0.0.1:5009: connect: connection refused"));
    }

    #[test]
    fn a_directory_archive_gives_the_files_directly_in_it() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            builder.append_data(&mut h, path, data).unwrap();
        };
        add("stackctl/", tar::EntryType::Directory, b"");
        add("stackctl/live.conf", tar::EntryType::Regular, b"server {}");
        add("stackctl/live-green-web", tar::EntryType::Regular, b"");
        add("stackctl/old/", tar::EntryType::Directory, b"");
        add("stackctl/old/live.conf", tar::EntryType::Regular, b"older");
        let files = files_in_dir(&builder.into_inner().unwrap()).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["live-green-web", "live.conf"]);
        assert_eq!(files["live.conf"], b"server {}");
    }
}
