//! Pure planning: (desired stack, observed cluster) → the steps a deploy takes.
//!
//! No I/O here, so every decision is a table test away. The deploy executes a [`Plan`]; a
//! later `reconcile` will run the same function from cron. Because the planner is handed the
//! state and not the reason it runs, re-running after a crash converges: a green left behind
//! by an interrupted deploy is adopted when it is what we want, removed when it is not.

use std::collections::BTreeMap;

use crate::engine::ServiceInfo;
use crate::release;

/// What stackctl does with a service (mirrors `spec::Role` without the route details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Proxy,
    Routed,
    Stateful,
    Plain,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Proxy => "proxy",
            Kind::Routed => "routed",
            Kind::Stateful => "stateful",
            Kind::Plain => "plain",
        }
    }
}

/// One service as the stack file wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub kind: Kind,
    /// Hash of the described Swarm spec (with the pinned image digest).
    pub hash: String,
    /// The hash stackctl before 0.2 computed for the same spec (with the Swarm ids of its
    /// configs and secrets in it), when those objects exist: services it labelled still match,
    /// instead of showing drift or a new release once after an upgrade.
    pub legacy_hash: Option<String>,
}

impl Desired {
    /// Whether a service labelled with `hash` is this spec.
    pub fn is(&self, hash: &str) -> bool {
        self.hash == hash || self.legacy_hash.as_deref() == Some(hash)
    }
}

/// One Swarm service stackctl created earlier, decoded from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    pub name: String,
    /// Name in the stack file.
    pub service: String,
    pub kind: Option<Kind>,
    /// Release number (routed services only).
    pub release: Option<u64>,
    pub hash: String,
    pub replicas: u64,
    /// The colour the release carries (see [`release::colour_alias`]); nginx sends a route's
    /// users to one colour.
    pub color: Option<release::Color>,
    /// A standby old release: kept at full scale until this Unix second ([`release::STANDBY_UNTIL`]).
    pub standby_until: Option<u64>,
    /// Why a label stackctl wrote cannot be read (the release number); the planner refuses to
    /// guess around it.
    pub unreadable: Option<String>,
}

impl Existing {
    /// Kept at full scale for a fast rollback until a time not yet reached.
    pub fn on_standby(&self, now: u64) -> bool {
        self.standby_until.is_some_and(|t| t > now)
    }

    pub fn from_info(s: &ServiceInfo) -> Option<Existing> {
        let kind = match s.label(release::ROLE)? {
            "proxy" => Kind::Proxy,
            "routed" => Kind::Routed,
            "stateful" => Kind::Stateful,
            "plain" => Kind::Plain,
            _ => return None,
        };
        let label = s.label(release::RELEASE);
        let release = label.and_then(crate::record::release_number);
        let unreadable = (label.is_some() && release.is_none()).then(|| {
            format!(
                "service {} has a label {} that is not a release number; check it with `docker service inspect {}`",
                s.name,
                release::RELEASE,
                s.name
            )
        });
        Some(Existing {
            id: s.id.clone(),
            name: s.name.clone(),
            service: s.label(release::SERVICE)?.to_string(),
            kind: Some(kind),
            release,
            hash: s.label(release::SPEC_HASH).unwrap_or_default().to_string(),
            replicas: s.replicas,
            color: painted(s),
            standby_until: s.label(release::STANDBY_UNTIL).and_then(|t| t.parse().ok()),
            unreadable,
        })
    }
}

/// The release nginx sends the users of each routed service to, given the colour it sends
/// them to (`colours`, from the files in nginx): the running release of that colour, the
/// recorded live one if two run with it (a deploy stopped while the other one stopped). A
/// service whose colour has no running release is missing: its users get 502.
pub fn serving(services: &[Existing], colours: &BTreeMap<String, release::Color>, live: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut serving = BTreeMap::new();
    for (service, colour) in colours {
        let running = || {
            (services.iter())
                .filter(|e| &e.service == service && e.kind == Some(Kind::Routed) && e.replicas > 0 && e.color == Some(*colour))
                .filter_map(|e| e.release)
        };
        let release = running().find(|r| live.get(service) == Some(r)).or_else(|| running().max());
        if let Some(r) = release {
            serving.insert(service.clone(), r);
        }
    }
    serving
}

/// The colour of a release: its label, when it also carries the colour's network alias (a
/// release made before colours were aliases has the label alone, and nginx cannot reach it
/// by its colour).
fn painted(s: &ServiceInfo) -> Option<release::Color> {
    let colour = s.label(release::COLOR).and_then(release::Color::parse)?;
    let (stack, service) = (s.label(release::STACK)?, s.label(release::SERVICE)?);
    let alias = release::colour_alias(stack, service, colour);
    let networks = s.spec.task_template.as_ref()?.networks.as_ref()?;
    networks.iter().any(|n| n.aliases.iter().flatten().any(|a| a == &alias)).then_some(colour)
}

/// The cluster as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Live release per routed service, from the stack record.
    pub live: BTreeMap<String, u64>,
    /// Last release number handed out.
    pub seq: u64,
    pub services: Vec<Existing>,
    /// The release nginx sends users of each routed service to: the installed config, with
    /// the switch files of an interrupted switch taken into account (`None`: proxy missing or
    /// config absent).
    pub routing: Option<BTreeMap<String, u64>>,
    /// Unix seconds when observed: standbys past their window are retired.
    pub now: u64,
}

/// Where the next release of a routed service comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Green {
    /// Create `<stack>_<service>-r<release>`.
    Create { release: u64 },
    /// A release left by an interrupted deploy is exactly what we want: use it.
    Adopt { release: u64, id: String },
    /// A rollback: a release that ran before (still running, or retained at zero replicas)
    /// is scaled back up, gated and switched to like a new one.
    Existing { release: u64, id: String },
    /// A rollback to a release no longer kept (removed after `keep`): created again from the
    /// Swarm spec the history recorded for it (the image pinned to the same digest).
    Recreate { release: u64 },
}

impl Green {
    pub fn release(&self) -> u64 {
        match self {
            Green::Create { release } | Green::Adopt { release, .. } | Green::Existing { release, .. } | Green::Recreate { release } => *release,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateProxy { service: String },
    /// The proxy's spec changed; replacing nginx would drop connections, so it is reported.
    ProxyDrift { service: String },
    CreatePlain { service: String },
    /// Swarm rolling update in place.
    UpdatePlain { service: String, id: String },
    CreateStateful { service: String },
    /// A stateful service's spec changed; it is created once and then left alone.
    StatefulDrift { service: String },
    /// A non-live release newer than the live one that is not what we want (a green left by
    /// an interrupted or failed deploy). Removed after nginx routes away from it.
    RemoveOrphan { service: String, release: u64, id: String },
    /// Blue-green: bring up `green`, gate it, switch nginx from `blue` to it.
    Release { service: String, blue: Option<u64>, green: Green },
    /// Nothing to deploy, but nginx routes elsewhere than the record says: reinstall.
    Reroute { service: String },
    /// nginx already sends users to `live`, a release newer than the record's (a deploy was
    /// killed after its switch, before writing the record). Users never go back to an older
    /// release because of a resumed deploy: verify `live` where it is and record it, before
    /// anything else; every other step of the plan starts from it.
    CatchUp { service: String, live: u64 },
    /// After a backward [`Step::CatchUp`] (users were sent back to an older release and the
    /// run died, or failed, before recording it: an interrupted rollback, a switch back whose
    /// record write failed), the newer release the record named still runs: scale it to zero,
    /// keeping it, as a rollback leaves the release it goes back from.
    ScaleDown { service: String, release: u64, id: String },
    /// Nothing to deploy, but a release older than the live one still runs (a deploy was
    /// interrupted after its switch, before it retired blue): drain, scale down, prune.
    Retire { service: String, live: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Number of the release this deploy creates, when it creates one.
    pub release: Option<u64>,
    pub steps: Vec<Step>,
}

impl Plan {
    /// Nothing to do: an identical redeploy.
    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| matches!(s, Step::ProxyDrift { .. } | Step::StatefulDrift { .. }))
    }

    pub fn releases(&self) -> impl Iterator<Item = (&str, Option<u64>, &Green)> {
        self.steps.iter().filter_map(|s| match s {
            Step::Release { service, blue, green } => Some((service.as_str(), *blue, green)),
            _ => None,
        })
    }
}

/// Decide what to do. `desired` is keyed by the service's name in the stack file. Fails, naming
/// the object, when the cluster holds something stackctl cannot read.
pub fn plan(desired: &BTreeMap<String, Desired>, observed: &Observed) -> Result<Plan, String> {
    if let Some(why) = observed.services.iter().find_map(|s| s.unreadable.clone()) {
        return Err(why);
    }
    let mut steps = Vec::new();
    let last = observed.seq.max(observed.services.iter().filter_map(|s| s.release).max().unwrap_or(0));
    let next = last.checked_add(1).ok_or_else(|| format!("release numbers are exhausted (the last one is r{last})"))?;
    let mut creates_release = false;

    for (name, want) in desired {
        let mine: Vec<&Existing> = observed.services.iter().filter(|s| &s.service == name).collect();
        let unversioned = mine.iter().find(|s| s.release.is_none() && s.kind == Some(want.kind));
        match want.kind {
            Kind::Proxy => match unversioned {
                None => steps.push(Step::CreateProxy { service: name.clone() }),
                Some(s) if !want.is(&s.hash) => steps.push(Step::ProxyDrift { service: name.clone() }),
                Some(_) => {}
            },
            Kind::Stateful => match unversioned {
                None => steps.push(Step::CreateStateful { service: name.clone() }),
                Some(s) if !want.is(&s.hash) => steps.push(Step::StatefulDrift { service: name.clone() }),
                Some(_) => {}
            },
            Kind::Plain => match unversioned {
                None => steps.push(Step::CreatePlain { service: name.clone() }),
                Some(s) if !want.is(&s.hash) => steps.push(Step::UpdatePlain { service: name.clone(), id: s.id.clone() }),
                Some(_) => {}
            },
            Kind::Routed => {
                let releases: Vec<&Existing> =
                    mine.iter().copied().filter(|s| s.kind == Some(Kind::Routed) && s.release.is_some()).collect();
                // The record's live release only counts if its service still exists.
                let exists = |n: &u64| releases.iter().any(|s| s.release == Some(*n));
                let recorded = observed.live.get(name).copied().filter(exists);
                // Users are where nginx sends them. When that is another release than the
                // record's, it is the starting point: going back to the record would show
                // users the version they were just taken away from (a newer one after a
                // killed switch: the flip-flop; an older one after a switch back or a
                // rollback that did not get to record it: the release that was given up).
                let routed = observed.routing.as_ref().and_then(|r| r.get(name)).copied().filter(exists);
                let running = |n: u64| releases.iter().any(|s| s.release == Some(n) && s.replicas > 0);
                let mut given_up = None;
                let live = match (recorded, routed) {
                    (Some(rec), Some(r)) if r < rec && running(r) => {
                        steps.push(Step::CatchUp { service: name.clone(), live: r });
                        given_up = releases.iter().find(|s| s.release == Some(rec));
                        Some(r)
                    }
                    (Some(rec), Some(r)) if r > rec => {
                        steps.push(Step::CatchUp { service: name.clone(), live: r });
                        Some(r)
                    }
                    (None, Some(r)) => {
                        steps.push(Step::CatchUp { service: name.clone(), live: r });
                        Some(r)
                    }
                    _ => recorded,
                };
                let live_hash = live.and_then(|n| releases.iter().find(|s| s.release == Some(n))).map(|s| &s.hash);
                if let Some(s) = given_up.filter(|s| s.replicas > 0) {
                    steps.push(Step::ScaleDown { service: name.clone(), release: s.release.unwrap_or(0), id: s.id.clone() });
                }
                // Leftovers newer than live (or any, when nothing is live); the release given
                // up was live once: kept, never an orphan.
                let leftovers: Vec<&&Existing> = (releases.iter())
                    .filter(|s| live.is_none_or(|l| s.release.unwrap_or(0) > l))
                    .filter(|s| given_up.is_none_or(|g| g.id != s.id))
                    .collect();
                if live_hash.is_some_and(|h| want.is(h)) {
                    for s in leftovers {
                        steps.push(orphan(name, s));
                    }
                    let routed = observed.routing.as_ref().and_then(|r| r.get(name)).copied();
                    if routed != live {
                        steps.push(Step::Reroute { service: name.clone() });
                    }
                    if let Some(l) = live {
                        if releases.iter().any(|s| s.release.is_some_and(|r| r < l) && s.replicas > 0 && !s.on_standby(observed.now)) {
                            steps.push(Step::Retire { service: name.clone(), live: l });
                        }
                    }
                    continue;
                }
                // Adopt the newest leftover with the wanted hash; remove the others.
                let adopt = leftovers.iter().filter(|s| want.is(&s.hash)).max_by_key(|s| s.release);
                for s in &leftovers {
                    if adopt.is_none_or(|a| a.id != s.id) {
                        steps.push(orphan(name, s));
                    }
                }
                let green = match adopt {
                    Some(s) => Green::Adopt { release: s.release.unwrap_or(0), id: s.id.clone() },
                    None => {
                        creates_release = true;
                        Green::Create { release: next }
                    }
                };
                steps.push(Step::Release { service: name.clone(), blue: live, green });
            }
        }
    }
    Ok(Plan { release: creates_release.then_some(next), steps })
}

/// Plan a rollback of the routed `services`: each goes back to release `to` (the newest of its
/// releases not newer than `to`, so `--to 5` means "the stack as it was at r5"), or by default to
/// the newest release older than its live one. Only releases that still exist as services count
/// (running, or retained at zero replicas), or that the history can recreate (`recorded`: per
/// service, the releases whose full spec it holds). Services already there get no step.
pub fn rollback(observed: &Observed, services: &[String], to: Option<u64>, recorded: &BTreeMap<String, Vec<u64>>) -> Result<Plan, String> {
    if let Some(why) = observed.services.iter().find_map(|s| s.unreadable.clone()) {
        return Err(why);
    }
    let mut steps = Vec::new();
    for name in services {
        let releases: Vec<&Existing> =
            observed.services.iter().filter(|s| &s.service == name && s.kind == Some(Kind::Routed) && s.release.is_some()).collect();
        let existing = || releases.iter().filter_map(|s| s.release);
        let numbers = || existing().chain(recorded.get(name).into_iter().flatten().copied());
        let Some(live) = observed.live.get(name).copied().filter(|l| existing().any(|r| r == *l)) else {
            return Err(format!("service {name} has no live release to roll back from; deploy it first"));
        };
        let routed = observed.routing.as_ref().and_then(|r| r.get(name)).copied();
        if routed.is_some_and(|r| r != live) {
            return Err(format!(
                "nginx sends users of {name} to r{} but the stack record says r{live}: an earlier deploy was interrupted. Run `stackctl deploy` with the same file to finish it, then roll back",
                routed.unwrap_or(0)
            ));
        }
        let kept = || {
            let mut n: Vec<u64> = numbers().collect();
            n.sort();
            n.dedup();
            n.iter().map(|r| format!("r{r}")).collect::<Vec<_>>().join(", ")
        };
        let target = match to {
            Some(n) => numbers().filter(|r| *r <= n).max().ok_or_else(|| {
                format!("service {name} has no release r{n} or older to go back to (it has {}, running, retained or in the history)", kept())
            })?,
            None => numbers().filter(|r| *r < live).max().ok_or_else(|| {
                format!("service {name} has no release older than its live r{live} to go back to (it has {}, running, retained or in the history)", kept())
            })?,
        };
        if target == live {
            continue;
        }
        let green = match releases.iter().find(|s| s.release == Some(target)) {
            Some(s) => Green::Existing { release: target, id: s.id.clone() },
            None => Green::Recreate { release: target },
        };
        steps.push(Step::Release { service: name.clone(), blue: Some(live), green });
    }
    Ok(Plan { release: None, steps })
}

/// Whether a rollback plan made from the running and retained releases alone (no history)
/// is the one the history could still change. It cannot when every service goes back to a
/// kept release that is exactly the one asked for (`--to rN`) or, without `--to`, the one right
/// below the live release: no recorded release can lie in between. Such a rollback skips
/// reading the history before it starts (a listing and a read per entry), which users would
/// otherwise wait for with the old release still serving.
pub fn is_final_without_history(plan: &Plan, to: Option<u64>) -> bool {
    !plan.is_noop()
        && plan.releases().all(|(_, live, green)| match green {
            Green::Existing { release, .. } => match to {
                Some(n) => *release == n,
                None => live.is_some_and(|l| l == release + 1),
            },
            _ => false,
        })
}

/// A retained release a rollback brings back, decided before nginx's directory is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub service: String,
    /// The live release it goes back from.
    pub blue: u64,
    pub green: Green,
    /// The colour it takes: the other than the live release's.
    pub colour: release::Color,
}

/// The retained releases (at zero replicas) a rollback can start scaling up from the services
/// and the record alone, while nginx's directory is still being read: the rollback is
/// [final without the history](is_final_without_history), and nothing of what bringing them
/// up needs from nginx matters. Every live release carries its colour (no repaint, whose
/// colour comes from nginx's files) and nothing else runs under the colour green takes (no
/// release to make way). `None` otherwise: the rollback reads nginx first, as a deploy does.
/// What nginx says is checked as soon as it is read (the same [`rollback`] plan, now with
/// the routing), and a release started for nothing goes back to zero.
pub fn retained_to_start(observed: &Observed, services: &[String], to: Option<u64>) -> Option<Vec<Retained>> {
    let plan = rollback(observed, services, to, &BTreeMap::new()).ok()?;
    if !is_final_without_history(&plan, to) {
        return None;
    }
    let find = |id: &str| observed.services.iter().find(|e| e.id == id);
    plan.releases()
        .map(|(service, blue, green)| {
            let Green::Existing { id, release } = green else { return None };
            let (blue, green_now) = (blue?, find(id)?);
            let live = observed.services.iter().find(|e| e.service == service && e.release == Some(blue))?;
            let colour = live.color?.other();
            let in_the_way = (observed.services.iter())
                .any(|e| e.service == service && e.release.is_some_and(|r| r != *release) && e.replicas > 0 && e.color == Some(colour));
            (green_now.replicas == 0 && !in_the_way).then(|| Retained { service: service.to_string(), blue, green: green.clone(), colour })
        })
        .collect()
}

fn orphan(service: &str, s: &Existing) -> Step {
    Step::RemoveOrphan { service: service.to_string(), release: s.release.unwrap_or(0), id: s.id.clone() }
}

/// After a switch: which old releases of a routed service to scale to zero and which to
/// remove, keeping the newest `keep` releases older than `live` for fast rollback.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention {
    /// Retained releases still running: scale to zero (after the drain).
    pub scale_down: Vec<(u64, String)>,
    /// Releases beyond the retention count: remove.
    pub remove: Vec<(u64, String)>,
}

pub fn retention(releases: &[Existing], live: u64, keep: u32, now: u64) -> Retention {
    let mut older: Vec<&Existing> = releases.iter().filter(|s| s.release.is_some_and(|r| r < live)).collect();
    older.sort_by_key(|s| std::cmp::Reverse(s.release));
    let mut out = Retention::default();
    for (i, s) in older.iter().enumerate() {
        let entry = (s.release.unwrap_or(0), s.id.clone());
        if i < keep as usize {
            // Only the newest old release can be the standby: an older one left up by an
            // earlier window is retired now.
            if s.replicas > 0 && !(i == 0 && s.on_standby(now)) {
                out.scale_down.push(entry);
            }
        } else {
            out.remove.push(entry);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(service: &str, release: u64, hash: &str, replicas: u64) -> Existing {
        Existing {
            id: format!("id-{service}-{release}"),
            name: format!("demo_{service}-r{release}"),
            service: service.into(),
            kind: Some(Kind::Routed),
            release: Some(release),
            hash: hash.into(),
            replicas,
            color: None,
            standby_until: None,
            unreadable: None,
        }
    }

    fn unversioned(service: &str, kind: Kind, hash: &str) -> Existing {
        Existing {
            id: format!("id-{service}"),
            name: format!("demo_{service}"),
            service: service.into(),
            kind: Some(kind),
            release: None,
            hash: hash.into(),
            replicas: 1,
            color: None,
            standby_until: None,
            unreadable: None,
        }
    }

    /// The plan of a readable cluster.
    fn plan(desired: &BTreeMap<String, Desired>, observed: &Observed) -> Plan {
        super::plan(desired, observed).expect("a readable cluster")
    }

    #[test]
    fn unreadable_release_labels_and_exhausted_numbers_are_errors_that_name_the_object() {
        let desired = want(&[("web", Kind::Routed, "w2")]);
        let mut bad = routed("web", 1, "w1", 2);
        bad.unreadable = Some("service demo_web-r1 has a label io.stackctl.release that is not a release number".into());
        let err = super::plan(&desired, &observed(&[], 1, vec![bad])).unwrap_err();
        assert!(err.contains("demo_web-r1"), "{err}");
        let err = super::plan(&desired, &observed(&[], u64::MAX, vec![])).unwrap_err();
        assert!(err.contains("exhausted"), "{err}");
    }

    #[test]
    fn a_release_label_that_does_not_parse_is_unreadable() {
        let info = |release: &str| ServiceInfo {
            labels: BTreeMap::from([
                (release::ROLE.to_string(), "routed".to_string()),
                (release::SERVICE.to_string(), "web".to_string()),
                (release::RELEASE.to_string(), release.to_string()),
            ]),
            id: "id".into(),
            name: "demo_web-r1".into(),
            version: 1,
            replicas: 1,
            spec: Default::default(),
        };
        assert_eq!(Existing::from_info(&info("7")).unwrap().release, Some(7));
        for bad in ["x", "-1", "18446744073709551615"] {
            let e = Existing::from_info(&info(bad)).unwrap();
            assert!(e.unreadable.as_deref().is_some_and(|u| u.contains("demo_web-r1")), "{bad}: {e:?}");
        }
    }

    fn want(items: &[(&str, Kind, &str)]) -> BTreeMap<String, Desired> {
        items.iter().map(|(n, k, h)| (n.to_string(), Desired { kind: *k, hash: h.to_string(), legacy_hash: None })).collect()
    }

    fn observed(live: &[(&str, u64)], seq: u64, services: Vec<Existing>) -> Observed {
        let live: BTreeMap<String, u64> = live.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        Observed { routing: Some(live.clone()), live, seq, services, now: 0 }
    }

    #[test]
    fn services_labelled_with_the_hash_of_before_the_upgrade_still_match() {
        let mut desired = want(&[("proxy", Kind::Proxy, "new-p"), ("web", Kind::Routed, "new-w"), ("db", Kind::Plain, "new-d")]);
        for (name, d) in desired.iter_mut() {
            d.legacy_hash = Some(format!("old-{name}"));
        }
        let obs = observed(
            &[("web", 1)],
            1,
            vec![unversioned("proxy", Kind::Proxy, "old-proxy"), routed("web", 1, "old-web", 2), unversioned("db", Kind::Plain, "old-db")],
        );
        assert!(plan(&desired, &obs).is_noop(), "{:?}", plan(&desired, &obs));
    }

    #[test]
    fn first_deploy_creates_everything() {
        let desired = want(&[("proxy", Kind::Proxy, "p"), ("web", Kind::Routed, "w1"), ("db", Kind::Stateful, "d")]);
        let plan = plan(&desired, &Observed::default());
        assert_eq!(plan.release, Some(1));
        assert_eq!(
            plan.steps,
            vec![
                Step::CreateStateful { service: "db".into() },
                Step::CreateProxy { service: "proxy".into() },
                Step::Release { service: "web".into(), blue: None, green: Green::Create { release: 1 } },
            ]
        );
    }

    #[test]
    fn identical_redeploy_is_a_noop() {
        let desired = want(&[("proxy", Kind::Proxy, "p"), ("web", Kind::Routed, "w1")]);
        let obs = observed(&[("web", 1)], 1, vec![unversioned("proxy", Kind::Proxy, "p"), routed("web", 1, "w1", 2)]);
        let plan = plan(&desired, &obs);
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(plan.release, None);
    }

    #[test]
    fn changed_image_releases_a_new_green_numbered_after_seq() {
        let desired = want(&[("web", Kind::Routed, "w2")]);
        // seq 5: releases 2..5 were handed out even though only r1 survives; numbers never repeat.
        let obs = observed(&[("web", 1)], 5, vec![routed("web", 1, "w1", 2)]);
        let plan = plan(&desired, &obs);
        assert_eq!(plan.release, Some(6));
        assert_eq!(plan.steps, vec![Step::Release { service: "web".into(), blue: Some(1), green: Green::Create { release: 6 } }]);
    }

    #[test]
    fn leftover_green_with_the_wanted_hash_is_adopted() {
        let desired = want(&[("web", Kind::Routed, "w2")]);
        let obs = observed(&[("web", 1)], 2, vec![routed("web", 1, "w1", 2), routed("web", 2, "w2", 2)]);
        let plan = plan(&desired, &obs);
        assert_eq!(plan.release, None);
        assert_eq!(
            plan.steps,
            vec![Step::Release { service: "web".into(), blue: Some(1), green: Green::Adopt { release: 2, id: "id-web-2".into() } }]
        );
    }

    #[test]
    fn leftover_green_with_another_hash_is_removed_and_a_new_one_created() {
        let desired = want(&[("web", Kind::Routed, "w3")]);
        let obs = observed(&[("web", 1)], 2, vec![routed("web", 1, "w1", 2), routed("web", 2, "broken", 2)]);
        let plan = plan(&desired, &obs);
        assert_eq!(
            plan.steps,
            vec![
                Step::RemoveOrphan { service: "web".into(), release: 2, id: "id-web-2".into() },
                Step::Release { service: "web".into(), blue: Some(1), green: Green::Create { release: 3 } },
            ]
        );
    }

    #[test]
    fn back_to_the_live_spec_removes_the_leftover_and_changes_nothing_else() {
        let desired = want(&[("web", Kind::Routed, "w1")]);
        let obs = observed(&[("web", 1)], 2, vec![routed("web", 1, "w1", 2), routed("web", 2, "w2", 2)]);
        let plan = plan(&desired, &obs);
        assert_eq!(plan.steps, vec![Step::RemoveOrphan { service: "web".into(), release: 2, id: "id-web-2".into() }]);
    }

    #[test]
    fn record_pointing_at_a_removed_service_counts_as_no_live_release() {
        let desired = want(&[("web", Kind::Routed, "w1")]);
        let obs = observed(&[("web", 4)], 4, vec![]);
        let plan = plan(&desired, &obs);
        assert_eq!(plan.steps, vec![Step::Release { service: "web".into(), blue: None, green: Green::Create { release: 5 } }]);
    }

    #[test]
    fn nginx_out_of_step_with_the_record_is_rerouted() {
        let desired = want(&[("web", Kind::Routed, "w2")]);
        let mut obs = observed(&[("web", 2)], 2, vec![routed("web", 1, "w1", 0), routed("web", 2, "w2", 2)]);
        obs.routing = Some(BTreeMap::from([("web".to_string(), 1)]));
        assert_eq!(plan(&desired, &obs).steps, vec![Step::Reroute { service: "web".into() }]);
    }

    /// Regression: the version flip-flop on resume (users back on r1 after they saw r2).
    #[test]
    fn users_already_switched_by_a_killed_deploy_stay_where_they_are() {
        // Killed after creating the switch file, before recording r2: nginx sends users to r2.
        let services = || vec![routed("web", 1, "w1", 2), routed("web", 2, "w2", 2)];
        let mut obs = observed(&[("web", 1)], 2, services());
        obs.routing = Some(BTreeMap::from([("web".to_string(), 2)]));
        // The same deploy again: r2 is caught up (verified, recorded), then r1 retired.
        assert_eq!(
            plan(&want(&[("web", Kind::Routed, "w2")]), &obs).steps,
            vec![Step::CatchUp { service: "web".into(), live: 2 }, Step::Retire { service: "web".into(), live: 2 }]
        );
        // Another spec: r2 is the blue of the new green; r1 is neither an orphan nor routed to.
        let p = plan(&want(&[("web", Kind::Routed, "w3")]), &obs);
        assert_eq!(
            p.steps,
            vec![
                Step::CatchUp { service: "web".into(), live: 2 },
                Step::Release { service: "web".into(), blue: Some(2), green: Green::Create { release: 3 } },
            ]
        );
        // Back to r1's spec: a new release with r1's spec, reached from r2, never r2 → r1 by a resume.
        let p = plan(&want(&[("web", Kind::Routed, "w1")]), &obs);
        assert_eq!(p.steps[0], Step::CatchUp { service: "web".into(), live: 2 });
        assert!(matches!(p.steps[1], Step::Release { blue: Some(2), .. }), "{p:?}");
    }

    /// Found by the executor's failure table: users sent back to r1 (a switch back whose record
    /// write failed, or a rollback killed before its record) must not be sent to r2 again.
    #[test]
    fn users_sent_back_to_an_older_release_stay_there_and_the_newer_one_is_kept_at_zero() {
        let services = || vec![routed("web", 1, "w1", 2), routed("web", 2, "w2", 2)];
        let mut obs = observed(&[("web", 2)], 2, services());
        obs.routing = Some(BTreeMap::from([("web".to_string(), 1)]));
        let scale_down = Step::ScaleDown { service: "web".into(), release: 2, id: "id-web-2".into() };
        // The same file again: a new release of r2's spec, gated afresh from r1; r2 kept.
        assert_eq!(
            plan(&want(&[("web", Kind::Routed, "w2")]), &obs).steps,
            vec![
                Step::CatchUp { service: "web".into(), live: 1 },
                scale_down.clone(),
                Step::Release { service: "web".into(), blue: Some(1), green: Green::Create { release: 3 } },
            ]
        );
        // r1's file: users stay, the record follows them.
        assert_eq!(plan(&want(&[("web", Kind::Routed, "w1")]), &obs).steps, vec![Step::CatchUp { service: "web".into(), live: 1 }, scale_down]);
        // nginx on an older release that no longer runs is not where users are served: reroute.
        let mut obs = observed(&[("web", 2)], 2, vec![routed("web", 1, "w1", 0), routed("web", 2, "w2", 2)]);
        obs.routing = Some(BTreeMap::from([("web".to_string(), 1)]));
        assert_eq!(plan(&want(&[("web", Kind::Routed, "w2")]), &obs).steps, vec![Step::Reroute { service: "web".into() }]);
    }

    #[test]
    fn a_first_deploy_killed_after_its_switch_is_caught_up() {
        let mut obs = observed(&[], 1, vec![routed("web", 1, "w1", 2)]);
        obs.routing = Some(BTreeMap::from([("web".to_string(), 1)]));
        assert_eq!(plan(&want(&[("web", Kind::Routed, "w1")]), &obs).steps, vec![Step::CatchUp { service: "web".into(), live: 1 }]);
    }

    #[test]
    fn blue_still_running_after_an_interrupted_switch_is_retired() {
        let desired = want(&[("web", Kind::Routed, "w2")]);
        // Killed after recording r2 as live, before scaling r1 down.
        let obs = observed(&[("web", 2)], 2, vec![routed("web", 1, "w1", 2), routed("web", 2, "w2", 2)]);
        let p = plan(&desired, &obs);
        assert_eq!(p.steps, vec![Step::Retire { service: "web".into(), live: 2 }]);
        assert!(!p.is_noop());
        assert_eq!(p.release, None);
        // Once scaled down it is a retained release, and the redeploy is a noop again.
        let obs = observed(&[("web", 2)], 2, vec![routed("web", 1, "w1", 0), routed("web", 2, "w2", 2)]);
        assert!(plan(&desired, &obs).is_noop());
    }

    #[test]
    fn plain_services_update_in_place_and_stateful_ones_only_report() {
        let desired = want(&[("worker", Kind::Plain, "k2"), ("db", Kind::Stateful, "d2"), ("proxy", Kind::Proxy, "p2")]);
        let obs = observed(
            &[],
            0,
            vec![unversioned("worker", Kind::Plain, "k1"), unversioned("db", Kind::Stateful, "d1"), unversioned("proxy", Kind::Proxy, "p1")],
        );
        let plan = plan(&desired, &obs);
        assert_eq!(
            plan.steps,
            vec![
                Step::StatefulDrift { service: "db".into() },
                Step::ProxyDrift { service: "proxy".into() },
                Step::UpdatePlain { service: "worker".into(), id: "id-worker".into() },
            ]
        );
        assert!(!plan.is_noop());
    }

    #[test]
    fn rollback_goes_to_the_newest_older_release_or_the_stack_as_it_was_at_to() {
        let services = vec![routed("web", 1, "a", 0), routed("web", 2, "b", 0), routed("web", 3, "c", 2), routed("api", 1, "x", 0), routed("api", 3, "y", 2)];
        let obs = observed(&[("web", 3), ("api", 3)], 3, services);
        let names = vec!["web".to_string(), "api".to_string()];
        let none = BTreeMap::new();
        let back = |service: &str, from: u64, to: u64| Step::Release {
            service: service.into(),
            blue: Some(from),
            green: Green::Existing { release: to, id: format!("id-{service}-{to}") },
        };
        assert_eq!(rollback(&obs, &names, None, &none).unwrap().steps, vec![back("web", 3, 2), back("api", 3, 1)]);
        // "As it was at r2": api had r1 then.
        assert_eq!(rollback(&obs, &names, Some(2), &none).unwrap().steps, vec![back("web", 3, 2), back("api", 3, 1)]);
        assert_eq!(rollback(&obs, &names, Some(1), &none).unwrap().steps, vec![back("web", 3, 1), back("api", 3, 1)]);
        // Already there: nothing to do.
        assert!(rollback(&obs, &names, Some(3), &none).unwrap().steps.is_empty());
        assert_eq!(rollback(&obs, &["web".into()], None, &none).unwrap().release, None);
    }

    #[test]
    fn rollback_refuses_what_it_cannot_do_and_says_why() {
        let none = BTreeMap::new();
        let obs = observed(&[("web", 1)], 1, vec![routed("web", 1, "a", 2)]);
        let err = rollback(&obs, &["web".into()], None, &none).unwrap_err();
        assert!(err.contains("no release older than its live r1") && err.contains("(it has r1,"), "{err}");
        let obs = observed(&[], 0, vec![]);
        assert!(rollback(&obs, &["web".into()], None, &none).unwrap_err().contains("no live release"));
        let mut obs = observed(&[("web", 2)], 3, vec![routed("web", 1, "a", 0), routed("web", 2, "b", 2), routed("web", 3, "c", 2)]);
        obs.routing = Some(BTreeMap::from([("web".to_string(), 3)]));
        let err = rollback(&obs, &["web".into()], None, &none).unwrap_err();
        assert!(err.contains("interrupted") && err.contains("stackctl deploy"), "{err}");
        let obs = observed(&[("web", 5)], 5, vec![routed("web", 4, "a", 0), routed("web", 5, "b", 2)]);
        assert!(rollback(&obs, &["web".into()], Some(2), &none).unwrap_err().contains("no release r2 or older"));
    }

    #[test]
    fn rollback_to_a_release_only_the_history_holds_recreates_it() {
        let obs = observed(&[("web", 3)], 3, vec![routed("web", 2, "b", 0), routed("web", 3, "c", 2)]);
        let recorded = BTreeMap::from([("web".to_string(), vec![1, 2, 3])]);
        let steps = rollback(&obs, &["web".into()], Some(1), &recorded).unwrap().steps;
        assert_eq!(steps, vec![Step::Release { service: "web".into(), blue: Some(3), green: Green::Recreate { release: 1 } }]);
        // A release that still exists is used as it is, never recreated.
        let steps = rollback(&obs, &["web".into()], None, &recorded).unwrap().steps;
        assert_eq!(steps, vec![Step::Release { service: "web".into(), blue: Some(3), green: Green::Existing { release: 2, id: "id-web-2".into() } }]);
        let err = rollback(&obs, &["web".into()], Some(0), &recorded).unwrap_err();
        assert!(err.contains("(it has r1, r2, r3, running, retained or in the history)"), "{err}");
    }

    #[test]
    fn only_a_rollback_to_the_release_right_below_or_the_one_named_skips_the_history() {
        let none = BTreeMap::new();
        let names = vec!["web".to_string(), "api".to_string()];
        let obs = observed(&[("web", 3), ("api", 3)], 3, vec![routed("web", 2, "b", 0), routed("web", 3, "c", 2), routed("api", 1, "x", 0), routed("api", 3, "y", 2)]);
        // web r3 → r2 is right below; api r3 → r1 skips r2, which only the history may hold.
        assert!(!is_final_without_history(&rollback(&obs, &names, None, &none).unwrap(), None));
        assert!(is_final_without_history(&rollback(&obs, &["web".into()], None, &none).unwrap(), None));
        // --to r1: api keeps exactly r1; web does not, so only the history can say (the rollback
        // reads it when this plan fails).
        assert!(is_final_without_history(&rollback(&obs, &["api".into()], Some(1), &none).unwrap(), Some(1)));
        assert!(rollback(&obs, &["web".into()], Some(1), &none).is_err());
        let obs = observed(&[("web", 3)], 3, vec![routed("web", 1, "a", 0), routed("web", 3, "c", 2)]);
        assert!(!is_final_without_history(&rollback(&obs, &["web".into()], Some(2), &none).unwrap(), Some(2)));
        // Nothing to do without the history says nothing: a recorded release may be asked for.
        assert!(!is_final_without_history(&rollback(&obs, &["web".into()], Some(3), &none).unwrap(), Some(3)));
    }

    #[test]
    fn a_retained_release_starts_before_nginx_is_read_only_when_nothing_there_could_change_how() {
        use release::Color::{Blue, Green as GreenColour};
        let web = vec!["web".to_string()];
        let coloured = |mut e: Existing, c| {
            e.color = Some(c);
            e
        };
        // r3 live (green colour), r2 retained at zero: r2 starts under blue before nginx is read.
        let mut obs = observed(&[("web", 3)], 3, vec![routed("web", 2, "b", 0), coloured(routed("web", 3, "c", 2), GreenColour)]);
        obs.routing = None;
        let started = retained_to_start(&obs, &web, None).expect("retained right below the live release");
        assert_eq!(started, vec![Retained { service: "web".into(), blue: 3, green: Green::Existing { release: 2, id: "id-web-2".into() }, colour: Blue }]);
        // A live release without its colour is repainted from nginx's files: wait for them.
        let plain = observed(&[("web", 3)], 3, vec![routed("web", 2, "b", 0), routed("web", 3, "c", 2)]);
        assert_eq!(retained_to_start(&plain, &web, None), None);
        // A release still up (a standby: the flip's business), or another one running under
        // the colour green takes (it must make way first): not started early.
        let standby = observed(&[("web", 3)], 3, vec![coloured(routed("web", 2, "b", 2), Blue), coloured(routed("web", 3, "c", 2), GreenColour)]);
        assert_eq!(retained_to_start(&standby, &web, None), None);
        let in_the_way = observed(
            &[("web", 3)],
            4,
            vec![routed("web", 2, "b", 0), coloured(routed("web", 3, "c", 2), GreenColour), coloured(routed("web", 4, "d", 1), Blue)],
        );
        assert_eq!(retained_to_start(&in_the_way, &web, None), None);
        // Going further back than the release right below may need the history.
        let deeper = observed(&[("web", 3)], 3, vec![routed("web", 1, "a", 0), coloured(routed("web", 3, "c", 2), GreenColour)]);
        assert_eq!(retained_to_start(&deeper, &web, None), None);
    }

    #[test]
    fn retention_keeps_the_newest_old_releases_scaled_down() {
        let releases = vec![routed("web", 1, "a", 0), routed("web", 2, "b", 0), routed("web", 3, "c", 2), routed("web", 4, "d", 2)];
        let r = retention(&releases, 4, 2, 0);
        assert_eq!(r.scale_down, vec![(3, "id-web-3".to_string())]);
        assert_eq!(r.remove, vec![(1, "id-web-1".to_string())]);
        assert_eq!(retention(&releases, 4, 0, 0).remove.len(), 3);
    }

    #[test]
    fn a_standby_stays_up_until_its_window_ends_then_is_retired() {
        let mut blue = routed("web", 1, "a", 2);
        blue.standby_until = Some(100);
        let releases = vec![blue, routed("web", 2, "b", 2)];
        assert!(retention(&releases, 2, 2, 99).scale_down.is_empty(), "within the window");
        assert_eq!(retention(&releases, 2, 2, 100).scale_down, vec![(1, "id-web-1".to_string())]);
        // A newer live release makes it an older standby: retired at once.
        let newer = [releases.clone(), vec![routed("web", 3, "c", 2)]].concat();
        let r = retention(&newer, 3, 2, 99);
        assert_eq!(r.scale_down, vec![(2, "id-web-2".to_string()), (1, "id-web-1".to_string())]);
        // The planner leaves a standby alone, and retires it once its window passed.
        let want = want(&[("web", Kind::Routed, "b")]);
        let mut obs = observed(&[("web", 2)], 2, releases);
        obs.now = 99;
        assert!(plan(&want, &obs).is_noop(), "{:?}", plan(&want, &obs));
        obs.now = 100;
        assert_eq!(plan(&want, &obs).steps, vec![Step::Retire { service: "web".into(), live: 2 }]);
    }
}
