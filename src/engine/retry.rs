//! Retrying transient engine errors with backoff.
//!
//! A Docker daemon restarting under a deploy answers "connection refused" or 5xx for a few
//! seconds, then comes back. Every call is retried while the error is transient
//! ([`EngineError::is_transient`]), with exponential backoff up to [`Backoff::total`]; other
//! errors pass through at once. Calls that create something are made safe to repeat: a create
//! whose first attempt did land (the daemon died before answering) meets a name conflict on the
//! retry, and the existing object is returned instead.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bollard::models::ServiceSpec;
use tokio::time::Instant;

use super::{ConfigInfo, Engine, EngineError, ExecOutput, Labelled, NetworkRequest, ObjectType, Result, ServiceInfo, StoredConfig, TaskInfo};

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Give up when retrying longer than this.
    pub total: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        // A dockerd restart with Swarm state takes ~5–20 s on a small node.
        Backoff { first: Duration::from_millis(200), max: Duration::from_secs(3), total: Duration::from_secs(60) }
    }
}

/// An [`Engine`] that retries the transient errors of another.
#[derive(Clone)]
pub struct Retrying<E> {
    inner: E,
    backoff: Backoff,
}

impl<E: Engine> Retrying<E> {
    pub fn new(inner: E, backoff: Backoff) -> Self {
        Retrying { inner, backoff }
    }
}

/// Run `call` until it succeeds, fails for good, or the backoff runs out. Returns the result
/// and whether an earlier attempt failed transiently (so a conflict may be our own doing).
async fn retry<T, F, Fut>(backoff: Backoff, mut call: F) -> (Result<T>, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut delay = backoff.first;
    let mut retried = false;
    loop {
        match call().await {
            Err(e) if e.is_transient() && started.elapsed() + delay < backoff.total => {
                retried = true;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.max);
            }
            other => return (other, retried),
        }
    }
}

impl<E: Engine + Clone + 'static> Engine for Retrying<E> {
    async fn check_swarm(&self) -> Result<()> {
        retry(self.backoff, || self.inner.check_swarm()).await.0
    }

    async fn services(&self, stack: &str) -> Result<Vec<ServiceInfo>> {
        retry(self.backoff, || self.inner.services(stack)).await.0
    }

    async fn service(&self, id_or_name: &str) -> Result<Option<ServiceInfo>> {
        retry(self.backoff, || self.inner.service(id_or_name)).await.0
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskInfo>> {
        retry(self.backoff, || self.inner.tasks(service_id)).await.0
    }

    async fn stack_tasks(&self, stack: &str) -> Result<Vec<TaskInfo>> {
        retry(self.backoff, || self.inner.stack_tasks(stack)).await.0
    }

    async fn network_addresses(&self, network: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        retry(self.backoff, || self.inner.network_addresses(network)).await.0
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<String> {
        let name = spec.name.clone().unwrap_or_default();
        match retry(self.backoff, || self.inner.create_service(spec.clone())).await {
            // The first attempt landed before the daemon went away: the service is ours.
            (Err(EngineError::Conflict(_)), true) => match self.service(&name).await? {
                Some(s) => Ok(s.id),
                None => Err(EngineError::Other(format!("service {name} conflicted but does not exist"))),
            },
            (other, _) => other,
        }
    }

    async fn update_service(&self, id: &str, version: u64, spec: ServiceSpec) -> Result<()> {
        match retry(self.backoff, || self.inner.update_service(id, version, spec.clone())).await {
            // "out of sequence" after a transient failure: our own first attempt moved the
            // version on, unless someone else did; the spec tells which.
            (Err(EngineError::Conflict(e)), true) => match self.service(id).await? {
                Some(s) if s.labels == spec.labels.clone().unwrap_or_default().into_iter().collect() && s.version > version => Ok(()),
                _ => Err(EngineError::Conflict(e)),
            },
            (other, _) => other,
        }
    }

    async fn remove_service(&self, id: &str) -> Result<()> {
        retry(self.backoff, || self.inner.remove_service(id)).await.0
    }

    async fn resolve_image(&self, reference: &str) -> Result<String> {
        retry(self.backoff, || self.inner.resolve_image(reference)).await.0
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> Result<String> {
        retry(self.backoff, || self.inner.ensure_network(req)).await.0
    }

    async fn ensure_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        retry(self.backoff, || self.inner.ensure_config(name, data, labels)).await.0
    }

    async fn ensure_secret(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        retry(self.backoff, || self.inner.ensure_secret(name, data, labels)).await.0
    }

    async fn find_config(&self, name: &str) -> Result<Option<String>> {
        retry(self.backoff, || self.inner.find_config(name)).await.0
    }

    async fn find_secret(&self, name: &str) -> Result<Option<String>> {
        retry(self.backoff, || self.inner.find_secret(name)).await.0
    }

    async fn find_network(&self, name: &str) -> Result<Option<String>> {
        retry(self.backoff, || self.inner.find_network(name)).await.0
    }

    async fn config(&self, name: &str) -> Result<Option<ConfigInfo>> {
        retry(self.backoff, || self.inner.config(name)).await.0
    }

    async fn create_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<ConfigInfo> {
        // Not retried into success on conflict: for the stack record, a name conflict is how
        // two deploys racing to create it learn that they lost; the lock logic reads again.
        retry(self.backoff, || self.inner.create_config(name, data, labels)).await.0
    }

    async fn update_config_labels(&self, info: &ConfigInfo, labels: &BTreeMap<String, String>) -> Result<()> {
        // A conflict after a transient failure is reported as a conflict: the record's
        // read-modify-write loop reads again and sees whether its change is there.
        retry(self.backoff, || self.inner.update_config_labels(info, labels)).await.0
    }

    async fn configs_labelled(&self, labels: &[String]) -> Result<Vec<StoredConfig>> {
        retry(self.backoff, || self.inner.configs_labelled(labels)).await.0
    }

    async fn remove_config(&self, id: &str) -> Result<()> {
        // Removing twice is harmless: a removal that landed before the error reads as done.
        retry(self.backoff, || self.inner.remove_config(id)).await.0
    }

    async fn objects_labelled(&self, kind: ObjectType, label: &str) -> Result<Vec<Labelled>> {
        retry(self.backoff, || self.inner.objects_labelled(kind, label)).await.0
    }

    async fn remove_object(&self, kind: ObjectType, id: &str) -> Result<()> {
        // Like remove_config: a removal that landed before the error reads as done.
        retry(self.backoff, || self.inner.remove_object(kind, id)).await.0
    }

    async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput> {
        // Every command stackctl execs (`nginx -t`, `nginx -s reload`) is safe to repeat.
        retry(self.backoff, || self.inner.exec(container, cmd)).await.0
    }

    async fn put_files(&self, container: &str, dir: &str, files: &[(&str, &[u8])]) -> Result<()> {
        retry(self.backoff, || self.inner.put_files(container, dir, files)).await.0
    }

    async fn container_health(&self, container: &str) -> Result<Option<String>> {
        retry(self.backoff, || self.inner.container_health(container)).await.0
    }

    async fn get_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        retry(self.backoff, || self.inner.get_file(container, path)).await.0
    }

    async fn get_dir(&self, container: &str, dir: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        retry(self.backoff, || self.inner.get_dir(container, dir)).await.0
    }

    async fn container_logs(&self, container: &str, since: i64) -> Result<super::Logs> {
        retry(self.backoff, || self.inner.container_logs(container, since)).await.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> Backoff {
        Backoff { first: Duration::from_millis(1), max: Duration::from_millis(4), total: Duration::from_millis(500) }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let (r, retried) = retry(fast(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(EngineError::Unreachable { host: "h".into(), detail: "refused".into() })
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert!(retried);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let (r, retried) = retry(fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(EngineError::NotFound("x".into()))
        })
        .await;
        assert!(matches!(r, Err(EngineError::NotFound(_))));
        assert!(!retried);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A cluster in memory whose daemon can go away: `lose` makes the next creates or updates
    /// land and then lose their answer (the daemon died before replying), `down` makes the
    /// next calls fail without landing. Only what these tests call is implemented.
    #[derive(Clone, Default)]
    struct Fake(std::sync::Arc<std::sync::Mutex<FakeState>>);

    #[derive(Default)]
    struct FakeState {
        services: Vec<ServiceInfo>,
        lose: u32,
        down: u32,
        creates: u32,
        updates: u32,
    }

    fn unreachable() -> EngineError {
        EngineError::Unreachable { host: "fake".into(), detail: "connection refused".into() }
    }

    impl Fake {
        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().unwrap()
        }

        /// Someone else's update, straight into the cluster.
        fn update_behind_our_back(&self, name: &str, labels: &[(&str, &str)]) {
            let mut st = self.state();
            let s = st.services.iter_mut().find(|s| s.name == name).unwrap();
            s.version += 1;
            s.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        }
    }

    fn spec(name: &str, labels: &[(&str, &str)]) -> ServiceSpec {
        ServiceSpec {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    impl Engine for Fake {
        async fn create_service(&self, spec: ServiceSpec) -> Result<String> {
            let mut st = self.state();
            st.creates += 1;
            if st.down > 0 {
                st.down -= 1;
                return Err(unreachable());
            }
            let name = spec.name.clone().unwrap_or_default();
            if st.services.iter().any(|s| s.name == name) {
                return Err(EngineError::Conflict(format!("name conflicts with an existing object: {name}")));
            }
            let id = format!("id{}", st.services.len() + 1);
            let labels = spec.labels.clone().unwrap_or_default().into_iter().collect();
            st.services.push(ServiceInfo { id: id.clone(), name, version: 10, labels, replicas: 1, spec });
            if st.lose > 0 {
                st.lose -= 1;
                return Err(unreachable());
            }
            Ok(id)
        }

        async fn update_service(&self, id: &str, version: u64, spec: ServiceSpec) -> Result<()> {
            let mut st = self.state();
            st.updates += 1;
            if st.down > 0 {
                st.down -= 1;
                return Err(unreachable());
            }
            let lose = st.lose > 0;
            let s = st.services.iter_mut().find(|s| s.id == id).ok_or_else(|| EngineError::NotFound(id.into()))?;
            if s.version != version {
                return Err(EngineError::Conflict("update out of sequence".into()));
            }
            s.version += 1;
            s.labels = spec.labels.clone().unwrap_or_default().into_iter().collect();
            s.spec = spec;
            if lose {
                st.lose -= 1;
                return Err(unreachable());
            }
            Ok(())
        }

        async fn service(&self, id_or_name: &str) -> Result<Option<ServiceInfo>> {
            Ok(self.state().services.iter().find(|s| s.id == id_or_name || s.name == id_or_name).cloned())
        }

        async fn check_swarm(&self) -> Result<()> {
            unimplemented!()
        }
        async fn services(&self, _: &str) -> Result<Vec<ServiceInfo>> {
            unimplemented!()
        }
        async fn tasks(&self, _: &str) -> Result<Vec<TaskInfo>> {
            unimplemented!()
        }
        async fn stack_tasks(&self, _: &str) -> Result<Vec<TaskInfo>> {
            unimplemented!()
        }
        async fn network_addresses(&self, _: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
            unimplemented!()
        }
        async fn remove_service(&self, _: &str) -> Result<()> {
            unimplemented!()
        }
        async fn resolve_image(&self, _: &str) -> Result<String> {
            unimplemented!()
        }
        async fn ensure_network(&self, _: &NetworkRequest) -> Result<String> {
            unimplemented!()
        }
        async fn find_network(&self, _: &str) -> Result<Option<String>> {
            unimplemented!()
        }
        async fn ensure_config(&self, _: &str, _: &[u8], _: &BTreeMap<String, String>) -> Result<String> {
            unimplemented!()
        }
        async fn ensure_secret(&self, _: &str, _: &[u8], _: &BTreeMap<String, String>) -> Result<String> {
            unimplemented!()
        }
        async fn find_config(&self, _: &str) -> Result<Option<String>> {
            unimplemented!()
        }
        async fn find_secret(&self, _: &str) -> Result<Option<String>> {
            unimplemented!()
        }
        async fn config(&self, _: &str) -> Result<Option<ConfigInfo>> {
            unimplemented!()
        }
        async fn create_config(&self, _: &str, _: &[u8], _: &BTreeMap<String, String>) -> Result<ConfigInfo> {
            unimplemented!()
        }
        async fn update_config_labels(&self, _: &ConfigInfo, _: &BTreeMap<String, String>) -> Result<()> {
            unimplemented!()
        }
        async fn configs_labelled(&self, _: &[String]) -> Result<Vec<StoredConfig>> {
            unimplemented!()
        }
        async fn remove_config(&self, _: &str) -> Result<()> {
            unimplemented!()
        }
        async fn objects_labelled(&self, _: ObjectType, _: &str) -> Result<Vec<Labelled>> {
            unimplemented!()
        }
        async fn remove_object(&self, _: ObjectType, _: &str) -> Result<()> {
            unimplemented!()
        }
        async fn exec(&self, _: &str, _: &[&str]) -> Result<ExecOutput> {
            unimplemented!()
        }
        async fn put_files(&self, _: &str, _: &str, _: &[(&str, &[u8])]) -> Result<()> {
            unimplemented!()
        }
        async fn container_health(&self, _: &str) -> Result<Option<String>> {
            unimplemented!()
        }
        async fn get_file(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>> {
            unimplemented!()
        }
        async fn get_dir(&self, _: &str, _: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
            unimplemented!()
        }
        async fn container_logs(&self, _: &str, _: i64) -> Result<crate::engine::Logs> {
            unimplemented!()
        }
    }

    #[tokio::test]
    async fn a_create_that_landed_before_the_daemon_went_away_is_not_made_twice() {
        let fake = Fake::default();
        fake.state().lose = 1;
        let engine = Retrying::new(fake.clone(), fast());
        let id = engine.create_service(spec("s_web-r2", &[("io.stackctl.release", "2")])).await.expect("the landed create is ours");
        let st = fake.state();
        assert_eq!(st.services.len(), 1, "created once");
        assert_eq!(st.services[0].id, id);
        assert_eq!(st.creates, 2, "tried again, met its own service");
    }

    #[tokio::test]
    async fn a_create_that_never_landed_is_made_once_on_the_retry() {
        let fake = Fake::default();
        fake.state().down = 2;
        let id = Retrying::new(fake.clone(), fast()).create_service(spec("s_web-r2", &[])).await.unwrap();
        let st = fake.state();
        assert_eq!((st.services.len(), st.creates, st.services[0].id.as_str()), (1, 3, id.as_str()));
    }

    #[tokio::test]
    async fn a_name_taken_by_someone_else_stays_a_conflict() {
        let fake = Fake::default();
        fake.create_service(spec("s_web-r2", &[("owner", "someone else")])).await.unwrap();
        let r = Retrying::new(fake.clone(), fast()).create_service(spec("s_web-r2", &[("owner", "us")])).await;
        assert!(matches!(r, Err(EngineError::Conflict(_))), "{r:?}");
        assert_eq!(fake.state().services.len(), 1);
    }

    #[tokio::test]
    async fn an_update_that_landed_before_the_daemon_went_away_is_applied_once() {
        let fake = Fake::default();
        let id = fake.create_service(spec("s_web-r1", &[("replicas", "2")])).await.unwrap();
        fake.state().lose = 1;
        let engine = Retrying::new(fake.clone(), fast());
        engine.update_service(&id, 10, spec("s_web-r1", &[("replicas", "0")])).await.expect("the landed update is ours");
        let s = fake.state().services[0].clone();
        assert_eq!((s.version, s.label("replicas")), (11, Some("0")), "applied once, from version 10");
        assert_eq!(fake.state().updates, 2);
    }

    #[tokio::test]
    async fn an_update_from_a_stale_version_fails_after_a_transient_error_too() {
        let fake = Fake::default();
        let id = fake.create_service(spec("s_web-r1", &[("replicas", "2")])).await.unwrap();
        fake.update_behind_our_back("s_web-r1", &[("replicas", "5")]);
        let engine = Retrying::new(fake.clone(), fast());
        // Without a transient error: the conflict as it is.
        let r = engine.update_service(&id, 10, spec("s_web-r1", &[("replicas", "0")])).await;
        assert!(matches!(r, Err(EngineError::Conflict(_))), "{r:?}");
        // After one (the daemon away, nothing landed): still a conflict, not taken for ours.
        fake.state().down = 1;
        let r = engine.update_service(&id, 10, spec("s_web-r1", &[("replicas", "0")])).await;
        assert!(matches!(r, Err(EngineError::Conflict(_))), "{r:?}");
        let s = fake.state().services[0].clone();
        assert_eq!((s.version, s.label("replicas")), (11, Some("5")), "someone else's update stands");
    }

    #[tokio::test]
    async fn retrying_gives_up_after_the_total() {
        let started = std::time::Instant::now();
        let (r, _) = retry(fast(), || async { Err::<(), _>(EngineError::Api { status: 503, message: "busy".into() }) }).await;
        assert!(r.unwrap_err().is_transient());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
