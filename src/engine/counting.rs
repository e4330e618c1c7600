//! Counting the calls made to an engine, per operation.
//!
//! What a command costs the Docker daemon is a number worth watching as stacks grow: `plan`
//! of a 20-service stack should not make hundreds of requests. [`Counting`] wraps any
//! [`Engine`] and counts every call by the name of the [`Engine`] method, so a benchmark can
//! print "engine API calls" beside wall time. Put it *inside* [`super::retry::Retrying`]
//! (`Retrying<Counting<DockerEngine>>`) to count each retry as the request it is.
//!
//! A call is one Docker API request for every method of [`super::docker::DockerEngine`]
//! except `exec` (create, start, inspect: three) and the `ensure_*` methods, which may look
//! the object up before creating it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bollard::models::ServiceSpec;

use super::{ConfigInfo, Engine, ExecOutput, Labelled, NetworkRequest, ObjectType, Result, ServiceInfo, StoredConfig, TaskInfo};

/// Calls made, by [`Engine`] method name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls(BTreeMap<&'static str, u64>);

impl Calls {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Calls of one operation (0 when never called).
    pub fn of(&self, op: &str) -> u64 {
        self.0.get(op).copied().unwrap_or(0)
    }

    pub fn by_op(&self) -> &BTreeMap<&'static str, u64> {
        &self.0
    }
}

/// `services 1, tasks 20, …`, by operation name; `none` when nothing was called.
impl fmt::Display for Calls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|(op, n)| format!("{op} {n}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// An [`Engine`] that counts the calls made to another. Clones share one count, because
/// [`super::retry::Retrying`] and the commands clone their engine.
#[derive(Clone)]
pub struct Counting<E> {
    inner: E,
    calls: Arc<Mutex<Calls>>,
}

impl<E: Engine> Counting<E> {
    pub fn new(inner: E) -> Self {
        Counting { inner, calls: Arc::default() }
    }

    /// The calls counted so far.
    pub fn calls(&self) -> Calls {
        self.lock().clone()
    }

    /// The calls counted so far, starting the count again from zero (one measurement each).
    pub fn take(&self) -> Calls {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        // Counters stay meaningful even if a holder panicked: every update is one increment.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count the call when it is made, so a call that fails (or never returns) counts too.
    fn count(&self, op: &'static str) -> &E {
        *self.lock().0.entry(op).or_default() += 1;
        &self.inner
    }
}

impl<E: Engine> Engine for Counting<E> {
    async fn check_swarm(&self) -> Result<()> {
        self.count("check_swarm").check_swarm().await
    }

    async fn services(&self, stack: &str) -> Result<Vec<ServiceInfo>> {
        self.count("services").services(stack).await
    }

    async fn service(&self, id_or_name: &str) -> Result<Option<ServiceInfo>> {
        self.count("service").service(id_or_name).await
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskInfo>> {
        self.count("tasks").tasks(service_id).await
    }

    async fn stack_tasks(&self, stack: &str) -> Result<Vec<TaskInfo>> {
        self.count("stack_tasks").stack_tasks(stack).await
    }

    async fn network_addresses(&self, network: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        self.count("network_addresses").network_addresses(network).await
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<String> {
        self.count("create_service").create_service(spec).await
    }

    async fn update_service(&self, id: &str, version: u64, spec: ServiceSpec) -> Result<()> {
        self.count("update_service").update_service(id, version, spec).await
    }

    async fn remove_service(&self, id: &str) -> Result<()> {
        self.count("remove_service").remove_service(id).await
    }

    async fn resolve_image(&self, reference: &str) -> Result<String> {
        self.count("resolve_image").resolve_image(reference).await
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> Result<String> {
        self.count("ensure_network").ensure_network(req).await
    }

    async fn ensure_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        self.count("ensure_config").ensure_config(name, data, labels).await
    }

    async fn ensure_secret(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        self.count("ensure_secret").ensure_secret(name, data, labels).await
    }

    async fn find_config(&self, name: &str) -> Result<Option<String>> {
        self.count("find_config").find_config(name).await
    }

    async fn find_secret(&self, name: &str) -> Result<Option<String>> {
        self.count("find_secret").find_secret(name).await
    }

    async fn find_network(&self, name: &str) -> Result<Option<String>> {
        self.count("find_network").find_network(name).await
    }

    async fn config(&self, name: &str) -> Result<Option<ConfigInfo>> {
        self.count("config").config(name).await
    }

    async fn create_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<ConfigInfo> {
        self.count("create_config").create_config(name, data, labels).await
    }

    async fn update_config_labels(&self, info: &ConfigInfo, labels: &BTreeMap<String, String>) -> Result<()> {
        self.count("update_config_labels").update_config_labels(info, labels).await
    }

    async fn configs_labelled(&self, labels: &[String]) -> Result<Vec<StoredConfig>> {
        self.count("configs_labelled").configs_labelled(labels).await
    }

    async fn remove_config(&self, id: &str) -> Result<()> {
        self.count("remove_config").remove_config(id).await
    }

    async fn objects_labelled(&self, kind: ObjectType, label: &str) -> Result<Vec<Labelled>> {
        self.count("objects_labelled").objects_labelled(kind, label).await
    }

    async fn remove_object(&self, kind: ObjectType, id: &str) -> Result<()> {
        self.count("remove_object").remove_object(kind, id).await
    }

    async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput> {
        self.count("exec").exec(container, cmd).await
    }

    async fn put_files(&self, container: &str, dir: &str, files: &[(&str, &[u8])]) -> Result<()> {
        self.count("put_files").put_files(container, dir, files).await
    }

    async fn container_health(&self, container: &str) -> Result<Option<String>> {
        self.count("container_health").container_health(container).await
    }

    async fn get_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        self.count("get_file").get_file(container, path).await
    }

    async fn get_dir(&self, container: &str, dir: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        self.count("get_dir").get_dir(container, dir).await
    }

    async fn container_logs(&self, container: &str, since: i64) -> Result<super::Logs> {
        self.count("container_logs").container_logs(container, since).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::retry::{Backoff, Retrying};
    use crate::engine::EngineError;
    use std::time::Duration;

    /// A daemon that is away: every call fails as unreachable (transient), except
    /// `service`, which answers that the service does not exist (permanent, not retried).
    #[derive(Clone)]
    struct Away;

    fn away() -> EngineError {
        EngineError::Unreachable { host: "test".into(), detail: "connection refused".into() }
    }

    impl Engine for Away {
        async fn check_swarm(&self) -> Result<()> {
            Err(away())
        }
        async fn services(&self, _: &str) -> Result<Vec<ServiceInfo>> {
            Err(away())
        }
        async fn service(&self, _: &str) -> Result<Option<ServiceInfo>> {
            Ok(None)
        }
        async fn tasks(&self, _: &str) -> Result<Vec<TaskInfo>> {
            Err(away())
        }
        async fn stack_tasks(&self, _: &str) -> Result<Vec<TaskInfo>> {
            Err(away())
        }
        async fn network_addresses(&self, _: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
            Err(away())
        }
        async fn create_service(&self, _: ServiceSpec) -> Result<String> {
            Err(away())
        }
        async fn update_service(&self, _: &str, _: u64, _: ServiceSpec) -> Result<()> {
            Err(away())
        }
        async fn remove_service(&self, _: &str) -> Result<()> {
            Err(away())
        }
        async fn resolve_image(&self, _: &str) -> Result<String> {
            Err(away())
        }
        async fn ensure_network(&self, _: &NetworkRequest) -> Result<String> {
            Err(away())
        }
        async fn ensure_config(&self, _: &str, _: &[u8], _: &BTreeMap<String, String>) -> Result<String> {
            Err(away())
        }
        async fn ensure_secret(&self, _: &str, _: &[u8], _: &BTreeMap<String, String>) -> Result<String> {
            Err(away())
        }
        async fn find_config(&self, _: &str) -> Result<Option<String>> {
            Err(away())
        }
        async fn find_secret(&self, _: &str) -> Result<Option<String>> {
            Err(away())
        }
        async fn find_network(&self, _: &str) -> Result<Option<String>> {
            Err(away())
        }
        async fn config(&self, _: &str) -> Result<Option<ConfigInfo>> {
            Err(away())
        }
        async fn create_config(&self, _: &str, _: &[u8], _: &BTreeMap<String, String>) -> Result<ConfigInfo> {
            Err(away())
        }
        async fn update_config_labels(&self, _: &ConfigInfo, _: &BTreeMap<String, String>) -> Result<()> {
            Err(away())
        }
        async fn configs_labelled(&self, _: &[String]) -> Result<Vec<StoredConfig>> {
            Err(away())
        }
        async fn remove_config(&self, _: &str) -> Result<()> {
            Err(away())
        }
        async fn objects_labelled(&self, _: ObjectType, _: &str) -> Result<Vec<Labelled>> {
            Err(away())
        }
        async fn remove_object(&self, _: ObjectType, _: &str) -> Result<()> {
            Err(away())
        }
        async fn exec(&self, _: &str, _: &[&str]) -> Result<ExecOutput> {
            Err(away())
        }
        async fn put_files(&self, _: &str, _: &str, _: &[(&str, &[u8])]) -> Result<()> {
            Err(away())
        }
        async fn container_health(&self, _: &str) -> Result<Option<String>> {
            Err(away())
        }
        async fn get_file(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>> {
            Err(away())
        }
        async fn get_dir(&self, _: &str, _: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
            Err(away())
        }
        async fn container_logs(&self, _: &str, _: i64) -> Result<crate::engine::Logs> {
            Err(away())
        }
    }

    fn fast() -> Backoff {
        Backoff { first: Duration::from_millis(1), max: Duration::from_millis(2), total: Duration::from_millis(30) }
    }

    #[tokio::test]
    async fn every_call_counts_by_operation_failed_ones_and_retries_too() {
        let counting = Counting::new(Away);
        let engine = Retrying::new(counting.clone(), fast());
        assert!(engine.services("demo").await.is_err());
        assert_eq!(engine.service("demo_web").await.unwrap().map(|s| s.id), None);
        assert_eq!(engine.service("demo_proxy").await.unwrap().map(|s| s.id), None);

        let calls = counting.calls();
        // The daemon stayed away for the whole backoff: the first attempt and its retries.
        assert!(calls.of("services") >= 3, "{calls}");
        // A permanent answer is not retried: one call each.
        assert_eq!(calls.of("service"), 2, "{calls}");
        assert_eq!(calls.of("tasks"), 0);
        assert_eq!(calls.total(), calls.of("services") + 2);
        assert_eq!(calls.by_op().keys().copied().collect::<Vec<_>>(), ["service", "services"]);
    }

    #[tokio::test]
    async fn clones_share_one_count_and_take_starts_it_again() {
        let counting = Counting::new(Away);
        let twin = counting.clone();
        twin.service("a").await.unwrap();
        counting.service("b").await.unwrap();
        assert_eq!(counting.calls().to_string(), "service 2");
        assert_eq!(twin.take().total(), 2);
        assert_eq!(counting.calls(), Calls::default());
        assert_eq!(counting.calls().to_string(), "none");
        let _ = counting.check_swarm().await;
        assert_eq!(twin.calls().to_string(), "check_swarm 1");
    }
}
