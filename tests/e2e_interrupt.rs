//! Deploys that survive faults: a deploy killed (SIGKILL) at each phase, stale and foreign
//! locks, two deploys at once, and SIGTERM/SIGINT. The real binary against the real engine, as
//! in `tests/e2e.rs` (same rig, same `#[ignore]`, one test at a time). Kill points come from the
//! test-only `STACKCTL_TEST_PAUSE` (see `src/faults.rs`): the binary prints
//! `stackctl: paused at <point>` and waits there to be killed.
//!
//! Stacks are named `e2eint*` and publish nginx on ports 18200–18219.

use std::time::{Duration, Instant};

mod common;
use common::{assert_load_clean, serial, Load, Running, TestStack};

use stackctl::engine::docker::DockerEngine;
use stackctl::engine::Engine;
use stackctl::loadgen;
use stackctl::record::{self, LockInfo, Record};



/// What these tests add to the shared [`TestStack`].
impl TestStack {
    fn deploy_args(&self, image: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["deploy".to_string(), self.file(image).to_str().unwrap().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Start a deploy in the background, with `STACKCTL_TEST_PAUSE=pause` when given.
    fn spawn_deploy(&self, image: &str, extra: &[&str], pause: Option<&str>) -> Running {
        Running::spawn(&self.deploy_args(image, extra), pause)
    }

    fn replicas(&self, service: &str) -> String {
        common::replicas(service)
    }

    /// Write the record's lock label by hand, as another machine's stackctl would have.
    fn put_foreign_lock(&self, lock: LockInfo) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let engine = DockerEngine::connect().await.expect("engine");
            let name = record::record_name(&self.name);
            let info = engine.config(&name).await.unwrap().expect("the stack has a record");
            let mut rec = Record::from_labels(&info.name, &info.labels).expect("a readable record");
            assert!(rec.lock.is_none(), "the stack is not locked before the test locks it: {rec:?}");
            rec.lock = Some(lock);
            engine.update_config_labels(&info, &rec.to_labels(&self.name)).await.expect("lock written");
        });
    }

    /// The end state of exactly one complete deploy of `image` as release `release`, with the
    /// previous release kept scaled to zero (keep: 1) and nothing else left behind.
    fn assert_one_complete_deploy(&self, image: &str, release: u64, retained: u64) {
        assert_eq!(self.get("/").as_deref(), Ok(image));
        let n = &self.name;
        assert_eq!(self.services(), vec![format!("{n}_proxy"), format!("{n}_web-r{retained}"), format!("{n}_web-r{release}")]);
        assert_eq!(self.replicas(&format!("{n}_web-r{retained}")), "0", "blue retained, scaled to zero");
        assert_eq!(self.replicas(&format!("{n}_web-r{release}")), "2");
        let status = self.status_json();
        assert_eq!(status["live"]["web"], release, "{status}");
        assert_eq!(status["serving"]["web"], release, "{status}");
        assert!(status["lock"].is_null(), "no lock left: {status}");
    }
}


fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Load through nginx in the background: two kept-alive and two new-connection workers.
fn load(port: u16) -> Load {
    Load::start(&format!("127.0.0.1:{port}"), &[("/", 2, 2, Duration::from_secs(5))])
}

/// Versions answered between `from` and `to` (load clock), with their counts.
fn versions_between(samples: &[loadgen::Sample], from: Duration, to: Duration) -> std::collections::BTreeMap<String, usize> {
    loadgen::summarize(samples.iter().filter(|s| s.sent >= from && s.sent + s.latency <= to)).versions
}

/// Deploy v1; under load, start `deploy v2` paused at `point`, SIGKILL it there, then run the
/// same deploy again at once: it takes the dead holder's lock over immediately and finishes.
fn killed_at(name: &str, port: u16, point: &str, serving_after_kill: &str) {
    killed_at_after(name, port, point, serving_after_kill, |_| {});
}

/// [`killed_at`], with `before` done to the stack between the v1 deploy and the killed one.
fn killed_at_after(name: &str, port: u16, point: &str, serving_after_kill: &str, before: impl FnOnce(&TestStack)) {
    let _g = serial();
    let s = TestStack::new(name, port);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    before(&s);
    let load = load(s.port);

    let mut killed = s.spawn_deploy("v2", &[], Some(point));
    killed.wait_for_line(&format!("stackctl: paused at {point}"), Duration::from_secs(90));
    let pid = killed.pid();
    killed.kill9();
    let killed_at = load.now();
    // Nothing runs for a moment: users are served by what the dead deploy left.
    load.wait_answers_since(killed_at, 50);
    let status = s.status_json();
    assert_eq!(status["lock"]["pid"], pid, "the dead deploy's lock is still there: {status}");

    let followup_at = load.now();
    let started = Instant::now();
    let out = s.deploy("v2", &[]);
    let took = started.elapsed();
    let done_at = load.now();
    load.wait_answers_since(done_at, 30);
    let samples = load.stop().remove(0);

    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("took over a stale lock"), "{err}");
    assert!(err.contains(&format!("pid {pid} on ")) && err.contains("running for") && err.contains("no longer exists"), "{err}");
    let between = versions_between(&samples, killed_at, followup_at);
    assert_eq!(between.keys().collect::<Vec<_>>(), vec![serving_after_kill], "served between the kill and the next deploy");
    let sum = loadgen::summarize(&samples);
    eprintln!(
        "KILL POINT {point}: requests {} failures {} retried {} ({} after the request was written) versions {:?}; follow-up deploy took {took:.1?} (total run {done_at:.1?})",
        sum.requests, sum.failures, sum.retried, sum.retried_no_response, sum.versions
    );
    // Two deploys under load, the killed one and the one that finished it: no reload, unless
    // nginx had to be given its config again (then the follow-up reloads once).
    assert_load_clean(&sum, 100, usize::from(point == "config-installed"));
    // Users never go back: once any client got v2, through the kill and the follow-up, no
    // later request gets v1 (the flip-flop a resume used to cause at its switch).
    let back = loadgen::backwards(&samples, "v1", "v2");
    assert!(back.is_empty(), "{} requests were answered by v1 after a client had seen v2, first at {:?}", back.len(), back.first().map(|s| s.sent));
    let late = versions_between(&samples, done_at, Duration::MAX);
    assert_eq!(late.keys().collect::<Vec<_>>(), vec!["v2"], "after the follow-up deploy only v2 answers");
    // r2 was handed out to the killed deploy and is the one that went live (adopted or kept).
    s.assert_one_complete_deploy("v2", 2, 1);
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn killed_after_green_is_created() {
    killed_at("e2eintgreen", 18201, "green-created", "v1");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn killed_while_waiting_for_health() {
    killed_at("e2einthealth", 18202, "waiting-health", "v1");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn killed_after_the_switch_file_before_its_verification() {
    // The switch is the file nginx checks per request: users are on v2 from there on.
    killed_at("e2eintconf", 18203, "switch-file", "v2");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn killed_after_a_new_config_is_installed_before_its_reload() {
    // An ordinary deploy installs nothing: nginx lost its file (it still runs the config it
    // loaded), so this deploy writes it again and reloads. Killed before the reload, nginx
    // still runs the old one; the follow-up sees the file is not what nginx runs, and reloads.
    killed_at_after("e2eintprev", 18208, "config-installed", "v1", |s| {
        let nginx = common::containers(&format!("{}_proxy", s.name)).pop().expect("an nginx container");
        common::docker(&["exec", &nginx, "rm", "/etc/nginx/stackctl/live.conf"]);
    });
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn killed_after_the_switch_before_the_drain() {
    killed_at("e2eintswitch", 18204, "switched", "v2");
}

fn foreign_lock(renewed_ago: u64) -> LockInfo {
    let now = record::now_unix();
    LockInfo {
        owner: "f0f0f0f0f0f0f0f0".into(),
        host: "other-machine".into(),
        // A pid that exists here (init): it must not matter, the lock is from another boot.
        pid: 1,
        command: "deploy".into(),
        since: now - renewed_ago - 5,
        renewed: now - renewed_ago,
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        pid_ns: "pid:[4026531836]".into(),
    }
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn locks_of_another_machine_are_taken_over_only_when_stale() {
    let _g = serial();
    let s = TestStack::new("e2eintforeign", 18205);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));

    // Stale: no heartbeat for 40 s. Taken over, reported with holder, pid, host and age.
    s.put_foreign_lock(foreign_lock(40));
    let out = s.deploy("v2", &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // Ages are 45 s and 40 s when the lock was written; a second may pass before it is read.
    assert!(err.contains("took over a stale lock: deploy (pid 1 on other-machine), running for 4"), "{err}");
    assert!(err.contains("s, last heartbeat 4"), "{err}");
    assert!(err.contains("no heartbeat for more than 30s"), "{err}");
    s.assert_one_complete_deploy("v2", 2, 1);

    // Fresh, from another boot: its pid says nothing here, so it is respected.
    s.put_foreign_lock(foreign_lock(0));
    let started = Instant::now();
    let out = s.deploy("v1", &[]);
    let no_wait = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stack e2eintforeign is being deployed by deploy (pid 1 on other-machine)"), "{err}");

    let started = Instant::now();
    let out = s.deploy("v1", &["--lock-wait", "3s"]);
    let waited = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("being deployed by deploy (pid 1 on other-machine)"), "{err}");
    eprintln!("LOCK WAIT: without --lock-wait exit 1 after {no_wait:.2?}; with --lock-wait 3s exit 1 after {waited:.2?}");
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    assert!(waited < no_wait + Duration::from_secs(5), "waited {waited:?}, no-wait run took {no_wait:?}");
    // Nothing changed under the foreign lock.
    assert_eq!(s.get("/").as_deref(), Ok("v2"));
    assert_eq!(s.status_json()["lock"]["host"], "other-machine");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn two_deploys_at_once_one_proceeds() {
    let _g = serial();
    let s = TestStack::new("e2eintrace", 18206);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));

    // Without --lock-wait: one switches, the other is refused with who holds the lock.
    let a = s.spawn_deploy("v2", &[], None);
    let b = s.spawn_deploy("v2", &[], None);
    let mut results = vec![a.finish(), b.finish()];
    results.sort_by_key(|r| r.0);
    let [(ok, ok_out, _, _), (refused, _, refused_err, _)] = &results[..] else { unreachable!() };
    assert_eq!((*ok, *refused), (Some(0), Some(1)), "{results:?}");
    assert!(ok_out.contains("web: r1 → r2"), "{ok_out}");
    assert!(refused_err.contains("stack e2eintrace is being deployed by deploy (pid "), "{refused_err}");
    s.assert_one_complete_deploy("v2", 2, 1);

    // With --lock-wait on both: one switches, the other waits, then finds nothing to do.
    let a = s.spawn_deploy("v1", &["--lock-wait", "2m"], None);
    let b = s.spawn_deploy("v1", &["--lock-wait", "2m"], None);
    let results = [a.finish(), b.finish()];
    assert!(results.iter().all(|r| r.0 == Some(0)), "{results:?}");
    let switched = results.iter().filter(|r| r.1.contains("web: r2 → r3")).count();
    let unchanged = results.iter().filter(|r| r.1.contains("stack e2eintrace unchanged")).count();
    assert_eq!((switched, unchanged), (1, 1), "{results:?}");
    eprintln!("RACE with --lock-wait: took {:.1?} and {:.1?}", results[0].3, results[1].3);
    s.assert_one_complete_deploy("v1", 3, 2);
}

/// SIGTERM (then SIGINT, twice) while green is waiting for health: the deploy undoes itself.
#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn sigterm_and_sigint_stop_a_deploy_safely() {
    let _g = serial();
    let s = TestStack::new("e2eintsig", 18207);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    let load = load(s.port);

    for (round, signals) in [(2, vec!["TERM"]), (3, vec!["INT", "INT"])] {
        let mut d = s.spawn_deploy("v2", &[], Some("waiting-health"));
        d.wait_for_line("stackctl: paused at waiting-health", Duration::from_secs(90));
        let sent = Instant::now();
        for (i, sig) in signals.iter().enumerate() {
            if i > 0 {
                // The second one lands while the first one's cleanup runs.
                d.wait_for_line("abort ...", Duration::from_secs(10));
            }
            d.signal(sig);
        }
        let (code, _, err, _) = d.finish();
        let took = sent.elapsed();
        eprintln!("SIG{}: exit {code:?} {took:.2?} after the first signal", signals.join("+SIG"));
        assert_eq!(code, Some(1), "{err}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(err.contains(&format!("interrupted by SIG{} while waiting for green to become healthy", signals[0])), "{err}");
        assert!(err.contains(&format!("removed e2eintsig_web-r{round}")), "{err}");
        if signals.len() > 1 {
            assert!(err.contains("cleanup in progress"), "{err}");
        }
        assert_eq!(s.services(), vec!["e2eintsig_proxy", "e2eintsig_web-r1"], "green removed");
        let status = s.status_json();
        assert!(status["lock"].is_null(), "lock released: {status}");
        assert_eq!(status["live"]["web"], 1);
    }
    let samples = load.stop().remove(0);
    let sum = loadgen::summarize(&samples);
    eprintln!(
        "SIGNALS: requests {} failures {} retried {} ({} after the request was written) versions {:?}",
        sum.requests, sum.failures, sum.retried, sum.retried_no_response, sum.versions
    );
    assert_load_clean(&sum, 100, 0);
    assert_eq!(sum.versions.keys().collect::<Vec<_>>(), vec!["v1"]);
}
