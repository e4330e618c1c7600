//! `stackctl status`: what is live, what is retained, and what nginx routes to.
//!
//! Everything comes from the cluster (service labels, the stack record, the config installed
//! in nginx), so any machine that can reach a manager sees the same answer.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Engine, EngineError};
use crate::history;
use crate::plan::{Existing, Kind};
use crate::proxy::{self, nginx::NginxProxy, RoutingSummary};
use crate::record::{self, LockInfo};
use crate::release;
use crate::spec::Stack;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskStatus {
    pub id: String,
    pub state: String,
    /// Docker's health status, where the container runs on this node and has a check.
    pub health: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceStatus {
    /// Name in the stack file.
    pub service: String,
    /// Swarm service name.
    pub name: String,
    pub kind: String,
    pub release: Option<u64>,
    pub color: Option<String>,
    /// True for the live release of a routed service.
    pub live: bool,
    /// Image pinned by digest.
    pub image: String,
    pub replicas: u64,
    pub tasks: Vec<TaskStatus>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    pub stack: String,
    /// The environment the stack was last deployed as (`--env`, from the release history);
    /// `None` when it was deployed without one, or never.
    pub env: Option<String>,
    pub live: BTreeMap<String, u64>,
    pub services: Vec<ServiceStatus>,
    /// What the config installed in nginx routes to (`None` when it could not be read).
    pub routing: Option<RoutingSummary>,
    /// The release users of each routed service reach: the running release of the colour
    /// nginx sends them to.
    pub serving: BTreeMap<String, u64>,
    /// The colour nginx sends the users of each routed service to.
    pub colours: BTreeMap<String, String>,
    /// Routed services in maintenance (`stackctl maintenance on`): users get a 503.
    pub maintenance: Vec<String>,
    /// Set while a deploy is running.
    pub lock: Option<LockInfo>,
    /// Disagreements worth a look (nginx and the record out of step, live release missing).
    pub problems: Vec<String>,
}

pub async fn status<E: Engine>(engine: &E, stack: &Stack) -> Result<StatusReport, EngineError> {
    let record = record::read(engine, &stack.name).await?.map(|(_, r)| r).unwrap_or_default();
    let infos = engine.services(&stack.name).await?;
    let mut services = Vec::new();
    for info in &infos {
        let Some(existing) = Existing::from_info(info) else { continue };
        let mut tasks = Vec::new();
        for t in engine.tasks(&info.id).await?.into_iter().filter(|t| t.desired_state == "running") {
            let health = match &t.container_id {
                Some(c) => engine.container_health(c).await.unwrap_or(None),
                None => None,
            };
            tasks.push(TaskStatus { id: t.id, state: t.state, health, error: t.error });
        }
        let image = info
            .spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        services.push(ServiceStatus {
            live: existing.release.is_some() && record.live.get(&existing.service) == existing.release.as_ref(),
            service: existing.service,
            name: existing.name,
            kind: existing.kind.map(Kind::as_str).unwrap_or("unknown").to_string(),
            release: existing.release,
            color: info.label(release::COLOR).map(String::from),
            image,
            replicas: existing.replicas,
            tasks,
        });
    }
    services.sort_by(|a, b| (&a.service, std::cmp::Reverse(a.release)).cmp(&(&b.service, std::cmp::Reverse(b.release))));

    // One read of nginx's directory: the installed config and the switch files.
    let files = NginxProxy::of(engine, stack).files().await.ok();
    let routing = files.as_ref().and_then(|f| f.config()).and_then(|text| proxy::parse_summary(&text));
    // Where users really go: the release running under the colour nginx's file names.
    let (serving, colours) = match (&routing, &files) {
        (Some(r), Some(files)) => {
            let colours = files.colours(r);
            let existing: Vec<Existing> = infos.iter().filter_map(Existing::from_info).collect();
            let names = colours.iter().map(|(s, c)| (s.clone(), c.as_str().to_string())).collect();
            (crate::plan::serving(&existing, &colours, &record.live), names)
        }
        _ => (BTreeMap::new(), BTreeMap::new()),
    };
    let maintenance = match (&routing, &files) {
        (Some(r), Some(files)) => {
            let flags: Vec<String> = r.maintenance_files.values().cloned().collect();
            r.in_maintenance(&files.present(&flags)).into_iter().collect()
        }
        _ => Vec::new(),
    };
    let mut problems = Vec::new();
    // The newest entry that names an outcome: what the stack is now.
    let entries = match history::read(engine, &stack.name).await {
        Ok((entries, _)) => entries,
        Err(e) => {
            problems.push(format!("the release history cannot be read ({e}), so the environment is not known"));
            Vec::new()
        }
    };
    // A gate only looked, maintenance only switched nginx; the environment is the one the
    // stack was last deployed as.
    let deploys: Vec<&history::Entry> = entries.iter().filter(|e| matches!(e.verb, history::Verb::Deploy | history::Verb::Rollback)).collect();
    let env = deploys.first().and_then(|e| e.env.clone());
    if !deploys.is_empty() && env != stack.environment.name {
        let name = |e: &Option<String>| e.as_deref().map_or("no environment".to_string(), |e| format!("environment {e}"));
        problems.push(format!(
            "stack {} was last deployed as {}, but this command loaded the file for {}; check --env and the stack name",
            stack.name,
            name(&env),
            name(&stack.environment.name)
        ));
    }
    for (service, n) in &record.live {
        if !services.iter().any(|s| &s.service == service && s.release == Some(*n)) {
            problems.push(format!("the record says {service} r{n} is live, but that service does not exist"));
        }
        match serving.get(service) {
            Some(r) if r == n => {}
            Some(r) => problems.push(format!("nginx routes {service} to r{r}, the record says r{n}; run `stackctl deploy` to repair")),
            None => problems.push(format!("nginx has no route for {service}")),
        }
    }
    Ok(StatusReport { stack: stack.name.clone(), env, live: record.live, services, routing, serving, colours, maintenance, lock: record.lock, problems })
}

impl StatusReport {
    pub fn to_text(&self) -> String {
        let mut s = match &self.env {
            Some(env) => format!("stack {} (environment {env})\n", self.stack),
            None => format!("stack {}\n", self.stack),
        };
        if let Some(l) = &self.lock {
            s.push_str(&format!("deploy in progress: {}\n", l.describe(record::now_unix())));
        }
        for svc in &self.services {
            let tag = match (svc.release, svc.live) {
                (Some(n), true) => format!("r{n} LIVE"),
                (Some(n), false) => format!("r{n}{}", if svc.replicas == 0 { " retained" } else { "" }),
                (None, _) => svc.kind.clone(),
            };
            let running = svc.tasks.iter().filter(|t| t.state == "running").count();
            s.push_str(&format!(
                "  {:<12} {:<14} {:<28} {}/{} running  {}\n",
                svc.service, tag, svc.name, running, svc.replicas, svc.image
            ));
            for t in &svc.tasks {
                let health = t.health.as_deref().map(|h| format!(" ({h})")).unwrap_or_default();
                let err = t.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default();
                s.push_str(&format!("      task {} {}{health}{err}\n", crate::engine::short_id(&t.id), t.state));
            }
        }
        match &self.routing {
            Some(_) => {
                for (svc, colour) in &self.colours {
                    if self.maintenance.contains(svc) {
                        s.push_str(&format!("  nginx answers users of {svc} 503 (maintenance on); the {colour} release stays live behind it\n"));
                        continue;
                    }
                    match self.serving.get(svc) {
                        Some(n) => s.push_str(&format!("  nginx sends users of {svc} to {colour}: r{n}\n")),
                        None => s.push_str(&format!("  nginx sends users of {svc} to {colour}, where no release runs\n")),
                    }
                }
            }
            None => s.push_str("  nginx: no stackctl config installed (or proxy not running)\n"),
        }
        for p in &self.problems {
            s.push_str(&format!("  problem: {p}\n"));
        }
        s
    }
}
