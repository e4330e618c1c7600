//! `stackctl down`: remove a stack and everything stackctl created for it.
//!
//! Found by label (`io.stackctl.stack=<stack>`), never by name: every release, the plain,
//! stateful and proxy services (nginx and its routes go with the proxy service, which is the
//! stack's own), the stack's configs, secrets and networks, its release history and, last, its
//! record. Named volumes hold data: they are kept and listed.
//!
//! The order makes an interrupted `down` safe to run again: services first; then, once their
//! tasks are gone, configs and secrets (Swarm refuses to remove one in use) and networks
//! (refused while a container is still attached, so each removal is retried until a deadline);
//! the history, and the record with the lock in it at the very end. Until then the lock keeps a
//! deploy from starting. A `down` of a stack that has nothing left changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::engine::{Engine, EngineError, Labelled, ObjectType, ServiceInfo};
use crate::events::Events;
use crate::outcome::{refused, DeployError};
use crate::record::{self, LockError, LockInfo};
use crate::release;

/// How long `down` waits for tasks to stop and for Swarm to let go of configs, secrets and
/// networks before it gives up (and says to run it again).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Between two looks at what is still there.
const POLL: Duration = Duration::from_millis(250);

/// What the stack has in the cluster, read without locking.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub stack: String,
    pub services: Vec<ServiceInfo>,
    /// Configs (without the record and the history), secrets and networks.
    pub objects: Vec<(ObjectType, Labelled)>,
    /// The history entries (configs).
    pub history: Vec<Labelled>,
    /// The stack record, and the lock in it if any.
    pub record: Option<Option<LockInfo>>,
    /// Named volumes carrying the stack's label: kept.
    pub volumes: Vec<String>,
}

impl Found {
    /// Nothing `down` would remove (volumes are kept, so they do not count).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.objects.is_empty() && self.history.is_empty() && self.record.is_none()
    }

    /// One line per kind, for the question asked on a terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let names: Vec<&str> = sorted_services(&self.services).iter().map(|i| i.name.as_str()).collect();
        if !names.is_empty() {
            s.push_str(&format!("  services: {}\n", names.join(" ")));
        }
        for kind in [ObjectType::Config, ObjectType::Secret, ObjectType::Network] {
            let names: Vec<&str> = self.objects.iter().filter(|(k, _)| *k == kind).map(|(_, o)| o.name.as_str()).collect();
            if !names.is_empty() {
                s.push_str(&format!("  {}s: {}\n", kind.as_str(), names.join(" ")));
            }
        }
        if !self.history.is_empty() || self.record.is_some() {
            s.push_str(&format!("  records: the stack record and {} history entries\n", self.history.len()));
        }
        if !self.volumes.is_empty() {
            s.push_str(&format!("  kept (named volumes): {}\n", self.volumes.join(" ")));
        }
        s
    }
}

/// What `down` removed, and what it kept.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DownReport {
    pub stack: String,
    /// Swarm service names, nginx's first.
    pub services: Vec<String>,
    pub configs: Vec<String>,
    pub secrets: Vec<String>,
    pub networks: Vec<String>,
    /// History entries removed.
    pub history: usize,
    /// Whether the stack record (live releases, release counter, lock) was removed.
    pub record: bool,
    /// Named volumes left in place (their data is not stackctl's to delete).
    pub kept_volumes: Vec<String>,
    pub total_seconds: f64,
}

impl DownReport {
    pub fn nothing_removed(&self) -> bool {
        self.services.is_empty() && self.configs.is_empty() && self.secrets.is_empty() && self.networks.is_empty() && self.history == 0 && !self.record
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if self.nothing_removed() {
            s.push_str(&format!("stack {}: nothing to remove\n", self.stack));
        } else {
            for (what, names) in [("service", &self.services), ("config", &self.configs), ("secret", &self.secrets), ("network", &self.networks)] {
                for n in names {
                    s.push_str(&format!("removed {what} {n}\n"));
                }
            }
            if self.history > 0 {
                s.push_str(&format!("removed {} history entries\n", self.history));
            }
            if self.record {
                s.push_str("removed the stack record\n");
            }
        }
        for v in &self.kept_volumes {
            s.push_str(&format!("kept volume {v} (remove it with `docker volume rm {v}` on each node that has it)\n"));
        }
        if !self.nothing_removed() {
            s.push_str(&format!("stack {} removed in {:.1}s\n", self.stack, self.total_seconds));
        }
        s
    }
}

/// The stack's label as engine filters take it.
fn stack_label(stack: &str) -> String {
    format!("{}={stack}", release::STACK)
}

/// nginx first (users stop reaching the stack at once, and the releases it routes to go
/// after it), then the routed releases, then plain and stateful services; by name within each.
pub fn sorted_services(services: &[ServiceInfo]) -> Vec<&ServiceInfo> {
    let rank = |s: &ServiceInfo| match s.label(release::ROLE) {
        Some("proxy") => 0,
        Some("routed") => 1,
        _ => 2,
    };
    let mut sorted: Vec<&ServiceInfo> = services.iter().collect();
    sorted.sort_by(|a, b| (rank(a), &a.name).cmp(&(rank(b), &b.name)));
    sorted
}

/// Split the stack's configs into user configs, history entries and the record (the record is
/// found by name, as the lock code does).
fn split_configs(stack: &str, configs: Vec<Labelled>) -> (Vec<Labelled>, Vec<Labelled>, bool) {
    let record_name = record::record_name(stack);
    let (mut user, mut history, mut record) = (Vec::new(), Vec::new(), false);
    for c in configs {
        if c.name == record_name {
            record = true;
        } else if c.labels.get(release::ROLE).map(String::as_str) == Some("history") {
            history.push(c);
        } else {
            user.push(c);
        }
    }
    (user, history, record)
}

/// Read what the stack has, changing nothing.
pub async fn survey<E: Engine>(engine: &E, stack: &str) -> Result<Found, EngineError> {
    let label = stack_label(stack);
    let services = engine.services(stack).await?;
    let (configs, history, _) = split_configs(stack, engine.objects_labelled(ObjectType::Config, &label).await?);
    let mut objects: Vec<(ObjectType, Labelled)> = configs.into_iter().map(|c| (ObjectType::Config, c)).collect();
    for kind in [ObjectType::Secret, ObjectType::Network] {
        objects.extend(engine.objects_labelled(kind, &label).await?.into_iter().map(|o| (kind, o)));
    }
    let record = record::read(engine, stack).await?.map(|(_, r)| r.lock);
    // Swarm labels the volumes it creates for a stack's mounts with Docker's stack label only.
    let mut volumes: Vec<String> = engine
        .objects_labelled(ObjectType::Volume, &format!("{}={stack}", release::NAMESPACE))
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    volumes.sort();
    Ok(Found { stack: stack.to_string(), services, objects, history, record, volumes })
}

/// Refuse when a live process holds the stack's lock (checked again when `down` takes it).
pub fn refuse_if_locked(found: &Found) -> Result<(), DeployError> {
    let Some(Some(lock)) = &found.record else { return Ok(()) };
    let now = record::now_unix();
    match record::holder_state(lock, &record::Identity::current(), record::pid_alive, now) {
        record::Holder::Alive => Err(refused(LockError::Held { stack: found.stack.clone(), holder: lock.describe(now) })),
        _ => Ok(()),
    }
}

/// Remove what `found` lists, under the stack's lock. `found` comes from [`survey`]; what
/// appeared since is removed too, since every step lists again under the lock.
pub async fn down<E: Engine + Clone + 'static>(engine: &E, stack: &str, lock_wait: Duration, ev: &Events) -> Result<DownReport, DeployError> {
    let started = Instant::now();
    let mut report = DownReport { stack: stack.to_string(), ..DownReport::default() };
    ev.phase("locking");
    let held = record::acquire(engine, stack, "down", lock_wait).await.map_err(refused)?;
    if let Some(t) = &held.took_over {
        ev.warn(&format!("took over the lock of stack {stack} from {}", t.describe(record::now_unix())));
    }
    let result = remove_all(engine, stack, ev, &mut report).await;
    if let Err(e) = result {
        // The record stays, so the next `down` finds what is left; give the lock back.
        if let Err(r) = held.release().await {
            ev.warn(&format!("could not release the lock: {r}"));
        }
        return Err(e);
    }
    ev.phase("removing the record");
    held.remove_record().await.map_err(refused)?;
    report.record = true;
    ev.end_phase();
    let found = survey(engine, stack).await.map_err(refused)?;
    report.kept_volumes = found.volumes;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn remove_all<E: Engine>(engine: &E, stack: &str, ev: &Events, report: &mut DownReport) -> Result<(), DeployError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        DeployError::Unfinished(format!("down of stack {stack} stopped while {what}: {e}"))
    };

    ev.phase("removing services");
    let services = engine.services(stack).await.map_err(|e| failed("listing services", &e))?;
    for s in sorted_services(&services) {
        ev.progress(&format!("removing {}", s.name));
        engine.remove_service(&s.id).await.map_err(|e| failed(&format!("removing service {}", s.name), &e))?;
        report.services.push(s.name.clone());
    }

    ev.phase("waiting for tasks to stop");
    for s in &services {
        loop {
            let tasks = match engine.tasks(&s.id).await {
                Ok(tasks) => tasks,
                // Swarm has forgotten the service, and with it its tasks (a container still
                // stopping is waited for by the network removals below).
                Err(EngineError::NotFound(_)) => break,
                Err(e) => return Err(failed("listing tasks", &e)),
            };
            if tasks.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                // Removals below will say what is still in use.
                ev.warn(&format!("{} still has {} task(s) after {}s", s.name, tasks.len(), SETTLE_TIMEOUT.as_secs()));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    let label = stack_label(stack);
    ev.phase("removing configs and secrets");
    let (configs, _, _) = split_configs(stack, engine.objects_labelled(ObjectType::Config, &label).await.map_err(|e| failed("listing configs", &e))?);
    let mut pending: Vec<(ObjectType, Labelled)> = configs.into_iter().map(|c| (ObjectType::Config, c)).collect();
    let secrets = engine.objects_labelled(ObjectType::Secret, &label).await.map_err(|e| failed("listing secrets", &e))?;
    pending.extend(secrets.into_iter().map(|s| (ObjectType::Secret, s)));
    remove_until_gone(engine, pending, deadline, report).await.map_err(|e| failed("removing configs and secrets", &e))?;

    ev.phase("removing networks");
    let networks = engine.objects_labelled(ObjectType::Network, &label).await.map_err(|e| failed("listing networks", &e))?;
    let pending = networks.into_iter().map(|n| (ObjectType::Network, n)).collect();
    remove_until_gone(engine, pending, deadline, report).await.map_err(|e| failed("removing networks", &e))?;
    // Swarm accepts the removal of a network its stopping containers still hold, and this node
    // lists it until they let go: wait for that, so that what `down` reports is gone is gone.
    loop {
        let left = engine.objects_labelled(ObjectType::Network, &label).await.map_err(|e| failed("listing networks", &e))?;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = left.into_iter().map(|n| n.name).collect();
            return Err(failed("waiting for networks to go", &format!("still there after {}s: {}", SETTLE_TIMEOUT.as_secs(), names.join(" "))));
        }
        tokio::time::sleep(POLL).await;
    }

    ev.phase("removing the history");
    let history = engine
        .objects_labelled(ObjectType::Config, &label)
        .await
        .map_err(|e| failed("listing the history", &e))?;
    let (_, history, _) = split_configs(stack, history);
    for h in &history {
        engine.remove_config(&h.id).await.map_err(|e| failed(&format!("removing {}", h.name), &e))?;
    }
    report.history = history.len();
    Ok(())
}

/// Remove each object, trying again those Swarm still refuses (in use by a task that is
/// stopping, a network with endpoints still attached) until `deadline`.
async fn remove_until_gone<E: Engine>(
    engine: &E,
    mut pending: Vec<(ObjectType, Labelled)>,
    deadline: Instant,
    report: &mut DownReport,
) -> Result<(), String> {
    let mut last_errors: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let mut still = Vec::new();
        for (kind, obj) in pending {
            match engine.remove_object(kind, &obj.id).await {
                Ok(()) => {
                    let list = match kind {
                        ObjectType::Config => &mut report.configs,
                        ObjectType::Secret => &mut report.secrets,
                        _ => &mut report.networks,
                    };
                    list.push(obj.name.clone());
                    last_errors.remove(&obj.name);
                }
                Err(e) if e.is_transient() || matches!(e, EngineError::Unreachable { .. }) => return Err(e.to_string()),
                Err(e) => {
                    last_errors.insert(obj.name.clone(), e.to_string());
                    still.push((kind, obj));
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = last_errors.into_iter().map(|(n, e)| format!("{n} ({e})")).collect();
            return Err(format!("still refused after {}s: {}", SETTLE_TIMEOUT.as_secs(), names.join("; ")));
        }
        pending = still;
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::NetworkRequest;
    use bollard::models::{NetworkAttachmentConfig, ServiceSpec, TaskSpec};

    fn service(name: &str, role: &str) -> ServiceInfo {
        ServiceInfo {
            id: name.into(),
            name: name.into(),
            version: 1,
            labels: BTreeMap::from([(release::ROLE.to_string(), role.to_string())]),
            replicas: 1,
            spec: ServiceSpec::default(),
        }
    }

    #[test]
    fn nginx_goes_first_then_releases_then_the_rest() {
        let all = [service("d_db", "stateful"), service("d_web-r2", "routed"), service("d_worker", "plain"), service("d_proxy", "proxy"), service("d_web-r1", "routed")];
        let order: Vec<&str> = sorted_services(&all).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["d_proxy", "d_web-r1", "d_web-r2", "d_db", "d_worker"]);
    }

    #[test]
    fn the_record_and_the_history_are_told_apart_from_user_configs() {
        let c = |name: &str, role: Option<&str>| Labelled {
            id: name.into(),
            name: name.into(),
            labels: role.map(|r| BTreeMap::from([(release::ROLE.to_string(), r.to_string())])).unwrap_or_default(),
        };
        let (user, history, record) = split_configs(
            "d",
            vec![c("d_stackctl-record", Some("record")), c("d_stackctl-history-00000001", Some("history")), c("d_app-1a2b3c", None)],
        );
        assert_eq!(user.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["d_app-1a2b3c"]);
        assert_eq!(history.len(), 1);
        assert!(record);
    }

    /// A stack in the fake cluster: a network in use by a service, a config, a secret, the
    /// record and one history entry; plus another stack's network, which must stay.
    async fn cluster() -> FakeEngine {
        let engine = FakeEngine::default();
        let labels = BTreeMap::from([(release::STACK.to_string(), "d".to_string())]);
        let other = BTreeMap::from([(release::STACK.to_string(), "other".to_string())]);
        let net = |name: &str, labels: &BTreeMap<String, String>| NetworkRequest {
            name: name.into(),
            driver: "overlay".into(),
            attachable: true,
            labels: labels.clone(),
            options: BTreeMap::new(),
        };
        engine.ensure_network(&net("d_default", &labels)).await.unwrap();
        engine.ensure_network(&net("other_default", &other)).await.unwrap();
        engine.ensure_config("d_app-1", b"x", &labels).await.unwrap();
        engine.ensure_secret("d_key-1", b"x", &labels).await.unwrap();
        let mut history = labels.clone();
        history.insert(release::ROLE.into(), "history".into());
        engine.create_config("d_stackctl-history-00000001", b"{}", &history).await.unwrap();
        let mut svc_labels = labels.clone();
        svc_labels.insert(release::ROLE.into(), "plain".into());
        let spec = ServiceSpec {
            name: Some("d_worker".into()),
            labels: Some(svc_labels.into_iter().collect()),
            task_template: Some(TaskSpec {
                networks: Some(vec![NetworkAttachmentConfig { target: Some("d_default".into()), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        engine.create_service(spec).await.unwrap();
        record::acquire(&engine, "d", "deploy", Duration::ZERO).await.unwrap().release().await.unwrap();
        engine
    }

    #[tokio::test]
    async fn down_removes_everything_of_the_stack_and_a_second_down_finds_nothing() {
        let engine = cluster().await;
        let found = survey(&engine, "d").await.unwrap();
        assert!(!found.is_empty());
        assert_eq!(found.objects.len(), 3, "{:?}", found.objects);
        let report = down(&engine, "d", Duration::ZERO, &Events::silent()).await.unwrap();
        assert_eq!(report.services, ["d_worker"]);
        assert_eq!((report.configs.as_slice(), report.secrets.as_slice(), report.networks.as_slice()), (&["d_app-1".to_string()][..], &["d_key-1".to_string()][..], &["d_default".to_string()][..]));
        assert_eq!((report.history, report.record), (1, true));
        let after = survey(&engine, "d").await.unwrap();
        assert!(after.is_empty(), "{after:?}");
        assert!(engine.find_network("other_default").await.unwrap().is_some(), "another stack's network was removed");
    }

    #[tokio::test]
    async fn a_held_lock_refuses_before_anything_is_removed() {
        let engine = cluster().await;
        let held = record::acquire(&engine, "d", "deploy", Duration::ZERO).await.unwrap();
        let found = survey(&engine, "d").await.unwrap();
        let err = refuse_if_locked(&found).unwrap_err().to_string();
        assert!(err.contains("being deployed by deploy"), "{err}");
        let err = down(&engine, "d", Duration::ZERO, &Events::silent()).await.unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(survey(&engine, "d").await.unwrap().services.len(), 1, "nothing may change");
        held.release().await.unwrap();
    }
}
