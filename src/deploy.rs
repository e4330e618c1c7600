//! The blue-green deploy, told top to bottom in [`deploy`].
//!
//! lock → resolve images → plan → (proxy, plain and stateful services) → create green →
//! wait until its tasks are healthy → preview route to green through nginx → HTTP probes →
//! switch nginx to green → verify → record green as live → watch green (blue still running) →
//! drain → scale blue down, prune.
//!
//! The rule that shapes every error path: until nginx routes to green *and* that was verified,
//! blue is never touched. A failure before the switch removes green and leaves blue serving; a
//! failed verification, or green failing its watch window, switches back. An interrupted deploy
//! leaves objects the next run's plan recognises by their labels and either adopts or removes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bollard::models::{ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::accesslog;
use crate::cancel::Cancel;
use crate::desired::{self, ObjectKind};
use crate::engine::describe::ObjectRefs;
use crate::engine::{Engine, EngineError, NetworkRequest, ServiceInfo, TaskInfo};
use crate::faults;
use crate::gate;
use crate::health::{self, Expect, Probe};
use crate::history;
use crate::observe;
use crate::events::Events;
use crate::plan::{self, Desired, Existing, Green, Observed, Step};
use crate::proxy::{self, nginx::NginxFiles, nginx::NginxProxy, Proxy, ServiceRouting, Target};
use crate::record::{self, Held};
use crate::release::{self, Color};
use crate::spec::{route_network, route_of, routed, Role, Route, Service, Stack};

/// How often the watch window reads nginx's access log to judge green by its users.
const USERS_EVERY: Duration = Duration::from_secs(1);
/// How far behind now a read in the watch window stops: a line reaches Docker's log a moment
/// after nginx writes it.
const LOG_LAG: f64 = 0.5;

/// Knobs of one deploy that are not in the stack file.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cap on waiting for green to become healthy (default: each route's `health.deadline`).
    pub timeout: Option<Duration>,
    /// How long to wait for another deploy of the same stack to finish.
    pub lock_wait: Duration,
    /// Set by SIGINT/SIGTERM (see [`Cancel::listen_for_signals`]): before the switch the deploy
    /// undoes itself and fails with [`DeployError::Interrupted`]; from the switch on it finishes.
    pub cancel: Cancel,
    /// `deploy --plan`: run with the plan's pinned images, and refuse unless the cluster and
    /// the stack file are what the plan saw (see [`crate::dry_run::Fingerprint`]).
    pub saved: Option<crate::dry_run::SavedPlan>,
    /// `stackctl promote`: where the images came from, written into the history entry.
    pub origin: Option<history::Origin>,
}

impl Default for Options {
    fn default() -> Self {
        Options { timeout: None, lock_wait: Duration::ZERO, cancel: Cancel::new(), saved: None, origin: None }
    }
}

pub use crate::outcome::{DeployError, Outcome, Report, Switched};
use crate::outcome::refused;

/// What a run does once it holds the stack's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// Converge the cluster on the stack file.
    Deploy,
    /// Send users of the routed services (all, or `service`) back to an earlier release that
    /// still exists (running, or retained at zero): `to`, or the one before the live release.
    /// `asked_at` is the live release per service when the command started: if a deploy that
    /// held the lock meanwhile changed it, the rollback refuses instead of going back further
    /// than asked.
    Rollback { to: Option<u64>, service: Option<String>, asked_at: BTreeMap<String, u64> },
}

impl Verb {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verb::Deploy => "deploy",
            Verb::Rollback { .. } => "rollback",
        }
    }
}

/// Deploy `stack`: the whole story.
pub async fn deploy<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &Stack,
    opts: &Options,
    ev: &Events,
) -> Result<Report, DeployError> {
    run(engine, stack, opts, Verb::Deploy, ev).await
}

/// Roll `stack` back: the same gates and switch as a deploy, to a release that already exists.
pub async fn rollback<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &Stack,
    opts: &Options,
    to: Option<u64>,
    service: Option<String>,
    ev: &Events,
) -> Result<Report, DeployError> {
    if let Some(s) = &service {
        if route_of(stack, s).is_none() {
            let routed: Vec<&str> = routed(stack).map(|(n, _)| n.as_str()).collect();
            return Err(refused(format!("--service {s}: not a routed service of stack {} (routed: {})", stack.name, routed.join(", "))));
        }
    }
    // What "back" means is fixed now, before waiting for a running deploy's lock.
    let asked_at = record::read(engine, &stack.name).await.map_err(refused)?.map(|(_, r)| r.live).unwrap_or_default();
    run(engine, stack, opts, Verb::Rollback { to, service, asked_at }, ev).await
}

async fn run<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &Stack,
    opts: &Options,
    verb: Verb,
    ev: &Events,
) -> Result<Report, DeployError> {
    ev.phase("preflight");
    engine.check_swarm().await.map_err(refused)?;
    for (name, _) in routed(stack) {
        route_network(stack, name).map_err(DeployError::Refused)?;
    }
    ev.phase("lock");
    let lock = match record::acquire_cancellable(engine, &stack.name, verb.as_str(), opts.lock_wait, &opts.cancel).await {
        Ok(lock) => lock,
        Err(record::LockError::Interrupted { signal, .. }) => {
            let (stack, phase) = (stack.name.clone(), "waiting for the deploy lock".to_string());
            return Err(DeployError::Interrupted { stack, phase, signal, detail: "nothing was changed".into() });
        }
        Err(e) => return Err(refused(e)),
    };
    if let Some(prev) = &lock.took_over {
        ev.warn(&format!("took over a stale lock: {}", prev.describe(record::now_unix())));
    }
    let mut run = Run {
        engine,
        stack,
        opts,
        verb,
        ev,
        lock: &lock,
        token: record::random_token(),
        changes: Vec::new(),
        images: BTreeMap::new(),
        refs: ObjectRefs { configs: BTreeMap::new(), secrets: BTreeMap::new() },
        recorded_specs: BTreeMap::new(),
        nginx_seen: Default::default(),
        prestarted: Vec::new(),
    };
    let verb = run.verb.as_str();
    // The record as the lock found it: history tells from it which release a failure used up.
    let before = record::read(engine, &stack.name).await.ok().flatten().map(|(_, r)| r);
    let result = run.execute().await;
    let changes = std::mem::take(&mut run.changes);
    ev.end_phase();
    let ended = result.as_ref().map(|(outcome, release, switched)| (*outcome, *release, switched.as_slice()));
    let history_verb = if verb == "rollback" { history::Verb::Rollback } else { history::Verb::Deploy };
    history::record_deploy(engine, stack, history_verb, before.as_ref(), ended, opts.origin.as_ref(), ev).await;
    if let Err(e) = lock.release().await {
        ev.warn(&format!("could not release the deploy lock ({e}); it goes stale in {}s", record::STALE_AFTER.as_secs()));
    }
    let (outcome, release, switched) = result?;
    Ok(Report {
        stack: stack.name.clone(),
        verb,
        outcome,
        release,
        switched,
        changes,
        warnings: ev.warnings(),
        phases: ev.phases(),
        total_seconds: ev.total().as_secs_f64(),
    })
}

/// One deploy in progress.
struct Run<'a, E: Engine + Clone + 'static> {
    engine: &'a E,
    stack: &'a Stack,
    opts: &'a Options,
    verb: Verb,
    /// Where progress and warnings go (terminal, JSON lines, ...).
    ev: &'a Events,
    lock: &'a Held<E>,
    /// The secret gating nginx's preview and verification headers: the one the installed
    /// config has (so the config this run would write is the same text, and needs no reload),
    /// or a new one when there is none (see [`Run::adopt_token`]).
    token: String,
    changes: Vec<String>,
    /// Image of each service, pinned to its digest (filled by the resolve phase).
    images: BTreeMap<String, String>,
    /// Swarm ids of the stack's configs and secrets (filled by the resolve phase).
    refs: ObjectRefs,
    /// A rollback's recorded specs of releases no longer kept, by Swarm service name (newest
    /// history entry wins).
    recorded_specs: BTreeMap<String, ServiceSpec>,
    /// nginx's config directory as this run last read it, forgotten as soon as the run writes
    /// there (a switch file, a config). The run holds the lock, so nothing else writes there
    /// meanwhile; reading it once instead of at every step is what makes a rollback to a
    /// standby fast (see [`Run::nginx_files`]).
    nginx_seen: std::sync::Mutex<Option<NginxFiles>>,
    /// Retained releases a rollback began scaling up while it read nginx (see
    /// [`plan::retained_to_start`]); `bring_up` takes them instead of starting them again.
    prestarted: Vec<GreenRelease>,
}

/// A green being brought up.
#[derive(Clone)]
struct GreenRelease {
    service: String,
    blue: Option<u64>,
    release: u64,
    swarm_name: String,
    id: String,
    created: bool,
    /// Replicas it must have running and healthy.
    replicas: u64,
    /// Its image, pinned to a digest.
    image: String,
    /// How to undo bringing it up when the deploy stops before (or switches back after) the switch.
    undo: Undo,
    /// The colour it runs under: the one users are not on.
    colour: Color,
    target: Target,
}

/// Undoing a green: a new or leftover release is removed; an earlier release a rollback scaled
/// up goes back to the replicas it had (it is someone's retained release, never deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    Remove,
    ScaleTo(u64),
}

type Outcome3 = (Outcome, Option<u64>, Vec<Switched>);

/// Why a release stopped short, and so what undoing it means (see [`Run::undo`]).
enum Stop {
    /// A step before the switch failed (the phase, the reason).
    Failed(&'static str, String),
    /// A signal arrived before the switch (the phase).
    Signal(&'static str),
    /// The switch did not verify; users may be on either release.
    AtSwitch(String),
    /// Green failed its watch after the switch; users are on green.
    AfterSwitch(String),
}

impl<'a, E: Engine + Clone + 'static> Run<'a, E> {
    async fn execute(&mut self) -> Result<Outcome3, DeployError> {
        if let Verb::Rollback { to, service, asked_at } = self.verb.clone() {
            return self.execute_rollback(to, service, &asked_at).await;
        }
        self.adopt_token().await;
        self.ev.phase("resolve");
        self.images = self.resolve_images().await?;
        self.check_saved_plan().await?;
        self.refs = self.ensure_objects().await?;
        self.ensure_networks().await?;
        let desired = self.desired();
        self.stop_if_interrupted("resolving images")?;

        self.ev.phase("plan");
        let observed = self.observe().await.map_err(refused)?;
        let plan = plan::plan(&desired.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect(), &observed).map_err(refused)?;
        for step in &plan.steps {
            match step {
                Step::ProxyDrift { service } => self.ev.warn(&format!(
                    "the proxy service {service} differs from the stack file; stackctl does not replace a running nginx (it would drop connections). Apply it during a maintenance window with `docker service update`."
                )),
                Step::StatefulDrift { service } => self.ev.warn(&format!(
                    "stateful service {service} differs from the stack file; it is created once and left alone"
                )),
                _ => {}
            }
        }
        if plan.is_noop() {
            let live = observed.live.iter().map(|(s, r)| format!("{s}=r{r}")).collect::<Vec<_>>().join(", ");
            self.ev.info(&format!("nothing to do: stack {} is up to date ({live})", self.stack.name));
            return Ok((Outcome::Unchanged, None, Vec::new()));
        }

        self.unversioned_steps(&plan, &desired).await?;
        self.stop_if_interrupted("applying services")?;

        // Users are where nginx sends them; a resumed deploy starts from there (see Step::CatchUp).
        let live = self.catch_up(&plan, &observed.live).await?;
        for step in &plan.steps {
            if let Step::ScaleDown { service, release, id } = step {
                self.scale_down(id, &release::versioned_name(&self.stack.name, service, *release)).await;
            }
        }
        let greens_wanted: Vec<_> = plan.releases().map(|(s, b, g)| (s.to_string(), b, g.clone())).collect();
        if greens_wanted.is_empty() {
            self.finish_interrupted(&plan, &live).await?;
            return Ok((Outcome::Deployed, None, Vec::new()));
        }

        if let Some(n) = plan.release {
            // Record the number before any service carries it, so numbers never repeat even if
            // this process dies right after creating green.
            self.lock.update(|r| r.seq = r.seq.max(n)).await.map_err(refused)?;
        }
        let hashes = desired.iter().map(|(k, (d, _))| (k.clone(), d.hash.clone())).collect();
        let switched = self.release(greens_wanted, live, &plan, &hashes).await?;
        Ok((Outcome::Deployed, plan.release, switched))
    }

    /// A rollback: the planner picks, per routed service, the earlier release to go back to;
    /// from there it is the deploy's own story (gate, preview, switch, watch, drain).
    async fn execute_rollback(
        &mut self,
        to: Option<u64>,
        service: Option<String>,
        asked_at: &BTreeMap<String, u64>,
    ) -> Result<Outcome3, DeployError> {
        self.ev.phase("plan");
        let services: Vec<String> = match service {
            Some(s) => vec![s],
            None => routed(self.stack).map(|(n, _)| n.clone()).collect(),
        };
        // Reading nginx's directory is the slowest read (~0.1 s); a retained release that
        // nothing there can change the start of begins scaling up meanwhile.
        let nginx = NginxProxy::of(self.engine, self.stack);
        let (files, cluster) = tokio::join!(nginx.files(), self.prestart_retained(&services, to, asked_at));
        let (cluster, prestarted) = cluster.map_err(refused)?;
        self.prestarted = prestarted;
        let observation = cluster.with_nginx(files.ok());
        *self.seen_nginx() = observation.nginx_files.clone();
        let observed = observation.observed;
        self.adopt_token().await;
        let result = self.rollback_observed(to, &services, asked_at, observed).await;
        if !self.prestarted.is_empty() {
            // Not taken by a release: the plan changed once nginx was read, or the run stopped.
            let unused = std::mem::take(&mut self.prestarted);
            self.remove_greens(&unused).await;
        }
        result
    }

    /// Scale up the retained releases [`plan::retained_to_start`] names (none when the live
    /// release changed while the rollback waited for the lock: it is refused). A failure
    /// puts back what started and leaves it to the ordinary path, which reports it.
    async fn prestart_retained(
        &self,
        services: &[String],
        to: Option<u64>,
        asked_at: &BTreeMap<String, u64>,
    ) -> Result<(observe::Cluster, Vec<GreenRelease>), EngineError> {
        let cluster = observe::cluster(self.engine, self.stack).await?;
        let light = cluster.clone().with_nginx(None).observed;
        if services.iter().any(|s| asked_at.get(s) != light.live.get(s)) {
            return Ok((cluster, Vec::new()));
        }
        let Some(wanted) = plan::retained_to_start(&light, services, to) else { return Ok((cluster, Vec::new())) };
        let mut started = Vec::new();
        for r in wanted {
            match self.start_green(&r.service, Some(r.blue), &r.green, "", r.colour).await {
                Ok(g) => started.push(g),
                Err(_) => {
                    self.remove_greens(&started).await;
                    return Ok((cluster, Vec::new()));
                }
            }
        }
        Ok((cluster, started))
    }

    async fn rollback_observed(
        &mut self,
        to: Option<u64>,
        services: &[String],
        asked_at: &BTreeMap<String, u64>,
        observed: Observed,
    ) -> Result<Outcome3, DeployError> {
        let changed: Vec<String> = services
            .iter()
            .filter(|s| asked_at.get(*s) != observed.live.get(*s))
            .map(|s| {
                let r = |m: &BTreeMap<String, u64>| m.get(s).map(|n| format!("r{n}")).unwrap_or_else(|| "nothing".into());
                format!("{s}: {} → {}", r(asked_at), r(&observed.live))
            })
            .collect();
        if !changed.is_empty() {
            return Err(refused(format!(
                "the live release changed while this rollback waited for the lock ({}); nothing was done. Check `stackctl status` and run the rollback again if you still want it",
                changed.join(", ")
            )));
        }
        // Back to standbys that are still up: a flip, before anything slower (history included).
        let quick = plan::rollback(&observed, &services, to, &BTreeMap::new());
        if let Ok(quick) = &quick {
            if let Some(flipped) = self.flip_back(quick, &observed).await {
                let switched = flipped?;
                self.restore_plain(None, &observed.live, &switched).await;
                return Ok((Outcome::Deployed, None, switched));
            }
            // Back to the retained releases right below the live ones: the history cannot change
            // that plan, and plain services read it after the switch.
            if plan::is_final_without_history(quick, to) {
                let wanted: Vec<_> = quick.releases().map(|(s, b, g)| (s.to_string(), b, g.clone())).collect();
                let switched = self.release(wanted, observed.live.clone(), quick, &BTreeMap::new()).await?;
                self.restore_plain(None, &observed.live, &switched).await;
                return Ok((Outcome::Deployed, None, switched));
            }
        }
        // Releases no longer kept can come back from the specs the history recorded.
        let (entries, unreadable) = history::read(self.engine, &self.stack.name).await.map_err(refused)?;
        for u in unreadable {
            self.ev.warn(&u);
        }
        let mut recorded: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for entry in entries.iter().rev() {
            for (swarm_name, spec) in &entry.specs {
                let labels = spec.labels.clone().unwrap_or_default();
                let (Some(service), Some(n)) = (labels.get(release::SERVICE), labels.get(release::RELEASE).and_then(|r| record::release_number(r))) else { continue };
                recorded.entry(service.clone()).or_default().push(n);
                self.recorded_specs.insert(swarm_name.clone(), spec.clone());
            }
        }
        let plan = plan::rollback(&observed, &services, to, &recorded).map_err(refused)?;
        if plan.is_noop() {
            let live = observed.live.iter().map(|(s, r)| format!("{s}=r{r}")).collect::<Vec<_>>().join(", ");
            self.ev.info(&format!("nothing to roll back: stack {} already runs the asked release ({live})", self.stack.name));
            return Ok((Outcome::Unchanged, None, Vec::new()));
        }
        let wanted: Vec<_> = plan.releases().map(|(s, b, g)| (s.to_string(), b, g.clone())).collect();
        let switched = self.release(wanted, observed.live.clone(), &plan, &BTreeMap::new()).await?;
        self.restore_plain(Some(&entries), &observed.live, &switched).await;
        Ok((Outcome::Deployed, None, switched))
    }

    /// A rollback to releases still up as standbys (a route's `rollback_window`): a standby
    /// runs under the colour users are not on, and the config nginx runs routes to both
    /// colours, so going back is one probe through its preview route, its colour's file, and a
    /// verification; no reload. Then the release users left is scaled to zero. `None` when
    /// some release asked for is not such a standby, or does not answer: the rollback then
    /// goes the deploy's whole way.
    async fn flip_back(&mut self, plan: &plan::Plan, observed: &Observed) -> Option<Result<Vec<Switched>, DeployError>> {
        let users_on = self.colours().await.ok()?;
        let standby = |service: &str, id: &str| {
            let colour = users_on.get(service).copied().unwrap_or(Color::Blue).other();
            observed.services.iter().any(|e| e.id == id && e.replicas > 0 && e.color == Some(colour)).then_some(colour)
        };
        let wanted: Vec<(String, Option<u64>, u64, Color)> = (plan.releases())
            .map(|(s, from, g)| match g {
                Green::Existing { release, id } => standby(s, id).map(|c| (s.to_string(), from, *release, c)),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if wanted.is_empty() {
            return None;
        }
        // Normally a no-op: the routes are what the last deploy installed.
        if let Err(e) = self.ensure_config(None).await {
            return Some(Err(self.fail("routing", e, true)));
        }
        let to: BTreeMap<String, u64> = wanted.iter().map(|(s, _, r, _)| (s.clone(), *r)).collect();
        let routing: Vec<ServiceRouting> = self.routing(&to, &[]).await.ok()?.into_iter().filter(|r| to.contains_key(&r.service)).collect();
        if routing.iter().any(|r| r.live.servers.is_empty()) {
            return None;
        }
        let token = self.token.clone();
        let colour = |service: &str| wanted.iter().find(|w| w.0 == service).map(|w| w.3).unwrap_or(Color::Blue);
        self.ev.phase("flip back");
        for r in &routing {
            let headers = vec![("x-stackctl-preview".into(), format!("{token}.{}", colour(&r.service).as_str())), ("x-stackctl-verify".into(), token.clone())];
            let expect = Expect { status: r.route.health.status, upstreams: r.live.servers.iter().cloned().collect() };
            let deadline = Instant::now() + r.route.health.timeout;
            let answered = health::probe_until(&self.probe(&r.route, headers), &expect, 1, r.route.health.interval, deadline).await;
            if let Err(e) = answered {
                self.ev.info(&format!("the standby r{} of {} does not answer through nginx ({e}); going back the whole way", r.live.release, r.service));
                return None;
            }
        }
        if !self.opts.cancel.commit() {
            let (stack, signal) = (self.stack.name.clone(), self.opts.cancel.reason());
            return Some(Err(DeployError::Interrupted { stack, phase: "about to flip back".into(), signal, detail: "nothing was changed".into() }));
        }
        let services: Vec<String> = wanted.iter().map(|w| w.0.clone()).collect();
        let flipped = async {
            self.point_to(&wanted.iter().map(|w| (w.0.clone(), w.3)).collect::<Vec<_>>()).await?;
            self.verify(&routing, &services, &token, "the flip").await
        };
        if let Err(e) = flipped.await {
            self.opts.cancel.cleaning_up();
            let intact = self.point_to(&wanted.iter().map(|w| (w.0.clone(), w.3.other())).collect::<Vec<_>>()).await.is_ok();
            return Some(Err(self.fail("flipping back to the standby", e, intact)));
        }
        let flipped_at = Instant::now();
        let mut live = observed.live.clone();
        live.extend(wanted.iter().map(|(s, _, r, _)| (s.clone(), *r)));
        if let Err(e) = self.lock.update(|r| r.live.extend(wanted.iter().map(|(s, _, n, _)| (s.clone(), *n)))).await {
            let reason = format!("{e}. nginx already routes to the standby; check `stackctl status`");
            return Some(Err(self.fail("recording the new live release", reason, false)));
        }
        self.ev.info(&format!("live: {}", live.iter().map(|(s, r)| format!("{s}=r{r}")).collect::<Vec<_>>().join(", ")));
        self.ev.phase("drain");
        let drain = routing.iter().map(|r| r.route.drain).max().unwrap_or_default();
        self.drain(Some(drain.saturating_sub(flipped_at.elapsed()))).await;
        let blues: Vec<(String, u64, bool)> = wanted.iter().filter_map(|(s, from, _, _)| Some((s.clone(), (*from)?, false))).collect();
        let open_after_drain = self.open_after_drain(&blues).await;
        self.ev.phase("retire");
        let mut switched = Vec::new();
        for (service, from, _, _) in &wanted {
            if let Some(from) = from {
                let name = release::versioned_name(&self.stack.name, service, *from);
                self.scale_down(&name, &name).await;
            }
        }
        self.retire(&wanted.iter().map(|(s, _, r, _)| (s.clone(), *r)).collect::<Vec<_>>()).await;
        // The images switched to, from one listing whatever the number of services.
        let listed = self.engine.services(&self.stack.name).await.unwrap_or_default();
        for (service, from, release, _) in wanted {
            let name = release::versioned_name(&self.stack.name, &service, release);
            // Live again: no longer anyone's standby (a later window starts afresh).
            if let Err(e) = self.label_standby(&name, None, listed.iter().find(|i| i.name == name)).await {
                self.ev.warn(&format!("could not clear the standby label of {name} ({e}); it is ignored while {name} is live"));
            }
            let spec = listed.iter().find(|i| i.name == name).map(|i| &i.spec);
            let image = spec.and_then(|s| s.task_template.as_ref()?.container_spec.as_ref()?.image.clone()).unwrap_or_default();
            let open_after_drain = open_after_drain.get(&service).copied().flatten();
            switched.push(Switched { service, from, to: release, image, open_after_drain });
        }
        Some(Ok(switched))
    }

    /// After a whole-stack rollback (not `--service`) switched from `before`: plain services go
    /// back, by Swarm's rolling update, to the spec the history recorded when the routed
    /// releases were last what they are now; stateful services are never changed, and the run
    /// says so. `entries`: the history, when the rollback already read it.
    async fn restore_plain(&mut self, entries: Option<&[history::Entry]>, before: &BTreeMap<String, u64>, switched: &[Switched]) {
        if !matches!(&self.verb, Verb::Rollback { service: None, .. }) {
            return;
        }
        let plain: Vec<&String> = self.stack.services.iter().filter(|(_, s)| matches!(s.role, Role::Plain)).map(|(n, _)| n).collect();
        for (name, _) in self.stack.services.iter().filter(|(_, s)| matches!(s.role, Role::Stateful)) {
            self.ev.info(&format!("stateful service {name} left as it is (stackctl never changes a stateful service)"));
        }
        if plain.is_empty() {
            return;
        }
        let mut now_live = before.clone();
        now_live.extend(switched.iter().map(|s| (s.service.clone(), s.to)));
        let read;
        let entries = match entries {
            Some(e) => e,
            None => match history::read(self.engine, &self.stack.name).await {
                Ok((e, _)) => {
                    read = e;
                    &read[..]
                }
                Err(e) => {
                    self.ev.warn(&format!("cannot read the history ({e}); plain services are left as they are"));
                    return;
                }
            },
        };
        // Entries are newest first: the last time the routed releases were what they are now.
        let matches = |e: &&history::Entry| {
            e.outcome == history::Outcome::Deployed
                && !e.services.is_empty()
                && e.services.iter().all(|s| now_live.get(&s.service) == Some(&s.release))
        };
        let Some(entry) = entries.iter().find(matches) else {
            self.ev.warn("no history entry records the plain services as they were with this release; they are left as they are");
            return;
        };
        for service in plain {
            let swarm_name = release::plain_name(&self.stack.name, service);
            let Some(recorded) = entry.specs.get(&swarm_name) else {
                self.ev.warn(&format!("history entry {} does not record {swarm_name}; left as it is", entry.number));
                continue;
            };
            let hash = |spec: &ServiceSpec| spec.labels.as_ref().and_then(|l| l.get(release::SPEC_HASH).cloned());
            let result = match self.engine.service(&swarm_name).await {
                Ok(Some(current)) if hash(&current.spec) == hash(recorded) => continue,
                Ok(Some(current)) => self.engine.update_service(&current.id, current.version, recorded.clone()).await,
                Ok(None) => self.engine.create_service(recorded.clone()).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    let change = format!("{swarm_name} back to its spec of history entry {} (rolling update)", entry.number);
                    self.ev.info(&change);
                    self.changes.push(change);
                }
                Err(e) => self.ev.warn(&format!(
                    "could not put {swarm_name} back to its spec of history entry {} ({e}); the routed services are rolled back, this one is not: deploy the matching stack file to fix it",
                    entry.number
                )),
            }
        }
    }

    /// The blue-green story for the releases the plan names: bring green up, gate it, preview
    /// it through nginx, switch, record, watch, drain, retire. Every way it can stop short goes
    /// through [`Run::undo`], which knows what undoing means at each point.
    async fn release(
        &mut self,
        wanted: Vec<(String, Option<u64>, Green)>,
        mut live: BTreeMap<String, u64>,
        plan: &plan::Plan,
        hashes: &BTreeMap<String, String>,
    ) -> Result<Vec<Switched>, DeployError> {
        let mut greens = Vec::new();
        if let Err(stop) = self.bring_up(wanted, &mut greens, plan, hashes).await {
            return Err(self.undo(stop, &greens, &live).await);
        }

        self.ev.phase("switch");
        // From here on a signal no longer stops the deploy: it finishes (see `Cancel::commit`).
        if !self.opts.cancel.commit() {
            return Err(self.undo(Stop::Signal("about to switch nginx to green"), &greens, &live).await);
        }
        let mut next = live.clone();
        next.extend(greens.iter().map(|g| (g.service.clone(), g.release)));
        if let Err(e) = self.switch(&greens, &next).await {
            return Err(self.undo(Stop::AtSwitch(e), &greens, &live).await);
        }
        let recorded = self.lock.update(|r| r.live.extend(greens.iter().map(|g| (g.service.clone(), g.release)))).await;
        if let Err(e) = recorded {
            // nginx routes to green while the record still names blue; switching back could
            // fight a deploy that took the lock over. Exit 3, not 1: users are on a release the
            // record does not name until a deploy records it.
            let reason = format!("{e}. nginx already routes to the new release; run the deploy again to record it");
            return Err(self.fail("recording the new live release", reason, false));
        }
        let blue = std::mem::replace(&mut live, next);
        self.ev.info(&format!("live: {}", live.iter().map(|(s, r)| format!("{s}=r{r}")).collect::<Vec<_>>().join(", ")));
        let switched_at = Instant::now();
        faults::pause("switched", &self.opts.cancel).await;

        // Blue keeps running through the watch; green failing there sends users back to it.
        if let Err(reason) = self.watch(&mut greens).await {
            return Err(self.undo(Stop::AfterSwitch(reason), &greens, &blue).await);
        }

        self.ev.phase("drain");
        let drains = greens.iter().filter(|g| g.blue.is_some()).filter_map(|g| route_of(self.stack, &g.service));
        let drain = drains.map(|r| r.drain).max().unwrap_or(Duration::ZERO);
        // `drain` counts from the switch: the watch window already let requests finish.
        self.drain(Some(drain.saturating_sub(switched_at.elapsed()))).await;
        let blues: Vec<(String, u64, bool)> = greens.iter().filter_map(|g| Some((g.service.clone(), g.blue?, self.standby_window(g).is_some()))).collect();
        let open_after_drain = self.open_after_drain(&blues).await;

        self.ev.phase("retire");
        for g in &greens {
            if let (Some(window), Some(blue)) = (self.standby_window(g), g.blue) {
                self.keep_standby(&g.service, blue, window).await;
            }
        }
        // After the standby labels: retention reads them.
        let mut live_now: Vec<(String, u64)> = greens.iter().map(|g| (g.service.clone(), g.release)).collect();
        live_now.extend(retirements(plan));
        self.retire(&live_now).await;
        for g in &greens {
            // A rollback leaves the release it came from retained at zero, ready to go
            // forward again (a deploy of the same spec adopts it).
            if let Some(from) = g.blue.filter(|b| *b > g.release) {
                let name = release::versioned_name(&self.stack.name, &g.service, from);
                self.scale_down(&name, &name).await;
            }
        }
        Ok(greens
            .iter()
            .map(|g| Switched {
                service: g.service.clone(),
                from: g.blue,
                to: g.release,
                image: g.image.clone(),
                open_after_drain: open_after_drain.get(&g.service).copied().flatten(),
            })
            .collect())
    }

    /// Everything before the switch: create (or scale up) green, wait until it is healthy,
    /// preview it through nginx. Users stay on blue throughout; `greens` holds what exists so
    /// far, for the undo.
    async fn bring_up(
        &mut self,
        wanted: Vec<(String, Option<u64>, Green)>,
        greens: &mut Vec<GreenRelease>,
        plan: &plan::Plan,
        hashes: &BTreeMap<String, String>,
    ) -> Result<(), Stop> {
        self.ev.phase("create green");
        // Green runs under the other colour than blue's (blue's is where users are, unless an
        // interrupted run left nginx's file out of step, which the switch puts right); an
        // earlier release still running under it (the standby of the deploy before) makes way
        // first.
        let files = self.colours().await.map_err(|e| Stop::Failed("reading where nginx sends users", e))?;
        let listed = match self.engine.services(&self.stack.name).await {
            Ok(s) => s,
            Err(e) => return Err(Stop::Failed("listing the stack's services", e.to_string())),
        };
        let existing: Vec<Existing> = listed.iter().filter_map(Existing::from_info).collect();
        let mut colours = BTreeMap::new();
        let mut unpainted = Vec::new();
        for (service, blue, _) in &wanted {
            let file = files.get(service).copied().unwrap_or(Color::Blue);
            let colour = match blue.and_then(|b| existing.iter().find(|e| &e.service == service && e.release == Some(b))) {
                Some(e) if e.color.is_none() && e.replicas > 0 => {
                    unpainted.push((service.clone(), e.release.unwrap_or_default(), file));
                    file.other()
                }
                Some(e) => e.color.unwrap_or(file).other(),
                // A first release is blue, nginx's colour without the file.
                None => Color::Blue,
            };
            colours.insert(service.clone(), colour);
        }
        let colour_of = |service: &str| colours.get(service).copied().unwrap_or(Color::Blue);
        self.paint_live(&unpainted).await.map_err(|e| Stop::Failed("giving the live release its colour", e))?;
        let making_way = self.make_way(&existing, &listed, &wanted.iter().map(|(s, _, g)| (s.clone(), g.release(), colour_of(s))).collect::<Vec<_>>()).await;
        for (service, blue, green) in wanted {
            let hash = hashes.get(&service).map(String::as_str).unwrap_or_default();
            let colour = colour_of(&service);
            let prestarted = self.prestarted.iter().position(|p| p.service == service && p.release == green.release() && p.colour == colour);
            let g = match prestarted {
                Some(i) => self.prestarted.remove(i),
                None => self.start_green(&service, blue, &green, hash, colour).await.map_err(|e| Stop::Failed("creating green", e.to_string()))?,
            };
            let how = match (&green, g.created) {
                (Green::Recreate { .. }, _) => "recreating from the history",
                (_, true) => "created",
                (Green::Existing { .. }, _) if g.undo == Undo::ScaleTo(0) => "scaling up",
                (Green::Existing { .. }, _) => "going back to",
                _ => "adopted",
            };
            self.ev.info(&format!("{how} {} (release {})", g.swarm_name, g.release));
            greens.push(g);
        }
        faults::pause("green-created", &self.opts.cancel).await;
        self.stop_on_signal("creating green")?;

        self.ev.phase("wait healthy");
        let waiting = "waiting for green to become healthy";
        // The config names colours, not green, so checking it (and, when the routes changed,
        // its reload) overlaps Swarm's start instead of following it. The preview route needs
        // the secret, so nothing looks green's colour up (and nginx caches no "not found")
        // before the gate's first probe, which comes after the wait.
        let wait = async {
            self.wait_stopped(&making_way).await?;
            self.wait_greens(greens).await
        };
        let (healthy, early) = tokio::join!(self.opts.cancel.run(wait), self.ensure_config_early());
        match healthy {
            Some(healthy) => healthy.map_err(|e| Stop::Failed(waiting, e))?,
            None => return Err(Stop::Signal(waiting)),
        }

        self.ev.phase("preview");
        let probed = self.preview(greens, early).await;
        // nginx routes users to blue's colour and nothing to leftovers: safe to remove them.
        self.remove_orphans(plan).await;
        self.stop_on_signal("probing green through nginx")?;
        probed.map_err(|e| Stop::Failed("probing green through nginx", e))
    }

    fn stop_on_signal(&self, phase: &'static str) -> Result<(), Stop> {
        if self.opts.cancel.is_cancelled() {
            return Err(Stop::Signal(phase));
        }
        Ok(())
    }

    /// The switch itself, verified: users go from blue to green (`next`). The config nginx
    /// runs names both colours, so the switch is one file per service, no reload: no moment
    /// where workers of an old and a new config answer side by side, no kept-alive connection
    /// closed under a client.
    async fn switch(&self, greens: &[GreenRelease], next: &BTreeMap<String, u64>) -> Result<(), String> {
        let services: Vec<String> = greens.iter().map(|g| g.service.clone()).collect();
        self.point_to(&greens.iter().map(|g| (g.service.clone(), g.colour)).collect::<Vec<_>>()).await?;
        faults::pause("switch-file", &self.opts.cancel).await;
        let routing = self.routing(next, &[]).await?;
        self.verify(&routing, &services, &self.token, "the switch").await
    }

    /// The route's rollback window when `g`'s blue stays up as a standby after the switch: a
    /// deploy forward from a running blue (a rollback's own blue is retired as usual).
    fn standby_window(&self, g: &GreenRelease) -> Option<Duration> {
        let window = route_of(self.stack, &g.service)?.rollback_window;
        (!window.is_zero() && g.blue.is_some_and(|b| b < g.release)).then_some(window)
    }

    /// Label `service`'s release `blue` as a standby until `window` from now; retirement
    /// leaves it at full scale until then.
    async fn keep_standby(&mut self, service: &str, blue: u64, window: Duration) {
        let name = release::versioned_name(&self.stack.name, service, blue);
        let until = record::now_unix() + window.as_secs();
        match self.label_standby(&name, Some(until), None).await {
            Ok(true) => {
                self.ev.info(&format!("{name} stays up for {window:?} as a standby: a rollback within it is a flip"));
                self.changes.push(format!("kept {name} up as a standby for {window:?}"));
            }
            Ok(false) => {}
            Err(e) => self.ev.warn(&format!("could not keep {name} up as a standby ({e}); it is retired as usual")),
        }
    }

    /// Set (`Some`) or remove the standby label of the Swarm service `name`; `false` when the
    /// service is gone or already so. `seen`: the service as a listing just showed it, read
    /// again only when absent.
    async fn label_standby(&self, name: &str, until: Option<u64>, seen: Option<&ServiceInfo>) -> Result<bool, EngineError> {
        let read;
        let current = match seen {
            Some(info) => info,
            None => match self.engine.service(name).await? {
                Some(info) => {
                    read = info;
                    &read
                }
                None => return Ok(false),
            },
        };
        let mut spec = current.spec.clone();
        let labels = spec.labels.get_or_insert_with(Default::default);
        let changed = match until {
            Some(t) => labels.insert(release::STANDBY_UNTIL.into(), t.to_string()).as_deref() != Some(t.to_string().as_str()),
            None => labels.remove(release::STANDBY_UNTIL).is_some(),
        };
        if !changed {
            return Ok(false);
        }
        self.engine.update_service(&current.id, current.version, spec).await.map(|_| true)
    }

    /// Every way a release stops short, undone in one place, so that users stay on (or go
    /// back to) `blue` and nothing the run started is left behind:
    /// - before the switch (a failure or a signal): nginx routes to blue only, green is
    ///   removed (or, for a rollback, scaled back to what it had);
    /// - a switch that did not verify: nginx back to blue (verified), then green removed;
    /// - green failing its watch after the switch: the same, and the record names blue again.
    ///
    /// Always an error: exit 1 when users are on blue, 3 when that could not be verified.
    async fn undo(&self, stop: Stop, greens: &[GreenRelease], blue: &BTreeMap<String, u64>) -> DeployError {
        // Signals from now on are reported and ignored: stopping halfway would leave a mess.
        // Before any phase line, so a signal sent on seeing "abort ..." is reported as such.
        self.opts.cancel.cleaning_up();
        match stop {
            Stop::Failed(phase, reason) => {
                self.abort(greens).await;
                self.fail(phase, reason, true)
            }
            Stop::Signal(phase) => {
                let signal = self.opts.cancel.reason();
                let (doing, done) = match self.verb {
                    Verb::Rollback { .. } => ("putting the earlier release back as it was", "the earlier release is back as it was"),
                    Verb::Deploy => ("removing the new release", "the new release was removed"),
                };
                self.ev.warn(&format!("interrupted by {signal} while {phase}: {doing}"));
                self.abort(greens).await;
                DeployError::Interrupted { stack: self.stack.name.clone(), phase: phase.into(), signal, detail: done.into() }
            }
            Stop::AtSwitch(reason) => {
                // Back to blue before removing green: users must never be routed to nothing.
                let intact = self.point_back(greens, blue, "switching back").await.is_ok();
                if intact {
                    self.remove_greens(greens).await;
                }
                self.fail("switching nginx to green", reason, intact)
            }
            Stop::AfterSwitch(reason) => self.switch_back(greens, blue, &reason).await,
        }
    }

    /// Nothing new to release: repair what an earlier deploy left half done. nginx out of step
    /// with the record is rerouted, leftovers are removed, and a blue still running after an
    /// interrupted switch is retired once the live release passed its watch.
    async fn finish_interrupted(&mut self, plan: &plan::Plan, live: &BTreeMap<String, u64>) -> Result<(), DeployError> {
        if plan.steps.iter().any(|s| matches!(s, Step::Reroute { .. } | Step::RemoveOrphan { .. })) {
            self.ev.phase("route");
            self.route_to(live, &live.keys().cloned().collect::<Vec<_>>(), "rerouting").await.map_err(|e| self.fail("routing", e, true))?;
            self.remove_orphans(plan).await;
        }
        let leftovers = retirements(plan);
        if !leftovers.is_empty() {
            // The interrupted deploy may have died inside its watch window: finish watching
            // the new release while the old one still runs, so a green that breaks now still
            // sends users back to blue instead of losing blue.
            let mut greens = self.unwatched_greens(&leftovers).await.map_err(refused)?;
            let blue: BTreeMap<String, u64> = greens.iter().filter_map(|g| Some((g.service.clone(), g.blue?))).collect();
            // The watch reads which backend answered: nginx echoes it to the token of the
            // config it runs (normally the one installed: no reload).
            self.ensure_config(None).await.map_err(|e| self.fail("routing", e, true))?;
            if let Err(reason) = self.watch(&mut greens).await {
                return Err(self.switch_back(&greens, &blue, &reason).await);
            }
            self.ev.phase("drain");
            self.drain(leftovers.iter().filter_map(|(s, _)| route_of(self.stack, s).map(|r| r.drain)).max()).await;
            self.ev.phase("retire");
            self.retire(&leftovers).await;
        }
        Ok(())
    }

    /// A deploy killed after its switch and before its record left users on a newer release
    /// than the record names. Start from where users are: verify they are answered by it,
    /// then record it. Returns the live release per service this run starts from.
    /// If the release users are on fails verification, they go back to the recorded one, a
    /// switch back that says so, and the deploy stops.
    async fn catch_up(&mut self, plan: &plan::Plan, recorded: &BTreeMap<String, u64>) -> Result<BTreeMap<String, u64>, DeployError> {
        let caught: BTreeMap<String, u64> = (plan.steps.iter())
            .filter_map(|s| match s {
                Step::CatchUp { service, live } => Some((service.clone(), *live)),
                _ => None,
            })
            .collect();
        if caught.is_empty() {
            return Ok(recorded.clone());
        }
        self.ev.phase("catch up");
        let mut live = recorded.clone();
        live.extend(caught.clone());
        let names = |m: &BTreeMap<String, u64>| m.iter().map(|(s, r)| format!("{s}=r{r}")).collect::<Vec<_>>().join(", ");
        self.ev.info(&format!("an interrupted deploy already sent users to {}; starting from there", names(&caught)));
        let services: Vec<String> = caught.keys().cloned().collect();
        let settle = async {
            self.ensure_config(None).await?;
            let routing = self.routing(&live, &[]).await?;
            self.verify(&routing, &services, &self.token, "catching up").await
        };
        if let Err(e) = settle.await {
            self.opts.cancel.cleaning_up();
            let reason = format!("users were on {} (left by an interrupted deploy), which failed verification: {e}", names(&caught));
            self.ev.warn(&format!("{reason}; switching back to {}", names(recorded)));
            let back = self.route_to(recorded, &services, "switching back");
            return Err(match back.await {
                Ok(()) => self.fail("catching up with nginx", format!("{reason}; traffic is back on {}", names(recorded)), true),
                Err(e2) => self.fail("catching up with nginx", format!("{reason}; switching back failed too: {e2}"), false),
            });
        }
        self.lock
            .update(|r| r.live.extend(caught.clone()))
            .await
            .map_err(|e| self.fail("recording the live release", format!("{e}; nginx routes to {}, run the deploy again to record it", names(&caught)), true))?;
        self.changes.push(format!("recorded {} as live (switched by an interrupted deploy)", names(&caught)));
        Ok(live)
    }

    /// Send the users of `services` to the colours of the releases `live` names (the routes
    /// installed and loaded first, normally without a reload), and prove they are there.
    async fn route_to(&self, live: &BTreeMap<String, u64>, services: &[String], after: &str) -> Result<(), String> {
        self.ensure_config(None).await?;
        let existing: Vec<Existing> = self.engine.services(&self.stack.name).await.map_err(|e| e.to_string())?.iter().filter_map(Existing::from_info).collect();
        let mut colours = Vec::new();
        for service in services {
            let Some(n) = live.get(service) else { continue };
            let release = existing.iter().find(|e| &e.service == service && e.release == Some(*n));
            let colour = release.and_then(|e| e.color).ok_or_else(|| format!("release r{n} of {service} has no colour (label {})", release::COLOR))?;
            colours.push((service.clone(), colour));
        }
        self.point_to(&colours).await?;
        let routing = self.routing(live, &[]).await?;
        self.verify(&routing, services, &self.token, after).await
    }

    fn fail(&self, phase: &str, reason: impl std::fmt::Display, live_intact: bool) -> DeployError {
        DeployError::Failed { stack: self.stack.name.clone(), phase: phase.into(), reason: reason.to_string(), live_intact }
    }

    /// A phase boundary before any green exists: stop if a signal arrived.
    fn stop_if_interrupted(&self, phase: &str) -> Result<(), DeployError> {
        if !self.opts.cancel.is_cancelled() {
            return Ok(());
        }
        let (stack, signal) = (self.stack.name.clone(), self.opts.cancel.reason());
        Err(DeployError::Interrupted { stack, phase: phase.into(), signal, detail: "no new release was started".into() })
    }

    /// How many connections nginx still holds to each release `(service, from, standby)` now
    /// that its drain is over, told to the user: retiring it closes them (unless it stays up as
    /// a `standby`). One look at each network and one read of nginx's connection table serve
    /// every release, however many. `None` for a release whose connections could not be counted.
    async fn open_after_drain(&self, blues: &[(String, u64, bool)]) -> BTreeMap<String, Option<usize>> {
        if blues.is_empty() {
            return BTreeMap::new();
        }
        let names: Vec<String> = blues.iter().map(|(s, from, _)| release::versioned_name(&self.stack.name, s, *from)).collect();
        let counted = async {
            let mut seen: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
            let mut groups = Vec::new();
            for ((service, ..), name) in blues.iter().zip(&names) {
                let port = route_of(self.stack, service).map(|r| r.port).ok_or_else(|| format!("{service} is not routed"))?;
                let network = route_network(self.stack, service)?;
                if !seen.contains_key(&network) {
                    let addrs = self.engine.network_addresses(&network).await.map_err(|e| e.to_string())?;
                    seen.insert(network.clone(), addrs);
                }
                let addrs = seen[&network].get(name).into_iter().flatten();
                groups.push(addrs.map(|(_, ip)| format!("{ip}:{port}")).collect::<Vec<_>>());
            }
            self.nginx().open_connections(&groups).await.map_err(|e| e.to_string())
        };
        let counts = match counted.await {
            Ok(counts) => counts,
            Err(e) => {
                self.ev.warn(&format!("could not count the connections still open to {} ({e})", names.join(", ")));
                return blues.iter().map(|(s, ..)| (s.clone(), None)).collect();
            }
        };
        let mut open = BTreeMap::new();
        for (((service, _, standby), name), n) in blues.iter().zip(&names).zip(counts) {
            if n == 0 {
                self.ev.info(&format!("drain of {name} ended with no connection open to it"));
            } else {
                let what = if n == 1 { "connection was" } else { "connections were" };
                let then = if *standby { "they stay open while it is a standby" } else { "retiring it closes them" };
                self.ev.info(&format!("{n} {what} still open to {name} when its drain ended (WebSockets, streams or slow requests); {then}"));
            }
            open.insert(service.clone(), Some(n));
        }
        open
    }

    /// Let requests in flight on the old release finish; a second signal cuts it short.
    async fn drain(&self, drain: Option<Duration>) {
        let drain = drain.unwrap_or(Duration::ZERO);
        self.ev.progress(&format!("letting requests in flight on the old release finish ({drain:?})"));
        tokio::select! {
            _ = tokio::time::sleep(drain) => {}
            _ = self.opts.cancel.at_least(2) => {
                self.ev.warn(&format!("drain cut short by a second {}: requests still in flight on the old release may fail", self.opts.cancel.reason()));
            }
        }
    }

    async fn resolve_images(&self) -> Result<BTreeMap<String, String>, DeployError> {
        if let Some(saved) = &self.opts.saved {
            let unseen: Vec<&String> = self.stack.services.keys().filter(|k| !saved.images.contains_key(*k)).collect();
            if saved.stack != self.stack.name || !unseen.is_empty() {
                return Err(DeployError::Refused(format!(
                    "the saved plan is for stack {} with services {}, not this stack file (stack {}); nothing was changed. Run `stackctl plan --out` on it",
                    saved.stack,
                    saved.images.keys().cloned().collect::<Vec<_>>().join(", "),
                    self.stack.name
                )));
            }
            // The digests the plan pinned, not what the tags point at now.
            return Ok(saved.images.clone());
        }
        desired::resolve_images(self.engine, self.stack, self.ev).await.map_err(DeployError::Refused)
    }

    /// Create the stack's configs and secrets under the content-hashed names of
    /// [`desired::objects`] (Swarm objects are immutable; a new content is a new object and so a
    /// new release), find external ones.
    async fn ensure_objects(&self) -> Result<ObjectRefs, DeployError> {
        let mut refs = ObjectRefs::default();
        let labels = self.object_labels();
        for obj in desired::objects(self.stack) {
            let id = match (obj.kind, &obj.content) {
                (ObjectKind::Config, Some(data)) => self.engine.ensure_config(&obj.name, data, &labels).await.map_err(refused)?,
                (ObjectKind::Secret, Some(data)) => self.engine.ensure_secret(&obj.name, data, &labels).await.map_err(refused)?,
                (ObjectKind::Config, None) => self.engine.find_config(&obj.name).await.map_err(refused)?.ok_or_else(|| {
                    refused(format!("external config {} (configs.{}) does not exist; create it with `docker config create`", obj.name, obj.key))
                })?,
                (ObjectKind::Secret, None) => self.engine.find_secret(&obj.name).await.map_err(refused)?.ok_or_else(|| {
                    refused(format!("external secret {} (secrets.{}) does not exist; create it with `docker secret create`", obj.name, obj.key))
                })?,
                (ObjectKind::Network, _) => continue,
            };
            let map = if obj.kind == ObjectKind::Config { &mut refs.configs } else { &mut refs.secrets };
            map.insert(obj.key, (id, obj.name));
        }
        Ok(refs)
    }

    async fn ensure_networks(&self) -> Result<(), DeployError> {
        for net in self.stack.networks.values().filter(|n| !n.external) {
            let mut labels = net.labels.clone();
            labels.extend(self.object_labels());
            let req = NetworkRequest {
                name: net.real_name.clone(),
                driver: net.driver.clone(),
                attachable: net.attachable,
                labels,
                options: net.driver_opts.clone(),
            };
            self.engine.ensure_network(&req).await.map_err(refused)?;
        }
        Ok(())
    }

    fn object_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (release::STACK.to_string(), self.stack.name.clone()),
            (release::NAMESPACE.to_string(), self.stack.name.clone()),
        ])
    }

    fn proxy_service(&self) -> Option<&'a Service> {
        self.stack.services.get(&self.stack.x.proxy.service)
    }

    /// Every service's desired hash and its spec template (named without a release).
    fn desired(&self) -> BTreeMap<String, (Desired, ServiceSpec)> {
        desired::services(self.stack, &self.images, &self.refs)
    }

    /// The Swarm spec of a service (see [`desired::describe`]).
    fn describe(&self, svc: &Service, swarm_name: &str, extra: &BTreeMap<String, String>, replicas: u64) -> ServiceSpec {
        desired::describe(self.stack, svc, swarm_name, &self.images[&svc.name], extra, replicas, &self.refs)
    }

    /// The cluster as it is; what it read of nginx's directory serves the run's later
    /// questions about it (see [`Run::nginx_files`]).
    async fn observe(&self) -> Result<Observed, EngineError> {
        let observation = observe::observe(self.engine, self.stack).await?;
        if let Some(files) = observation.nginx_files {
            *self.seen_nginx() = Some(files);
        }
        Ok(observation.observed)
    }

    /// `deploy --plan`: the cluster and the stack file must be what the plan saw. Checked as
    /// `plan` computes it (read only), before any config, secret or network is created.
    async fn check_saved_plan(&self) -> Result<(), DeployError> {
        let Some(saved) = &self.opts.saved else { return Ok(()) };
        let (found, _) = desired::lookup(self.engine, self.stack).await.map_err(refused)?;
        let wanted = desired::services(self.stack, &self.images, &desired::refs_by_name(self.stack, &found));
        let hashes = wanted.into_iter().map(|(k, (d, _))| (k, d)).collect();
        let seen = observe::observe(self.engine, self.stack).await.map_err(refused)?;
        let changes = saved.fingerprint.changes(&crate::dry_run::Fingerprint::of(&seen, &hashes));
        if changes.is_empty() {
            return Ok(());
        }
        Err(DeployError::Refused(format!(
            "the saved plan for stack {} no longer matches: {}. Nothing was changed; run `stackctl plan` again",
            self.stack.name,
            changes.join("; ")
        )))
    }

    fn nginx(&self) -> NginxProxy<'_, E> {
        NginxProxy::of(self.engine, self.stack)
    }

    /// Proxy, plain and stateful services: created when missing; plain ones updated in place.
    async fn unversioned_steps(
        &mut self,
        plan: &plan::Plan,
        desired: &BTreeMap<String, (Desired, ServiceSpec)>,
    ) -> Result<(), DeployError> {
        for step in &plan.steps {
            let (service, update) = match step {
                Step::CreateProxy { service } | Step::CreatePlain { service } | Step::CreateStateful { service } => (service, None),
                Step::UpdatePlain { service, id } => (service, Some(id)),
                _ => continue,
            };
            if matches!(step, Step::CreateProxy { .. }) {
                self.ev.phase("proxy");
            } else {
                self.ev.phase("services");
            }
            let svc = &self.stack.services[service];
            let (want, _) = &desired[service];
            let hash = BTreeMap::from([(release::SPEC_HASH.to_string(), want.hash.clone())]);
            let spec = self.describe(svc, &release::plain_name(&self.stack.name, service), &hash, svc.deploy.replicas);
            let name = spec.name.clone().unwrap_or_default();
            let result = match update {
                None => self.engine.create_service(spec).await.map(|_| format!("created {name}")),
                Some(id) => match self.engine.service(id).await {
                    Ok(Some(current)) => self.engine.update_service(id, current.version, spec).await.map(|_| format!("updated {name} (rolling)")),
                    Ok(None) => self.engine.create_service(spec).await.map(|_| format!("created {name}")),
                    Err(e) => Err(e),
                },
            };
            let change = result.map_err(|e| self.fail(&format!("applying {service}"), e, true))?;
            self.ev.info(&change);
            self.changes.push(change);
            if matches!(step, Step::CreateProxy { .. }) {
                self.ev.progress("waiting for nginx to run");
                let deadline = Instant::now() + Duration::from_secs(120);
                health::wait_running(self.engine, &name, svc.deploy.replicas, deadline, |_, _| {})
                    .await
                    .map_err(|e| self.fail("starting the proxy", e, true))?;
            }
        }
        Ok(())
    }

    /// Create (or adopt) one green release.
    async fn start_green(
        &self,
        service: &str,
        blue: Option<u64>,
        green: &Green,
        hash: &str,
        colour: Color,
    ) -> Result<GreenRelease, EngineError> {
        let svc = &self.stack.services[service];
        let n = green.release();
        let swarm_name = release::versioned_name(&self.stack.name, service, n);
        let mut replicas = svc.deploy.replicas;
        let mut image = self.images.get(service).cloned().unwrap_or_default();
        let mut undo = Undo::Remove;
        let paint = |spec: &ServiceSpec| release::coloured(spec, &self.stack.name, service, colour).unwrap_or_else(|| spec.clone());
        let (id, created) = match green {
            Green::Recreate { .. } => {
                let spec = self.recorded_specs.get(&swarm_name).cloned().ok_or_else(|| EngineError::Other(format!("the history holds no spec of {swarm_name}")))?;
                replicas = spec.labels.as_ref().and_then(|l| l.get(release::REPLICAS)).and_then(|r| r.parse().ok()).unwrap_or(replicas);
                image = spec.task_template.as_ref().and_then(|t| t.container_spec.as_ref()).and_then(|c| c.image.clone()).unwrap_or_default();
                // As it ran (same labels, same pinned image), under the colour users are not on.
                (self.engine.create_service(paint(&scaled(&spec, replicas))).await?, true)
            }
            Green::Adopt { id, .. } | Green::Existing { id, .. } => {
                let current = self.engine.service(id).await?.ok_or_else(|| EngineError::Other(format!("{swarm_name} disappeared")))?;
                if let Green::Existing { .. } = green {
                    // The release's own size and image, not the stack file's: it goes back as it ran.
                    replicas = current.label(release::REPLICAS).and_then(|r| r.parse().ok()).unwrap_or(current.replicas.max(1));
                    image = current.spec.task_template.as_ref().and_then(|t| t.container_spec.as_ref()).and_then(|c| c.image.clone()).unwrap_or_default();
                    undo = Undo::ScaleTo(current.replicas);
                }
                // A retained release (or one a rollback left at zero) runs again, under the
                // colour users are not on. Its tasks are new either way: a release at zero has
                // none, and one with tasks already has that colour (users are on the other).
                let repainted = release::coloured(&current.spec, &self.stack.name, service, colour);
                if current.replicas < replicas || repainted.is_some() {
                    let spec = repainted.unwrap_or_else(|| current.spec.clone());
                    self.engine.update_service(id, current.version, scaled(&spec, replicas.max(current.replicas))).await?;
                }
                (id.clone(), false)
            }
            Green::Create { .. } => {
                let labels = BTreeMap::from([
                    (release::RELEASE.to_string(), n.to_string()),
                    (release::SPEC_HASH.to_string(), hash.to_string()),
                    (release::REPLICAS.to_string(), svc.deploy.replicas.to_string()),
                ]);
                let spec = self.describe(svc, &swarm_name, &labels, svc.deploy.replicas);
                (self.engine.create_service(paint(&spec)).await?, true)
            }
        };
        Ok(GreenRelease {
            service: service.to_string(),
            blue,
            release: n,
            swarm_name,
            id,
            created,
            replicas,
            image,
            undo,
            colour,
            target: Target { release: n, servers: Vec::new() },
        })
    }

    /// Make each live release (`(service, release, colour)`) reachable by its
    /// colour's name. Only a release made by a stackctl from before colours were aliases lacks
    /// it: Swarm rolls its tasks (new ones first) to add the alias, once. Until the config that
    /// names colours is loaded, nginx reaches the release by its own name, whose tasks these
    /// are throughout.
    async fn paint_live(&mut self, live: &[(String, u64, Color)]) -> Result<(), String> {
        for (service, n, colour) in live {
            let name = release::versioned_name(&self.stack.name, service, *n);
            let Some(info) = self.engine.service(&name).await.map_err(|e| e.to_string())? else { continue };
            let Some(mut spec) = release::coloured(&info.spec, &self.stack.name, service, *colour) else { continue };
            let update = spec.update_config.get_or_insert_with(Default::default);
            update.order = Some(bollard::models::ServiceSpecUpdateConfigOrderEnum::START_FIRST);
            let running = |tasks: &[TaskInfo]| tasks.iter().filter(|t| t.is_running()).map(|t| t.id.clone()).collect::<BTreeSet<String>>();
            let before = running(&self.engine.tasks(&info.id).await.map_err(|e| e.to_string())?);
            self.ev.info(&format!("{name} is live without its colour's network alias (made by an earlier stackctl): rolling its tasks, new ones first, to add {}", release::colour_alias(&self.stack.name, service, *colour)));
            self.engine.update_service(&info.id, info.version, spec).await.map_err(|e| e.to_string())?;
            let deadline = Instant::now() + route_of(self.stack, service).map(|r| r.health.deadline).unwrap_or(Duration::from_secs(60)) * 2;
            loop {
                let tasks = self.engine.tasks(&info.id).await.map_err(|e| e.to_string())?;
                let now = running(&tasks);
                let settled = tasks.iter().filter(|t| t.desired_state == "running").all(|t| t.is_running());
                if now.len() as u64 >= info.replicas && now.is_disjoint(&before) && settled {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{name}: its tasks did not roll to add the colour alias in time; see `docker service ps {name}`"));
                }
                tokio::time::sleep(health::TASK_POLL).await;
            }
            self.changes.push(format!("gave {name} the network alias of its colour"));
        }
        Ok(())
    }

    /// Scale to zero every release that runs under the colour a green is about to take (for
    /// each `(service, green's release, colour)`), so that the colour's name resolves to green
    /// alone. They are never live (users are on the other colour): the standby of the deploy
    /// before, a release a stopped run left up. Returns their ids, to wait for.
    /// `listed`: the listing `existing` comes from (see [`Self::scale`]).
    async fn make_way(&mut self, existing: &[Existing], listed: &[ServiceInfo], greens: &[(String, u64, Color)]) -> Vec<String> {
        let mut stopping = Vec::new();
        for (service, release, colour) in greens {
            let in_the_way = existing.iter().filter(|e| &e.service == service && e.release.is_some_and(|r| r != *release) && e.replicas > 0 && e.color == Some(*colour));
            for e in in_the_way {
                self.ev.info(&format!("{} runs under {}, the colour the new release takes: scaling it to 0", e.name, colour.as_str()));
                self.scale_down_seen(&e.id, &e.name, listed.iter().find(|i| i.id == e.id)).await;
                stopping.push(e.id.clone());
            }
        }
        stopping
    }

    /// Wait until none of the services `ids` has a running task (so their addresses are out of
    /// Docker's DNS before green is probed under their old colour).
    async fn wait_stopped(&self, ids: &[String]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ids.is_empty() {
            let tasks = self.engine.stack_tasks(&self.stack.name).await.map_err(|e| e.to_string())?;
            if !tasks.iter().any(|t| ids.contains(&t.service_id) && t.is_running()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("an older release of green's colour did not stop within 120s".into());
            }
            tokio::time::sleep(health::TASK_POLL).await;
        }
        Ok(())
    }

    /// Wait until every green's tasks run and are healthy: one listing of the stack's tasks per
    /// look serves all of them, so the wait costs the same engine calls for 1 green as for 30.
    /// The first green that will not get there (a crash loop, its deadline) ends the wait.
    async fn wait_greens(&self, greens: &mut [GreenRelease]) -> Result<(), String> {
        let started = Instant::now();
        let deadlines: Vec<Instant> = (greens.iter())
            .map(|g| started + self.opts.timeout.unwrap_or(route_of(self.stack, &g.service).expect("greens are routed").health.deadline))
            .collect();
        if faults::armed("waiting-health") {
            // Test-only: stop inside the health wait, once green's tasks were polled.
            let _ = self.engine.stack_tasks(&self.stack.name).await;
            faults::pause("waiting-health", &self.opts.cancel).await;
        }
        let mut healthy: Vec<Option<Vec<TaskInfo>>> = vec![None; greens.len()];
        let mut last = vec![(usize::MAX, 0); greens.len()];
        while healthy.iter().any(Option::is_none) {
            let all = self.engine.stack_tasks(&self.stack.name).await.map_err(|e| e.to_string())?;
            for (i, g) in greens.iter().enumerate() {
                if healthy[i].is_some() {
                    continue;
                }
                let tasks: Vec<TaskInfo> = all.iter().filter(|t| t.service_id == g.id).cloned().collect();
                let running = tasks.iter().filter(|t| t.is_running()).count();
                if (running, g.replicas) != last[i] {
                    last[i] = (running, g.replicas);
                    self.ev.progress(&format!("{}: {running}/{} tasks running and healthy", g.swarm_name, g.replicas));
                }
                healthy[i] = health::judge_tasks(&g.swarm_name, &tasks, g.replicas, started, deadlines[i]).map_err(|e| e.to_string())?;
            }
            if healthy.iter().any(Option::is_none) {
                tokio::time::sleep(health::TASK_POLL).await;
            }
        }
        let healthy: Vec<Vec<TaskInfo>> = healthy.into_iter().flatten().collect();
        let wanted: Vec<_> = greens.iter().zip(&healthy).map(|(g, t)| (g.service.as_str(), g.swarm_name.as_str(), g.release, t.as_slice())).collect();
        let targets = self.targets(&wanted).await.map_err(|e| e.to_string())?;
        for ((g, target), tasks) in greens.iter_mut().zip(targets).zip(&healthy) {
            g.target = target;
            self.ev.info(&format!("{}: {} tasks healthy at {}", g.swarm_name, tasks.len(), g.target.servers.join(" ")));
        }
        Ok(())
    }

    /// Addresses of the running tasks of one release on the network nginx shares with it.
    async fn target_of(
        &self,
        service: &str,
        swarm_name: &str,
        release: u64,
        running: &[crate::engine::TaskInfo],
    ) -> Result<Target, EngineError> {
        let mut targets = self.targets(&[(service, swarm_name, release, running)]).await?;
        Ok(targets.remove(0))
    }

    /// [`Self::target_of`] for many releases, each `(service, swarm name, release, running
    /// tasks)`, in that order: one look at each network nginx shares with them serves all.
    async fn targets(&self, wanted: &[(&str, &str, u64, &[TaskInfo])]) -> Result<Vec<Target>, EngineError> {
        let mut networks: Vec<String> = Vec::new();
        for (service, ..) in wanted {
            networks.push(route_network(self.stack, service).map_err(EngineError::Other)?);
        }
        let mut missing = None;
        // Endpoint data appears in the network a moment after the task reports running.
        for _ in 0..50 {
            let mut seen: BTreeMap<&str, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
            for network in &networks {
                if !seen.contains_key(network.as_str()) {
                    seen.insert(network, self.engine.network_addresses(network).await?);
                }
            }
            let mut targets = Vec::new();
            missing = None;
            for ((service, swarm_name, release, running), network) in wanted.iter().zip(&networks) {
                let port = route_of(self.stack, service).map(|r| r.port).ok_or_else(|| EngineError::Other(format!("{service} is not routed")))?;
                let ids: BTreeSet<&str> = running.iter().map(|t| t.id.as_str()).collect();
                let addrs = seen[network.as_str()].get(*swarm_name).into_iter().flatten();
                let servers: Vec<String> = addrs.filter(|(id, _)| ids.contains(id.as_str())).map(|(_, ip)| format!("{ip}:{port}")).collect();
                if servers.len() != ids.len() && missing.is_none() {
                    missing = Some(format!("could not find the addresses of {swarm_name}'s tasks on network {network}"));
                }
                targets.push(Target { release: *release, servers });
            }
            if missing.is_none() {
                return Ok(targets);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(EngineError::Other(missing.unwrap_or_default()))
    }

    /// Targets for the given live releases plus previews: one listing of the stack's services
    /// and one of its tasks, whatever the number of services.
    async fn routing(&self, live: &BTreeMap<String, u64>, previews: &[&GreenRelease]) -> Result<Vec<ServiceRouting>, String> {
        let names: Vec<(&String, String, u64)> = routed(self.stack)
            .filter_map(|(name, _)| live.get(name).map(|n| (name, release::versioned_name(&self.stack.name, name, *n), *n)))
            .collect();
        let mut running: Vec<Vec<TaskInfo>> = Vec::new();
        if !names.is_empty() {
            let (services, tasks) = tokio::join!(self.engine.services(&self.stack.name), self.engine.stack_tasks(&self.stack.name));
            let (services, tasks) = (services.map_err(|e| e.to_string())?, tasks.map_err(|e| e.to_string())?);
            for (_, swarm_name, _) in &names {
                let id = &services.iter().find(|s| &s.name == swarm_name).ok_or_else(|| format!("not found: service {swarm_name}"))?.id;
                running.push(tasks.iter().filter(|t| &t.service_id == id && t.is_running()).cloned().collect());
            }
        }
        let wanted: Vec<_> = names.iter().zip(&running).map(|((s, swarm_name, n), t)| (s.as_str(), swarm_name.as_str(), *n, t.as_slice())).collect();
        let mut targets = self.targets(&wanted).await.map_err(|e| e.to_string())?.into_iter();
        let mut routing = Vec::new();
        for (name, svc) in routed(self.stack) {
            let Role::Routed(route) = &svc.role else { continue };
            let live_target = match live.get(name) {
                Some(_) => targets.next().expect("one target per live release"),
                // Nothing live yet (first deploy): users get 502 until the switch.
                None => Target { release: 0, servers: Vec::new() },
            };
            let preview = previews.iter().find(|g| &g.service == name).map(|g| g.target.clone());
            routing.push(ServiceRouting { service: name.clone(), route: route.clone(), live: live_target, preview });
        }
        Ok(routing)
    }

    /// Keep the installed config's token, so the config this run would write is the same text
    /// (and needs no reload); a new one when nginx has none.
    async fn adopt_token(&mut self) {
        if let Ok(files) = self.nginx_files().await {
            if let Some(token) = files.config().and_then(|c| proxy::token_in(&c)) {
                self.token = token;
            }
        }
    }

    /// nginx's config directory: as this run read it already, or read now (one request per
    /// replica).
    async fn nginx_files(&self) -> Result<NginxFiles, String> {
        if let Some(seen) = self.seen_nginx().clone() {
            return Ok(seen);
        }
        let files = self.nginx().files().await.map_err(|e| e.to_string())?;
        *self.seen_nginx() = Some(files.clone());
        Ok(files)
    }

    /// What [`Self::nginx_files`] keeps; `None` after any write.
    fn seen_nginx(&self) -> std::sync::MutexGuard<'_, Option<NginxFiles>> {
        self.nginx_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config for the stack's routes, written and loaded in every nginx replica. A reload
    /// happens only when nginx does not run exactly this text already: the routes changed (a
    /// host, a path, a setting, a routed service added or removed), there was no config, or a
    /// reload was lost. `pause`: a test-only pause point before the reload (see [`faults`]).
    async fn ensure_config(&self, pause: Option<&str>) -> Result<(), String> {
        let config = proxy::render(self.stack, &self.token).map_err(|e| e.to_string())?;
        if self.nginx_files().await?.has_everywhere(&config) && self.loaded_config().await == proxy::hash_in(&config) {
            self.ev.progress("nginx runs this stack's routes already: no reload");
            return Ok(());
        }
        let pause = pause.map(|p| (p, &self.opts.cancel));
        *self.seen_nginx() = None;
        let installed = self.nginx().install_at(&config, pause).await.map_err(|e| e.to_string())?;
        self.ev.info(&format!("nginx config installed and reloaded in {} replica(s) (the routes changed)", installed.replicas.len()));
        Ok(())
    }

    /// The hash of the config nginx has loaded, as it echoes it to a request carrying the
    /// token; `None` when it echoes none (no stackctl config, or one with another token).
    async fn loaded_config(&self) -> Option<String> {
        let route = routed(self.stack).find_map(|(n, _)| route_of(self.stack, n))?;
        let answer = self.probe(route, vec![("x-stackctl-verify".into(), self.token.clone())]).send().await.ok()?;
        answer.config
    }

    /// The colour nginx sends each routed service's users to, from its files.
    async fn colours(&self) -> Result<BTreeMap<String, Color>, String> {
        Ok(self.nginx_files().await?.colours(&proxy::RoutingSummary::of(self.stack)))
    }

    /// Send the users of each service to the given colour: its green file created or removed,
    /// one atomic file operation per nginx replica, no reload.
    async fn point_to(&self, colours: &[(String, Color)]) -> Result<(), String> {
        let files = |c: Color| colours.iter().filter(|(_, col)| *col == c).map(|(s, _)| proxy::green_file(s)).collect::<Vec<_>>();
        let (green, blue) = (files(Color::Green), files(Color::Blue));
        *self.seen_nginx() = None;
        if !green.is_empty() {
            self.nginx().flip(&green, true).await.map_err(|e| e.to_string())?;
        }
        if !blue.is_empty() {
            self.nginx().flip(&blue, false).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Send users back to the colour of the release each service had before (`g.colour`'s
    /// other), and prove they are there.
    async fn point_back(&self, greens: &[GreenRelease], blue: &BTreeMap<String, u64>, after: &str) -> Result<(), String> {
        let back: Vec<(String, Color)> = greens.iter().map(|g| (g.service.clone(), g.colour.other())).collect();
        self.point_to(&back).await?;
        let services: Vec<String> = greens.iter().filter(|g| blue.contains_key(&g.service)).map(|g| g.service.clone()).collect();
        let routing = self.routing(blue, &[]).await?;
        self.verify(&routing, &services, &self.token, after).await
    }

    /// Prove that requests through the live route of each of `services` are answered by its
    /// live target: a few passes in a row, on new connections.
    async fn verify(&self, routing: &[ServiceRouting], services: &[String], token: &str, after: &str) -> Result<(), String> {
        let checks = (routing.iter().filter(|r| services.contains(&r.service))).map(|r| async move {
            let probe = self.probe(&r.route, vec![("x-stackctl-verify".into(), token.to_string())]);
            let expect = Expect { status: r.route.health.status, upstreams: r.live.servers.iter().cloned().collect() };
            // A reload takes effect when nginx's new workers start; a few tries in a row on new
            // connections prove it.
            let deadline = Instant::now() + Duration::from_secs(15);
            health::probe_until(&probe, &expect, 3, Duration::from_millis(100), deadline)
                .await
                .map_err(|e| format!("verification after {after} failed for {}: {e}", r.service))?;
            self.ev.info(&format!("verified: {} answered by release r{}", r.service, r.live.release));
            Ok(())
        });
        at_once(checks.collect()).await
    }

    fn probe(&self, route: &Route, headers: Vec<(String, String)>) -> Probe {
        Probe {
            authority: authority(&self.stack.x.proxy.url),
            path: route.health.path.clone(),
            host: proxy::probe_host(route),
            headers,
            timeout: route.health.timeout,
        }
    }

    /// nginx's tasks can be gone for a moment while green is being gated (a Docker daemon that
    /// restarted stops its containers; Swarm restarts them): wait for them as for green's,
    /// instead of failing a deploy that is otherwise fine.
    async fn wait_for_nginx(&self) -> Result<(), String> {
        let Some(proxy) = self.proxy_service() else { return Ok(()) };
        let name = release::plain_name(&self.stack.name, &self.stack.x.proxy.service);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = (usize::MAX, 0);
        health::wait_running(self.engine, &name, proxy.deploy.replicas, deadline, |running, wanted| {
            if (running, wanted) != last && running < wanted as usize {
                last = (running, wanted);
                self.ev.progress(&format!("{name}: {running}/{wanted} nginx tasks running"));
            }
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("nginx is not running: {e}"))
    }

    /// [`Self::ensure_config`] while green is still starting, when nginx runs now; `None` when
    /// it does not (the preview then waits for it). nginx reaches a colour by its DNS name, so
    /// the config needs nothing of green.
    async fn ensure_config_early(&self) -> Option<Result<(), String>> {
        if let Some(proxy) = self.proxy_service() {
            let name = release::plain_name(&self.stack.name, &self.stack.x.proxy.service);
            let running = self.engine.tasks(&name).await.ok()?.iter().filter(|t| t.is_running()).count();
            if (running as u64) < proxy.deploy.replicas {
                return None;
            }
        }
        Some(self.ensure_config(Some("config-installed")).await)
    }

    /// Make sure nginx runs the stack's routes (unless `installed` says that was done during
    /// the wait), and probe each green through them, under its colour's preview header.
    async fn preview(&self, greens: &[GreenRelease], installed: Option<Result<(), String>>) -> Result<(), String> {
        // Also when the config went in during the wait: nginx may have restarted since (a
        // Docker daemon restart); its config lives in a volume and survives that.
        self.wait_for_nginx().await?;
        match installed {
            Some(done) => done?,
            None => self.ensure_config(Some("config-installed")).await?,
        }
        let probes = greens.iter().map(|g| async move {
            let route = route_of(self.stack, &g.service).expect("routed");
            let headers = vec![
                ("x-stackctl-preview".to_string(), format!("{}.{}", self.token, g.colour.as_str())),
                ("x-stackctl-verify".to_string(), self.token.clone()),
            ];
            let probe = self.probe(route, headers);
            let expect = Expect { status: route.health.status, upstreams: g.target.servers.iter().cloned().collect() };
            let deadline = Instant::now() + self.opts.timeout.unwrap_or(route.health.deadline);
            self.ev.progress(&format!("probing {} {} through nginx", g.swarm_name, route.health.path));
            let probes = health::probe_until(&probe, &expect, route.health.successes, route.health.interval, deadline);
            let attempts = self
                .opts
                .cancel
                .run(probes)
                .await
                .ok_or_else(|| format!("{}: interrupted", g.swarm_name))?
                .map_err(|e| format!("{}: {e}", g.swarm_name))?;
            self.ev.info(&format!("{}: {} probes in a row passed ({} sent)", g.swarm_name, route.health.successes, attempts));
            Ok(())
        });
        at_once(probes.collect()).await
    }

    /// The live releases whose blue still runs after an interrupted deploy, as greens to watch:
    /// for each `(service, live)`, the newest older release with replicas is its blue.
    async fn unwatched_greens(&self, leftovers: &[(String, u64)]) -> Result<Vec<GreenRelease>, String> {
        let existing: Vec<Existing> =
            self.engine.services(&self.stack.name).await.map_err(|e| e.to_string())?.iter().filter_map(Existing::from_info).collect();
        let mut greens = Vec::new();
        for (service, live) in leftovers {
            let mine = || existing.iter().filter(|e| &e.service == service && e.release.is_some());
            let Some(green) = mine().find(|e| e.release == Some(*live)) else { continue };
            let blue = mine().filter(|e| e.release < Some(*live) && e.replicas > 0).filter_map(|e| e.release).max();
            let tasks: Vec<_> = self.engine.tasks(&green.id).await.map_err(|e| e.to_string())?.into_iter().filter(|t| t.is_running()).collect();
            let target = self.target_of(service, &green.name, *live, &tasks).await.map_err(|e| e.to_string())?;
            greens.push(GreenRelease {
                service: service.clone(),
                blue,
                release: *live,
                swarm_name: green.name.clone(),
                id: green.id.clone(),
                created: false,
                replicas: green.replicas,
                image: String::new(),
                undo: Undo::Remove,
                colour: green.color.unwrap_or(Color::Blue),
                target,
            });
        }
        Ok(greens)
    }

    /// The watch window: after the switch, while blue still runs, probe each green through the
    /// live route every `health.interval` for its route's `watch`, judged by [`health::Watch`],
    /// and judge it by its users too: every [`USERS_EVERY`], and once more at the end, their
    /// requests to green since the window opened, from nginx's access log, by the gate's
    /// `max_5xx` and `min_requests` ([`gate::watch_users`]). A first release has nothing to go
    /// back to and is not watched. A second signal ends it.
    async fn watch(&self, greens: &mut [GreenRelease]) -> Result<(), String> {
        let route = |g: &GreenRelease| route_of(self.stack, &g.service).expect("greens are routed");
        let mut watched: Vec<(usize, health::Watch)> = (greens.iter().enumerate())
            .filter(|(_, g)| g.blue.is_some() && !route(g).watch.is_zero())
            .map(|(i, g)| (i, health::Watch::new(route(g).health.successes)))
            .collect();
        let Some(window) = watched.iter().map(|(i, _)| route(&greens[*i]).watch).max() else { return Ok(()) };
        let tick = watched.iter().map(|(i, _)| route(&greens[*i]).health.interval).min().unwrap_or(window);
        self.ev.phase("watch");
        self.ev.progress(&format!("watching the new release through the live route for {window:?}; the old one keeps running"));
        let started = Instant::now();
        let mut users = Some(accesslog::Tail::since(gate::now_seconds()));
        let mut users_read = Instant::now();
        while started.elapsed() < window {
            for (i, rule) in watched.iter_mut() {
                let g = &mut greens[*i];
                if started.elapsed() < route(g).watch {
                    let probe = self.probe_live(g).await;
                    rule.record(probe).map_err(|e| format!("{}: {e}", g.swarm_name))?;
                }
            }
            if users_read.elapsed() >= USERS_EVERY {
                // Requests that finished a moment ago may not have reached Docker's log yet.
                self.judge_users(&mut users, greens, &watched, gate::now_seconds() - LOG_LAG).await?;
                users_read = Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.opts.cancel.at_least(2) => {
                    self.ev.warn(&format!("watch cut short by a second {}", self.opts.cancel.reason()));
                    break;
                }
            }
        }
        self.judge_users(&mut users, greens, &watched, gate::now_seconds()).await?;
        for (i, rule) in &watched {
            let g = &greens[*i];
            let seen = match &users {
                Some(tail) => {
                    let f = accesslog::figures(&tail.requests, &self.stack.name, &g.service, g.colour, tail.start);
                    format!("; users: {:.1}% 5xx of {} requests", f.error_percent(), f.requests)
                }
                None => String::new(),
            };
            self.ev.info(&format!("{}: passed the watch ({} probes through the live route{seen})", g.swarm_name, rule.sent));
        }
        Ok(())
    }

    /// Read what nginx logged up to `until` and judge each watched green by its users'
    /// requests since the window opened. A log that cannot be read is a warning, once: the
    /// probes still judge green (`users` becomes `None`).
    async fn judge_users(
        &self,
        users: &mut Option<accesslog::Tail>,
        greens: &[GreenRelease],
        watched: &[(usize, health::Watch)],
        until: f64,
    ) -> Result<(), String> {
        let Some(tail) = users else { return Ok(()) };
        let proxy = release::plain_name(&self.stack.name, &self.stack.x.proxy.service);
        if let Err(e) = tail.advance(self.engine, &proxy, &self.stack.name, until).await {
            self.ev.warn(&format!("nginx's access log cannot be read ({e}); the watch judges the new release by its probes only"));
            *users = None;
            return Ok(());
        }
        for (i, _) in watched {
            let g = &greens[*i];
            let figures = accesslog::figures(&tail.requests, &self.stack.name, &g.service, g.colour, tail.start);
            gate::watch_users(&figures, &self.stack.x.gate).map_err(|e| format!("{}: {e}", g.swarm_name))?;
        }
        Ok(())
    }

    /// One probe of a live green. An answer from an address green did not have at the switch
    /// (Swarm replaced a task since) counts once the network confirms it is one of green's.
    async fn probe_live(&self, g: &mut GreenRelease) -> Result<(), String> {
        let route = route_of(self.stack, &g.service).expect("greens are routed");
        let answer = self.probe(route, vec![("x-stackctl-verify".into(), self.token.clone())]).send().await?;
        if answer.upstream.as_ref().is_some_and(|u| !g.target.servers.contains(u)) {
            let network = route_network(self.stack, &g.service)?;
            let addrs = self.engine.task_addresses(&network, &g.swarm_name).await.map_err(|e| e.to_string())?;
            g.target.servers = addrs.values().map(|ip| format!("{ip}:{}", route.port)).collect();
        }
        Expect { status: route.health.status, upstreams: g.target.servers.iter().cloned().collect() }.check(&answer)
    }

    /// Green failed its watch: route users back to blue (verified), record blue as live again,
    /// then remove green. Always an error: exit 1 when users are back on blue, 3 otherwise.
    async fn switch_back(&self, greens: &[GreenRelease], blue: &BTreeMap<String, u64>, reason: &str) -> DeployError {
        self.opts.cancel.cleaning_up();
        self.ev.phase("switch back");
        self.ev.warn(&format!("green failed after the switch: {reason}; switching back"));
        let phase = "watching green after the switch";
        let releases = greens.iter().filter_map(|g| g.blue.map(|b| format!("r{b}"))).collect::<Vec<_>>().join(", ");
        if let Err(e) = self.point_back(greens, blue, "switching back").await {
            return self.fail(phase, format!("green failed after the switch: {reason}; switching back to {releases} failed: {e}"), false);
        }
        let recorded = self
            .lock
            .update(|r| {
                for g in greens {
                    match g.blue {
                        Some(b) => r.live.insert(g.service.clone(), b),
                        None => r.live.remove(&g.service),
                    };
                }
            })
            .await;
        if let Err(e) = recorded {
            let why = format!("traffic is back on {releases} but the stack record still names the new release ({e}); deploy again");
            return self.fail(phase, format!("green failed after the switch: {reason}; {why}"), false);
        }
        self.remove_greens(greens).await;
        self.fail(phase, format!("green failed after the switch: {reason}; traffic is back on {releases}"), true)
    }

    /// Undo a deploy before the switch: remove green. nginx needs nothing: users were never
    /// sent to green's colour, and the preview route names colours, not green.
    async fn abort(&self, greens: &[GreenRelease]) {
        // Signals from now on are reported and ignored: stopping halfway would leave a mess.
        // Before the phase line, so a signal sent on seeing "abort ..." is already reported as such.
        self.opts.cancel.cleaning_up();
        self.ev.phase("abort");
        self.remove_greens(greens).await;
    }

    async fn remove_greens(&self, greens: &[GreenRelease]) {
        for g in greens {
            match g.undo {
                Undo::Remove => match self.engine.remove_service(&g.id).await {
                    Ok(()) => self.ev.info(&format!("removed {}", g.swarm_name)),
                    Err(e) => self.ev.warn(&format!("could not remove {} ({e}); the next deploy removes it", g.swarm_name)),
                },
                Undo::ScaleTo(n) => {
                    match self.scale(&g.id, n, None).await {
                        Ok(_) => self.ev.info(&format!("{} back to {n} replica(s), as before", g.swarm_name)),
                        Err(e) => self.ev.warn(&format!("could not scale {} back to {n} ({e}); scale it with `docker service scale`", g.swarm_name)),
                    }
                }
            }
        }
    }

    async fn remove_orphans(&mut self, plan: &plan::Plan) {
        for step in &plan.steps {
            if let Step::RemoveOrphan { service, release, id } = step {
                let name = release::versioned_name(&self.stack.name, service, *release);
                match self.engine.remove_service(id).await {
                    Ok(()) => {
                        self.ev.info(&format!("removed {name}, left by an earlier deploy"));
                        self.changes.push(format!("removed leftover {name}"));
                    }
                    Err(e) => self.ev.warn(&format!("could not remove leftover {name}: {e}")),
                }
            }
        }
    }

    /// Set a service's replicas; `false` when it already had them (or is gone). `seen`: the
    /// service as a listing this run just made shows it, which spares the read before the
    /// update (it is read again only if it changed since).
    async fn scale(&self, id: &str, replicas: u64, seen: Option<&ServiceInfo>) -> Result<bool, EngineError> {
        if let Some(info) = seen.filter(|i| i.id == id) {
            if info.replicas == replicas {
                return Ok(false);
            }
            match self.engine.update_service(id, info.version, scaled(&info.spec, replicas)).await {
                Err(EngineError::Conflict(_)) => {}
                done => return done.map(|()| true),
            }
        }
        match self.engine.service(id).await? {
            Some(current) if current.replicas != replicas => {
                self.engine.update_service(id, current.version, scaled(&current.spec, replicas)).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Scale a release to zero, kept for rollback. Failing is a warning: the next deploy retries.
    async fn scale_down(&mut self, id: &str, name: &str) {
        self.scale_down_seen(id, name, None).await
    }

    /// [`Self::scale_down`] of a service as a listing just showed it (see [`Self::scale`]).
    async fn scale_down_seen(&mut self, id: &str, name: &str, seen: Option<&ServiceInfo>) {
        match self.scale(id, 0, seen).await {
            Ok(false) => {}
            Ok(true) => {
                self.ev.info(&format!("scaled {name} to 0 (kept for rollback)"));
                self.changes.push(format!("scaled {name} to 0"));
            }
            Err(e) => self.ev.warn(&format!("could not scale down {name}: {e}")),
        }
    }

    /// After the switch: scale the previous releases to zero, keeping the newest `keep` of
    /// them for rollback, and remove older ones.
    async fn retire(&mut self, live: &[(String, u64)]) {
        if live.is_empty() {
            return;
        }
        // One listing for every service: retention only touches each service's own releases,
        // and scales them down from what the listing shows.
        let listed = match self.engine.services(&self.stack.name).await {
            Ok(s) => s,
            Err(e) => {
                let services = live.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ");
                self.ev.warn(&format!("could not list old releases of {services} ({e}); the next deploy retires them"));
                return;
            }
        };
        let existing: Vec<Existing> = listed.iter().filter_map(Existing::from_info).filter(|e| e.release.is_some()).collect();
        for (service, release) in live {
            let releases: Vec<Existing> = existing.iter().filter(|e| &e.service == service).cloned().collect();
            self.retire_one(service, *release, &releases, &listed).await;
        }
    }

    async fn retire_one(&mut self, service: &str, live: u64, releases: &[Existing], listed: &[ServiceInfo]) {
        let keep = route_of(self.stack, service).map(|r| r.keep).unwrap_or(self.stack.x.keep);
        let plan = plan::retention(releases, live, keep, record::now_unix());
        for (n, id) in plan.scale_down {
            let name = release::versioned_name(&self.stack.name, service, n);
            self.scale_down_seen(&id, &name, listed.iter().find(|i| i.id == id)).await;
        }
        for (n, id) in plan.remove {
            let name = release::versioned_name(&self.stack.name, service, n);
            match self.engine.remove_service(&id).await {
                Ok(()) => {
                    self.ev.info(&format!("removed {name} (beyond keep={keep})"));
                    self.changes.push(format!("removed {name}"));
                }
                Err(e) => self.ev.warn(&format!("could not remove {name}: {e}")),
            }
        }
    }
}

/// Requests a deploy has in flight at once while it gates or verifies services through nginx:
/// a stack of up to 16 routed services in one round, so 12 take about as long as one, and few
/// enough not to crowd nginx or a small machine (each is one small GET). Switch files need no
/// bound: all of a replica's go in one upload.
pub(crate) const AT_ONCE: usize = 16;

/// Run `work`, [`AT_ONCE`] at a time. The first error ends it (work still in flight is
/// dropped) and is returned; each error names what it was about. A `Vec`, not a lazy
/// iterator: a closure in the stream's type would keep the deploy's future from being `Send`.
async fn at_once<Fut, Er>(work: Vec<Fut>) -> Result<(), Er>
where
    Fut: std::future::Future<Output = Result<(), Er>>,
{
    let mut running = futures_util::stream::iter(work).buffer_unordered(AT_ONCE);
    while let Some(done) = running.next().await {
        done?;
    }
    Ok(())
}

/// `spec` with `replicas` replicas.
pub(crate) fn scaled(spec: &ServiceSpec, replicas: u64) -> ServiceSpec {
    let mut spec = spec.clone();
    spec.mode = Some(ServiceSpecMode { replicated: Some(ServiceSpecModeReplicated { replicas: Some(replicas as i64) }), ..Default::default() });
    spec
}

/// Services whose blue a deploy interrupted after its switch left running, with their live release.
fn retirements(plan: &plan::Plan) -> Vec<(String, u64)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Retire { service, live } => Some((service.clone(), *live)),
            _ => None,
        })
        .collect()
}

pub use crate::desired::{kind_of, proxy_volume};

/// `http://127.0.0.1:8080/` → `127.0.0.1:8080` (validated by `spec`).
pub fn authority(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}
