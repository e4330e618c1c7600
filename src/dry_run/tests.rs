use std::collections::BTreeMap;

use super::*;
use crate::engine::ServiceInfo;
use crate::engine::describe::ObjectRefs;
use crate::plan::Observed;
use crate::spec::{load_str, LoadOptions};

const STACK: &str = r#"
name: demo
x-stackctl:
  proxy: { service: proxy, url: "http://127.0.0.1:8080" }
  keep: 1
configs:
  app: { file: ./app.conf }
services:
  proxy:
    image: nginx:1
  web:
    image: demo:v1
    deploy: { replicas: 2 }
    configs: [app]
    x-stackctl: { route: { port: 80 } }
  worker:
    image: worker:1
    environment:
      MODE: "${MODE:-fast}"
    deploy:
      replicas: ${WORKERS:-2}
  db:
    image: db:1
    x-stackctl: { stateful: true }
"#;

fn stack(env: &[(&str, &str)], web: &str) -> Stack {
    // A directory per call: tests run in parallel, and a file being rewritten reads empty.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("stackctl-dry-run-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.conf"), "x=1\n").unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let opts = LoadOptions { image_overrides: BTreeMap::from([("web".to_string(), web.to_string())]), env, ..Default::default() };
    let loaded = load_str(&dir.join("stack.yml"), STACK, &opts);
    let _ = std::fs::remove_dir_all(&dir);
    loaded.expect("the test stack loads").stack
}

/// Images "pinned" as the registry would: the reference with a fake digest.
fn images(stack: &Stack) -> BTreeMap<String, String> {
    stack.services.iter().map(|(k, s)| (k.clone(), format!("{}@sha256:{}", s.image, "ab".repeat(32)))).collect()
}

fn wanted(stack: &Stack) -> BTreeMap<String, (Desired, ServiceSpec)> {
    desired::services(stack, &images(stack), &desired::refs_by_name(stack, &ObjectRefs::default()))
}

/// What a deploy of `stack` left running: every service as wanted, `web` as release `n`.
fn deployed(stack: &Stack, web_release: u64, web_replicas: u64) -> Vec<ServiceInfo> {
    // Real ids, as Swarm would have them: the hash and the fields must not see them.
    let refs = ObjectRefs {
        configs: desired::objects(stack).into_iter().filter(|o| o.kind == desired::ObjectKind::Config).map(|o| (o.key, ("cfgid".into(), o.name))).collect(),
        secrets: BTreeMap::new(),
    };
    let wanted = desired::services(stack, &images(stack), &refs);
    wanted
        .iter()
        .map(|(name, (d, spec))| {
            let mut spec = spec.clone();
            let mut labels: BTreeMap<String, String> = spec.labels.clone().unwrap_or_default().into_iter().collect();
            labels.insert(release::SPEC_HASH.into(), d.hash.clone());
            let mut swarm_name = release::plain_name("demo", name);
            let mut replicas = stack.services[name].deploy.replicas;
            if name == "web" {
                swarm_name = release::versioned_name("demo", name, web_release);
                labels.insert(release::RELEASE.into(), web_release.to_string());
                replicas = web_replicas;
            }
            spec.name = Some(swarm_name.clone());
            spec.labels = Some(labels.clone().into_iter().collect());
            ServiceInfo { id: format!("id-{swarm_name}"), name: swarm_name, version: 5, labels, replicas, spec }
        })
        .collect()
}

fn observation(infos: Vec<ServiceInfo>, live: &[(&str, u64)]) -> Observation {
    let services = infos.iter().filter_map(Existing::from_info).collect();
    let live: BTreeMap<String, u64> = live.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    let seq = live.values().copied().max().unwrap_or(0);
    let observed = Observed { routing: Some(live.clone()), live, seq, services, now: 0 };
    Observation { observed, infos, nginx_config: None, nginx_files: None, lock: None }
}

fn lines(stack: &Stack, seen: &Observation, missing: &[Object]) -> Vec<(String, String, String)> {
    let wanted = wanted(stack);
    let hashes = wanted.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect();
    let p = plan::plan(&hashes, &seen.observed).unwrap();
    steps(stack, &p, &wanted, seen, &images(stack), missing).into_iter().map(|l| (l.service, l.action, l.detail)).collect()
}

fn line(service: &str, action: &str, detail: &str) -> (String, String, String) {
    (service.into(), action.into(), detail.into())
}

#[test]
fn a_first_deploy_lists_every_create_objects_first() {
    let s = stack(&[], "demo:v1");
    let missing: Vec<Object> = desired::objects(&s);
    let got = lines(&s, &observation(vec![], &[]), &missing);
    let digest = "ab".repeat(32);
    let include = missing.iter().find(|o| o.key == desired::INCLUDE_KEY).unwrap().name.clone();
    let app = missing.iter().find(|o| o.key == "app").unwrap().name.clone();
    assert!(app.starts_with("demo_app-") && app.len() == "demo_app-".len() + 10, "content-hashed name: {app}");
    assert_eq!(
        got,
        vec![
            line("config", "create", &format!("create {app}")),
            line("config", "create", &format!("create {include}")),
            line("network", "create", "create demo_default"),
            line("db", "create", &format!("create demo_db (db:1@sha256:{digest})")),
            line("proxy", "create", &format!("create demo_proxy (nginx:1@sha256:{digest})")),
            line("web", "create", &format!("create r1 (demo:v1@sha256:{digest})")),
            line("worker", "create", &format!("create demo_worker (worker:1@sha256:{digest})")),
        ]
    );
}

#[test]
fn the_same_stack_again_is_nothing_everywhere_though_object_ids_exist() {
    let s = stack(&[], "demo:v1");
    let got = lines(&s, &observation(deployed(&s, 1, 2), &[("web", 1)]), &[]);
    assert_eq!(
        got,
        vec![line("db", "nothing", "nothing"), line("proxy", "nothing", "nothing"), line("web", "nothing", "nothing (r1 live)"), line("worker", "nothing", "nothing")]
    );
}

#[test]
fn a_new_image_is_a_switch_naming_the_field_then_blue_is_scaled_down() {
    let before = stack(&[], "demo:v1");
    let s = stack(&[], "demo:v2");
    let seen = observation(deployed(&before, 3, 2), &[("web", 3)]);
    let wanted = wanted(&s);
    let hashes = wanted.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect();
    let p = plan::plan(&hashes, &seen.observed).unwrap();
    let web: Vec<StepLine> = steps(&s, &p, &wanted, &seen, &images(&s), &[]).into_iter().filter(|l| l.service == "web").collect();
    let digest = "ab".repeat(32);
    assert_eq!(web[0].action, "switch");
    assert_eq!(web[0].fields, vec!["image".to_string()]);
    assert_eq!(web[0].detail, format!("switch r3 → r4 (new release: image; demo:v2@sha256:{digest})"));
    assert_eq!((web[1].action.as_str(), web[1].detail.as_str()), ("retire", "then scale r3 to 0 (kept for rollback)"));
    assert_eq!(web.len(), 2);
}

#[test]
fn plain_services_show_updated_fields_and_a_replica_change_alone_is_a_scale() {
    let before = stack(&[], "demo:v1");
    let seen = observation(deployed(&before, 1, 2), &[("web", 1)]);
    let env = lines(&stack(&[("MODE", "slow")], "demo:v1"), &seen, &[]);
    assert!(env.contains(&line("worker", "update", "update demo_worker in place (rolling): env")), "{env:?}");
    let both = lines(&stack(&[("MODE", "slow"), ("WORKERS", "3")], "demo:v1"), &seen, &[]);
    assert!(both.contains(&line("worker", "update", "update demo_worker in place (rolling): env, replicas")), "{both:?}");
    let scale = lines(&stack(&[("WORKERS", "5")], "demo:v1"), &seen, &[]);
    assert!(scale.contains(&line("worker", "scale", "scale demo_worker 2 → 5")), "{scale:?}");
}

#[test]
fn leftovers_reroutes_catch_ups_and_retires_are_named() {
    let s = stack(&[], "demo:v1");
    let mut infos = deployed(&s, 2, 2);
    // r1: an old release still running (a deploy died before retiring it); r3: a broken leftover.
    let mut old = deployed(&stack(&[], "demo:v0"), 1, 2).into_iter().find(|i| i.name == "demo_web-r1").unwrap();
    old.replicas = 2;
    let mut broken = deployed(&stack(&[], "demo:broken"), 3, 2).into_iter().find(|i| i.name == "demo_web-r3").unwrap();
    broken.replicas = 2;
    infos.push(old);
    infos.push(broken);
    let got: Vec<_> = lines(&s, &observation(infos.clone(), &[("web", 2)]), &[]).into_iter().filter(|l| l.0 == "web").collect();
    assert_eq!(
        got,
        vec![
            line("web", "remove-orphan", "remove leftover r3 (demo_web-r3), left by an earlier deploy"),
            line("web", "retire", "retire old releases (left running by an interrupted deploy; r2 is live)"),
            line("web", "retire", "then scale r1 to 0 (kept for rollback)"),
        ]
    );
    // nginx on r1 while the record says r2: reroute.
    let mut seen = observation(deployed(&s, 2, 2), &[("web", 2)]);
    seen.observed.routing = Some(BTreeMap::from([("web".to_string(), 1)]));
    let got: Vec<_> = lines(&s, &seen, &[]).into_iter().filter(|l| l.0 == "web").collect();
    assert_eq!(got, vec![line("web", "reroute", "reroute nginx to r2 (nginx is out of step with the record)")]);
    // nginx already on r2 while the record says r1: catch up.
    let mut infos = deployed(&s, 2, 2);
    infos.push(deployed(&stack(&[], "demo:v0"), 1, 0).into_iter().find(|i| i.name == "demo_web-r1").unwrap());
    let mut seen = observation(infos, &[("web", 1)]);
    seen.observed.routing = Some(BTreeMap::from([("web".to_string(), 2)]));
    let got: Vec<_> = lines(&s, &seen, &[]).into_iter().filter(|l| l.0 == "web").collect();
    assert_eq!(got[0], line("web", "catch-up", "catch up: users are already on r2 (switched by an interrupted deploy); verify and record it"));
}

#[test]
fn drift_of_the_proxy_and_of_stateful_services_is_shown_but_is_no_change() {
    let before = stack(&[], "demo:v1");
    let seen = observation(deployed(&before, 1, 2), &[("web", 1)]);
    let s = {
        let mut s = stack(&[], "demo:v1");
        s.services.get_mut("db").unwrap().image = "db:2".into();
        s.services.get_mut("proxy").unwrap().image = "nginx:2".into();
        s
    };
    let wanted = wanted(&s);
    let hashes = wanted.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect();
    let p = plan::plan(&hashes, &seen.observed).unwrap();
    let got = steps(&s, &p, &wanted, &seen, &images(&s), &[]);
    let db = got.iter().find(|l| l.service == "db").unwrap();
    assert_eq!((db.action.as_str(), db.fields.clone()), ("stateful-drift", vec!["image".to_string()]));
    assert!(db.detail.starts_with("demo_db differs from the stack file (image); left alone"), "{}", db.detail);
    assert_eq!(got.iter().find(|l| l.service == "proxy").unwrap().action, "proxy-drift");
    assert!(!got.iter().any(StepLine::is_change), "{got:?}");
}

#[test]
fn changed_fields_ignore_object_ids_and_bookkeeping_labels() {
    let s = stack(&[], "demo:v1");
    let infos = deployed(&s, 1, 2);
    let web = infos.iter().find(|i| i.name == "demo_web-r1").unwrap();
    let (_, want) = &wanted(&s)["web"];
    assert_eq!(changed_fields(&web.spec, want), Vec::<String>::new());
    let proxy = infos.iter().find(|i| i.name == "demo_proxy").unwrap();
    assert_eq!(changed_fields(&proxy.spec, &wanted(&s)["proxy"].1), Vec::<String>::new(), "config ids differ, names do not");
}

#[test]
fn the_spec_hash_does_not_depend_on_whether_configs_exist() {
    let s = stack(&[], "demo:v1");
    let none = wanted(&s);
    let refs = ObjectRefs {
        configs: desired::objects(&s).into_iter().filter(|o| o.kind == desired::ObjectKind::Config).map(|o| (o.key, ("someid".into(), o.name))).collect(),
        secrets: BTreeMap::new(),
    };
    let with_ids = desired::services(&s, &images(&s), &refs);
    for (name, (d, _)) in &none {
        assert_eq!(d.hash, with_ids[name].0.hash, "{name}");
    }
    // The content still counts: another file content is another hash.
    let mut other = s.clone();
    other.configs.get_mut("app").unwrap().content = Some(b"x=2\n".to_vec());
    let other = desired::services(&other, &images(&s), &desired::refs_by_name(&other, &ObjectRefs::default()));
    assert_ne!(other["web"].0.hash, none["web"].0.hash);
}

#[test]
fn tokens_are_masked_and_nothing_else() {
    let tok = "0123456789abcdef01234567";
    let text = format!("\"{tok}\" $upstream_addr;\n\"{tok}.r2\" tasks.demo_web-r2:80;\nswitch-{tok}-web-r2\ncafe 0123456789abcdef0123456789 deadbeef\n");
    let want = format!(
        "\"{PLACEHOLDER_TOKEN}\" $upstream_addr;\n\"{PLACEHOLDER_TOKEN}.r2\" tasks.demo_web-r2:80;\nswitch-{PLACEHOLDER_TOKEN}-web-r2\ncafe 0123456789abcdef0123456789 deadbeef\n"
    );
    assert_eq!(mask_tokens(&text), want);
    assert_eq!(mask_tokens(&want), want);
}

#[test]
fn unified_diff_of_equal_texts_is_empty_and_of_changes_has_hunks_with_context() {
    assert_eq!(unified_diff("a\nb\n", "a\nb\n", "x", "y", 3), "");
    let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n";
    let new = "1\n2\nthree\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n";
    assert_eq!(
        unified_diff(old, new, "installed", "planned", 2),
        "--- installed\n+++ planned\n@@ -1,5 +1,5 @@\n 1\n 2\n-3\n+three\n 4\n 5\n@@ -11,2 +11,3 @@\n 11\n 12\n+13\n"
    );
    // Changes closer than twice the context share one hunk.
    assert_eq!(
        unified_diff("a\nb\nc\nd\n", "A\nb\nc\nD\n", "o", "n", 1),
        "--- o\n+++ n\n@@ -1,4 +1,4 @@\n-a\n+A\n b\n c\n-d\n+D\n"
    );
    // From nothing: every line added, the old range empty.
    assert_eq!(unified_diff("", "x\ny\n", "o", "n", 3), "--- o\n+++ n\n@@ -0,0 +1,2 @@\n+x\n+y\n");
}

#[test]
fn the_text_report_lists_steps_the_diff_and_the_verdict() {
    let report = PlanReport {
        stack: "demo".into(),
        changes: true,
        steps: vec![StepLine::new("web", "switch", "switch r1 → r2 (new release: image; demo:v2)".into()), StepLine::new("proxy", "nothing", "nothing".into())],
        nginx_diff: "--- installed\n+++ after the deploy\n@@ -1,1 +1,1 @@\n-a\n+b\n".into(),
        nginx_config: "b\n".into(),
        warnings: vec![],
        images: BTreeMap::new(),
        fingerprint: Fingerprint::default(),
    };
    assert_eq!(
        report.to_text(),
        format!(
            "plan for stack demo:\n  web    switch r1 → r2 (new release: image; demo:v2)\n  proxy  nothing\nnginx config, rewritten and reloaded (the routes changed; tokens shown as {PLACEHOLDER_TOKEN}):\n--- installed\n+++ after the deploy\n@@ -1,1 +1,1 @@\n-a\n+b\nstack demo: 1 change pending\n"
        )
    );
}

#[test]
fn a_fingerprint_names_what_changed_since_the_plan() {
    let s = stack(&[], "demo:v1");
    let wanted = wanted(&s);
    let hashes: BTreeMap<String, Desired> = wanted.iter().map(|(k, (d, _))| (k.clone(), d.clone())).collect();
    let mut seen = observation(deployed(&s, 1, 2), &[("web", 1)]);
    seen.nginx_config = Some("config 1".into());
    let saved = Fingerprint::of(&seen, &hashes);
    assert_eq!(saved.changes(&Fingerprint::of(&seen, &hashes)), Vec::<String>::new());
    // Through JSON, as `plan --out` writes it and `deploy --plan` reads it.
    let json = serde_json::to_string(&saved).unwrap();
    assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), saved);

    let mut moved = seen.clone();
    moved.infos[0].version += 1;
    let name = moved.infos[0].name.clone();
    assert_eq!(saved.changes(&Fingerprint::of(&moved, &hashes)), vec![format!("services were created, changed or removed: {name}")]);
    let mut recorded = seen.clone();
    recorded.observed.seq += 1;
    assert_eq!(saved.changes(&Fingerprint::of(&recorded, &hashes)), vec!["the stack record changed (another deploy ran)".to_string()]);
    let mut nginx = seen.clone();
    nginx.nginx_config = Some("config 2".into());
    assert_eq!(saved.changes(&Fingerprint::of(&nginx, &hashes)), vec!["the config installed in nginx changed".to_string()]);
    let other = wanted_hashes(&stack(&[], "demo:v2"));
    assert_eq!(saved.changes(&Fingerprint::of(&seen, &other)), vec!["the stack file or its images now want something else for web".to_string()]);
}

fn wanted_hashes(stack: &Stack) -> BTreeMap<String, Desired> {
    wanted(stack).into_iter().map(|(k, (d, _))| (k, d)).collect()
}
