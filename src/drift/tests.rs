//! Drift as a table: one observation made by hand per case, the findings and actions expected.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::models::{NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec};

use super::*;
use crate::history::{ServiceRelease, Verb, Who};
use crate::record::LockInfo;

const STACK: &str = "d";

fn spec(name: &str, role: &str, service: &str, release: Option<u64>, image: &str, replicas: i64) -> ServiceSpec {
    let mut labels = HashMap::from([
        (release::STACK.to_string(), STACK.to_string()),
        (release::ROLE.to_string(), role.to_string()),
        (release::SERVICE.to_string(), service.to_string()),
    ]);
    let mut aliases = Vec::new();
    if let Some(n) = release {
        labels.insert(release::RELEASE.into(), n.to_string());
        // Odd releases blue, even green, as successive deploys paint them.
        let colour = if n % 2 == 1 { Color::Blue } else { Color::Green };
        labels.insert(release::COLOR.into(), colour.as_str().into());
        aliases.push(release::colour_alias(STACK, service, colour));
    }
    ServiceSpec {
        name: Some(name.into()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec { image: Some(image.into()), ..Default::default() }),
            networks: Some(vec![NetworkAttachmentConfig { target: Some("d_default".into()), aliases: Some(aliases), ..Default::default() }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode { replicated: Some(ServiceSpecModeReplicated { replicas: Some(replicas) }), ..Default::default() }),
        ..Default::default()
    }
}

fn info(spec: &ServiceSpec) -> ServiceInfo {
    let labels = spec.labels.clone().unwrap_or_default().into_iter().collect();
    let replicas = spec.mode.as_ref().and_then(|m| m.replicated.as_ref()?.replicas).unwrap_or(0) as u64;
    let name = spec.name.clone().unwrap_or_default();
    ServiceInfo { id: format!("id-{name}"), name, version: 7, labels, replicas, spec: spec.clone() }
}

fn web(n: u64, image: &str, replicas: i64) -> ServiceSpec {
    spec(&release::versioned_name(STACK, "web", n), "routed", "web", Some(n), image, replicas)
}

fn entry(number: u64, live: &[u64], specs: &[&ServiceSpec]) -> Entry {
    Entry {
        number,
        time: 0,
        verb: Verb::Deploy,
        who: Who { user: "u".into(), host: "h".into(), ci: BTreeMap::new() },
        command: Vec::new(),
        outcome: crate::history::Outcome::Deployed,
        reason: None,
        exit_code: 0,
        release: live.last().copied(),
        services: (live.iter())
            .map(|&n| ServiceRelease { service: "web".into(), release: n, switched: true, from: None, image: "img".into(), spec_hash: String::new() })
            .collect(),
        phases: Vec::new(),
        seconds: 0.0,
        specs: specs.iter().map(|s| (s.name.clone().unwrap(), (*s).clone())).collect(),
        specs_left_out: None,
        env: None,
        checks: Vec::new(),
        promoted_from: None,
        maintenance: Vec::new(),
        repairs: Vec::new(),
    }
}

/// A stack whose web r2 is live (green), r1 retained at zero, a plain worker, a stateful db;
/// recorded by entries 1 (r1) and 2 (r2); no nginx.
fn in_sync() -> Observed {
    let (r1, r2) = (web(1, "app:v1", 0), web(2, "app:v2", 2));
    let worker = spec("d_worker", "plain", "worker", None, "worker:v1", 1);
    let db = spec("d_db", "stateful", "db", None, "db:v1", 1);
    Observed {
        stack: STACK.into(),
        services: [&r1, &r2, &worker, &db].iter().map(|s| info(s)).collect(),
        record: Some(Record { live: BTreeMap::from([("web".into(), 2)]), seq: 2, lock: None }),
        lock: None,
        history: vec![entry(2, &[2], &[&r2, &worker, &db]), entry(1, &[1], &[&web(1, "app:v1", 2)])],
        nginx: Nginx::None,
        keep: Some(BTreeMap::from([("web".into(), 1)])),
        rendered: None,
        now: 1_000,
    }
}

fn kinds(o: &Observed) -> Vec<(Kind, String)> {
    findings(o).into_iter().map(|f| (f.kind, f.subject)).collect()
}

fn set(o: &mut Observed, name: &str, spec: ServiceSpec) {
    let i = o.services.iter().position(|s| s.name == name).expect("service");
    o.services[i] = info(&spec);
}

#[test]
fn what_the_history_recorded_is_in_sync() {
    assert_eq!(findings(&in_sync()), Vec::new());
}

#[test]
fn a_live_release_scaled_or_given_another_image_by_hand_is_put_back_to_its_recorded_spec() {
    let mut o = in_sync();
    set(&mut o, "d_web-r2", web(2, "app:v2", 5));
    let f = findings(&o);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].kind, f[0].drift.as_str()), (Kind::LiveChanged, "replicas 5 (recorded 2)"));
    let Action::PutBack { id, version, spec, .. } = &f[0].action else { panic!("{:?}", f[0].action) };
    assert_eq!((id.as_deref(), *version, spec.as_ref()), (Some("id-d_web-r2"), 7, &web(2, "app:v2", 2)));

    set(&mut o, "d_web-r2", web(2, "app:v9", 2));
    let f = findings(&o);
    assert_eq!(f[0].drift, "image app:v9 (recorded app:v2)");

    let mut other = web(2, "app:v2", 2);
    other.task_template.as_mut().unwrap().container_spec.as_mut().unwrap().env = Some(vec!["X=1".into()]);
    set(&mut o, "d_web-r2", other);
    assert_eq!(findings(&o)[0].drift, "spec changed by hand");
}

#[test]
fn a_missing_live_release_or_plain_service_is_created_from_its_recorded_spec() {
    let mut o = in_sync();
    o.services.retain(|s| s.name != "d_web-r2" && s.name != "d_worker");
    let f = findings(&o);
    assert_eq!(f.iter().map(|f| (f.kind, f.subject.as_str())).collect::<Vec<_>>(), [(Kind::LiveMissing, "d_web-r2"), (Kind::PlainMissing, "d_worker")]);
    assert!(matches!(&f[0].action, Action::PutBack { id: None, .. }));
    // Nothing recorded to put it back from: a person.
    o.history.clear();
    let f = findings(&o);
    assert_eq!((f[0].kind, f[0].needs_person()), (Kind::Unrepairable, true));
}

#[test]
fn a_stateful_or_proxy_service_changed_by_hand_is_left_to_a_person() {
    let mut o = in_sync();
    set(&mut o, "d_db", spec("d_db", "stateful", "db", None, "db:v2", 1));
    let f = findings(&o);
    assert_eq!((f[0].kind, f[0].needs_person()), (Kind::StatefulChanged, true), "{f:?}");
    assert!(f[0].drift.starts_with("image db:v2 (recorded db:v1)"), "{}", f[0].drift);
}

#[test]
fn leftovers_never_live_greens_blues_past_their_drain_and_releases_beyond_keep() {
    let mut o = in_sync();
    // An interrupted deploy's green r3, never live; r1 running again; r0 beyond keep=1.
    let (r3, r1, r0) = (web(3, "app:v3", 2), web(1, "app:v1", 2), web(0, "app:v0", 0));
    set(&mut o, "d_web-r1", r1);
    o.services.push(info(&r3));
    o.services.push(info(&r0));
    o.history.push(entry(0, &[0], &[&r0]));
    let mut k = kinds(&o);
    k.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(k, [(Kind::BeyondKeep, "d_web-r0".into()), (Kind::PastDrain, "d_web-r1".into()), (Kind::NeverLive, "d_web-r3".into())]);
    // Without the stack file keep is unknown: nothing is removed for it.
    o.keep = None;
    assert!(!kinds(&o).iter().any(|(k, _)| *k == Kind::BeyondKeep));
    // A standby (its window not over) is not past its drain.
    let mut standby = web(1, "app:v1", 2);
    standby.labels.as_mut().unwrap().insert(release::STANDBY_UNTIL.into(), "2000".into());
    set(&mut o, "d_web-r1", standby);
    assert!(!kinds(&o).iter().any(|(k, _)| *k == Kind::PastDrain));
}

#[test]
fn a_lock_whose_holder_is_gone_is_released_and_no_record_needs_a_person() {
    let mut o = in_sync();
    let lock = LockInfo { owner: "x".into(), host: "h".into(), pid: 1, command: "deploy".into(), since: 0, renewed: 0, boot_id: String::new(), pid_ns: String::new() };
    o.lock = Some((lock, Holder::Stale));
    assert_eq!(kinds(&o), [(Kind::StaleLock, "lock".into())]);
    o.lock = None;
    o.record = None;
    assert_eq!(findings(&o)[0].kind, Kind::Unrepairable);
}

/// A config rendered for a stack routing `web`, as a deploy installs it.
fn rendered() -> String {
    let text = "name: d\nx-stackctl:\n  proxy: { service: proxy, url: \"http://127.0.0.1:8080\", listen: 8080 }\nservices:\n  proxy:\n    image: nginx:1\n  web:\n    image: app:v1\n    x-stackctl:\n      route: { port: 80 }\n";
    let stack = crate::spec::load_str(Path::new("d.yml"), text, &Default::default()).expect("valid").stack;
    proxy::render(&stack, "00112233445566778899aabb").expect("renders")
}

fn replica(config: Option<&str>, green: bool) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Some(c) = config {
        files.insert(proxy::nginx::FILE.to_string(), c.as_bytes().to_vec());
    }
    if green {
        files.insert(proxy::green_file("web"), Vec::new());
    }
    files
}

#[test]
fn nginx_without_its_config_or_edited_by_hand_gets_the_intact_one_back() {
    let config = rendered();
    let mut o = in_sync();
    // r2 is green: the green file on both replicas is in sync.
    o.nginx = Nginx::Files(NginxFiles { replicas: vec![replica(Some(&config), true), replica(Some(&config), true)] });
    assert_eq!(findings(&o), Vec::new());

    let edited = config.replacen("proxy_pass", "proxy_pass ", 1);
    o.nginx = Nginx::Files(NginxFiles { replicas: vec![replica(Some(&edited), true), replica(None, true)] });
    // No replica holds an intact config and no file was given: a person.
    assert_eq!(findings(&o)[0].kind, Kind::Unrepairable);
    o.rendered = Some(config.clone());
    o.nginx = Nginx::Files(NginxFiles { replicas: vec![replica(Some(&edited), true), replica(Some(&config), true), replica(None, true)] });
    let f = findings(&o);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].drift, "replica 1's config was changed by hand; replica 3 has no config");
    assert_eq!(f[0].action, Action::Reinstall { config: config.clone() });
}

#[test]
fn nginx_sending_users_to_the_other_colour_is_switched_to_the_live_release() {
    let config = rendered();
    let mut o = in_sync();
    o.nginx = Nginx::Files(NginxFiles { replicas: vec![replica(Some(&config), true), replica(Some(&config), false)] });
    let f = findings(&o);
    assert_eq!((f.len(), f[0].kind), (1, Kind::NginxRouting), "{f:?}");
    assert_eq!(f[0].action, Action::Route { files: vec![(proxy::green_file("web"), true)] });
    assert!(f[0].drift.contains("replica(s) [2] send users to blue instead of r2 (green)"), "{}", f[0].drift);
}
