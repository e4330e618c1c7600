//! The release history: what every deploy (and later rollback) did, kept in the cluster.
//!
//! One Swarm config per entry, named `<stack>_stackctl-history-<number, 8 digits>`, its data
//! the entry as JSON, labelled with the stack and the entry number. Configs are immutable, so
//! an entry is written once; every manager and every machine sees the same history, and it
//! survives the loss of the machine that deployed. Entries are appended under the deploy lock,
//! so the next number is simply the highest existing one plus one. After each append all but
//! the newest `x-stackctl.history` entries (default 100) are pruned.
//!
//! An entry carries the full Swarm spec of each routed release live after the operation, so a
//! rollback can recreate a release that was removed since, with its image pinned to the digest
//! it ran (never re-resolving a tag). Swarm limits a config to 500 KiB: an entry that would be
//! larger is written without the specs and says so ([`Entry::specs_left_out`]).
//!
//! A deploy that changed nothing is not recorded: cron runs them often, and they would push
//! the real history out of the window.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bollard::models::ServiceSpec;
use serde::{Deserialize, Serialize};

use crate::outcome::{self, DeployError, Switched};
use crate::engine::{Engine, EngineError, StoredConfig};
use crate::events::{Events, PhaseTime};
use crate::record::{self, Record};
use crate::release;
use crate::spec::{Role, Stack};

/// Label on each history config: its entry number.
pub const HISTORY: &str = "io.stackctl.history";
/// Swarm refuses configs larger than 500 KiB.
pub const MAX_ENTRY_BYTES: usize = 500 * 1024;
/// CI variables that say which pipeline ran a deploy. Identifiers and links only: never a
/// variable that could hold a secret.
pub const CI_VARS: &[&str] =
    &["GITHUB_RUN_ID", "GITHUB_REPOSITORY", "GITHUB_SHA", "CI_JOB_URL", "CI_PIPELINE_ID", "CI_COMMIT_SHA", "BUILD_URL"];

pub fn entry_name(stack: &str, number: u64) -> String {
    format!("{stack}_stackctl-history-{number:08}")
}

/// What the operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Deploy,
    Rollback,
    /// `stackctl gate`: the checks a release passed or was held by.
    Gate,
    /// `stackctl maintenance on|off`: which services it put in or took out of maintenance.
    Maintenance,
    /// `stackctl reconcile`: what it put back as the newest entry with specs recorded it.
    Reconcile,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Deployed,
    /// Nothing to do. Not written for deploys (see the module doc); kept so every outcome a
    /// verb reports has a name.
    Unchanged,
    Failed,
    Interrupted,
    /// The new release was live, failed, and users were sent back to the one before.
    SwitchedBack,
    /// A gate every check of which passed.
    Passed,
    /// A gate with a failed check.
    Held,
    /// A gate with no failed check but one that could not decide (too few requests).
    Inconclusive,
    /// `maintenance on`: users of [`Entry::maintenance`] get a 503 instead of the release.
    On,
    /// `maintenance off`: they reach the release again.
    Off,
    /// `reconcile` found drift and put back what the history recorded ([`Entry::repairs`]).
    Repaired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::SwitchedBack => "switched-back",
            Outcome::Passed => "passed",
            Outcome::Held => "held",
            Outcome::Inconclusive => "inconclusive",
            Outcome::On => "on",
            Outcome::Off => "off",
            Outcome::Repaired => "repaired",
        }
    }
}

/// Who ran it, so "who deployed this?" has an answer without a chat log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    /// `$USER`, else `$LOGNAME`, else `uid N`.
    pub user: String,
    pub host: String,
    /// The [`CI_VARS`] that were set, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ci: BTreeMap<String, String>,
}

impl Who {
    /// This process, reading only the variables named above.
    pub fn current() -> Who {
        Who::from_env(|name| std::env::var(name).ok(), record::hostname(), current_uid())
    }

    fn from_env(var: impl Fn(&str) -> Option<String>, host: String, uid: Option<u32>) -> Who {
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        let user = set("USER")
            .or_else(|| set("LOGNAME"))
            .unwrap_or_else(|| uid.map_or_else(|| "unknown".into(), |u| format!("uid {u}")));
        let ci = CI_VARS.iter().filter_map(|name| Some((name.to_string(), set(name)?))).collect();
        Who { user, host, ci }
    }
}

fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's real uid; no libc call needed.
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// A routed service as the operation left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRelease {
    /// Name in the stack file.
    pub service: String,
    /// The live release after the operation.
    pub release: u64,
    /// Whether this operation made `release` live (a switch), rather than leaving it there.
    pub switched: bool,
    /// The release it replaced, when it switched one (`None` for a first release).
    #[serde(default)]
    pub from: Option<u64>,
    /// The image, pinned to its digest.
    pub image: String,
    /// [`release::SPEC_HASH`] of the release, empty when its service was not found.
    pub spec_hash: String,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the stack's history, from 1; never reused (pruning removes the oldest).
    pub number: u64,
    /// Unix seconds when the operation ended.
    pub time: u64,
    pub verb: Verb,
    pub who: Who,
    /// The command line (argv). No environment values: those may hold secrets.
    pub command: Vec<String>,
    pub outcome: Outcome,
    /// The error message for anything but success.
    #[serde(default)]
    pub reason: Option<String>,
    /// What the command exited with.
    pub exit_code: i32,
    /// The release number this operation created, or tried to create.
    #[serde(default)]
    pub release: Option<u64>,
    /// Every routed service live after the operation.
    pub services: Vec<ServiceRelease>,
    /// How long each phase took, as the command reported them.
    #[serde(default)]
    pub phases: Vec<PhaseTime>,
    pub seconds: f64,
    /// The full Swarm spec of each routed release live after the operation and of each plain
    /// service, by Swarm service name: what a rollback recreates a removed release from, and
    /// puts plain services back to.
    #[serde(default)]
    pub specs: BTreeMap<String, ServiceSpec>,
    /// Why `specs` is empty although releases were live (too large for a Swarm config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs_left_out: Option<String>,
    /// The environment (`--env`) the stack file was loaded for; `status` shows the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A gate's checks, each with its figure (empty for deploys and rollbacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::gate::Check>,
    /// `stackctl promote`: where the release came from, so "what was tested before this went
    /// out?" has an answer in the target's own history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<Origin>,
    /// `stackctl maintenance`: the routed services it switched on or off (see `outcome`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<String>,
    /// `stackctl reconcile`: one line per repair (what drifted, what was done about it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<String>,
}

/// The environment a promoted release came from, as it was when the promote ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The `--from` environment.
    pub env: String,
    /// Its stack name.
    pub stack: String,
    /// Its live release of each routed service: the ones whose digests were deployed.
    pub releases: BTreeMap<String, u64>,
    /// The gate's verdict there (`passed`: a promote runs only after one).
    pub gate: Outcome,
    /// The gate's entry in the `--from` stack's history (`None`: it could not be written).
    #[serde(default)]
    pub gate_entry: Option<u64>,
}

impl Entry {
    /// Whether this entry concerns `service`: it switched it, or it is an attempt that switched
    /// nothing (a failed or interrupted deploy does not say which service it was for) in a
    /// stack where `service` was live or nothing was yet.
    pub fn touches(&self, service: &str) -> bool {
        if self.verb == Verb::Maintenance {
            return self.maintenance.iter().any(|s| s == service);
        }
        if self.services.iter().any(|s| s.switched) {
            return self.services.iter().any(|s| s.switched && s.service == service);
        }
        !matches!(self.outcome, Outcome::Deployed | Outcome::Unchanged | Outcome::Repaired)
            && (self.services.is_empty() || self.services.iter().any(|s| s.service == service))
    }

    /// `web r1→r2, api →r1` for switches; `tried r3` for an attempt that switched nothing;
    /// a promote adds where from: `web r1→r2 (from staging web r4)`.
    pub fn changes(&self) -> String {
        match &self.promoted_from {
            Some(o) => format!("{} (from {} {})", self.own_changes(), o.env, o.releases.iter().map(|(s, n)| format!("{s} r{n}")).collect::<Vec<_>>().join(", ")),
            None => self.own_changes(),
        }
    }

    fn own_changes(&self) -> String {
        if self.verb == Verb::Maintenance {
            return format!("maintenance {} {}", self.outcome.as_str(), self.maintenance.join(", "));
        }
        if self.verb == Verb::Reconcile {
            return format!("{} repair(s)", self.repairs.len());
        }
        if self.verb == Verb::Gate {
            return self.services.iter().map(|s| format!("{} r{}", s.service, s.release)).collect::<Vec<_>>().join(", ");
        }
        let switched: Vec<String> = (self.services.iter().filter(|s| s.switched))
            .map(|s| format!("{} {}→r{}", s.service, s.from.map(|f| format!("r{f}")).unwrap_or_default(), s.release))
            .collect();
        match (switched.is_empty(), self.release) {
            (false, _) => switched.join(", "),
            (true, Some(r)) if self.outcome != Outcome::Deployed => format!("tried r{r}"),
            _ => "-".into(),
        }
    }

    /// JSON that fits in a Swarm config. Too large with the specs: without them, saying so;
    /// still too large (a huge reason or command line): those cut short too.
    pub fn encode(&mut self) -> Vec<u8> {
        let data = serde_json::to_vec(self).expect("history entries serialise");
        if data.len() <= MAX_ENTRY_BYTES {
            return data;
        }
        if !self.specs.is_empty() {
            self.specs.clear();
            self.specs_left_out = Some(format!(
                "with the service specs this entry was {} bytes, over Swarm's {} KiB limit for a config; \
                 a rollback cannot recreate these releases from history once they are removed",
                data.len(),
                MAX_ENTRY_BYTES / 1024
            ));
            let data = serde_json::to_vec(self).expect("history entries serialise");
            if data.len() <= MAX_ENTRY_BYTES {
                return data;
            }
        }
        const CUT: usize = 4096;
        if let Some(reason) = &mut self.reason {
            *reason = cut(reason, CUT);
        }
        self.command.truncate(64);
        for arg in &mut self.command {
            *arg = cut(arg, CUT);
        }
        serde_json::to_vec(self).expect("history entries serialise")
    }
}

/// At most `max` bytes of `text`, cut on a character boundary, marked when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let end = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", &text[..end])
}

/// The number the next entry gets.
pub fn next_number(existing: &[u64]) -> u64 {
    existing.iter().max().map_or(1, |n| n + 1)
}

/// Entries to remove so that only the newest `keep` remain.
pub fn to_prune(existing: &[u64], keep: u32) -> Vec<u64> {
    let mut sorted = existing.to_vec();
    sorted.sort_unstable();
    let excess = sorted.len().saturating_sub(keep as usize);
    sorted.truncate(excess);
    sorted
}

/// A history config as listed, with its entry number.
struct Stored {
    number: u64,
    config: StoredConfig,
}

/// The stack's history configs, found by label; a config whose name does not match its
/// number label was not written by stackctl and is left alone.
async fn stored<E: Engine>(engine: &E, stack: &str) -> Result<Vec<Stored>, EngineError> {
    let filters = vec![format!("{}={stack}", release::STACK), HISTORY.to_string()];
    let configs = engine.configs_labelled(&filters).await?;
    Ok(configs
        .into_iter()
        .filter_map(|config| {
            let number = record::release_number(config.info.labels.get(HISTORY)?)?;
            (config.info.name == entry_name(stack, number)).then_some(Stored { number, config })
        })
        .collect())
}

fn labels(stack: &str, number: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (release::STACK.to_string(), stack.to_string()),
        (release::ROLE.to_string(), "history".to_string()),
        (release::NAMESPACE.to_string(), stack.to_string()),
        (HISTORY.to_string(), number.to_string()),
    ])
}

/// What an append did, for the deploy's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub number: u64,
    pub pruned: usize,
    /// Set when the specs were left out of the entry (too large).
    pub specs_left_out: bool,
    /// Old entries that could not be removed (the next append tries again).
    pub prune_errors: Vec<String>,
}

/// Append `entry` (its number is assigned here) and prune all but the newest `keep`. The
/// caller holds the stack's deploy lock, so no other writer races for the number.
pub async fn append<E: Engine>(engine: &E, stack: &str, keep: u32, mut entry: Entry) -> Result<Appended, EngineError> {
    let existing = stored(engine, stack).await?;
    let numbers: Vec<u64> = existing.iter().map(|s| s.number).collect();
    entry.number = next_number(&numbers);
    let data = entry.encode();
    engine.create_config(&entry_name(stack, entry.number), &data, &labels(stack, entry.number)).await?;
    let mut all = numbers;
    all.push(entry.number);
    let prune = to_prune(&all, keep);
    let mut prune_errors = Vec::new();
    for old in existing.iter().filter(|s| prune.contains(&s.number)) {
        if let Err(e) = engine.remove_config(&old.config.info.id).await {
            prune_errors.push(format!("{}: {e}", old.config.info.name));
        }
    }
    Ok(Appended { number: entry.number, pruned: prune.len() - prune_errors.len(), specs_left_out: entry.specs_left_out.is_some(), prune_errors })
}

/// [`append`] without the stack's lock (a gate does not take it, so a deploy starting meanwhile
/// is not refused): a number another writer took first is tried again with the next.
pub async fn append_unlocked<E: Engine>(engine: &E, stack: &str, keep: u32, entry: Entry) -> Result<Appended, EngineError> {
    let mut tries = 0;
    loop {
        match append(engine, stack, keep, entry.clone()).await {
            Err(EngineError::Conflict(_)) if tries < 5 => tries += 1,
            other => return other,
        }
    }
}

/// The stack's history, newest first, and a note for each config that could not be read.
pub async fn read<E: Engine>(engine: &E, stack: &str) -> Result<(Vec<Entry>, Vec<String>), EngineError> {
    let mut entries = Vec::new();
    let mut unreadable = Vec::new();
    for s in stored(engine, stack).await? {
        match serde_json::from_slice::<Entry>(&s.config.data) {
            Ok(entry) => entries.push(entry),
            Err(e) => unreadable.push(format!("{} is not a history entry this stackctl can read: {e}", s.config.info.name)),
        }
    }
    entries.sort_by(|a, b| b.number.cmp(&a.number));
    Ok((entries, unreadable))
}

/// How a deploy ended, as history records it; `None` for a deploy that changed nothing.
fn deploy_outcome(result: &Result<(outcome::Outcome, Option<u64>, &[Switched]), &DeployError>) -> Option<(Outcome, Option<String>, i32)> {
    match result {
        Ok((outcome::Outcome::Unchanged, ..)) => None,
        Ok((outcome::Outcome::Deployed, ..)) => Some((Outcome::Deployed, None, 0)),
        Err(e) => {
            let outcome = match e {
                DeployError::Interrupted { .. } => Outcome::Interrupted,
                // The two places a live green is given up and users go back to blue.
                DeployError::Failed { phase, live_intact: true, .. }
                    if phase == "switching nginx to green" || phase == "watching green after the switch" =>
                {
                    Outcome::SwitchedBack
                }
                _ => Outcome::Failed,
            };
            Some((outcome, Some(e.to_string()), e.exit_code()))
        }
    }
}

/// Record a deploy that ran under `lock`: called after the deploy, before the lock is given
/// back. `before` is the stack record as the lock found it (for the release number a failed
/// deploy handed out). Never fails the deploy: a history that cannot be written is a warning.
pub async fn record_deploy<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &Stack,
    verb: Verb,
    before: Option<&Record>,
    result: Result<(outcome::Outcome, Option<u64>, &[Switched]), &DeployError>,
    origin: Option<&Origin>,
    out: &Events,
) {
    let Some((outcome, reason, exit_code)) = deploy_outcome(&result) else { return };
    let after = match record::read(engine, &stack.name).await {
        Ok(r) => r.map(|(_, r)| r).unwrap_or_default(),
        Err(e) => {
            out.warn(&format!("the release history of stack {} was not written: reading the stack record failed: {e}", stack.name));
            return;
        }
    };
    let (release, switched) = match result {
        Ok((_, release, switched)) => (release, switched),
        // A number handed out by this deploy: the record's sequence moved on.
        Err(_) => (Some(after.seq).filter(|&seq| before.is_some_and(|b| seq > b.seq)), &[][..]),
    };
    let mut services = Vec::new();
    let mut specs = BTreeMap::new();
    // One listing of the stack's services serves every spec recorded; a service it lacks (its
    // stack label lost) is read by name.
    let listed = engine.services(&stack.name).await.unwrap_or_default();
    let read = |swarm_name: String| {
        let seen = listed.iter().find(|i| i.name == swarm_name).cloned();
        async move {
            match seen {
                Some(info) => Ok(Some(info)),
                None => engine.service(&swarm_name).await,
            }
        }
    };
    for (service, &live) in after.live.iter().filter(|(s, _)| matches!(stack.services.get(*s).map(|s| &s.role), Some(Role::Routed(_)) | None)) {
        let swarm_name = release::versioned_name(&stack.name, service, live);
        let info = match read(swarm_name.clone()).await {
            Ok(info) => info,
            Err(e) => {
                out.warn(&format!("history: cannot read {swarm_name} ({e}); its spec is not recorded"));
                None
            }
        };
        let image = info.as_ref().and_then(|i| i.spec.task_template.as_ref()?.container_spec.as_ref()?.image.clone()).unwrap_or_default();
        let spec_hash = info.as_ref().and_then(|i| i.label(release::SPEC_HASH)).unwrap_or_default().to_string();
        let switch = switched.iter().find(|s| &s.service == service && s.to == live);
        services.push(ServiceRelease { service: service.clone(), release: live, switched: switch.is_some(), from: switch.and_then(|s| s.from), image, spec_hash });
        if let Some(info) = info {
            specs.insert(swarm_name, info.spec);
        }
    }
    // Plain services too: a rollback puts them back as they were with the routed releases.
    // Stateful services and the proxy as well, never to be put back but so that `reconcile`
    // can tell a change made to them by hand (it reports those to a person).
    for (service, _) in stack.services.iter().filter(|(_, s)| matches!(s.role, Role::Plain | Role::Stateful | Role::Proxy)) {
        let swarm_name = release::plain_name(&stack.name, service);
        match read(swarm_name.clone()).await {
            Ok(Some(info)) => {
                specs.insert(swarm_name, info.spec);
            }
            Ok(None) => {}
            Err(e) => out.warn(&format!("history: cannot read {swarm_name} ({e}); its spec is not recorded")),
        }
    }
    let entry = Entry {
        number: 0,
        time: record::now_unix(),
        verb,
        who: Who::current(),
        command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
        outcome,
        reason,
        exit_code,
        release,
        services,
        phases: out.phases(),
        seconds: out.total().as_secs_f64(),
        specs,
        specs_left_out: None,
        env: stack.environment.name.clone(),
        checks: Vec::new(),
        promoted_from: origin.cloned(),
        maintenance: Vec::new(),
        repairs: Vec::new(),
    };
    match append(engine, &stack.name, stack.x.history, entry).await {
        Ok(done) => {
            if done.specs_left_out {
                out.warn(&format!("history entry {} was written without the service specs: they exceed Swarm's 500 KiB config limit", done.number));
            }
            for e in &done.prune_errors {
                out.warn(&format!("could not prune the old history entry {e}; the next deploy tries again"));
            }
        }
        Err(e) => out.warn(&format!("the release history of stack {} was not written: {e}", stack.name)),
    }
}

/// `2026-12-01 15:04:05` (UTC) for unix seconds.
pub fn utc(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), after Howard Hinnant's
    // `civil_from_days`, shifted so eras start on 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The history as a table, newest first as given.
pub fn table(entries: &[Entry]) -> String {
    const REASON: usize = 60;
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let reason = e.reason.as_deref().and_then(|r| r.lines().next()).unwrap_or("");
            let reason = if reason.chars().count() > REASON { format!("{}…", reason.chars().take(REASON - 1).collect::<String>()) } else { reason.to_string() };
            [
                e.number.to_string(),
                utc(e.time),
                format!("{:?}", e.verb).to_lowercase(),
                e.outcome.as_str().to_string(),
                e.changes(),
                format!("{}@{}", e.who.user, e.who.host),
                format!("{:.1}s", e.seconds),
                reason,
            ]
        })
        .collect();
    let header = ["#", "WHEN (UTC)", "VERB", "OUTCOME", "CHANGES", "WHO", "TOOK", "REASON"];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(text, "{}", padded.join("  ").trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(number: u64) -> Entry {
        Entry {
            number,
            time: 1_796_137_445,
            verb: Verb::Deploy,
            who: Who { user: "ana".into(), host: "ci-7".into(), ci: BTreeMap::from([("GITHUB_RUN_ID".into(), "42".into())]) },
            command: vec!["stackctl".into(), "deploy".into(), "demo.yml".into()],
            outcome: Outcome::Deployed,
            reason: None,
            exit_code: 0,
            release: Some(2),
            services: vec![ServiceRelease {
                service: "web".into(),
                release: 2,
                switched: true,
                from: Some(1),
                image: "127.0.0.1:5000/demo:v2@sha256:abc".into(),
                spec_hash: "f00d".into(),
            }],
            phases: vec![PhaseTime { phase: "switch".into(), seconds: 0.25 }],
            seconds: 12.5,
            specs: BTreeMap::from([(
                "demo_web-r2".into(),
                ServiceSpec {
                    name: Some("demo_web-r2".into()),
                    labels: Some([("io.stackctl.release".to_string(), "2".to_string())].into()),
                    ..Default::default()
                },
            )]),
            specs_left_out: None,
            env: None,
            checks: Vec::new(),
            promoted_from: None,
            maintenance: Vec::new(),
            repairs: Vec::new(),
        }
    }

    #[test]
    fn an_entry_survives_json_with_its_spec() {
        let mut e = entry(7);
        let data = e.encode();
        let back: Entry = serde_json::from_slice(&data).unwrap();
        assert_eq!(back, e);
        let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(json["outcome"], "deployed");
        assert_eq!(json["verb"], "deploy");
        // The spec is Swarm's own shape, so it can be handed back to the engine as it is.
        assert_eq!(json["specs"]["demo_web-r2"]["Name"], "demo_web-r2");
        assert_eq!(serde_json::to_value(Outcome::SwitchedBack).unwrap(), "switched-back");
    }

    #[test]
    fn numbers_follow_the_highest_and_start_at_one() {
        assert_eq!(next_number(&[]), 1);
        assert_eq!(next_number(&[3, 9, 4]), 10);
        assert_eq!(entry_name("demo", 12), "demo_stackctl-history-00000012");
    }

    #[test]
    fn pruning_keeps_the_newest() {
        assert_eq!(to_prune(&[5, 1, 4, 2, 3], 2), vec![1, 2, 3]);
        assert_eq!(to_prune(&[1, 2], 2), Vec::<u64>::new());
        assert_eq!(to_prune(&[], 1), Vec::<u64>::new());
        assert_eq!(to_prune(&[8, 9, 10], 1), vec![8, 9]);
    }

    #[test]
    fn an_entry_too_large_for_a_config_drops_its_specs_and_says_so() {
        let mut e = entry(1);
        let big = "x".repeat(MAX_ENTRY_BYTES);
        e.specs.get_mut("demo_web-r2").unwrap().labels.as_mut().unwrap().insert("big".into(), big);
        let data = e.encode();
        assert!(data.len() <= MAX_ENTRY_BYTES, "{}", data.len());
        let back: Entry = serde_json::from_slice(&data).unwrap();
        assert!(back.specs.is_empty());
        assert!(back.specs_left_out.as_deref().unwrap().contains("500 KiB"), "{:?}", back.specs_left_out);
        assert_eq!(back.services, entry(1).services, "the rest is kept");

        // A reason alone too large (an error quoting a huge response) is cut, never refused.
        let mut e = entry(2);
        e.reason = Some("é".repeat(MAX_ENTRY_BYTES));
        let back: Entry = serde_json::from_slice(&e.encode()).unwrap();
        assert!(back.reason.unwrap().len() <= 4096 + "…".len());
    }

    #[test]
    fn who_reads_the_user_and_ci_variables_only() {
        let env = BTreeMap::from([
            ("LOGNAME", "bob"),
            ("CI_JOB_URL", "https://ci.example/j/1"),
            ("GITHUB_TOKEN", "ghp_secret"),
            ("CI_JOB_TOKEN", "secret"),
            ("GITHUB_SHA", ""),
        ]);
        let who = Who::from_env(|k| env.get(k).map(|v| v.to_string()), "h1".into(), Some(1000));
        assert_eq!(who.user, "bob");
        assert_eq!(who.ci, BTreeMap::from([("CI_JOB_URL".to_string(), "https://ci.example/j/1".to_string())]));
        assert!(!serde_json::to_string(&who).unwrap().contains("secret"));
        let nobody = Who::from_env(|_| None, "h1".into(), Some(1000));
        assert_eq!(nobody.user, "uid 1000");
    }

    #[test]
    fn service_filter_and_changes() {
        let deployed = entry(1);
        assert!(deployed.touches("web") && !deployed.touches("api"));
        assert_eq!(deployed.changes(), "web r1→r2");
        let mut failed = entry(2);
        failed.outcome = Outcome::Failed;
        failed.release = Some(3);
        failed.services[0].switched = false;
        failed.services[0].from = None;
        assert_eq!(failed.changes(), "tried r3");
        assert!(failed.touches("web") && !failed.touches("api"), "an attempt counts for the services live then");
        let mut first = entry(3);
        first.services[0].from = None;
        assert_eq!(first.changes(), "web →r2");
        first.promoted_from = Some(Origin { env: "staging".into(), stack: "shop-staging".into(), releases: BTreeMap::from([("web".into(), 4)]), gate: Outcome::Passed, gate_entry: Some(9) });
        assert_eq!(first.changes(), "web →r2 (from staging web r4)");
        let json = String::from_utf8(first.encode()).unwrap();
        assert!(json.contains(r#""promoted_from":{"env":"staging","stack":"shop-staging","releases":{"web":4},"gate":"passed","gate_entry":9}"#), "{json}");
        assert!(!String::from_utf8(entry(1).encode()).unwrap().contains("promoted_from"), "left out unless promoted");
    }

    #[test]
    fn deploy_endings_map_to_outcomes_and_changing_nothing_is_not_recorded() {
        let none: &[Switched] = &[];
        assert_eq!(deploy_outcome(&Ok((outcome::Outcome::Unchanged, None, none))), None);
        assert_eq!(deploy_outcome(&Ok((outcome::Outcome::Deployed, Some(2), none))), Some((Outcome::Deployed, None, 0)));
        let failed = |phase: &str, live_intact| DeployError::Failed { stack: "s".into(), phase: phase.into(), reason: "r".into(), live_intact };
        let outcome = |e: &DeployError| deploy_outcome(&Err(e)).map(|(o, reason, code)| (o, reason.is_some(), code));
        assert_eq!(outcome(&failed("waiting for green to become healthy", true)), Some((Outcome::Failed, true, 1)));
        assert_eq!(outcome(&failed("watching green after the switch", true)), Some((Outcome::SwitchedBack, true, 1)));
        assert_eq!(outcome(&failed("switching nginx to green", true)), Some((Outcome::SwitchedBack, true, 1)));
        assert_eq!(outcome(&failed("watching green after the switch", false)), Some((Outcome::Failed, true, 3)), "switching back failed");
        let interrupted = DeployError::Interrupted { stack: "s".into(), phase: "p".into(), signal: "SIGINT".into(), detail: "d".into() };
        assert_eq!(outcome(&interrupted), Some((Outcome::Interrupted, true, 1)));
        assert_eq!(outcome(&DeployError::Refused("image not found".into())), Some((Outcome::Failed, true, 1)));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_137_445), "2026-12-01 15:04:05");
    }

    #[test]
    fn the_table_is_aligned_and_cuts_long_reasons() {
        let mut failed = entry(2);
        failed.outcome = Outcome::Failed;
        failed.reason = Some(format!("{}\nsecond line", "r".repeat(100)));
        let text = table(&[failed, entry(1)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("#  WHEN (UTC)           VERB    OUTCOME"), "{text}");
        assert!(lines[1].contains("failed") && lines[1].contains(&format!("{}…", "r".repeat(59))) && !text.contains("second line"), "{text}");
        assert!(lines[2].contains("2026-12-01 15:04:05") && lines[2].contains("web r1→r2") && lines[2].contains("ana@ci-7") && lines[2].contains("12.5s"), "{text}");
    }
}
