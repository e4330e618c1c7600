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

use super::{ConfigInfo, Engine, EngineError, ExecOutput, NetworkRequest, Result, ServiceInfo, TaskInfo};

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

    async fn task_addresses(&self, network: &str, service_name: &str) -> Result<BTreeMap<String, String>> {
        retry(self.backoff, || self.inner.task_addresses(network, service_name)).await.0
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

    async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput> {
        // Every command stackctl execs (`nginx -t`, `nginx -s reload`) is safe to repeat.
        retry(self.backoff, || self.inner.exec(container, cmd)).await.0
    }

    async fn put_file(&self, container: &str, dir: &str, name: &str, content: &[u8]) -> Result<()> {
        retry(self.backoff, || self.inner.put_file(container, dir, name, content)).await.0
    }

    async fn container_health(&self, container: &str) -> Result<Option<String>> {
        retry(self.backoff, || self.inner.container_health(container)).await.0
    }

    async fn get_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        retry(self.backoff, || self.inner.get_file(container, path)).await.0
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

    #[tokio::test]
    async fn retrying_gives_up_after_the_total() {
        let started = std::time::Instant::now();
        let (r, _) = retry(fast(), || async { Err::<(), _>(EngineError::Api { status: 503, message: "busy".into() }) }).await;
        assert!(r.unwrap_err().is_transient());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
