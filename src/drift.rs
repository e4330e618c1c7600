//! Pure: what a stack should be (its record and the newest history entry with specs) against
//! what runs (one observation) → the drift found, each with the repair `reconcile` makes or
//! the reason it leaves it to a person. No I/O, so every case is a table test.
//!
//! The truth is what was last recorded, never a stack file: a cron job must put back what the
//! last deploy left, not deploy whatever the file says now (see [`crate::reconcile`]).

use std::collections::{BTreeMap, BTreeSet};

use bollard::models::ServiceSpec;
use serde::Serialize;

use crate::engine::ServiceInfo;
use crate::history::Entry;
use crate::plan::{self, Existing, Kind as ServiceKind};
use crate::proxy::{self, nginx::NginxFiles};
use crate::record::{Holder, LockInfo, Record};
use crate::release::{self, Color};

/// One stack as `reconcile` reads it: everything [`findings`] decides from.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub stack: String,
    /// Every service carrying the stack's label (one listing).
    pub services: Vec<ServiceInfo>,
    /// The stack record; `None`: stackctl never deployed the stack.
    pub record: Option<Record>,
    /// The record's lock and what became of its holder, when there is one.
    pub lock: Option<(LockInfo, Holder)>,
    /// The whole history, newest first (one read, whatever its length).
    pub history: Vec<Entry>,
    pub nginx: Nginx,
    /// Old releases kept per routed service (`keep`); `None` without a stack file (`--all`):
    /// removing releases then waits for a run that names the file.
    pub keep: Option<BTreeMap<String, u32>>,
    /// The config the stack file renders (with the installed token), used only when no nginx
    /// replica has an intact one to copy.
    pub rendered: Option<String>,
    /// Unix seconds.
    pub now: u64,
}

/// nginx as read.
#[derive(Debug, Clone, Default)]
pub enum Nginx {
    /// The stack has no proxy service.
    #[default]
    None,
    /// The proxy service exists but its directory could not be read (no running task).
    Unreadable(String),
    Files(NginxFiles),
}

/// What kind of drift (JSON `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A lock whose holder is gone.
    StaleLock,
    /// The live release of a routed service is missing.
    LiveMissing,
    /// The live release runs with another spec than recorded (image, replicas, anything).
    LiveChanged,
    PlainMissing,
    PlainChanged,
    /// A routed release that was never live (left by an interrupted deploy).
    NeverLive,
    /// An old release still running past its drain (and standby window).
    PastDrain,
    /// Old releases beyond `keep`.
    BeyondKeep,
    /// nginx's config missing or not as written on some replica.
    NginxConfig,
    /// nginx sends a service's users to another colour than its live release's.
    NginxRouting,
    /// The proxy service changed by hand: replacing nginx drops connections.
    ProxyChanged,
    /// A stateful service changed by hand: stackctl never touches one.
    StatefulChanged,
    /// Something reconcile cannot put back on its own (no recorded spec, nginx down, no record).
    Unrepairable,
}

/// What reconcile does about one finding.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing but the lock's takeover (which taking the lock does).
    ReleaseLock,
    /// Create the service from its recorded spec (`id` `None`), or update it back to it.
    PutBack { name: String, id: Option<String>, version: u64, spec: Box<ServiceSpec> },
    ScaleDown { name: String, id: String, version: u64, spec: Box<ServiceSpec> },
    Remove { name: String, id: String },
    /// Install this config in every replica (`nginx -t` everywhere, reload, verify).
    Reinstall { config: String },
    /// Create (`true`) or remove these green files on every replica.
    Route { files: Vec<(String, bool)> },
    /// Left to a person: what they should do.
    Person { next: String },
}

/// One drift, and what is done about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The Swarm service, or `nginx`, or `lock`.
    pub subject: String,
    /// What differs from the record.
    pub drift: String,
    /// The repair, or what a person should do.
    pub repair: String,
    #[serde(skip)]
    pub action: Action,
}

impl Finding {
    pub fn needs_person(&self) -> bool {
        matches!(self.action, Action::Person { .. })
    }
}

/// The newest history entry that recorded specs: what the live releases and the plain
/// services were when the last deploy, rollback or repair ended.
pub fn recorded(history: &[Entry]) -> Option<&Entry> {
    history.iter().find(|e| !e.specs.is_empty())
}

/// Every drift of `o`, in the order they are repaired: the lock, services, nginx.
pub fn findings(o: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    let person = |kind, subject: &str, drift: String, next: String| Finding {
        kind,
        subject: subject.to_string(),
        drift,
        repair: format!("needs a person: {next}"),
        action: Action::Person { next },
    };
    if let Some((lock, holder)) = &o.lock {
        if *holder != Holder::Alive {
            let why = if *holder == Holder::Dead { "its process is gone" } else { "no heartbeat" };
            out.push(Finding {
                kind: Kind::StaleLock,
                subject: "lock".into(),
                drift: format!("lock held by {} (pid {} on {}), {why}", lock.command, lock.pid, lock.host),
                repair: "take the lock over and release it".into(),
                action: Action::ReleaseLock,
            });
        }
    }
    let Some(record) = &o.record else {
        out.push(person(
            Kind::Unrepairable,
            &o.stack,
            format!("stack {} has no stackctl record", o.stack),
            "deploy it with `stackctl deploy` first; reconcile only keeps what was deployed".into(),
        ));
        return out;
    };
    let entry = recorded(&o.history);
    let spec_of = |name: &str| entry.and_then(|e| e.specs.get(name));
    let entry_no = entry.map(|e| e.number).unwrap_or(0);
    let by_name = |name: &str| o.services.iter().find(|s| s.name == name);

    // The live release of every routed service, as recorded.
    for (service, &live) in &record.live {
        let name = release::versioned_name(&o.stack, service, live);
        match (by_name(&name), spec_of(&name)) {
            (None, Some(spec)) => out.push(put_back(Kind::LiveMissing, &name, None, 0, spec, "missing".into(), entry_no)),
            (None, None) => out.push(person(
                Kind::Unrepairable,
                &name,
                format!("live release r{live} of {service} is missing and no history entry records its spec"),
                format!("deploy the stack again (`stackctl deploy`), or roll back to a release that exists"),
            )),
            (Some(info), Some(spec)) => {
                if let Some(diff) = differs(&info.spec, spec) {
                    out.push(put_back(Kind::LiveChanged, &name, Some(&info.id), info.version, spec, diff, entry_no));
                }
            }
            // Nothing recorded to compare with (a history written without specs).
            (Some(_), None) => {}
        }
    }

    // Unversioned services whose spec was recorded: plain ones are put back, the proxy and
    // stateful ones reported (stackctl never replaces those on its own).
    if let Some(e) = entry {
        for (name, spec) in &e.specs {
            let role = spec.labels.as_ref().and_then(|l| l.get(release::ROLE)).map(String::as_str);
            let info = by_name(name);
            match role {
                Some("plain") => match info {
                    None => out.push(put_back(Kind::PlainMissing, name, None, 0, spec, "missing".into(), e.number)),
                    Some(i) => {
                        if let Some(diff) = differs(&i.spec, spec) {
                            out.push(put_back(Kind::PlainChanged, name, Some(&i.id), i.version, spec, diff, e.number));
                        }
                    }
                },
                Some(r @ ("proxy" | "stateful")) => {
                    let drift = match info {
                        None => Some("missing".to_string()),
                        Some(i) => differs(&i.spec, spec),
                    };
                    if let Some(drift) = drift {
                        let (kind, next) = if r == "proxy" {
                            (Kind::ProxyChanged, "replacing nginx drops connections: put it back with `docker service update` (or `docker service rollback`) in a maintenance window".to_string())
                        } else {
                            (Kind::StatefulChanged, format!("stackctl never changes a stateful service: check it and put it back with `docker service rollback {name}` if the change was not meant"))
                        };
                        out.push(person(kind, name, format!("{drift} (against history entry {})", e.number), next));
                    }
                }
                _ => {}
            }
        }
    }

    // Releases that are not live: never-live greens, blues past their drain, and beyond keep.
    let existing: Vec<(Existing, &ServiceInfo)> = (o.services.iter())
        .filter_map(|i| Some((Existing::from_info(i)?, i)))
        .filter(|(e, _)| e.kind == Some(ServiceKind::Routed) && e.release.is_some())
        .collect();
    let ever_live: BTreeSet<(String, u64)> =
        o.history.iter().flat_map(|e| e.services.iter().map(|s| (s.service.clone(), s.release))).collect();
    let routed: BTreeSet<&String> = existing.iter().map(|(e, _)| &e.service).collect();
    for service in routed {
        let mine: Vec<&(Existing, &ServiceInfo)> = existing.iter().filter(|(e, _)| &e.service == service).collect();
        let live = record.live.get(service).copied();
        for (e, info) in &mine {
            let n = e.release.unwrap_or(0);
            if Some(n) == live || live.is_some_and(|l| n < l) {
                continue;
            }
            if !ever_live.contains(&(service.clone(), n)) {
                out.push(Finding {
                    kind: Kind::NeverLive,
                    subject: e.name.clone(),
                    drift: format!("release r{n} of {service} was never live (left by an interrupted deploy)"),
                    repair: "remove it, as the deploy does with a green it gives up".into(),
                    action: Action::Remove { name: e.name.clone(), id: e.id.clone() },
                });
            } else if e.replicas > 0 && !e.on_standby(o.now) {
                out.push(scale_down(e, info, format!("release r{n} of {service} (rolled back from) still runs {} task(s)", e.replicas)));
            }
        }
        let Some(live) = live else { continue };
        let releases: Vec<Existing> = mine.iter().map(|(e, _)| e.clone()).collect();
        let keep = o.keep.as_ref().map(|k| k.get(service).copied().unwrap_or(crate::spec::DEFAULT_KEEP));
        // Without the file, keep is unknown: count as if it were huge, so only scale-downs come out.
        let retention = plan::retention(&releases, live, keep.unwrap_or(u32::MAX), o.now);
        for (n, id) in retention.scale_down {
            if let Some((e, info)) = mine.iter().find(|(e, _)| e.id == id) {
                out.push(scale_down(e, info, format!("old release r{n} of {service} still runs {} task(s) past its drain", e.replicas)));
            }
        }
        for (n, id) in retention.remove {
            let name = release::versioned_name(&o.stack, service, n);
            out.push(Finding {
                kind: Kind::BeyondKeep,
                subject: name.clone(),
                drift: format!("release r{n} of {service} is beyond keep={}", keep.unwrap_or(0)),
                repair: "remove it, as a deploy's retirement does".into(),
                action: Action::Remove { name, id },
            });
        }
    }

    out.extend(nginx_findings(o, record));
    out
}

/// nginx: every replica holds an intact config (the same text), and sends each routed
/// service's users to the colour of its recorded live release.
fn nginx_findings(o: &Observed, record: &Record) -> Vec<Finding> {
    let files = match &o.nginx {
        Nginx::None => return Vec::new(),
        Nginx::Unreadable(why) => {
            return vec![Finding {
                kind: Kind::Unrepairable,
                subject: "nginx".into(),
                drift: format!("nginx's config directory cannot be read: {why}"),
                repair: "needs a person: check the proxy service (`docker service ps`); Swarm restarts a failed task, and the next reconcile checks again".into(),
                action: Action::Person { next: "check the proxy service".into() },
            }]
        }
        Nginx::Files(files) => files,
    };
    let mut out = Vec::new();
    let reference = (files.replicas.iter())
        .filter_map(|r| r.get(proxy::nginx::FILE))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .find(|c| proxy::is_intact(c))
        .or_else(|| o.rendered.clone());
    let Some(reference) = reference else {
        return vec![Finding {
            kind: Kind::Unrepairable,
            subject: "nginx".into(),
            drift: "no nginx replica has an intact stackctl config".into(),
            repair: "needs a person: run `stackctl reconcile` with the stack file (it renders the config), or deploy".into(),
            action: Action::Person { next: "run reconcile with the stack file".into() },
        }];
    };
    let wrong: Vec<String> = (files.replicas.iter().enumerate())
        .filter_map(|(i, r)| match r.get(proxy::nginx::FILE) {
            None => Some(format!("replica {} has no config", i + 1)),
            Some(b) if b.as_slice() != reference.as_bytes() => Some(format!("replica {}'s config was changed by hand", i + 1)),
            Some(_) => None,
        })
        .collect();
    if !wrong.is_empty() {
        out.push(Finding {
            kind: Kind::NginxConfig,
            subject: "nginx".into(),
            drift: wrong.join("; "),
            repair: "reinstall the config on every replica, nginx -t, reload, verify".into(),
            action: Action::Reinstall { config: reference.clone() },
        });
    }
    let Some(summary) = proxy::parse_summary(&reference) else { return out };
    let mut flips = Vec::new();
    let mut drift = Vec::new();
    for (service, &live) in &record.live {
        let name = release::versioned_name(&o.stack, service, live);
        let Some(colour) = o.services.iter().find(|s| s.name == name).and_then(Existing::from_info).and_then(|e| e.color) else { continue };
        let Some(file) = summary.green_files.get(service) else { continue };
        let want = colour == Color::Green;
        let off: Vec<usize> = (files.replicas.iter().enumerate()).filter(|(_, r)| r.contains_key(file) != want).map(|(i, _)| i + 1).collect();
        if !off.is_empty() {
            flips.push((file.clone(), want));
            drift.push(format!("{service}: replica(s) {off:?} send users to {} instead of r{live} ({})", colour.other().as_str(), colour.as_str()));
        }
    }
    if !flips.is_empty() {
        out.push(Finding {
            kind: Kind::NginxRouting,
            subject: "nginx".into(),
            drift: drift.join("; "),
            repair: "switch those replicas to the live release's colour (the deploy's switch file), verify".into(),
            action: Action::Route { files: flips },
        });
    }
    out
}

fn put_back(kind: Kind, name: &str, id: Option<&str>, version: u64, spec: &ServiceSpec, drift: String, entry: u64) -> Finding {
    Finding {
        kind,
        subject: name.to_string(),
        drift,
        repair: format!("put back its spec of history entry {entry}"),
        action: Action::PutBack { name: name.to_string(), id: id.map(String::from), version, spec: Box::new(spec.clone()) },
    }
}

fn scale_down(e: &Existing, info: &ServiceInfo, drift: String) -> Finding {
    Finding {
        kind: Kind::PastDrain,
        subject: e.name.clone(),
        drift,
        repair: "scale it to 0 (kept for rollback), as a deploy's retirement does".into(),
        action: Action::ScaleDown { name: e.name.clone(), id: e.id.clone(), version: info.version, spec: Box::new(crate::deploy::scaled(&info.spec, 0)) },
    }
}

/// How `current` differs from `recorded`, in words; `None` when it does not. Both come from
/// Swarm's inspect, so any difference is a change made since the entry was written.
pub fn differs(current: &ServiceSpec, recorded: &ServiceSpec) -> Option<String> {
    if current == recorded {
        return None;
    }
    let image = |s: &ServiceSpec| s.task_template.as_ref()?.container_spec.as_ref()?.image.clone();
    let replicas = |s: &ServiceSpec| s.mode.as_ref()?.replicated.as_ref()?.replicas;
    let mut what = Vec::new();
    if image(current) != image(recorded) {
        what.push(format!("image {} (recorded {})", image(current).unwrap_or_default(), image(recorded).unwrap_or_default()));
    }
    if replicas(current) != replicas(recorded) {
        let n = |r: Option<i64>| r.map_or("-".to_string(), |r| r.to_string());
        what.push(format!("replicas {} (recorded {})", n(replicas(current)), n(replicas(recorded))));
    }
    if what.is_empty() {
        what.push("spec changed by hand".into());
    }
    Some(what.join(", "))
}

#[cfg(test)]
mod tests;
