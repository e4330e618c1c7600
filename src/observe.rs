//! The cluster as it is, read once and read only: stackctl's services, the stack record and
//! the config installed in nginx (with the switch files an interrupted deploy may have left).
//! `deploy` plans from it; `plan` also shows the installed config and the current specs.

use std::collections::BTreeSet;

use crate::engine::{Engine, EngineError, ServiceInfo};
use crate::plan::{Existing, Kind, Observed};
use crate::proxy::{self, nginx::NginxFiles, nginx::NginxProxy};
use crate::record::{self, LockInfo};
use crate::spec::Stack;

/// One observation of a stack.
#[derive(Debug, Clone)]
pub struct Observation {
    /// What the planner needs.
    pub observed: Observed,
    /// The services as the engine returned them: their current specs and versions.
    pub infos: Vec<ServiceInfo>,
    /// The config installed in nginx (first replica), `None` when there is none or no nginx.
    pub nginx_config: Option<String>,
    /// nginx's config directory as read (every replica), `None` when no nginx runs.
    pub nginx_files: Option<NginxFiles>,
    /// A deploy in progress, from the record.
    pub lock: Option<LockInfo>,
}

pub async fn observe<E: Engine>(engine: &E, stack: &Stack) -> Result<Observation, EngineError> {
    // Three independent reads at once (a rollback's time to the flip is mostly these): the
    // services, the record, and one read of nginx's directory (config and switch files).
    let nginx = NginxProxy::of(engine, stack);
    let (cluster, files) = tokio::join!(cluster(engine, stack), nginx.files());
    Ok(cluster?.with_nginx(files.ok()))
}

/// The services and the record, without nginx: what a rollback needs to start bringing a
/// retained release up while nginx's directory is still being read (see [`Cluster::with_nginx`]).
pub async fn cluster<E: Engine>(engine: &E, stack: &Stack) -> Result<Cluster, EngineError> {
    let (infos, record) = tokio::join!(engine.services(&stack.name), record::read(engine, &stack.name));
    Ok(Cluster { infos: infos?, record: record?.map(|(_, r)| r).unwrap_or_default() })
}

/// Half an observation: the stack's services and its record as read.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub infos: Vec<ServiceInfo>,
    pub record: record::Record,
}

impl Cluster {
    /// The observation, with what nginx's directory says (`None`: unreadable or no nginx, so
    /// no routing is known).
    pub fn with_nginx(self, files: Option<NginxFiles>) -> Observation {
        let Cluster { infos, record } = self;
        let services: Vec<Existing> = infos.iter().filter_map(Existing::from_info).collect();
        let proxy_exists = services.iter().any(|s| s.kind == Some(Kind::Proxy));
        let (mut routing, mut nginx_config, mut nginx_files) = (None, None, None);
        if let Some(files) = files.filter(|_| proxy_exists) {
            if let Some(text) = files.config() {
                if let Some(summary) = proxy::parse_summary(&text) {
                    routing = Some(crate::plan::serving(&services, &files.colours(&summary), &record.live));
                }
                nginx_config = Some(text);
            }
            nginx_files = Some(files);
        }
        // A recorded live release whose service is gone (removed by hand) is no live release:
        // routing must not look for its tasks, and the next switch records the new one.
        let mut live = record.live;
        live.retain(|service, n| services.iter().any(|s| &s.service == service && s.release == Some(*n) && s.kind == Some(Kind::Routed)));
        let observed = Observed { live, seq: record.seq, services, routing, now: record::now_unix() };
        Observation { observed, infos, nginx_config, nginx_files, lock: record.lock }
    }
}

/// `ip:port` of those of `ids` (running tasks of the release `swarm_name` of the routed
/// `service`) that the network nginx reaches it by already knows: one read, no waiting.
pub async fn task_servers<E: Engine>(
    engine: &E,
    stack: &Stack,
    service: &str,
    swarm_name: &str,
    ids: &BTreeSet<&str>,
) -> Result<Vec<String>, EngineError> {
    let port = crate::spec::route_of(stack, service).map(|r| r.port).ok_or_else(|| EngineError::Other(format!("{service} is not routed")))?;
    let network = crate::spec::route_network(stack, service).map_err(EngineError::Other)?;
    let addrs = engine.task_addresses(&network, swarm_name).await?;
    Ok(addrs.iter().filter(|(id, _)| ids.contains(id.as_str())).map(|(_, ip)| format!("{ip}:{port}")).collect())
}
