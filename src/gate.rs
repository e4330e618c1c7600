//! `stackctl gate`: whether the live release may move on, for a CI pipeline's promotion step.
//!
//! A gate passes only when every check passes, each read from the cluster as it is now:
//!
//! - `tasks <service>`: every task of the live release is running (and healthy, where Docker
//!   says), and nginx sends users to it;
//! - `smoke <method> <host><path>`: each smoke check of `x-stackctl.gate.smoke`, sent through
//!   nginx's published port like the deploy's verification, answers the declared status from a
//!   task of a live release, with a body matching the declared pattern;
//! - `soak <service>`: the live release has been live at least `soak` (from the history);
//! - `5xx <service>` (and `p99 <service>` when declared): over `window` (never before the
//!   release went live), users' requests to it in nginx's access log ([`crate::accesslog`])
//!   had a 5xx share under `max_5xx` (and a p99 request time under `p99`); fewer than
//!   `min_requests` of them: inconclusive, which holds like a failure.
//!
//! [`check`] looks once; [`gate`] looks until it passes or `--wait` is up, then records the
//! result in the history. [`junit`] writes the checks as a JUnit report (its own small writer).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accesslog;
use crate::engine::Engine;
use crate::events::Events;
use crate::health::Probe;
use crate::history::{self, Entry, ServiceRelease, Verb, Who};
use crate::observe;
use crate::plan::{Existing, Kind};
use crate::proxy;
use crate::record;
use crate::release;
use crate::spec::{GateSpec, Smoke, Stack};

/// Exit codes of `stackctl gate` (2, a usage or stack-file error, is every command's).
pub const EXIT_PASSED: i32 = 0;
pub const EXIT_HELD: i32 = 1;
/// The gate could not look (engine unreachable, nginx or its config missing): neither passed
/// nor held; a pipeline may retry.
pub const EXIT_UNCHECKED: i32 = 4;

/// How long `--wait` pauses between two looks.
const WAIT_STEP: Duration = Duration::from_secs(5);
/// How long one smoke request may take, and how much of its body is matched.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(10);
const SMOKE_BODY: usize = 1 << 20;

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not enough evidence (too few requests): holds the release like a failure.
    Inconclusive,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Inconclusive => "inconclusive",
        }
    }
}

/// One check, as printed, recorded in the history and written to JUnit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `tasks web`, `smoke GET /healthz`, `soak web`, `5xx web`, `p99 web`.
    pub name: String,
    pub status: Status,
    /// What was measured, also when it passed (`0.00% 5xx in 120 requests`).
    pub figure: String,
    /// Why it did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Check {
    fn pass(name: String, figure: String) -> Check {
        Check { name, status: Status::Pass, figure, reason: None }
    }
    fn fail(name: String, figure: String, reason: String) -> Check {
        Check { name, status: Status::Fail, figure, reason: Some(reason) }
    }
}

/// A gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Passed,
    /// A check failed.
    Held,
    /// No check failed, but one could not decide.
    Inconclusive,
}

impl Verdict {
    pub fn of(checks: &[Check]) -> Verdict {
        if checks.iter().any(|c| c.status == Status::Fail) {
            Verdict::Held
        } else if checks.iter().any(|c| c.status == Status::Inconclusive) {
            Verdict::Inconclusive
        } else {
            Verdict::Passed
        }
    }

    pub fn exit_code(self) -> i32 {
        if self == Verdict::Passed { EXIT_PASSED } else { EXIT_HELD }
    }

    fn outcome(self) -> history::Outcome {
        match self {
            Verdict::Passed => history::Outcome::Passed,
            Verdict::Held => history::Outcome::Held,
            Verdict::Inconclusive => history::Outcome::Inconclusive,
        }
    }
}

/// What a gate found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub stack: String,
    pub env: Option<String>,
    pub verdict: Verdict,
    /// The live release of each routed service that was checked.
    pub live: BTreeMap<String, u64>,
    pub checks: Vec<Check>,
    /// How many times it looked (more than one with `--wait`).
    pub attempts: u32,
    pub seconds: f64,
    pub exit_code: i32,
    /// The history entry the result was recorded as (`None`: it could not be written).
    pub history_entry: Option<u64>,
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let env = self.env.as_deref().map(|e| format!(" (env {e})")).unwrap_or_default();
        let verdict = match self.verdict {
            Verdict::Passed => "PASSED",
            Verdict::Held => "HELD",
            Verdict::Inconclusive => "HELD (inconclusive)",
        };
        let _ = writeln!(text, "gate of stack {}{env}: {verdict}", self.stack);
        let width = self.checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(text, "  {:<12}  {:<width$}  {}", c.status.as_str(), c.name, c.figure);
            if let Some(reason) = &c.reason {
                let _ = writeln!(text, "  {:<12}  {:<width$}  reason: {reason}", "", "");
            }
        }
        let tries = if self.attempts == 1 { String::new() } else { format!(" after {} looks", self.attempts) };
        let _ = writeln!(text, "{} of {} checks passed{tries} in {:.1}s", self.checks.iter().filter(|c| c.status == Status::Pass).count(), self.checks.len(), self.seconds);
        text
    }
}

/// Why the gate could not look at all.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("could not check stack {stack}: {reason}")]
    Unchecked { stack: String, reason: String },
}

impl GateError {
    fn engine(stack: &Stack, e: impl std::fmt::Display) -> GateError {
        GateError::Unchecked { stack: stack.name.clone(), reason: e.to_string() }
    }
}

/// `--wait`: keep looking until the gate passes or this much time has gone by.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub wait: Option<Duration>,
}

/// Look (again and again with `--wait`) and record the result in the history.
pub async fn gate<E: Engine>(engine: &E, stack: &Stack, opts: &Options, out: &Events) -> Result<Report, GateError> {
    let started = tokio::time::Instant::now();
    let deadline = started + opts.wait.unwrap_or_default();
    let mut attempts = 0;
    let (live, checks) = loop {
        attempts += 1;
        let looked = check(engine, stack).await;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match looked {
            Ok((_, checks)) if Verdict::of(&checks) != Verdict::Passed && !remaining.is_zero() => {
                let held: Vec<&str> = checks.iter().filter(|c| c.status != Status::Pass).map(|c| c.name.as_str()).collect();
                out.info(&format!("not passed yet ({}); looking again in {:?}", held.join(", "), WAIT_STEP.min(remaining)));
            }
            Ok(done) => break done,
            Err(e) if !remaining.is_zero() => out.warn(&format!("{e}; trying again in {:?}", WAIT_STEP.min(remaining))),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(WAIT_STEP.min(remaining)).await;
    };
    let verdict = Verdict::of(&checks);
    let mut report = Report {
        stack: stack.name.clone(),
        env: stack.environment.name.clone(),
        verdict,
        live,
        checks,
        attempts,
        seconds: started.elapsed().as_secs_f64(),
        exit_code: verdict.exit_code(),
        history_entry: None,
    };
    report.history_entry = record(engine, stack, &report, out).await;
    Ok(report)
}

/// Append the gate's result to the stack's history; a failure to write it is a warning.
async fn record<E: Engine>(engine: &E, stack: &Stack, report: &Report, out: &Events) -> Option<u64> {
    let mut services = Vec::new();
    let infos = engine.services(&stack.name).await.unwrap_or_default();
    for (service, &n) in &report.live {
        let name = release::versioned_name(&stack.name, service, n);
        let info = infos.iter().find(|i| i.name == name);
        let image = info.and_then(|i| i.spec.task_template.as_ref()?.container_spec.as_ref()?.image.clone()).unwrap_or_default();
        let spec_hash = info.and_then(|i| i.label(release::SPEC_HASH)).unwrap_or_default().to_string();
        services.push(ServiceRelease { service: service.clone(), release: n, switched: false, from: None, image, spec_hash });
    }
    let reasons: Vec<String> = (report.checks.iter())
        .filter_map(|c| Some(format!("{}: {}", c.name, c.reason.as_deref()?)))
        .collect();
    let entry = Entry {
        number: 0,
        time: record::now_unix(),
        verb: Verb::Gate,
        who: Who::current(),
        command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
        outcome: report.verdict.outcome(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        exit_code: report.exit_code,
        release: None,
        services,
        phases: Vec::new(),
        seconds: report.seconds,
        specs: BTreeMap::new(),
        specs_left_out: None,
        env: stack.environment.name.clone(),
        checks: report.checks.clone(),
        promoted_from: None,
        maintenance: Vec::new(),
        repairs: Vec::new(),
    };
    match history::append_unlocked(engine, &stack.name, stack.x.history, entry).await {
        Ok(done) => Some(done.number),
        Err(e) => {
            out.warn(&format!("the gate's result was not written to the history of stack {}: {e}", stack.name));
            None
        }
    }
}

/// One look: every check, and the live release of each routed service.
pub async fn check<E: Engine>(engine: &E, stack: &Stack) -> Result<(BTreeMap<String, u64>, Vec<Check>), GateError> {
    let gate = &stack.x.gate;
    let observation = observe::observe(engine, stack).await.map_err(|e| GateError::engine(stack, e))?;
    let observed = &observation.observed;
    let config = observation.nginx_config.as_deref().ok_or_else(|| GateError::Unchecked {
        stack: stack.name.clone(),
        reason: "nginx has no stackctl config (is the stack deployed, and nginx running?)".into(),
    })?;
    let token = proxy::token_in(config)
        .ok_or_else(|| GateError::Unchecked { stack: stack.name.clone(), reason: "the config in nginx carries no token stackctl can read".into() })?;
    let tasks = engine.stack_tasks(&stack.name).await.map_err(|e| GateError::engine(stack, e))?;
    let (entries, _) = history::read(engine, &stack.name).await.map_err(|e| GateError::engine(stack, e))?;
    let now = now_seconds();

    let mut live = BTreeMap::new();
    let mut checks = Vec::new();
    // Every address a live release's task answers from, for the smoke checks.
    let mut servers = BTreeSet::new();
    // Per routed service with a live release: its colour and since when it is live.
    let mut judged: Vec<(String, release::Color, Option<u64>)> = Vec::new();
    for (service, _) in crate::spec::routed(stack) {
        let name = format!("tasks {service}");
        let Some(&n) = observed.live.get(service) else {
            checks.push(Check::fail(name, "no live release".into(), format!("{service} has no live release; deploy it first")));
            continue;
        };
        live.insert(service.clone(), n);
        let Some(existing) = observed.services.iter().find(|e| &e.service == service && e.release == Some(n) && e.kind == Some(Kind::Routed)) else {
            checks.push(Check::fail(name, format!("r{n}: service missing"), format!("the live release r{n} of {service} has no Swarm service")));
            continue;
        };
        let (check, running) = tasks_check(engine, name, existing, &tasks, observed.routing.as_ref().and_then(|r| r.get(service)).copied()).await;
        checks.push(check);
        let ids: BTreeSet<&str> = running.iter().map(String::as_str).collect();
        if let Ok(found) = observe::task_servers(engine, stack, service, &existing.name, &ids).await {
            servers.extend(found);
        }
        let since = went_live(&entries, service, n);
        if let Some(colour) = existing.color {
            judged.push((service.clone(), colour, since));
        }
    }

    for smoke in &gate.smoke {
        checks.push(smoke_check(stack, smoke, &token, &servers).await);
    }

    for (service, _, since) in &judged {
        checks.push(soak_check(service, live[service], *since, gate.soak, now));
    }

    if !judged.is_empty() {
        let window_start = now - gate.window.as_secs_f64();
        let earliest = judged.iter().map(|(_, _, since)| since.map_or(window_start, |s| window_start.max(s as f64))).fold(f64::INFINITY, f64::min);
        let proxy_name = release::plain_name(&stack.name, &stack.x.proxy.service);
        let read = accesslog::read(engine, &proxy_name, earliest).await.map_err(|e| GateError::engine(stack, e))?;
        for (service, colour, since) in &judged {
            let start = since.map_or(window_start, |s| window_start.max(s as f64));
            let figures = accesslog::figures(&read.requests, &stack.name, service, *colour, start);
            let over = Duration::from_secs_f64((now - start).max(0.0));
            checks.extend(traffic_checks(service, &figures, gate, over, &read.notes));
        }
    }
    Ok((live, checks))
}

/// Unix seconds now, with the fraction (nginx logs `msec`).
pub(crate) fn now_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// When release `n` of `service` went live: the newest deploy or rollback that switched to it.
pub fn went_live(entries: &[Entry], service: &str, n: u64) -> Option<u64> {
    (entries.iter())
        .filter(|e| matches!(e.verb, Verb::Deploy | Verb::Rollback))
        .find(|e| e.services.iter().any(|s| s.service == service && s.release == n && s.switched))
        .map(|e| e.time)
}

/// Every task of the live release running and healthy, and nginx sending users to it. Also
/// the ids of its running tasks.
async fn tasks_check<E: Engine>(engine: &E, name: String, live: &Existing, tasks: &[crate::engine::TaskInfo], serving: Option<u64>) -> (Check, Vec<String>) {
    let n = live.release.unwrap_or_default();
    let own: Vec<_> = tasks.iter().filter(|t| t.service_id == live.id && t.desired_state == "running").collect();
    let running: Vec<String> = own.iter().filter(|t| t.is_running()).map(|t| t.id.clone()).collect();
    let mut unhealthy = Vec::new();
    for t in own.iter().filter(|t| t.is_running()) {
        if let Some(c) = &t.container_id {
            if let Ok(Some(health)) = engine.container_health(c).await {
                if health != "healthy" {
                    unhealthy.push(format!("task {} is {health}", t.id));
                }
            }
        }
    }
    let figure = format!("r{n}: {}/{} tasks running{}", running.len(), live.replicas, if unhealthy.is_empty() { "" } else { ", not all healthy" });
    let check = if live.replicas == 0 {
        Check::fail(name, figure, format!("r{n} is scaled to 0"))
    } else if (running.len() as u64) < live.replicas {
        let states: Vec<String> = own.iter().filter(|t| !t.is_running()).map(|t| format!("task {} {}{}", t.id, t.state, t.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())).collect();
        Check::fail(name, figure, format!("{} of {} tasks of r{n} are running; {}", running.len(), live.replicas, states.join(", ")))
    } else if !unhealthy.is_empty() {
        Check::fail(name, figure, unhealthy.join(", "))
    } else if serving != Some(n) {
        let to = serving.map_or("no running release".to_string(), |s| format!("r{s}"));
        Check::fail(name, figure, format!("nginx sends users to {to}, not to the live r{n}; see `stackctl status`"))
    } else {
        Check::pass(name, figure)
    };
    (check, running)
}

/// The name of a smoke check: `smoke GET shop.example.com/healthz`.
fn smoke_name(smoke: &Smoke) -> String {
    format!("smoke {} {}{}", smoke.method, smoke.host.as_deref().unwrap_or(""), smoke.path)
}

/// One smoke request through nginx's published port, carrying the verification token so
/// nginx says which task answered and the access log leaves it out of users' figures.
async fn smoke_check(stack: &Stack, smoke: &Smoke, token: &str, servers: &BTreeSet<String>) -> Check {
    let name = smoke_name(smoke);
    let probe = Probe {
        authority: crate::deploy::authority(&stack.x.proxy.url),
        path: smoke.path.clone(),
        host: smoke.host.clone(),
        headers: vec![("x-stackctl-verify".into(), token.to_string())],
        timeout: SMOKE_TIMEOUT,
    };
    let method = hyper::Method::from_bytes(smoke.method.as_bytes()).unwrap_or(hyper::Method::GET);
    let started = std::time::Instant::now();
    let (response, body) = match probe.send_as(method, SMOKE_BODY).await {
        Ok(r) => r,
        Err(e) => return Check::fail(name, "no answer".into(), e),
    };
    let took = started.elapsed();
    let mut figure = format!("{} in {}", response.status, millis(took));
    if response.status != smoke.status {
        return Check::fail(name, figure, format!("status {} (wanted {}), body {:?}", response.status, smoke.status, response.body));
    }
    match &response.upstream {
        Some(u) if servers.contains(u) => {}
        Some(u) => return Check::fail(name, figure, format!("answered by {u}, which is no task of a live release")),
        None => return Check::fail(name, figure, "nginx did not say which task answered (no route for this host and path?)".into()),
    }
    if let Some(pattern) = &smoke.body {
        let text = String::from_utf8_lossy(&body);
        match crate::spec::body_regex(pattern) {
            Ok(re) if re.is_match(&text) => figure.push_str(&format!(", body matches {pattern:?}")),
            Ok(_) => return Check::fail(name, figure, format!("the body does not match {pattern:?}: {:?}", response.body)),
            Err(e) => return Check::fail(name, figure, e),
        }
    }
    Check::pass(name, figure)
}

fn soak_check(service: &str, n: u64, since: Option<u64>, soak: Duration, now: f64) -> Check {
    let name = format!("soak {service}");
    let Some(since) = since else {
        return Check::fail(name, format!("r{n}: not known when it went live"), format!("no deploy or rollback in the history says when r{n} went live (pruned?)"));
    };
    let live_for = Duration::from_secs((now as u64).saturating_sub(since));
    let figure = format!("r{n} live for {} (since {} UTC; soak {})", human(live_for), history::utc(since), human(soak));
    if live_for < soak {
        Check::fail(name, figure, format!("r{n} has been live for {}, less than the soak time {}", human(live_for), human(soak)))
    } else {
        Check::pass(name, figure)
    }
}

/// The 5xx share and the p99 of users' requests, or "inconclusive" with too few of them.
pub fn traffic_checks(service: &str, f: &accesslog::Figures, gate: &GateSpec, over: Duration, notes: &[String]) -> Vec<Check> {
    let mut checks = Vec::new();
    let note = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
    let too_few = f.requests < gate.min_requests;
    let few = |name: String, figure: String| Check {
        name,
        status: Status::Inconclusive,
        figure,
        reason: Some(format!("{} user requests in the last {}, fewer than min_requests {}: too few to judge{note}", f.requests, human(over), gate.min_requests)),
    };
    let name = format!("5xx {service}");
    let figure = format!("{:.2}% ({} of {} requests in {}; limit {}%)", f.error_percent(), f.errors, f.requests, human(over), gate.max_5xx_percent);
    checks.push(if too_few {
        few(name, figure)
    } else if too_many_5xx(f, gate) {
        Check::fail(name, figure, format!("{:.2}% of users' requests got a 5xx answer, not under {}%{note}", f.error_percent(), gate.max_5xx_percent))
    } else {
        Check::pass(name, figure)
    });
    if let Some(ceiling) = gate.p99 {
        let name = format!("p99 {service}");
        let p99 = f.p99.unwrap_or_default();
        let figure = format!("{} (ceiling {})", millis(p99), millis(ceiling));
        checks.push(if too_few {
            few(name, figure)
        } else if p99 > ceiling {
            Check::fail(name, figure, format!("99% of requests took up to {}, over the ceiling {}", millis(p99), millis(ceiling)))
        } else {
            Check::pass(name, figure)
        });
    }
    checks
}

/// Whether users got too many 5xx answers: any, at a share not under `max_5xx` (so a 0% limit
/// allows none). The gate and the deploy's watch window share this rule.
fn too_many_5xx(f: &accesslog::Figures, gate: &GateSpec) -> bool {
    f.errors > 0 && f.error_percent() >= gate.max_5xx_percent
}

/// The deploy's watch window judges a green by its users too: their requests to it since the
/// switch, by the gate's `max_5xx` and `min_requests`. `Err(reason)` sends users back to blue;
/// fewer requests than `min_requests` decide nothing (the probes still judge).
pub fn watch_users(f: &accesslog::Figures, gate: &GateSpec) -> Result<(), String> {
    if f.requests < gate.min_requests || !too_many_5xx(f, gate) {
        return Ok(());
    }
    Err(format!("users' requests failed: {:.1}% 5xx of {} (limit {}%)", f.error_percent(), f.requests, gate.max_5xx_percent))
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// `1h2m3s`, `45s`, `0s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut text = String::new();
    if h > 0 {
        let _ = write!(text, "{h}h");
    }
    if m > 0 {
        let _ = write!(text, "{m}m");
    }
    if s > 0 || text.is_empty() {
        let _ = write!(text, "{s}s");
    }
    text
}

/// Text for XML: `& < > " '` escaped, and characters XML 1.0 does not allow (controls other
/// than tab, newline and carriage return) written as `\u{..}`, since not even `&#..;` may name them.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || matches!(c as u32, 0xFFFE | 0xFFFF) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The checks as a JUnit XML report: one test suite, one test case per check; a failed or
/// inconclusive check is a `<failure>` (both hold the release), its type says which.
pub fn junit(stack: &str, checks: &[Check], seconds: f64) -> String {
    let failures = checks.iter().filter(|c| c.status != Status::Pass).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = xml_escape(&format!("stackctl gate {stack}"));
    let _ = writeln!(x, "<testsuites name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{seconds:.3}\">", checks.len());
    let _ = writeln!(x, "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{seconds:.3}\">", checks.len());
    for c in checks {
        let _ = write!(x, "    <testcase classname=\"{}\" name=\"{}\" time=\"0\">", xml_escape(&format!("stackctl.gate.{stack}")), xml_escape(&c.name));
        if c.status != Status::Pass {
            let reason = xml_escape(c.reason.as_deref().unwrap_or(""));
            let _ = write!(x, "\n      <failure type=\"{}\" message=\"{reason}\">{reason}</failure>", c.status.as_str());
        }
        let _ = writeln!(x, "\n      <system-out>{}</system-out>\n    </testcase>", xml_escape(&c.figure));
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// A JUnit report for a gate that could not look: one test case in error.
pub fn junit_unchecked(stack: &str, reason: &str) -> String {
    let suite = xml_escape(&format!("stackctl gate {stack}"));
    let reason = xml_escape(reason);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{suite}\" tests=\"1\" failures=\"0\" errors=\"1\">\n  <testsuite name=\"{suite}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\">\n    <testcase classname=\"{}\" name=\"gate\" time=\"0\">\n      <error type=\"could-not-check\" message=\"{reason}\">{reason}</error>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
        xml_escape(&format!("stackctl.gate.{stack}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accesslog::Figures;

    fn spec(min_requests: u64, p99: Option<u64>) -> GateSpec {
        GateSpec { min_requests, p99: p99.map(Duration::from_millis), ..GateSpec::default() }
    }

    #[test]
    fn the_verdict_is_held_by_any_failure_and_inconclusive_otherwise() {
        let c = |status| Check { name: "x".into(), status, figure: String::new(), reason: None };
        assert_eq!(Verdict::of(&[c(Status::Pass), c(Status::Pass)]), Verdict::Passed);
        assert_eq!(Verdict::of(&[c(Status::Pass), c(Status::Inconclusive)]), Verdict::Inconclusive);
        assert_eq!(Verdict::of(&[c(Status::Inconclusive), c(Status::Fail)]), Verdict::Held);
        assert_eq!(Verdict::of(&[]), Verdict::Passed);
        assert_eq!((Verdict::Passed.exit_code(), Verdict::Held.exit_code(), Verdict::Inconclusive.exit_code()), (0, 1, 1));
    }

    #[test]
    fn traffic_is_judged_by_share_p99_and_count() {
        let over = Duration::from_secs(60);
        let ok = Figures { requests: 200, errors: 1, p99: Some(Duration::from_millis(40)) };
        let statuses = |f: &Figures, g: &GateSpec| traffic_checks("web", f, g, over, &[]).iter().map(|c| c.status).collect::<Vec<_>>();
        // 0.5% is under the default 1%.
        assert_eq!(statuses(&ok, &spec(20, Some(100))), [Status::Pass, Status::Pass]);
        let bad = Figures { requests: 200, errors: 2, p99: Some(Duration::from_millis(400)) };
        let checks = traffic_checks("web", &bad, &spec(20, Some(100)), over, &[]);
        assert_eq!(checks.iter().map(|c| c.status).collect::<Vec<_>>(), [Status::Fail, Status::Fail]);
        assert_eq!(checks[0].figure, "1.00% (2 of 200 requests in 1m; limit 1%)");
        assert!(checks[0].reason.as_deref().unwrap().contains("not under 1%"));
        assert!(checks[1].reason.as_deref().unwrap().contains("400ms, over the ceiling 100ms"));
        // Too few requests: inconclusive, however good or bad they were.
        let few = traffic_checks("web", &bad, &spec(500, Some(100)), over, &[]);
        assert_eq!(few.iter().map(|c| c.status).collect::<Vec<_>>(), [Status::Inconclusive, Status::Inconclusive]);
        assert!(few[0].reason.as_deref().unwrap().contains("200 user requests in the last 1m, fewer than min_requests 500"));
        // No p99 declared: no p99 check. A 0% limit allows no 5xx at all.
        assert_eq!(statuses(&ok, &spec(0, None)), [Status::Pass]);
        let strict = GateSpec { max_5xx_percent: 0.0, ..spec(0, None) };
        assert_eq!(statuses(&ok, &strict), [Status::Fail]);
        assert_eq!(statuses(&Figures { requests: 5, errors: 0, p99: None }, &strict), [Status::Pass]);
    }

    #[test]
    fn the_watch_switches_back_on_users_5xx_only_with_enough_requests() {
        let f = |requests, errors| Figures { requests, errors, p99: None };
        let gate = GateSpec { max_5xx_percent: 5.0, min_requests: 20, ..GateSpec::default() };
        // Enough requests, too many of them failed: back to blue, saying why.
        assert_eq!(watch_users(&f(57, 57), &gate), Err("users' requests failed: 100.0% 5xx of 57 (limit 5%)".into()));
        assert_eq!(watch_users(&f(20, 1), &gate), Err("users' requests failed: 5.0% 5xx of 20 (limit 5%)".into()));
        // Under the limit, or none failed: green stays.
        assert_eq!(watch_users(&f(21, 1), &gate), Ok(()));
        assert_eq!(watch_users(&f(500, 0), &gate), Ok(()));
        // Fewer requests than min_requests: not on that ground, however bad they were.
        assert_eq!(watch_users(&f(19, 19), &gate), Ok(()));
        assert_eq!(watch_users(&f(0, 0), &gate), Ok(()));
        // The same rule as the gate's check, on the same figures.
        for (requests, errors) in [(57, 57), (20, 1), (21, 1), (19, 19), (500, 0)] {
            let check = &traffic_checks("web", &f(requests, errors), &gate, Duration::from_secs(10), &[])[0];
            assert_eq!(watch_users(&f(requests, errors), &gate).is_err(), check.status == Status::Fail, "{requests} {errors}");
        }
        // A 0% limit: one failure among enough requests is too many.
        let strict = GateSpec { max_5xx_percent: 0.0, ..gate.clone() };
        assert!(watch_users(&f(1000, 1), &strict).is_err());
    }

    #[test]
    fn soak_is_counted_from_the_switch() {
        let c = soak_check("web", 3, Some(1_000), Duration::from_secs(60), 1_030.0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.reason.unwrap().contains("live for 30s, less than the soak time 1m"));
        assert_eq!(soak_check("web", 3, Some(1_000), Duration::from_secs(60), 1_060.0).status, Status::Pass);
        assert_eq!(soak_check("web", 3, None, Duration::ZERO, 1_060.0).status, Status::Fail);
    }

    #[test]
    fn durations_read_like_the_stack_file() {
        assert_eq!(human(Duration::ZERO), "0s");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn xml_text_is_escaped_and_stays_well_formed() {
        assert_eq!(xml_escape(r#"a<b>&"c"'d'"#), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
        assert_eq!(xml_escape("tab\there\nnew\u{1b}[31m\u{0}"), "tab\there\nnew\\u{1b}[31m\\u{0}");
        assert_eq!(xml_escape("é ✓"), "é ✓");
    }

    #[test]
    fn junit_has_one_test_case_per_check_and_parses() {
        let checks = vec![
            Check::pass("tasks web".into(), "r2: 2/2 tasks running".into()),
            Check::fail("smoke GET /<x>".into(), "500 in 3ms".into(), "status 500 (wanted 200), body \"a&b\u{7}\"".into()),
            Check { name: "5xx web".into(), status: Status::Inconclusive, figure: "0.00%".into(), reason: Some("too few".into()) },
        ];
        let xml = junit("shop", &checks, 1.5);
        let mut reader = quick_xml::Reader::from_str(&xml);
        let (mut cases, mut failures, mut texts) = (Vec::new(), Vec::new(), String::new());
        loop {
            match reader.read_event().expect("well-formed XML") {
                quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                    let attr = |name: &str| e.try_get_attribute(name).unwrap().map(|a| a.unescape_value().unwrap().into_owned());
                    match e.name().as_ref() {
                        b"testcase" => cases.push(attr("name").unwrap()),
                        b"failure" => failures.push((attr("type").unwrap(), attr("message").unwrap())),
                        _ => {}
                    }
                }
                quick_xml::events::Event::Text(t) => texts.push_str(&t.unescape().unwrap()),
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(cases, ["tasks web", "smoke GET /<x>", "5xx web"]);
        assert_eq!(failures, [("fail".to_string(), "status 500 (wanted 200), body \"a&b\\u{7}\"".to_string()), ("inconclusive".to_string(), "too few".to_string())]);
        assert!(texts.contains("r2: 2/2 tasks running"));
        assert!(xml.contains("tests=\"3\" failures=\"2\""));
        assert!(quick_xml::Reader::from_str(&junit_unchecked("shop", "engine <gone>")).read_event().is_ok());
    }
}
