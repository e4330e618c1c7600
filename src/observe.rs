//! The cluster as it is, read once and read only: stackctl's services, the stack record and
//! the config installed in nginx (with the switch files an interrupted deploy may have left).
//! `deploy` plans from it; `plan` also shows the installed config and the current specs.

use std::collections::BTreeSet;

use crate::engine::{Engine, EngineError, ServiceInfo};
use crate::plan::{Existing, Kind, Observed};
use crate::proxy::{self, nginx::NginxProxy, Proxy};
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
    /// A deploy in progress, from the record.
    pub lock: Option<LockInfo>,
}

pub async fn observe<E: Engine>(engine: &E, stack: &Stack) -> Result<Observation, EngineError> {
    let infos = engine.services(&stack.name).await?;
    let services: Vec<Existing> = infos.iter().filter_map(Existing::from_info).collect();
    let record = record::read(engine, &stack.name).await?.map(|(_, r)| r).unwrap_or_default();
    let proxy_exists = services.iter().any(|s| s.kind == Some(Kind::Proxy));
    let (mut routing, mut nginx_config) = (None, None);
    if proxy_exists {
        let proxy = NginxProxy::of(engine, stack);
        if let Ok(Some(text)) = proxy.current().await {
            if let Some(summary) = proxy::parse_summary(&text) {
                let colours = proxy.colours(&summary).await.map_err(|e| EngineError::Other(e.to_string()))?;
                routing = Some(crate::plan::serving(&services, &colours, &record.live));
            }
            nginx_config = Some(text);
        }
    }
    // A recorded live release whose service is gone (removed by hand) is no live release:
    // routing must not look for its tasks, and the next switch records the new one.
    let mut live = record.live;
    live.retain(|service, n| services.iter().any(|s| &s.service == service && s.release == Some(*n) && s.kind == Some(Kind::Routed)));
    let observed = Observed { live, seq: record.seq, services, routing, now: record::now_unix() };
    Ok(Observation { observed, infos, nginx_config, lock: record.lock })
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
