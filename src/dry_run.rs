//! `stackctl plan`: what `deploy` would do, computed the way `deploy` computes it (resolve →
//! [`desired`] → [`observe`] → [`plan::plan`]) and shown without changing anything: no lock,
//! no object created, updated or removed, no file written in nginx, no reload. Reads only:
//! the registry (image digests), the services, configs, secrets and networks, and nginx's
//! installed config and switch files through the Docker archive API.
//!
//! The nginx part is the config the deploy would install, diffed against the config installed
//! now. It names colours, never releases, so it changes (and the deploy reloads nginx) only
//! when the routes do. Its secret token is the installed one (a first config gets a new one);
//! both texts show it as [`PLACEHOLDER_TOKEN`] ([`mask_tokens`]).

use std::collections::{BTreeMap, BTreeSet};

use bollard::models::ServiceSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::outcome::DeployError;
use crate::spec::{route_network, route_of, routed};
use crate::desired::{self, Object};
use crate::engine::Engine;
use crate::observe::{self, Observation};
use crate::events::Events;
use crate::plan::{self, Desired, Existing, Green, Plan, Step};
use crate::proxy;
use crate::record;
use crate::release;
use crate::spec::Stack;

/// Stands for the per-deploy token in both configs of the diff: as long as a real token
/// (`record::random_token`), hex, and obviously not a secret.
pub const PLACEHOLDER_TOKEN: &str = "000000000000000000000000";

/// Exit code of `plan` when the deploy would change something (0: it would change nothing).
pub const EXIT_CHANGES: i32 = 10;

/// What the deploy would do, per service, and the nginx config it would install.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanReport {
    pub stack: String,
    /// True when the deploy would change anything (exit code 10).
    pub changes: bool,
    pub steps: Vec<StepLine>,
    /// Unified diff, installed config → the config after the deploy; empty when the deploy
    /// would not install one or it would be the same.
    pub nginx_diff: String,
    /// The whole config the deploy would leave installed (the diff's new side); empty when
    /// it would not install one.
    pub nginx_config: String,
    pub warnings: Vec<String>,
    /// The images the plan pinned, by service: `deploy --plan` runs exactly these.
    pub images: BTreeMap<String, String>,
    /// What the plan observed and wanted: `deploy --plan` refuses if it changed.
    pub fingerprint: Fingerprint,
}

/// What a saved plan (`plan --out`) was made from. `deploy --plan` computes it again once it
/// holds the lock and refuses on any difference: the plan is only right for that cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// `name id version` of every service of the stack (any change to one bumps its version).
    pub services: Vec<String>,
    /// The record's live releases and last release number (not its lock, which the deploy's
    /// own lock changes).
    pub live: BTreeMap<String, u64>,
    pub seq: u64,
    /// SHA-256 of the config installed in nginx, empty when there is none.
    pub nginx: String,
    /// The spec hash of every service as the stack file wants it.
    pub desired: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn of(seen: &Observation, desired: &BTreeMap<String, Desired>) -> Fingerprint {
        let mut services: Vec<String> = seen.infos.iter().map(|i| format!("{} {} {}", i.name, i.id, i.version)).collect();
        services.sort();
        let nginx = seen.nginx_config.as_ref().map(|c| Sha256::digest(c.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()).unwrap_or_default();
        Fingerprint {
            services,
            live: seen.observed.live.clone(),
            seq: seen.observed.seq,
            nginx,
            desired: desired.iter().map(|(k, d)| (k.clone(), d.hash.clone())).collect(),
        }
    }

    /// What changed from `self` (the saved plan) to `now`, in words; empty when nothing did.
    pub fn changes(&self, now: &Fingerprint) -> Vec<String> {
        let mut why = Vec::new();
        if self.desired != now.desired {
            let services: Vec<&String> = (self.desired.keys().chain(now.desired.keys()))
                .filter(|k| self.desired.get(*k) != now.desired.get(*k))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            why.push(format!("the stack file or its images now want something else for {}", services.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
        }
        if self.services != now.services {
            let (was, is): (BTreeSet<&String>, BTreeSet<&String>) = (self.services.iter().collect(), now.services.iter().collect());
            let names = |set: BTreeSet<&&String>| set.iter().filter_map(|s| s.split(' ').next()).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ");
            why.push(format!("services were created, changed or removed: {}", names(was.symmetric_difference(&is).collect())));
        }
        if (&self.live, self.seq) != (&now.live, now.seq) {
            why.push("the stack record changed (another deploy ran)".to_string());
        }
        if self.nginx != now.nginx {
            why.push("the config installed in nginx changed".to_string());
        }
        why
    }
}

/// The part of a saved plan `deploy --plan` reads.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedPlan {
    pub stack: String,
    pub images: BTreeMap<String, String>,
    pub fingerprint: Fingerprint,
}

/// One thing the deploy would do (or find nothing to do) for one service or object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepLine {
    /// The service in the stack file, or `config`/`secret`/`network` for an object.
    pub service: String,
    /// `create`, `switch`, `adopt`, `update`, `scale`, `remove-orphan`, `retire`, `reroute`,
    /// `catch-up`, `proxy-drift`, `stateful-drift`, `nothing`.
    pub action: String,
    /// The line as the text output shows it.
    pub detail: String,
    /// Spec fields that differ from what runs now (updates, switches and drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl StepLine {
    fn new(service: &str, action: &str, detail: String) -> StepLine {
        StepLine { service: service.to_string(), action: action.to_string(), detail, fields: Vec::new() }
    }

    /// Actions that change nothing in the cluster.
    pub fn is_change(&self) -> bool {
        !matches!(self.action.as_str(), "nothing" | "proxy-drift" | "stateful-drift")
    }
}

/// Plan a deploy of `stack` without changing anything.
pub async fn plan<E: Engine>(engine: &E, stack: &Stack, out: &Events) -> Result<PlanReport, DeployError> {
    let refused = |e: &dyn std::fmt::Display| DeployError::Refused(e.to_string());
    out.phase("preflight");
    engine.check_swarm().await.map_err(|e| refused(&e))?;
    for (name, _) in routed(stack) {
        route_network(stack, name).map_err(DeployError::Refused)?;
    }
    out.phase("resolve");
    let images = desired::resolve_images(engine, stack, out).await.map_err(DeployError::Refused)?;
    let (found, missing) = desired::lookup(engine, stack).await.map_err(|e| refused(&e))?;
    if let Some(o) = missing.iter().find(|o| o.external && o.kind != desired::ObjectKind::Network) {
        let kind = o.kind.as_str();
        return Err(DeployError::Refused(format!(
            "external {kind} {} ({kind}s.{}) does not exist; create it with `docker {kind} create`",
            o.name, o.key
        )));
    }
    let wanted = desired::services(stack, &images, &desired::refs_by_name(stack, &found));

    out.phase("observe");
    let seen = observe::observe(engine, stack).await.map_err(|e| refused(&e))?;
    if let Some(lock) = &seen.lock {
        out.warn(&format!("a deploy is in progress ({}); this plan may be out of date when it finishes", lock.describe(record::now_unix())));
    }
    let hashes: BTreeMap<String, Desired> = wanted.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect();
    let plan = plan::plan(&hashes, &seen.observed).map_err(DeployError::Refused)?;
    let fingerprint = Fingerprint::of(&seen, &hashes);
    let steps = steps(stack, &plan, &wanted, &seen, &images, &missing);
    for s in steps.iter().filter(|s| !s.is_change() && s.action != "nothing") {
        out.warn(&format!("{}: {}", s.service, s.detail));
    }

    out.phase("nginx");
    let (nginx_diff, nginx_config) = if plan.is_noop() {
        (String::new(), String::new())
    } else {
        // The config names colours, never releases: the deploy rewrites (and reloads) it only
        // when the routes changed. It keeps the installed token, which the diff masks.
        let current = seen.nginx_config.as_deref().unwrap_or("");
        let token = proxy::token_in(current).unwrap_or_else(|| PLACEHOLDER_TOKEN.to_string());
        let planned = mask_tokens(&proxy::render(stack, &token).map_err(|e| refused(&e))?);
        let installed = mask_tokens(current);
        let after = "after the deploy";
        (unified_diff(&installed, &planned, "installed", after, 3), planned)
    };
    out.end_phase();
    Ok(PlanReport {
        stack: stack.name.clone(),
        changes: steps.iter().any(StepLine::is_change),
        steps,
        nginx_diff,
        nginx_config,
        warnings: out.warnings(),
        images,
        fingerprint,
    })
}

/// The per-service lines of a plan, in stack-file order, objects to create first. Pure.
pub fn steps(
    stack: &Stack,
    plan: &Plan,
    wanted: &BTreeMap<String, (Desired, ServiceSpec)>,
    seen: &Observation,
    images: &BTreeMap<String, String>,
    missing: &[Object],
) -> Vec<StepLine> {
    let mut lines: Vec<StepLine> = (missing.iter())
        .filter(|o| !o.external)
        .map(|o| StepLine::new(o.kind.as_str(), "create", format!("create {}", o.name)))
        .collect();
    let spec_of = |id: &str| seen.infos.iter().find(|i| i.id == id).map(|i| &i.spec);
    let releases = |service: &str| -> Vec<&Existing> {
        seen.observed.services.iter().filter(|e| e.service == service && e.release.is_some()).collect()
    };
    let orphans: BTreeSet<&str> = (plan.steps.iter())
        .filter_map(|s| match s {
            Step::RemoveOrphan { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // What the retire phase would do once `live` is live: scale down, remove beyond keep.
    let retire = |service: &str, live: u64, lines: &mut Vec<StepLine>| {
        let keep = route_of(stack, service).map(|r| r.keep).unwrap_or(stack.x.keep);
        let others: Vec<Existing> = releases(service).into_iter().filter(|e| !orphans.contains(e.id.as_str())).cloned().collect();
        let r = plan::retention(&others, live, keep, seen.observed.now);
        let window = route_of(stack, service).map(|r| r.rollback_window).unwrap_or_default();
        // The deploy keeps the release it switches from up for the rollback window.
        let standby = (!window.is_zero()).then(|| r.scale_down.iter().map(|(n, _)| *n).max()).flatten();
        for (n, _) in r.scale_down {
            if Some(n) == standby {
                lines.push(StepLine::new(service, "retire", format!("then keep r{n} at full scale for {window:?} (rollback window)")));
                continue;
            }
            lines.push(StepLine::new(service, "retire", format!("then scale r{n} to 0 (kept for rollback)")));
        }
        for (n, _) in r.remove {
            lines.push(StepLine::new(service, "retire", format!("then remove r{n} (beyond keep={keep})")));
        }
    };
    for (service, (_, want)) in wanted {
        let image = &images[service];
        let plain = release::plain_name(&stack.name, service);
        let start = lines.len();
        for step in plan.steps.iter().filter(|s| step_service(s) == service) {
            match step {
                Step::CreateProxy { .. } | Step::CreatePlain { .. } | Step::CreateStateful { .. } => {
                    lines.push(StepLine::new(service, "create", format!("create {plain} ({image})")));
                }
                Step::UpdatePlain { id, .. } => {
                    let fields = spec_of(id).map(|cur| changed_fields(cur, want)).unwrap_or_default();
                    let line = match (fields.as_slice(), spec_of(id)) {
                        ([only], Some(cur)) if only == "replicas" => {
                            StepLine::new(service, "scale", format!("scale {plain} {} → {}", replicas(cur), replicas(want)))
                        }
                        _ => StepLine::new(service, "update", format!("update {plain} in place (rolling): {}", fields_text(&fields))),
                    };
                    lines.push(StepLine { fields, ..line });
                }
                Step::ProxyDrift { .. } | Step::StatefulDrift { .. } => {
                    let current = seen.observed.services.iter().find(|e| &e.service == service && e.release.is_none());
                    let fields = current.and_then(|e| spec_of(&e.id)).map(|cur| changed_fields(cur, want)).unwrap_or_default();
                    let (action, why) = match step {
                        Step::ProxyDrift { .. } => ("proxy-drift", "a deploy never replaces a running nginx; apply it with `docker service update`"),
                        _ => ("stateful-drift", "stateful services are created once and left alone"),
                    };
                    let detail = format!("{plain} differs from the stack file ({}); left alone: {why}", fields_text(&fields));
                    lines.push(StepLine { fields, ..StepLine::new(service, action, detail) });
                }
                Step::RemoveOrphan { release, .. } => {
                    let detail = format!("remove leftover r{release} ({}), left by an earlier deploy", release::versioned_name(&stack.name, service, *release));
                    lines.push(StepLine::new(service, "remove-orphan", detail));
                }
                Step::Release { blue, green, .. } => {
                    let n = green.release();
                    let blue_spec = blue.and_then(|b| releases(service).into_iter().find(|e| e.release == Some(b))).and_then(|e| spec_of(&e.id));
                    let fields = blue_spec.map(|cur| changed_fields(cur, want)).unwrap_or_default();
                    let (action, detail) = match (green, blue) {
                        (Green::Create { .. }, None) => ("create", format!("create r{n} ({image})")),
                        (Green::Create { .. }, Some(b)) => ("switch", format!("switch r{b} → r{n} (new release: {}; {image})", fields_text(&fields))),
                        (Green::Adopt { .. }, None) => ("adopt", format!("adopt leftover r{n} (left by an interrupted deploy) and route to it")),
                        (Green::Adopt { .. }, Some(b)) => ("adopt", format!("adopt leftover r{n} (left by an interrupted deploy), switch r{b} → r{n}")),
                        // Only `rollback` plans these; `plan` shows what `deploy` would do.
                        (Green::Existing { .. } | Green::Recreate { .. }, _) => ("rollback", format!("go back to r{n}")),
                    };
                    lines.push(StepLine { fields, ..StepLine::new(service, action, detail) });
                    retire(service, n, &mut lines);
                }
                Step::Reroute { .. } => {
                    let live = seen.observed.live.get(service).map(|n| format!("r{n}")).unwrap_or_else(|| "its live release".into());
                    lines.push(StepLine::new(service, "reroute", format!("reroute nginx to {live} (nginx is out of step with the record)")));
                }
                Step::CatchUp { live, .. } => {
                    let detail = format!("catch up: users are already on r{live} (switched by an interrupted deploy); verify and record it");
                    lines.push(StepLine::new(service, "catch-up", detail));
                }
                Step::ScaleDown { release, .. } => {
                    lines.push(StepLine::new(service, "retire", format!("scale r{release} to 0 (users were sent back from it; kept for rollback)")));
                }
                Step::Retire { live, .. } => {
                    lines.push(StepLine::new(service, "retire", format!("retire old releases (left running by an interrupted deploy; r{live} is live)")));
                    retire(service, *live, &mut lines);
                }
            }
        }
        if lines.len() == start {
            let live = seen.observed.live.get(service).map(|n| format!(" (r{n} live)")).unwrap_or_default();
            lines.push(StepLine::new(service, "nothing", format!("nothing{live}")));
        }
    }
    lines
}

fn step_service(step: &Step) -> &str {
    match step {
        Step::CreateProxy { service }
        | Step::ProxyDrift { service }
        | Step::CreatePlain { service }
        | Step::UpdatePlain { service, .. }
        | Step::CreateStateful { service }
        | Step::StatefulDrift { service }
        | Step::RemoveOrphan { service, .. }
        | Step::Release { service, .. }
        | Step::Reroute { service }
        | Step::CatchUp { service, .. }
        | Step::ScaleDown { service, .. }
        | Step::Retire { service, .. } => service,
    }
}

fn fields_text(fields: &[String]) -> String {
    if fields.is_empty() {
        "other settings".to_string()
    } else {
        fields.join(", ")
    }
}

fn replicas(spec: &ServiceSpec) -> i64 {
    spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas).unwrap_or(1)
}

/// Spec fields a user would name, where they sit in the Swarm spec's JSON.
const FIELDS: &[(&str, &[&str])] = &[
    ("image", &["TaskTemplate", "ContainerSpec", "Image"]),
    ("env", &["TaskTemplate", "ContainerSpec", "Env"]),
    ("replicas", &["Mode", "Replicated", "Replicas"]),
    ("resources", &["TaskTemplate", "Resources"]),
    ("command", &["TaskTemplate", "ContainerSpec", "Args"]),
    ("entrypoint", &["TaskTemplate", "ContainerSpec", "Command"]),
    ("healthcheck", &["TaskTemplate", "ContainerSpec", "HealthCheck"]),
    ("configs", &["TaskTemplate", "ContainerSpec", "Configs"]),
    ("secrets", &["TaskTemplate", "ContainerSpec", "Secrets"]),
    ("volumes", &["TaskTemplate", "ContainerSpec", "Mounts"]),
    ("user", &["TaskTemplate", "ContainerSpec", "User"]),
    ("working_dir", &["TaskTemplate", "ContainerSpec", "Dir"]),
    ("hostname", &["TaskTemplate", "ContainerSpec", "Hostname"]),
    ("stop_grace_period", &["TaskTemplate", "ContainerSpec", "StopGracePeriod"]),
    ("stop_signal", &["TaskTemplate", "ContainerSpec", "StopSignal"]),
    ("init", &["TaskTemplate", "ContainerSpec", "Init"]),
    ("read_only", &["TaskTemplate", "ContainerSpec", "ReadOnly"]),
    ("container labels", &["TaskTemplate", "ContainerSpec", "Labels"]),
    ("placement constraints", &["TaskTemplate", "Placement", "Constraints"]),
    ("placement preferences", &["TaskTemplate", "Placement", "Preferences"]),
    ("ports", &["EndpointSpec", "Ports"]),
    ("labels", &["Labels"]),
];

/// The fields of [`FIELDS`] in which the spec running now differs from the wanted one. Ids of
/// configs and secrets (the names carry the content), stackctl's own bookkeeping labels and
/// defaults the engine fills in where the wanted spec says nothing are not differences.
pub fn changed_fields(current: &ServiceSpec, wanted: &ServiceSpec) -> Vec<String> {
    let json = |s: &ServiceSpec| {
        let mut v = serde_json::to_value(s).expect("a spec serialises");
        for key in ["Configs", "Secrets"] {
            if let Some(list) = v.pointer_mut(&format!("/TaskTemplate/ContainerSpec/{key}")).and_then(|l| l.as_array_mut()) {
                for item in list {
                    if let Some(o) = item.as_object_mut() {
                        o.remove("ConfigID");
                        o.remove("SecretID");
                    }
                }
            }
        }
        if let Some(labels) = v.pointer_mut("/Labels").and_then(|l| l.as_object_mut()) {
            // The image label follows the image; stackctl's labels are its bookkeeping.
            labels.retain(|k, _| !k.starts_with("io.stackctl.") && k != crate::engine::describe::IMAGE_LABEL);
        }
        v
    };
    let (cur, want) = (json(current), json(wanted));
    let empty = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Array(a)) => a.is_empty(),
        Some(serde_json::Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    FIELDS
        .iter()
        .filter(|(_, path)| {
            let at = |v: &serde_json::Value| path.iter().try_fold(v.clone(), |v, k| v.get(*k).cloned());
            let (c, w) = (at(&cur), at(&want));
            !(c == w || (empty(c.as_ref()) && empty(w.as_ref())))
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Replace every per-deploy token in a rendered config (a run of exactly as many lowercase hex
/// digits as a token has) with [`PLACEHOLDER_TOKEN`].
pub fn mask_tokens(config: &str) -> String {
    let len = PLACEHOLDER_TOKEN.len();
    let is_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    let mut out = String::with_capacity(config.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        out.push_str(if run.len() == len { PLACEHOLDER_TOKEN } else { run });
        run.clear();
    };
    for c in config.chars() {
        if is_hex(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A unified diff of two texts, line by line, with `context` lines around each change; empty
/// when they are equal. Longest common subsequence: configs are a few hundred lines.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str, context: usize) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        Same,
        Del,
        Add,
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] = if a[i] == b[j] { lcs[(i + 1) * w + j + 1] + 1 } else { lcs[(i + 1) * w + j].max(lcs[i * w + j + 1]) };
        }
    }
    // (op, index in a, index in b) where the op applies; indices count lines before it.
    let mut ops: Vec<(Op, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((Op::Same, i, j));
            (i, j) = (i + 1, j + 1);
        } else if j == m || (i < n && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            ops.push((Op::Del, i, j));
            i += 1;
        } else {
            ops.push((Op::Add, i, j));
            j += 1;
        }
    }
    let changes: Vec<usize> = (0..ops.len()).filter(|k| ops[*k].0 != Op::Same).collect();
    if changes.is_empty() {
        return String::new();
    }
    let mut text = format!("--- {old_name}\n+++ {new_name}\n");
    let mut k = 0;
    while k < changes.len() {
        // Changes closer than twice the context share a hunk.
        let first = changes[k];
        let mut last = first;
        while k + 1 < changes.len() && changes[k + 1] - last <= 2 * context + 1 {
            k += 1;
            last = changes[k];
        }
        k += 1;
        let (from, to) = (first.saturating_sub(context), (last + context).min(ops.len() - 1));
        let hunk = &ops[from..=to];
        let old_len = hunk.iter().filter(|o| o.0 != Op::Add).count();
        let new_len = hunk.iter().filter(|o| o.0 != Op::Del).count();
        // Unified format: a range of length 0 starts at the line before it.
        let start = |at: usize, len: usize| if len == 0 { at } else { at + 1 };
        text.push_str(&format!("@@ -{},{old_len} +{},{new_len} @@\n", start(hunk[0].1, old_len), start(hunk[0].2, new_len)));
        for (op, i, j) in hunk {
            match op {
                Op::Same => text.push_str(&format!(" {}\n", a[*i])),
                Op::Del => text.push_str(&format!("-{}\n", a[*i])),
                Op::Add => text.push_str(&format!("+{}\n", b[*j])),
            }
        }
    }
    text
}

impl PlanReport {
    pub fn to_text(&self) -> String {
        let mut s = format!("plan for stack {}:\n", self.stack);
        let width = self.steps.iter().map(|l| l.service.len()).max().unwrap_or(0);
        for l in &self.steps {
            s.push_str(&format!("  {:<width$}  {}\n", l.service, l.detail));
        }
        if self.nginx_diff.is_empty() {
            s.push_str("nginx config: unchanged (no reload)\n");
        } else {
            s.push_str(&format!("nginx config, rewritten and reloaded (the routes changed; tokens shown as {PLACEHOLDER_TOKEN}):\n"));
            s.push_str(&self.nginx_diff);
        }
        let n = self.steps.iter().filter(|l| l.is_change()).count();
        match n {
            0 => s.push_str(&format!("stack {}: nothing to deploy\n", self.stack)),
            _ => s.push_str(&format!("stack {}: {n} change{} pending\n", self.stack, if n == 1 { "" } else { "s" })),
        }
        s
    }
}

#[cfg(test)]
mod tests;
