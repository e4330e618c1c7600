//! The executor as a table: for a fault injected at each step of a deploy or a rollback, the
//! state it leaves behind. Every row runs against its own [`FakeEngine`] (an in-memory Swarm
//! with an nginx answering HTTP on a loopback port), and is judged on what a user and an
//! operator would see afterwards:
//! - where nginx sends a user of the public host (asked over HTTP, as a user would);
//! - which releases exist, at what scale, with that many tasks running;
//! - what the stack record says is live, and that the deploy lock was given back;
//! - the newest history entry (verb, outcome, release);
//! - the error's kind, exit code and what it says.
//!
//! The rows run concurrently (each is mostly waiting on timers), so the file takes about as
//! long as its slowest row. tests/e2e_faults.rs and tests/e2e_rollback.rs are the same stories
//! against a real engine and nginx; this table covers every step, in seconds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use stackctl::cancel::Cancel;
use stackctl::deploy::{self, DeployError, Options, Report};
use stackctl::engine::fake::{Action, FakeEngine, Fault, Op};
use stackctl::events::Events;
use stackctl::health::Probe;
use stackctl::history::{self, Outcome};
use stackctl::record;
use stackctl::spec::{self, LoadOptions, Stack};

const STACK: &str = "fx";
const HOST: &str = "web.example";

/// The stack file: nginx plus one routed service `web` of two replicas, its image
/// `registry.test/demo:<tag>` (tags `broken` and `starting` make the fake's tasks crash or
/// never pass their health check). Short intervals so a row takes about a second: probes every
/// 20 ms, two in a row gate a release, a 400 ms watch window, no drain; `keep: 1` retains one
/// old release at zero.
fn stack_file(port: u16, nginx: u64, tag: &str) -> String {
    format!(
        r#"name: {STACK}
x-stackctl:
  proxy: {{ service: proxy, url: "http://127.0.0.1:{port}", listen: 8080 }}
  keep: 1
services:
  proxy:
    image: registry.test/nginx:1
    deploy: {{ replicas: {nginx} }}
    ports: [{{ target: 8080, published: {port}, mode: host }}]
  web:
    image: registry.test/demo:{tag}
    deploy: {{ replicas: 2 }}
    x-stackctl:
      route:
        port: 80
        host: {HOST}
        health: {{ path: /healthz, interval: 20ms, timeout: 1s, successes: 2, deadline: 2s }}
        drain: 0s
        watch: 400ms
"#
    )
}

/// One fake cluster and its nginx.
struct World {
    engine: FakeEngine,
    /// Where the fake nginx listens (the stack file's `proxy.url`).
    port: u16,
    /// Replicas of the nginx service.
    nginx: u64,
}

impl World {
    async fn new(nginx: u64) -> World {
        let engine = FakeEngine::new();
        let port = engine.serve_nginx().await.expect("a loopback port for the fake nginx");
        World { engine, port, nginx }
    }

    fn stack(&self, tag: &str) -> Stack {
        let text = stack_file(self.port, self.nginx, tag);
        spec::load_str(Path::new("fx.yml"), &text, &LoadOptions::default()).expect("the test's stack file is valid").stack
    }

    async fn deploy(&self, tag: &str, opts: &Options) -> Result<Report, DeployError> {
        deploy::deploy(&self.engine, &self.stack(tag), opts, &Events::silent()).await
    }

    async fn rollback(&self, to: Option<u64>, opts: &Options) -> Result<Report, DeployError> {
        // A rollback takes the routes and the proxy from the stack file, not the image.
        deploy::rollback(&self.engine, &self.stack("v1"), opts, to, None, &Events::silent()).await
    }

    /// The release whose app answered a user's `GET /` on the public host (whatever its
    /// status), or `Err` with what nginx answered itself (no config, nothing live).
    async fn serving(&self) -> Result<u64, String> {
        let probe = Probe {
            authority: format!("127.0.0.1:{}", self.port),
            path: "/".into(),
            host: Some(HOST.into()),
            headers: Vec::new(),
            timeout: Duration::from_secs(2),
        };
        let answer = probe.send().await?;
        // The fake app answers "<status> from <swarm service>".
        let release = answer.body.split_once(" from fx_web-r").and_then(|(_, r)| r.parse().ok());
        release.ok_or_else(|| format!("HTTP {}: {}", answer.status, answer.body))
    }

    /// Releases of `web` and the replicas each asks for; a release whose running tasks are
    /// not that many is reported as `replicas/running`.
    fn releases(&self) -> BTreeMap<u64, String> {
        let running = self.engine.running();
        (self.engine.replicas().into_iter())
            .filter_map(|(name, replicas)| {
                let n: u64 = name.strip_prefix("fx_web-r")?.parse().ok()?;
                let run = running.get(&name).copied().unwrap_or(0) as u64;
                Some((n, if run == replicas { replicas.to_string() } else { format!("{replicas}/{run} running") }))
            })
            .collect()
    }
}

/// What a row does once its `given` releases are deployed.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Deploy this tag.
    Deploy(&'static str),
    /// Deploy this tag with `--timeout`.
    DeployWithin(&'static str, Duration),
    /// Deploy this tag while another process holds the stack's lock (`--lock-wait 5s`).
    DeployWhileLocked(&'static str),
    /// `stackctl rollback` (to the release before the live one).
    Rollback,
    /// `stackctl rollback --to N`.
    RollbackTo(u64),
}

/// How the step ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    Ok,
    Refused,
    Failed,
    Interrupted,
}

fn ends(result: &Result<Report, DeployError>) -> (Ends, i32) {
    match result {
        Ok(_) => (Ends::Ok, 0),
        Err(e @ DeployError::Refused(_)) => (Ends::Refused, e.exit_code()),
        Err(e @ DeployError::Failed { .. }) => (Ends::Failed, e.exit_code()),
        Err(e @ DeployError::Interrupted { .. }) => (Ends::Interrupted, e.exit_code()),
        Err(e @ DeployError::Spec(_)) => panic!("the test's stack file is valid: {e}"),
        Err(e @ DeployError::Unfinished(_)) => panic!("only `down` ends unfinished: {e}"),
    }
}

struct Row {
    name: &'static str,
    /// nginx replicas (each runs the config it loaded; they share the config directory).
    nginx: u64,
    /// Tags deployed one after the other (each must succeed) before the faults are armed.
    given: &'static [&'static str],
    /// Apps answering another status than 200 from the start: (image text, status).
    app: &'static [(&'static str, u16)],
    /// Faults for the step, given its cancellation flag (for injected signals).
    faults: fn(&Cancel) -> Vec<Fault>,
    when: When,
    /// How it ends, and the exit code `main` turns that into.
    ends: (Ends, i32),
    /// Texts the error message must contain.
    says: &'static [&'static str],
    /// The release users of the public host reach afterwards; `None`: nginx answers itself.
    serves: Option<u64>,
    /// Every release of `web` that exists, and its replicas (all running).
    releases: &'static [(u64, &'static str)],
    /// What the stack record says is live for `web`.
    live: Option<u64>,
    /// The newest history entry: (outcome, release it created or used up); `None`: the step
    /// wrote none.
    history: Option<(Outcome, Option<u64>)>,
}

fn none(_: &Cancel) -> Vec<Fault> {
    Vec::new()
}

const V1_LIVE: &[(u64, &str)] = &[(1, "2")];
/// v1 retained at zero (`keep: 1`), v2 live.
const V2_LIVE: &[(u64, &str)] = &[(1, "0"), (2, "2")];

fn table() -> Vec<Row> {
    vec![
        Row {
            name: "first release",
            nginx: 1,
            given: &[],
            app: &[],
            faults: none,
            when: When::Deploy("v1"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Deployed, Some(1))),
        },
        Row {
            // Nothing to go back to: users get nginx's 502 before and after.
            name: "first release fails its gate",
            nginx: 1,
            given: &[],
            app: &[("demo:v1", 500)],
            faults: none,
            when: When::Deploy("v1"),
            ends: (Ends::Failed, 1),
            says: &["failed while probing green through nginx", "status 500"],
            serves: None,
            releases: &[],
            live: None,
            history: Some((Outcome::Failed, Some(1))),
        },
        Row {
            name: "success: v1 then v2",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: none,
            when: When::Deploy("v2"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(2),
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Deployed, Some(2))),
        },
        Row {
            name: "nothing changed",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: none,
            when: When::Deploy("v1"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            // Not recorded: the newest entry is still v1's.
            history: Some((Outcome::Deployed, Some(1))),
        },
        Row {
            name: "create green fails",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::CreateService, Action::Fail).on("fx_web-r2")],
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 1),
            says: &["failed while creating green", "injected failure of CreateService", "The live release is intact"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            name: "green never healthy (starting)",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: none,
            when: When::DeployWithin("starting", Duration::from_millis(700)),
            ends: (Ends::Failed, 1),
            says: &["failed while waiting for green to become healthy", "0 of 2 tasks of fx_web-r2 running"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            name: "green crash loop (broken)",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: none,
            when: When::Deploy("broken"),
            ends: (Ends::Failed, 1),
            says: &["failed while waiting for green to become healthy", "keep failing", "non-zero exit (1)"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            name: "preview probe fails",
            nginx: 1,
            given: &["v1"],
            app: &[("demo:v2", 503)],
            faults: none,
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 1),
            says: &["failed while probing green through nginx", "status 503 (wanted 200)"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            // nginx gets the stack's routes on the first deploy (the only reload a deploy makes
            // while the routes stay as they are).
            name: "nginx -t rejects the first config",
            nginx: 1,
            given: &[],
            app: &[],
            faults: |_| vec![Fault::new(Op::NginxTest, Action::Fail)],
            when: When::Deploy("v1"),
            ends: (Ends::Failed, 1),
            says: &["failed while probing green through nginx", "nginx rejected the new config"],
            serves: None,
            releases: &[],
            live: None,
            history: Some((Outcome::Failed, Some(1))),
        },
        Row {
            name: "reload of the first config fails",
            nginx: 1,
            given: &[],
            app: &[],
            faults: |_| vec![Fault::new(Op::NginxReload, Action::Fail)],
            when: When::Deploy("v1"),
            ends: (Ends::Failed, 1),
            says: &["failed while probing green through nginx", "nginx failed to reload"],
            serves: None,
            releases: &[],
            live: None,
            history: Some((Outcome::Failed, Some(1))),
        },
        Row {
            name: "success with two nginx replicas",
            nginx: 2,
            given: &["v1"],
            app: &[],
            faults: none,
            when: When::Deploy("v2"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(2),
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Deployed, Some(2))),
        },
        Row {
            // The replicas share the config volume (as on one node): the file is uploaded once,
            // and when that fails both stay on blue. (r2 is green: its switch creates the file.)
            name: "switch file cannot be written, two nginx replicas",
            nginx: 2,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::PutFile, Action::Fail).on("live-green-")],
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 1),
            says: &["failed while switching nginx to green", "injected failure of PutFile", "The live release is intact"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::SwitchedBack, Some(2))),
        },
        Row {
            // The switch is the creation (or removal) of a file that every nginx worker checks
            // per request.
            name: "switch file cannot be written",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::PutFile, Action::Fail).on("live-green-")],
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 1),
            says: &["failed while switching nginx to green", "injected failure of PutFile", "The live release is intact"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::SwitchedBack, Some(2))),
        },
        Row {
            // r3 is blue: its switch removes the file.
            name: "switch file cannot be removed",
            nginx: 1,
            given: &["v1", "v2"],
            app: &[],
            faults: |_| vec![Fault::new(Op::RemoveFiles, Action::Fail)],
            when: When::Deploy("v3"),
            ends: (Ends::Failed, 1),
            says: &["failed while switching nginx to green", "injected failure of RemoveFiles", "The live release is intact"],
            serves: Some(2),
            releases: V2_LIVE,
            live: Some(2),
            history: Some((Outcome::SwitchedBack, Some(3))),
        },
        Row {
            // The config names colours, not releases: a deploy with the same routes reloads
            // nothing, so an nginx that cannot reload does not matter to it.
            name: "an ordinary deploy reloads nothing",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::NginxReload, Action::Fail).onwards(), Fault::new(Op::NginxTest, Action::Fail).onwards()],
            when: When::Deploy("v2"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(2),
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Deployed, Some(2))),
        },
        Row {
            name: "abort cannot remove green",
            nginx: 1,
            given: &["v1"],
            app: &[("demo:v2", 503)],
            faults: |_| vec![Fault::new(Op::RemoveService, Action::Fail).on("fx_web-r2")],
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 1),
            says: &["failed while probing green through nginx", "The live release is intact"],
            serves: Some(1),
            // Left running for the next deploy's plan to remove; users never reach it.
            releases: &[(1, "2"), (2, "2")],
            live: Some(1),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            name: "record write fails after the switch",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::RecordLive, Action::Fail)],
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 3),
            says: &["failed while recording the new live release", "nginx already routes to the new release", "may NOT be serving"],
            // Users are on green; blue still runs; the record names blue until a deploy catches up.
            serves: Some(2),
            releases: &[(1, "2"), (2, "2")],
            live: Some(1),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            name: "green fails in the watch window: switch back",
            nginx: 1,
            given: &["v1"],
            app: &[],
            // Green turns bad once it is recorded live, i.e. right after the switch.
            faults: |_| vec![Fault::new(Op::RecordLive, Action::AppStatus("demo:v2".into(), 500))],
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 1),
            says: &["failed while watching green after the switch", "status 500", "traffic is back on r1", "The live release is intact"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::SwitchedBack, Some(2))),
        },
        Row {
            name: "green fails in the watch window, the switch back fails too",
            nginx: 1,
            given: &["v1"],
            app: &[],
            // r2 is green: its switch creates the file, the switch back removes it.
            faults: |_| {
                vec![
                    Fault::new(Op::RecordLive, Action::AppStatus("demo:v2".into(), 500)),
                    Fault::new(Op::RemoveFiles, Action::Fail),
                ]
            },
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 3),
            says: &["failed while watching green after the switch", "switching back to r1 failed", "may NOT be serving"],
            // Users stay on the failing green; the record names it; blue still runs to go back to.
            serves: Some(2),
            releases: &[(1, "2"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            // Retiring is best effort: a warning, and the next deploy retires it.
            name: "blue cannot be scaled down",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::UpdateService, Action::Fail).on("fx_web-r1")],
            when: When::Deploy("v2"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(2),
            releases: &[(1, "2"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Deployed, Some(2))),
        },
        Row {
            name: "green fails in the watch window, the record keeps naming it",
            nginx: 1,
            given: &["v1"],
            app: &[],
            // The first live write records green (and breaks it), the second would record blue.
            faults: |_| {
                vec![
                    Fault::new(Op::RecordLive, Action::AppStatus("demo:v2".into(), 500)),
                    Fault::new(Op::RecordLive, Action::Fail).nth(2),
                ]
            },
            when: When::Deploy("v2"),
            ends: (Ends::Failed, 3),
            says: &["traffic is back on r1 but the stack record still names the new release", "deploy again"],
            serves: Some(1),
            // Green is kept while the record names it.
            releases: &[(1, "2"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            name: "history cannot be written",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::CreateConfig, Action::Fail).on("stackctl-history")],
            when: When::Deploy("v2"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(2),
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            // A warning, never a failed deploy: the newest entry is still v1's.
            history: Some((Outcome::Deployed, Some(1))),
        },
        Row {
            // From the switch on a signal no longer stops the deploy: it finishes.
            name: "SIGTERM after the switch",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |c| vec![Fault::new(Op::RecordLive, Action::Signal(c.clone()))],
            when: When::Deploy("v2"),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(2),
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Deployed, Some(2))),
        },
        Row {
            name: "SIGTERM while waiting for the lock",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |c| vec![Fault::new(Op::ReadConfig, Action::Signal(c.clone())).on("stackctl-record")],
            when: When::DeployWhileLocked("v2"),
            ends: (Ends::Interrupted, 1),
            says: &["interrupted by SIGTERM while waiting for the deploy lock", "nothing was changed"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            // History is written under the lock: nothing new.
            history: Some((Outcome::Deployed, Some(1))),
        },
        Row {
            name: "SIGTERM while applying services (first deploy)",
            nginx: 1,
            given: &[],
            app: &[],
            faults: |c| vec![Fault::new(Op::CreateService, Action::Signal(c.clone())).on("fx_proxy")],
            when: When::Deploy("v1"),
            ends: (Ends::Interrupted, 1),
            says: &["interrupted by SIGTERM while applying services", "no new release was started"],
            serves: None,
            releases: &[],
            live: None,
            history: Some((Outcome::Interrupted, None)),
        },
        Row {
            name: "SIGTERM while resolving images",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |c| vec![Fault::new(Op::ResolveImage, Action::Signal(c.clone())).on("demo:v2")],
            when: When::Deploy("v2"),
            ends: (Ends::Interrupted, 1),
            says: &["interrupted by SIGTERM while resolving images", "no new release was started"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Interrupted, None)),
        },
        Row {
            name: "SIGTERM while creating green",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |c| vec![Fault::new(Op::CreateService, Action::Signal(c.clone())).on("fx_web-r2")],
            when: When::Deploy("v2"),
            ends: (Ends::Interrupted, 1),
            says: &["interrupted by SIGTERM while creating green", "the new release was removed"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Interrupted, Some(2))),
        },
        Row {
            // A look at green's tasks that never returns, cut short by the signal.
            name: "SIGTERM while waiting for green (hung)",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |c| vec![Fault::new(Op::Tasks, Action::SignalAndHang(c.clone())).on("fx_web-r2")],
            when: When::Deploy("v2"),
            ends: (Ends::Interrupted, 1),
            says: &["interrupted by SIGTERM while waiting for green to become healthy", "the new release was removed"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Interrupted, Some(2))),
        },
        Row {
            name: "SIGTERM while probing green",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |c| vec![Fault::new(Op::PreviewRequest, Action::Signal(c.clone()))],
            when: When::Deploy("v2"),
            ends: (Ends::Interrupted, 1),
            says: &["interrupted by SIGTERM while probing green through nginx", "the new release was removed"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Interrupted, Some(2))),
        },
        Row {
            name: "preview hangs, --timeout ends it",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: |_| vec![Fault::new(Op::PreviewRequest, Action::Hang).onwards()],
            when: When::DeployWithin("v2", Duration::from_millis(500)),
            ends: (Ends::Failed, 1),
            says: &["failed while probing green through nginx", "no answer within 1s"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            history: Some((Outcome::Failed, Some(2))),
        },
        Row {
            name: "rollback to the previous release",
            nginx: 1,
            given: &["v1", "v2"],
            app: &[],
            faults: none,
            when: When::Rollback,
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(1),
            // The release it left is retained at zero, ready to go forward again.
            releases: &[(1, "2"), (2, "0")],
            live: Some(1),
            history: Some((Outcome::Deployed, None)),
        },
        Row {
            name: "SIGTERM during a rollback's health wait",
            nginx: 1,
            given: &["v1", "v2"],
            app: &[],
            faults: |c| vec![Fault::new(Op::Tasks, Action::SignalAndHang(c.clone())).on("fx_web-r1")],
            when: When::Rollback,
            ends: (Ends::Interrupted, 1),
            says: &["interrupted by SIGTERM while waiting for green to become healthy", "the earlier release is back as it was"],
            serves: Some(2),
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Interrupted, None)),
        },
        Row {
            name: "rollback target fails in the watch window",
            nginx: 1,
            given: &["v1", "v2"],
            app: &[],
            faults: |_| vec![Fault::new(Op::RecordLive, Action::AppStatus("demo:v1".into(), 500))],
            when: When::Rollback,
            ends: (Ends::Failed, 1),
            says: &["failed while watching green after the switch", "traffic is back on r2"],
            serves: Some(2),
            // The release rolled back to is retained again, not removed.
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::SwitchedBack, None)),
        },
        Row {
            // keep: 1 removed r1 when r3 went live: it comes back from the spec history kept.
            name: "rollback to a release no longer kept",
            nginx: 1,
            given: &["v1", "v2", "v1"],
            app: &[],
            faults: none,
            when: When::RollbackTo(1),
            ends: (Ends::Ok, 0),
            says: &[],
            serves: Some(1),
            releases: &[(1, "2"), (2, "0"), (3, "0")],
            live: Some(1),
            history: Some((Outcome::Deployed, None)),
        },
        Row {
            name: "rollback with nothing older",
            nginx: 1,
            given: &["v1"],
            app: &[],
            faults: none,
            when: When::Rollback,
            ends: (Ends::Refused, 1),
            says: &["no release older than its live r1"],
            serves: Some(1),
            releases: V1_LIVE,
            live: Some(1),
            // Refused once it held the lock: recorded as a failed attempt (README, history).
            history: Some((Outcome::Failed, None)),
        },
        Row {
            name: "rollback whose release fails the gate",
            nginx: 1,
            given: &["v1", "v2"],
            app: &[("demo:v1", 500)],
            faults: none,
            when: When::Rollback,
            ends: (Ends::Failed, 1),
            says: &["failed while probing green through nginx", "status 500", "The live release is intact"],
            serves: Some(2),
            // The retained release goes back to zero, never removed.
            releases: &[(1, "0"), (2, "2")],
            live: Some(2),
            history: Some((Outcome::Failed, None)),
        },
    ]
}

/// The ways a row's end state differs from what it says.
#[derive(Default)]
struct Wrong(Vec<String>);

impl Wrong {
    /// Compared as their `Debug` text, which is also what a mismatch shows.
    fn eq(&mut self, what: &str, got: impl std::fmt::Debug, want: impl std::fmt::Debug) {
        let (got, want) = (format!("{got:?}"), format!("{want:?}"));
        if got != want {
            self.0.push(format!("{what}: got {got}, want {want}"));
        }
    }
}

/// Run one row; every way its end state differs from the row's.
async fn run(row: &Row) -> Vec<String> {
    let w = World::new(row.nginx).await;
    let mut wrong = Wrong::default();
    for tag in row.given {
        if let Err(e) = w.deploy(tag, &Options::default()).await {
            return vec![format!("setting up: the deploy of {tag} failed: {e}")];
        }
    }
    for (image, status) in row.app {
        w.engine.set_app_status(image, *status);
    }
    // Another process's deploy, holding the lock before the faults are armed.
    let other = match row.when {
        When::DeployWhileLocked(_) => Some(record::acquire(&w.engine, STACK, "deploy", Duration::ZERO).await.expect("the other lock")),
        _ => None,
    };
    let cancel = Cancel::new();
    w.engine.arm((row.faults)(&cancel));
    let mut opts = Options { cancel, ..Options::default() };
    let result = match row.when {
        When::Deploy(tag) => w.deploy(tag, &opts).await,
        When::DeployWithin(tag, timeout) => {
            opts.timeout = Some(timeout);
            w.deploy(tag, &opts).await
        }
        When::DeployWhileLocked(tag) => {
            opts.lock_wait = Duration::from_secs(5);
            w.deploy(tag, &opts).await
        }
        When::Rollback => w.rollback(None, &opts).await,
        When::RollbackTo(n) => w.rollback(Some(n), &opts).await,
    };
    w.engine.arm(Vec::new());
    if let Some(other) = other {
        other.release().await.expect("the other process gives its lock back");
    }

    wrong.eq("end", ends(&result), row.ends);
    let message = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
    for text in row.says {
        if !message.contains(text) {
            wrong.0.push(format!("the error does not say {text:?}: {message:?}"));
        }
    }
    if let Ok(report) = &result {
        // The report's switch agrees with where the row started (each given deploy made one
        // release) and where it ended.
        let switched: Vec<(Option<u64>, u64)> = report.switched.iter().map(|s| (s.from, s.to)).collect();
        let before = (!row.given.is_empty()).then_some(row.given.len() as u64);
        let want: Vec<(Option<u64>, u64)> = row.live.filter(|l| Some(*l) != before).map(|l| (before, l)).into_iter().collect();
        wrong.eq("report.switched", switched, want);
    }

    wrong.eq("nginx serves", w.serving().await.ok(), row.serves);
    if let Err(n) = w.engine.loaded_config() {
        wrong.0.push(format!("the nginx replicas run {n} different configs"));
    }
    wrong.eq("nginx tasks running", w.engine.running().get("fx_proxy").copied(), Some(row.nginx as usize));
    if result.is_ok() {
        // The config, and the file that says users are on green: nothing else (an older
        // stackctl's switch files never outlive a deploy).
        let mut want = vec!["/etc/nginx/stackctl/live.conf".to_string()];
        if w.engine.files().iter().any(|f| f.ends_with("/live-green-web")) {
            want.insert(0, "/etc/nginx/stackctl/live-green-web".into());
        }
        wrong.eq("files in nginx's config directory", w.engine.files(), want);
    }
    let want: BTreeMap<u64, String> = row.releases.iter().map(|(n, r)| (*n, r.to_string())).collect();
    wrong.eq("releases", w.releases(), want);

    let record = record::read(&w.engine, STACK).await.expect("the record reads").map(|(_, r)| r).unwrap_or_default();
    wrong.eq("record live", record.live.get("web"), row.live.as_ref());
    wrong.eq("record lock", record.lock.map(|l| l.command), None::<String>);

    let (entries, unreadable) = history::read(&w.engine, STACK).await.expect("the history reads");
    wrong.eq("unreadable history", unreadable, Vec::<String>::new());
    wrong.eq("newest history entry", entries.first().map(|e| (e.outcome, e.release)), row.history);
    // Each given deploy wrote one entry; one more is this step's.
    if let Some(entry) = entries.first().filter(|_| entries.len() > row.given.len()) {
        let verb = if matches!(row.when, When::Rollback | When::RollbackTo(_)) { history::Verb::Rollback } else { history::Verb::Deploy };
        wrong.eq("history verb", entry.verb, verb);
        wrong.eq("history exit code", entry.exit_code, row.ends.1);
    }
    wrong.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_leaves_a_known_end_state() {
    let started = Instant::now();
    let rows = table();
    let runs: Vec<_> = rows
        .into_iter()
        .map(|row| {
            tokio::spawn(async move {
                let t = Instant::now();
                let wrong = run(&row).await;
                (row.name, t.elapsed(), wrong)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for handle in runs {
        let (name, took, wrong) = handle.await.expect("a row panicked");
        eprintln!("{took:>8.2?}  {name}");
        for w in &wrong {
            failures.push(format!("{name}: {w}"));
        }
    }
    eprintln!("{:>8.2?}  all rows", started.elapsed());
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Two end states above are left for the next deploy to repair, and it does: users on a
/// release the record does not name (the record write failed after the switch) are caught up
/// with, and a green an abort could not remove is adopted rather than created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_deploy_repairs_what_a_failed_one_left() {
    let caught_up = async {
        let w = World::new(1).await;
        w.deploy("v1", &Options::default()).await.expect("v1");
        w.engine.arm(vec![Fault::new(Op::RecordLive, Action::Fail)]);
        let e = w.deploy("v2", &Options::default()).await.expect_err("the record write fails");
        assert_eq!(e.exit_code(), 3, "{e}");
        w.engine.arm(Vec::new());
        let report = w.deploy("v2", &Options::default()).await.expect("the next deploy");
        assert!(report.changes.iter().any(|c| c.contains("recorded web=r2 as live")), "{:?}", report.changes);
        let record = record::read(&w.engine, STACK).await.unwrap().unwrap().1;
        assert_eq!((w.serving().await, record.live.get("web")), (Ok(2), Some(&2)));
        let want: BTreeMap<u64, String> = BTreeMap::from([(1, "0".into()), (2, "2".into())]);
        assert_eq!(w.releases(), want, "blue retired once the caught-up release passed its watch");
    };
    let adopted = async {
        let w = World::new(1).await;
        w.deploy("v1", &Options::default()).await.expect("v1");
        w.engine.set_app_status("demo:v2", 503);
        w.engine.arm(vec![Fault::new(Op::RemoveService, Action::Fail).on("fx_web-r2")]);
        w.deploy("v2", &Options::default()).await.expect_err("the preview probes fail");
        w.engine.arm(Vec::new());
        w.engine.set_app_status("demo:v2", 200);
        let report = w.deploy("v2", &Options::default()).await.expect("the next deploy");
        let switched: Vec<(Option<u64>, u64)> = report.switched.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(switched, vec![(Some(1), 2)], "r2 adopted, no r3");
        assert_eq!(w.serving().await, Ok(2));
        let want: BTreeMap<u64, String> = BTreeMap::from([(1, "0".into()), (2, "2".into())]);
        assert_eq!(w.releases(), want);
    };
    // A switch back whose record write failed leaves users on r1 and the record on r2 (the
    // release that failed its watch): the next deploy keeps users on r1, records it, and keeps
    // r2 at zero; the same file again is gated afresh as r3.
    let sent_back = async {
        let w = World::new(1).await;
        w.deploy("v1", &Options::default()).await.expect("v1");
        w.engine.arm(vec![
            Fault::new(Op::RecordLive, Action::AppStatus("demo:v2".into(), 500)),
            Fault::new(Op::RecordLive, Action::Fail).nth(2),
        ]);
        let e = w.deploy("v2", &Options::default()).await.expect_err("green fails its watch");
        assert_eq!(e.exit_code(), 3, "{e}");
        w.engine.arm(Vec::new());
        let e = w.deploy("v2", &Options::default()).await.expect_err("r3 (v2 again) fails its gate, still answering 500");
        assert_eq!(e.exit_code(), 1, "{e}");
        let record = record::read(&w.engine, STACK).await.unwrap().unwrap().1;
        assert_eq!((w.serving().await, record.live.get("web")), (Ok(1), Some(&1)), "users never sent to the failed r2");
        let want: BTreeMap<u64, String> = BTreeMap::from([(1, "2".into()), (2, "0".into())]);
        assert_eq!(w.releases(), want, "r2 kept at zero, r3 removed");
        w.engine.set_app_status("demo:v2", 200);
        let report = w.deploy("v2", &Options::default()).await.expect("v2 once it is fixed");
        let switched: Vec<(Option<u64>, u64)> = report.switched.iter().map(|s| (s.from, s.to)).collect();
        // r2 has the wanted spec and is kept: adopted (scaled up, gated), as after a rollback.
        assert_eq!(switched, vec![(Some(1), 2)]);
        assert_eq!(w.serving().await, Ok(2));
    };
    tokio::join!(caught_up, adopted, sent_back);
}

/// `rollback_window`: the release a deploy switches from stays up as a standby, a rollback
/// within the window flips back to it without a health wait or a reload before users are
/// back, and a standby that does not answer makes the rollback go the whole way (and fail its
/// gate here, users staying where they are).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_a_standby_is_a_flip_and_a_dead_standby_is_not_trusted() {
    let with_window = |w: &World, tag: &str| {
        let text = stack_file(w.port, w.nginx, tag).replace("        watch: 400ms\n", "        watch: 400ms\n        rollback_window: 60s\n");
        spec::load_str(Path::new("fx.yml"), &text, &LoadOptions::default()).expect("valid").stack
    };
    let standby_label = |w: &World, name: &str| {
        let labels = futures_util::FutureExt::now_or_never(stackctl::engine::Engine::service(&w.engine, name));
        labels.and_then(|r| r.ok().flatten()).and_then(|i| i.labels.get(stackctl::release::STANDBY_UNTIL).cloned())
    };
    let flip = async {
        let w = World::new(2).await;
        let opts = Options::default();
        deploy::deploy(&w.engine, &with_window(&w, "v1"), &opts, &Events::silent()).await.expect("v1");
        deploy::deploy(&w.engine, &with_window(&w, "v2"), &opts, &Events::silent()).await.expect("v2");
        assert_eq!(w.releases(), BTreeMap::from([(1, "2".to_string()), (2, "2".to_string())]), "r1 stays up");
        assert!(standby_label(&w, "fx_web-r1").is_some());
        let report = deploy::rollback(&w.engine, &with_window(&w, "v2"), &opts, None, None, &Events::silent()).await.expect("rollback");
        let phases: Vec<&str> = report.phases.iter().map(|p| p.phase.as_str()).collect();
        assert!(phases.contains(&"flip back") && !phases.contains(&"wait healthy") && !phases.contains(&"preview"), "{phases:?}");
        assert_eq!(w.serving().await, Ok(1));
        let record = record::read(&w.engine, STACK).await.unwrap().unwrap().1;
        assert_eq!(record.live.get("web"), Some(&1));
        assert_eq!(w.releases(), BTreeMap::from([(1, "2".to_string()), (2, "0".to_string())]), "the release left is kept at zero");
        assert_eq!(standby_label(&w, "fx_web-r1"), None, "live again: no longer a standby");
        // A deploy forward again makes r1 the standby of r3; the older r2 stays at zero.
        deploy::deploy(&w.engine, &with_window(&w, "v3"), &opts, &Events::silent()).await.expect("v3");
        assert_eq!(w.serving().await, Ok(3));
        assert_eq!(w.releases(), BTreeMap::from([(1, "2".to_string()), (3, "2".to_string())]), "r2 beyond keep=1 removed");
    };
    let dead = async {
        let w = World::new(1).await;
        let opts = Options::default();
        deploy::deploy(&w.engine, &with_window(&w, "v1"), &opts, &Events::silent()).await.expect("v1");
        deploy::deploy(&w.engine, &with_window(&w, "v2"), &opts, &Events::silent()).await.expect("v2");
        w.engine.set_app_status("demo:v1", 500);
        let e = deploy::rollback(&w.engine, &with_window(&w, "v2"), &opts, None, None, &Events::silent()).await.expect_err("r1 fails its gate");
        assert_eq!(e.exit_code(), 1, "{e}");
        assert_eq!(w.serving().await, Ok(2), "users stay on the live release");
        let record = record::read(&w.engine, STACK).await.unwrap().unwrap().1;
        assert_eq!(record.live.get("web"), Some(&2));
    };
    tokio::join!(flip, dead);
}

/// Issue 14: a deploy's engine calls grow only with the objects it creates or changes. A v1 →
/// v2 deploy of 6 routed services against one of 1: one green created and one blue scaled
/// down per service, and otherwise the same reads and writes of nginx and the same lookups
/// (switch files in one upload per nginx replica, one listing of the stack's services where
/// each service used to be inspected, one read of nginx's connections for every drained
/// release). The task listings of the health wait are left out: their number follows the
/// clock, not the stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_calls_grow_only_with_the_services_a_deploy_changes() {
    use stackctl::engine::counting::{Calls, Counting};
    async fn v1_to_v2(services: usize) -> Calls {
        let fake = FakeEngine::new();
        let port = fake.serve_nginx().await.expect("a loopback port for the fake nginx");
        let engine = Counting::new(fake);
        let stack = |tag: &str| {
            let mut text = stack_file(port, 1, tag);
            let web = text.split_off(text.find("  web:\n").expect("the web service"));
            for i in 1..=services {
                text.push_str(&web.replace("  web:\n", &format!("  web{i}:\n")).replace(HOST, &format!("w{i}.example")).replace("watch: 400ms", "watch: 0s"));
            }
            spec::load_str(Path::new("fx.yml"), &text, &LoadOptions::default()).expect("valid").stack
        };
        let opts = Options::default();
        deploy::deploy(&engine, &stack("v1"), &opts, &Events::silent()).await.expect("v1");
        engine.take();
        let report = deploy::deploy(&engine, &stack("v2"), &opts, &Events::silent()).await.expect("v2");
        assert_eq!(report.switched.len(), services, "{:?}", report.switched);
        engine.take()
    }
    let (one, six) = tokio::join!(v1_to_v2(1), v1_to_v2(6));
    assert_eq!((one.of("create_service"), six.of("create_service")), (1, 6), "one green per service: {one} / {six}");
    assert_eq!((one.of("update_service"), six.of("update_service")), (1, 6), "one blue scaled down per service: {one} / {six}");
    for op in ["put_files", "get_dir", "get_file", "exec", "network_addresses", "service", "services", "tasks"] {
        assert_eq!(one.of(op), six.of(op), "{op}: 1 service: {one}\n6 services: {six}");
    }
    assert!(six.of("put_files") >= 1, "the switch files went in: {six}");
}

/// The stack file with `web` at `replicas` tasks keeping `keep` old releases.
fn sized(port: u16, tag: &str, replicas: u64, keep: u32) -> Stack {
    let text = stack_file(port, 1, tag).replace("keep: 1", &format!("keep: {keep}")).replace("deploy: { replicas: 2 }", &format!("deploy: {{ replicas: {replicas} }}"));
    spec::load_str(Path::new("fx.yml"), &text, &LoadOptions::default()).expect("valid").stack
}

#[tokio::test]
async fn a_no_op_reconcile_costs_the_same_engine_calls_whatever_the_tasks_or_retained_releases() {
    use stackctl::engine::counting::{Calls, Counting};
    use stackctl::reconcile::{self, Status, Target};
    /// Deploy `releases` releases of `web` at `replicas` tasks, then count one reconcile (with
    /// the file, and without as `--all` runs it).
    async fn count(replicas: u64, releases: u32) -> (Calls, Calls) {
        let fake = FakeEngine::new();
        let port = fake.serve_nginx().await.expect("a loopback port for the fake nginx");
        let engine = Counting::new(fake);
        for r in 1..=releases {
            let stack = sized(port, &format!("v{r}"), replicas, releases);
            deploy::deploy(&engine, &stack, &Options::default(), &Events::silent()).await.expect("deploy");
        }
        engine.take();
        let bare = Target { stack: STACK.into(), file: None };
        let report = reconcile::reconcile(&engine, &bare, false, &Events::silent()).await;
        assert_eq!(report.status, Status::InSync, "{report:?}");
        let all = engine.take();
        let file = Target { stack: STACK.into(), file: Some(sized(port, &format!("v{releases}"), replicas, releases)) };
        let report = reconcile::reconcile(&engine, &file, false, &Events::silent()).await;
        assert_eq!((report.status, report.pending.len()), (Status::InSync, 0), "{report:?}");
        (all, engine.take())
    }
    let ((one, one_file), (six_tasks, six_file), (five_kept, five_file)) = tokio::join!(count(1, 2), count(6, 2), count(1, 6));
    println!("no-op reconcile: --all form {one}; with the file {one_file}");
    assert_eq!(one, six_tasks, "1 task: {one}\n6 tasks: {six_tasks}");
    assert_eq!(one, five_kept, "1 retained release: {one}\n5 retained: {five_kept}");
    assert_eq!(one_file.total(), six_file.total(), "with the file, 1 task: {one_file}\n6 tasks: {six_file}");
    assert_eq!(one_file.total(), five_file.total(), "with the file, 1 retained: {one_file}\n5 retained: {five_file}");
    assert_eq!(one.of("update_config_labels") + one.of("create_service") + one.of("update_service"), 0, "a no-op writes nothing and takes no lock: {one}");
}

#[tokio::test]
async fn reconcile_puts_back_a_live_release_scaled_by_hand_records_it_and_is_then_in_sync() {
    use stackctl::engine::Engine as _;
    use stackctl::reconcile::{self, Status, Target};
    let w = World::new(1).await;
    w.deploy("v1", &Options::default()).await.expect("v1");
    let live = w.engine.service("fx_web-r1").await.unwrap().expect("live release");
    let mut scaled = live.spec.clone();
    scaled.mode.as_mut().unwrap().replicated.as_mut().unwrap().replicas = Some(5);
    w.engine.update_service(&live.id, live.version, scaled).await.unwrap();

    let target = Target { stack: STACK.into(), file: None };
    let dry = reconcile::reconcile(&w.engine, &target, true, &Events::silent()).await;
    assert_eq!((dry.status, dry.findings[0].result.as_str()), (Status::WouldRepair, "would"), "{dry:?}");
    assert_eq!(w.releases(), BTreeMap::from([(1, "5".to_string())]), "a dry run changes nothing");

    let done = reconcile::reconcile(&w.engine, &target, false, &Events::silent()).await;
    assert_eq!(done.status, Status::Repaired, "{done:?}");
    assert_eq!(done.findings[0].finding.drift, "replicas 5 (recorded 2)");
    assert_eq!(w.releases(), BTreeMap::from([(1, "2".to_string())]));
    let (entries, _) = history::read(&w.engine, STACK).await.unwrap();
    assert_eq!((entries[0].verb, entries[0].outcome, entries[0].who.user.as_str()), (history::Verb::Reconcile, Outcome::Repaired, "reconcile"));
    assert_eq!(Some(entries[0].number), done.history_entry);
    assert!(record::read(&w.engine, STACK).await.unwrap().unwrap().1.lock.is_none(), "the lock was given back");
    let again = reconcile::reconcile(&w.engine, &target, false, &Events::silent()).await;
    assert_eq!((again.status, again.findings.len()), (Status::InSync, 0), "{again:?}");
}
