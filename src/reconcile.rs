//! `stackctl reconcile`: what a cron job runs every minute so that what runs in the cluster and
//! what nginx routes to stay what was last deployed, whatever people, crashes or Swarm did.
//!
//! Per stack: one observation (services, record, history, nginx's directory: a fixed number
//! of engine calls, whatever the tasks or retained releases), the pure [`drift::findings`],
//! and only when something is to be repaired the stack's lock (never waited for: a stack being
//! deployed is reported busy and skipped), a second observation under it, the repairs, and a
//! history entry (`reconcile`, who `reconcile`). What should be is the last *recorded*
//! release: a stack file that differs from it is reported as changes pending a deploy, never
//! applied.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::drift::{self, Action, Finding, Nginx, Observed};
use crate::engine::{Engine, EngineError, ObjectType};
use crate::events::Events;
use crate::history::{self, Entry, Verb, Who};
use crate::proxy::{self, nginx::NginxProxy, Proxy as _};
use crate::record::{self, Holder, LockError};
use crate::release;
use crate::spec::{Role, Stack};

/// Exit codes (documented in README "stackctl reconcile"): every stack in sync (or busy).
pub const EXIT_IN_SYNC: i32 = 0;
/// An error: a stack could not be observed or a repair failed to run.
pub const EXIT_ERROR: i32 = 1;
/// Drift was found and all of it repaired (with `--dry-run`: all of it would be).
pub const EXIT_REPAIRED: i32 = 6;
/// Drift that needs a person (a changed proxy or stateful service, nothing recorded to put
/// back, nginx down), whether or not other drift was repaired.
pub const EXIT_NEEDS_PERSON: i32 = 7;

/// How long a service put back may take to run its recorded tasks.
const SETTLE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// One stack to reconcile: its name, and its file when one was given.
#[derive(Debug, Clone)]
pub struct Target {
    pub stack: String,
    pub file: Option<Stack>,
}

/// Where a stack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    InSync,
    Repaired,
    /// `--dry-run`: drift found that a run would repair.
    WouldRepair,
    NeedsPerson,
    /// Its lock is held by a live process: skipped.
    Busy,
    Error,
}

impl Status {
    pub fn exit_code(self) -> i32 {
        match self {
            Status::InSync | Status::Busy => EXIT_IN_SYNC,
            Status::Repaired | Status::WouldRepair => EXIT_REPAIRED,
            Status::NeedsPerson => EXIT_NEEDS_PERSON,
            Status::Error => EXIT_ERROR,
        }
    }
}

/// A finding and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    #[serde(flatten)]
    pub finding: Finding,
    /// `done`, `would` (dry run), `person`, or `failed: why`.
    pub result: String,
}

/// One stack's result.
#[derive(Debug, Clone, Serialize)]
pub struct StackReport {
    pub stack: String,
    pub status: Status,
    pub findings: Vec<Repair>,
    /// What the stack file would change, were it deployed (never applied here).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// The lock's holder when busy; the error when one stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The history entry the repairs were written to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_entry: Option<u64>,
    pub seconds: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub stacks: Vec<StackReport>,
    pub exit_code: i32,
    pub dry_run: bool,
}

impl Report {
    pub fn new(stacks: Vec<StackReport>, dry_run: bool) -> Report {
        Report { exit_code: exit_code(&stacks), stacks, dry_run }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in &self.stacks {
            let status = match r.status {
                Status::InSync => "in sync".to_string(),
                Status::Repaired => "repaired".to_string(),
                Status::WouldRepair => "drift found (dry run: nothing changed)".to_string(),
                Status::NeedsPerson => "drift that needs a person".to_string(),
                Status::Busy => format!("busy, skipped ({})", r.detail.as_deref().unwrap_or("locked")),
                Status::Error => format!("error: {}", r.detail.as_deref().unwrap_or("unknown")),
            };
            s.push_str(&format!("stack {}: {status}\n", r.stack));
            for f in &r.findings {
                let what = match f.result.as_str() {
                    "done" => format!("repaired: {}", f.finding.repair),
                    "would" => format!("would {}", f.finding.repair),
                    "person" => f.finding.repair.clone(),
                    other => format!("{other} ({})", f.finding.repair),
                };
                s.push_str(&format!("  {}: {}: {what}\n", f.finding.subject, f.finding.drift));
            }
            for p in &r.pending {
                s.push_str(&format!("  changes pending a deploy (not applied): {p}\n"));
            }
            if let Some(n) = r.history_entry {
                s.push_str(&format!("  recorded as history entry {n}\n"));
            }
        }
        s
    }
}

/// The worst of the stacks' codes: error, then needs a person, then repaired.
pub fn exit_code(stacks: &[StackReport]) -> i32 {
    let rank = |c: i32| match c {
        EXIT_ERROR => 3,
        EXIT_NEEDS_PERSON => 2,
        EXIT_REPAIRED => 1,
        _ => 0,
    };
    stacks.iter().map(|s| s.status.exit_code()).max_by_key(|c| rank(*c)).unwrap_or(EXIT_IN_SYNC)
}

/// Every stack stackctl manages on this engine: the stacks of the records, found by label.
pub async fn all_stacks<E: Engine>(engine: &E) -> Result<Vec<String>, EngineError> {
    let records = engine.objects_labelled(ObjectType::Config, &format!("{}=record", release::ROLE)).await?;
    // A record is a stack's only when its name is that stack's record name.
    let mut stacks: Vec<String> = (records.iter())
        .filter_map(|r| {
            let stack = r.labels.get(release::STACK)?;
            (r.name == record::record_name(stack)).then(|| stack.clone())
        })
        .collect();
    stacks.sort();
    stacks.dedup();
    Ok(stacks)
}

/// Reconcile one stack. Never fails: an error is the report's status.
pub async fn reconcile<E: Engine + Clone + 'static>(engine: &E, target: &Target, dry_run: bool, ev: &Events) -> StackReport {
    let started = Instant::now();
    let mut report = StackReport {
        stack: target.stack.clone(),
        status: Status::InSync,
        findings: Vec::new(),
        pending: Vec::new(),
        detail: None,
        history_entry: None,
        seconds: 0.0,
    };
    if let Err(e) = run(engine, target, dry_run, ev, &mut report).await {
        report.status = Status::Error;
        report.detail = Some(e);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

async fn run<E: Engine + Clone + 'static>(engine: &E, target: &Target, dry_run: bool, ev: &Events, report: &mut StackReport) -> Result<(), String> {
    let stack = &target.stack;
    ev.phase(&format!("observing {stack}"));
    let seen = observe(engine, target).await.map_err(|e| format!("cannot read stack {stack}: {e}"))?;
    if let Some((lock, Holder::Alive)) = &seen.lock {
        report.status = Status::Busy;
        report.detail = Some(lock.describe(record::now_unix()));
        return Ok(());
    }
    let found = drift::findings(&seen);
    let repairable = found.iter().any(|f| !f.needs_person());
    if dry_run || !repairable {
        report.status = status_of(&found, dry_run, false);
        report.findings = found.into_iter().map(|f| Repair { result: if f.needs_person() { "person".into() } else { "would".into() }, finding: f }).collect();
        report.pending = pending(engine, target).await;
        return Ok(());
    }

    // Something to repair: take the lock without waiting, and decide again under it.
    ev.phase(&format!("locking {stack}"));
    let held = match record::acquire(engine, stack, "reconcile", Duration::ZERO).await {
        Ok(held) => held,
        Err(LockError::Held { holder, .. }) => {
            report.status = Status::Busy;
            report.detail = Some(holder);
            return Ok(());
        }
        Err(e) => return Err(format!("cannot take the lock of stack {stack}: {e}")),
    };
    let result = repair_locked(engine, target, &held, ev, report).await;
    if let Err(e) = held.release().await {
        ev.warn(&format!("could not release the lock of stack {stack} ({e}); it goes stale in {}s", record::STALE_AFTER.as_secs()));
    }
    result?;
    report.pending = pending(engine, target).await;
    Ok(())
}

/// Under the lock: observe again, repair every finding in order, record what was done.
async fn repair_locked<E: Engine + Clone + 'static>(
    engine: &E,
    target: &Target,
    held: &record::Held<E>,
    ev: &Events,
    report: &mut StackReport,
) -> Result<(), String> {
    let stack = &target.stack;
    let mut seen = observe(engine, target).await.map_err(|e| format!("cannot read stack {stack}: {e}"))?;
    // The lock is ours now; a holder we took it over from is the stale lock found.
    seen.lock = held.took_over.as_ref().map(|t| (t.lock.clone(), t.why));
    let found = drift::findings(&seen);
    let nginx = nginx_of(engine, target, &seen.services);
    ev.phase(&format!("repairing {stack}"));
    let mut repairs = Vec::new();
    for f in found {
        let result = match &f.action {
            Action::Person { .. } => "person".to_string(),
            action => match apply(engine, nginx.as_ref(), action, ev).await {
                Ok(()) => {
                    ev.info(&format!("{}: {}: repaired: {}", f.subject, f.drift, f.repair));
                    "done".to_string()
                }
                Err(e) => {
                    ev.warn(&format!("{}: repair failed: {e}", f.subject));
                    format!("failed: {e}")
                }
            },
        };
        repairs.push(Repair { finding: f, result });
    }
    let done: Vec<String> = repairs.iter().filter(|r| r.result == "done").map(|r| format!("{}: {}: {}", r.finding.subject, r.finding.drift, r.finding.repair)).collect();
    let failed = repairs.iter().any(|r| r.result.starts_with("failed"));
    report.findings = repairs;
    let found: Vec<Finding> = report.findings.iter().map(|r| r.finding.clone()).collect();
    report.status = status_of(&found, false, failed);
    if !done.is_empty() {
        ev.phase(&format!("recording {stack}"));
        report.history_entry = record_repairs(engine, target, &seen, done, report.status.exit_code(), ev).await;
    }
    Ok(())
}

fn status_of(found: &[Finding], dry_run: bool, failed: bool) -> Status {
    if failed {
        Status::Error
    } else if found.iter().any(Finding::needs_person) {
        Status::NeedsPerson
    } else if found.is_empty() {
        Status::InSync
    } else if dry_run {
        Status::WouldRepair
    } else {
        Status::Repaired
    }
}

/// Read the stack once: services, record and history at once, then nginx's directory (one
/// request per nginx replica).
pub async fn observe<E: Engine>(engine: &E, target: &Target) -> Result<Observed, EngineError> {
    let stack = &target.stack;
    let (services, rec, hist) = tokio::join!(engine.services(stack), record::read(engine, stack), history::read(engine, stack));
    let services = services?;
    let record = rec?.map(|(_, r)| r);
    let history = hist?.0;
    let now = record::now_unix();
    let lock = (record.as_ref().and_then(|r| r.lock.clone()))
        .map(|l| {
            let holder = record::holder_state(&l, &record::Identity::current(), record::pid_alive, now);
            (l, holder)
        });
    let nginx = match nginx_of(engine, target, &services) {
        None => Nginx::None,
        Some(n) => match n.files().await {
            Ok(files) => Nginx::Files(files),
            Err(e) => Nginx::Unreadable(e.to_string()),
        },
    };
    let file = target.file.as_ref();
    let keep = file.map(|s| {
        (s.services.iter())
            .filter_map(|(n, svc)| match &svc.role {
                Role::Routed(r) => Some((n.clone(), r.keep)),
                _ => None,
            })
            .collect::<BTreeMap<_, _>>()
    });
    let rendered = file.and_then(|s| {
        let installed = match &nginx {
            Nginx::Files(f) => f.replicas.iter().filter_map(|r| r.get(proxy::nginx::FILE)).find_map(|b| proxy::token_in(&String::from_utf8_lossy(b))),
            _ => None,
        };
        proxy::render(s, &installed.unwrap_or_else(record::random_token)).ok()
    });
    Ok(Observed { stack: stack.clone(), services, record, lock, history, nginx, keep, rendered, now })
}

/// The stack's nginx: its proxy service (by label) and config directory (the file's, else
/// where the service mounts stackctl's volume). `None` when the stack has no proxy.
fn nginx_of<'a, E: Engine>(engine: &'a E, target: &Target, services: &[crate::engine::ServiceInfo]) -> Option<NginxProxy<'a, E>> {
    if let Some(file) = &target.file {
        return Some(NginxProxy::of(engine, file)).filter(|n| services.iter().any(|s| s.name == n.service));
    }
    let proxy = services.iter().find(|s| s.label(release::ROLE) == Some("proxy"))?;
    let volume = crate::desired::proxy_volume(&target.stack);
    let mounts = proxy.spec.task_template.as_ref()?.container_spec.as_ref()?.mounts.as_ref()?;
    let config_dir = mounts.iter().find(|m| m.source.as_deref() == Some(volume.as_str()))?.target.clone()?;
    Some(NginxProxy { engine, service: proxy.name.clone(), config_dir })
}

/// One repair, checked: a service put back runs its recorded tasks, nginx has the config or
/// the switch files on every replica when read again.
async fn apply<E: Engine>(engine: &E, nginx: Option<&NginxProxy<'_, E>>, action: &Action, ev: &Events) -> Result<(), String> {
    match action {
        Action::ReleaseLock | Action::Person { .. } => Ok(()),
        Action::PutBack { name, id, version, spec } => {
            ev.progress(&format!("putting {name} back to its recorded spec"));
            match id {
                Some(id) => engine.update_service(id, *version, (**spec).clone()).await,
                None => engine.create_service((**spec).clone()).await.map(|_| ()),
            }
            .map_err(|e| e.to_string())?;
            let replicas = spec.mode.as_ref().and_then(|m| m.replicated.as_ref()?.replicas).unwrap_or(1).max(0) as u64;
            settled(engine, name, replicas).await
        }
        Action::ScaleDown { name, id, version, spec } => {
            ev.progress(&format!("scaling {name} to 0"));
            engine.update_service(id, *version, (**spec).clone()).await.map_err(|e| e.to_string())
        }
        Action::Remove { name, id } => {
            ev.progress(&format!("removing {name}"));
            engine.remove_service(id).await.map_err(|e| e.to_string())
        }
        Action::Reinstall { config } => {
            let nginx = nginx.ok_or("the stack has no nginx")?;
            ev.progress("installing nginx's config (nginx -t, reload)");
            nginx.install(config).await.map_err(|e| e.to_string())?;
            let files = nginx.files().await.map_err(|e| e.to_string())?;
            if !files.has_everywhere(config) {
                return Err("after the install, some nginx replica does not hold the config".into());
            }
            Ok(())
        }
        Action::Route { files } => {
            let nginx = nginx.ok_or("the stack has no nginx")?;
            for (file, on) in files {
                nginx.flip(std::slice::from_ref(file), *on).await.map_err(|e| e.to_string())?;
            }
            let read = nginx.files().await.map_err(|e| e.to_string())?;
            let wrong: Vec<&String> = files.iter().filter(|(f, on)| read.replicas.iter().any(|r| r.contains_key(f) != *on)).map(|(f, _)| f).collect();
            if !wrong.is_empty() {
                return Err(format!("after the switch, {wrong:?} still differ on some nginx replica"));
            }
            Ok(())
        }
    }
}

/// Wait until `name` runs `replicas` tasks and none of the ones it replaced still runs.
async fn settled<E: Engine>(engine: &E, name: &str, replicas: u64) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    // Swarm marks the tasks it replaces only once it handled the update: look after a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    loop {
        let tasks = engine.tasks(name).await.map_err(|e| e.to_string())?;
        let running = tasks.iter().filter(|t| t.is_running()).count() as u64;
        let replaced_running = tasks.iter().any(|t| t.state == "running" && t.desired_state != "running");
        let starting = tasks.iter().any(|t| t.desired_state == "running" && t.state != "running");
        if running == replicas && !replaced_running && !starting {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{name} runs {running} of {replicas} recorded task(s) after {}s", SETTLE.as_secs()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the stack file would change, were it deployed: the steps of `stackctl plan` that
/// change something. Empty without a file; a plan that cannot be made says why.
async fn pending<E: Engine>(engine: &E, target: &Target) -> Vec<String> {
    let Some(file) = &target.file else { return Vec::new() };
    match crate::dry_run::plan(engine, file, &Events::silent()).await {
        Ok(plan) => plan.steps.iter().filter(|s| s.is_change()).map(|s| format!("{}: {}", s.service, s.detail)).collect(),
        Err(e) => vec![format!("could not compare the stack file with the cluster: {e}")],
    }
}

/// One history entry for the repairs: the recorded releases and specs carried over (so the next
/// reconcile reads the same truth from it), who `reconcile`.
async fn record_repairs<E: Engine>(engine: &E, target: &Target, seen: &Observed, repairs: Vec<String>, exit_code: i32, ev: &Events) -> Option<u64> {
    let recorded = drift::recorded(&seen.history);
    let mut services = recorded.map(|e| e.services.clone()).unwrap_or_default();
    for s in &mut services {
        s.switched = false;
        s.from = None;
    }
    let entry = Entry {
        number: 0,
        time: record::now_unix(),
        verb: Verb::Reconcile,
        who: Who { user: "reconcile".into(), ..Who::current() },
        command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
        outcome: history::Outcome::Repaired,
        reason: None,
        exit_code,
        release: None,
        services,
        phases: ev.phases(),
        seconds: ev.total().as_secs_f64(),
        specs: recorded.map(|e| e.specs.clone()).unwrap_or_default(),
        specs_left_out: None,
        env: target.file.as_ref().and_then(|s| s.environment.name.clone()).or_else(|| recorded.and_then(|e| e.env.clone())),
        checks: Vec::new(),
        promoted_from: None,
        maintenance: Vec::new(),
        repairs,
    };
    // Without the file the history's length is unknown: prune nothing rather than too much.
    let keep = target.file.as_ref().map_or(u32::MAX, |s| s.x.history);
    match history::append(engine, &target.stack, keep, entry).await {
        Ok(done) => Some(done.number),
        Err(e) => {
            ev.warn(&format!("the repairs of stack {} were not written to its history: {e}", target.stack));
            None
        }
    }
}

#[cfg(test)]
mod tests;
