//! `stackctl gate` end to end: the real binary against the real engine, nginx and registry of
//! `tests/rig/setup.sh`. One release of the demo app is judged under several `x-stackctl.gate`
//! blocks (the gate only reads, and the block changes no release): not soaked, too few
//! requests, healthy, a failed smoke check, 5xx answers from users, and a stack that is not
//! there to check. The 5xx come from the app itself: busybox httpd answers `DELETE /` with 501.
//!
//! `#[ignore]`d like tests/e2e.rs; run with `--include-ignored` under the engine lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::{serial, stderr, stdout, TestStack};
use stackctl::health::Probe;

/// The stack file for v1 with `gate` as its `x-stackctl.gate` block (YAML, indented by 4).
fn with_gate(s: &TestStack, variant: &str, gate: &str) -> PathBuf {
    s.file_with("v1", variant, |yaml| yaml.replace("  keep: 1\n", &format!("  keep: 1\n  gate:\n{gate}")))
}

/// `stackctl gate FILE --output json` and more: its exit code and JSON report.
fn gate(s: &TestStack, file: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut args = vec!["gate", file.to_str().unwrap(), "--output", "json"];
    args.extend_from_slice(extra);
    let out = s.stackctl(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("gate JSON: {e}\n{}\n{}", stdout(&out), stderr(&out)));
    (out.status.code(), json)
}

/// The text output too, for the README and the report.
fn gate_text(s: &TestStack, file: &Path) -> (Option<i32>, String) {
    let out = s.stackctl(&["gate", file.to_str().unwrap()]);
    (out.status.code(), stdout(&out))
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name} in {report}"))
}

/// `n` requests with `method` to `/` through nginx, as a user sends them (no stackctl header).
fn send(port: u16, method: &str, n: usize) -> Vec<u16> {
    let probe = Probe { authority: format!("127.0.0.1:{port}"), path: "/".into(), host: None, headers: vec![], timeout: Duration::from_secs(5) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
    (0..n).map(|_| rt.block_on(probe.send_as(method.clone(), 0)).expect("an answer through nginx").0.status).collect()
}

/// The JUnit file as a CI server reads it: well-formed XML, one `testcase` per check with a
/// `failure` for each that held, and counts that agree.
fn junit_cases(path: &Path) -> Vec<(String, Option<String>)> {
    use quick_xml::events::Event;
    let xml = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    let (mut tests, mut failures) = (None, None);
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("not well-formed XML ({e}):\n{xml}")) {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| e.try_get_attribute(name).unwrap().map(|a| a.unescape_value().unwrap().into_owned());
                match e.name().as_ref() {
                    b"testsuite" => (tests, failures) = (attr("tests"), attr("failures")),
                    b"testcase" => cases.push((attr("name").expect("testcase name"), None)),
                    b"failure" => cases.last_mut().expect("failure inside a testcase").1 = attr("type"),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(tests, Some(cases.len().to_string()), "{xml}");
    assert_eq!(failures, Some(cases.iter().filter(|c| c.1.is_some()).count().to_string()), "{xml}");
    cases
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn gate_passes_a_healthy_release_and_holds_one_that_is_unsoaked_unproven_unsmoky_or_failing_users() {
    let _g = serial();
    let s = TestStack::new("gate1", 19050);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));

    // Just deployed, soak 1h: held by the soak, and the deploy's own probes (hundreds of them
    // through this nginx) are not users' requests.
    let unsoaked = with_gate(&s, "unsoaked", "    soak: 1h\n    min_requests: 0\n");
    let (code, report) = gate(&s, &unsoaked, &[]);
    assert_eq!((code, report["verdict"].as_str()), (Some(1), Some("held")), "{report}");
    let soak = check(&report, "soak web");
    assert_eq!(soak["status"], "fail", "{report}");
    assert!(soak["reason"].as_str().unwrap().contains("less than the soak time 1h"), "{soak}");
    assert_eq!(check(&report, "tasks web")["status"], "pass", "{report}");
    assert!(check(&report, "5xx web")["figure"].as_str().unwrap().contains("(0 of 0 requests"), "{report}");
    let (_, text) = gate_text(&s, &unsoaked);
    eprintln!("--- not soaked\n{text}");

    // No user yet: too few requests to judge, which holds (exit 1) without a failed check.
    let proven = "    window: 10m\n    min_requests: 30\n    max_5xx: 5%\n    p99: 2s\n";
    let smoke_v1 = format!("{proven}    smoke:\n      - {{ path: /, body: \"^v1\" }}\n      - {{ path: /healthz, status: 200 }}\n");
    let healthy = with_gate(&s, "healthy", &smoke_v1);
    let (code, report) = gate(&s, &healthy, &[]);
    assert_eq!((code, report["verdict"].as_str()), (Some(1), Some("inconclusive")), "{report}");
    let five = check(&report, "5xx web");
    assert_eq!(five["status"], "inconclusive");
    assert!(five["reason"].as_str().unwrap().contains("fewer than min_requests 30"), "{five}");
    let (_, text) = gate_text(&s, &healthy);
    eprintln!("--- too few requests\n{text}");

    // 40 users' requests, all fine: passes, and says so in JUnit and in the history.
    assert!(send(s.port, "GET", 40).iter().all(|&st| st == 200));
    let junit = s.dir.join("gate.xml");
    let (code, report) = gate(&s, &healthy, &["--junit", junit.to_str().unwrap()]);
    assert_eq!((code, report["verdict"].as_str()), (Some(0), Some("passed")), "{report}");
    assert!(check(&report, "5xx web")["figure"].as_str().unwrap().starts_with("0.00% (0 of 40 requests"), "{report}");
    assert_eq!(check(&report, "smoke GET /")["status"], "pass");
    assert_eq!(report["live"]["web"], 1);
    let cases = junit_cases(&junit);
    let names: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["tasks web", "smoke GET /", "smoke GET /healthz", "soak web", "5xx web", "p99 web"]);
    assert!(cases.iter().all(|c| c.1.is_none()), "{cases:?}");
    let (_, text) = gate_text(&s, &healthy);
    eprintln!("--- a passing gate\n{text}");
    let history = s.stackctl(&["history", healthy.to_str().unwrap(), "--output", "json"]);
    let entries: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let newest = &entries[0];
    assert_eq!((newest["verb"].as_str(), newest["outcome"].as_str()), (Some("gate"), Some("passed")), "{newest}");
    assert_eq!(newest["checks"].as_array().unwrap().len(), 6, "{newest}");
    assert!(stdout(&s.stackctl(&["history", healthy.to_str().unwrap()])).contains("gate    passed"));

    // A smoke check whose body pattern the release does not match: held, with the reason.
    let smoke_v2 = with_gate(&s, "smoke", &format!("{proven}    smoke:\n      - {{ path: /, body: \"^v2\" }}\n"));
    let junit = s.dir.join("gate-smoke.xml");
    let (code, report) = gate(&s, &smoke_v2, &["--junit", junit.to_str().unwrap()]);
    assert_eq!((code, report["verdict"].as_str()), (Some(1), Some("held")), "{report}");
    let smoke = check(&report, "smoke GET /");
    assert_eq!(smoke["status"], "fail");
    assert!(smoke["reason"].as_str().unwrap().contains("does not match \"^v2\""), "{smoke}");
    assert_eq!(junit_cases(&junit).iter().filter(|c| c.1.as_deref() == Some("fail")).count(), 1);
    let (_, text) = gate_text(&s, &smoke_v2);
    eprintln!("--- a failed smoke check\n{text}");

    // Users get 5xx: 10 of 50 requests (20%) over the 5% limit.
    assert!(send(s.port, "DELETE", 10).iter().all(|&st| st == 501));
    let (code, report) = gate(&s, &healthy, &[]);
    assert_eq!((code, report["verdict"].as_str()), (Some(1), Some("held")), "{report}");
    let five = check(&report, "5xx web");
    assert_eq!(five["status"], "fail", "{report}");
    assert!(five["figure"].as_str().unwrap().starts_with("20.00% (10 of 50 requests"), "{five}");
    assert!(five["reason"].as_str().unwrap().contains("not under 5%"), "{five}");
    let (_, text) = gate_text(&s, &healthy);
    eprintln!("--- users got 5xx\n{text}");

    // --wait gives up when its time is up and says how often it looked.
    let (code, report) = gate(&s, &unsoaked, &["--wait", "6s"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report["attempts"].as_u64().unwrap() >= 2, "{report}");
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn gate_of_a_stack_that_is_not_there_could_not_check() {
    let _g = serial();
    let s = TestStack::new("gate2", 19051);
    let file = s.file("v1");
    let junit = s.dir.join("gate.xml");
    let out = s.stackctl(&["gate", file.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not check stack gate2"), "{}", stderr(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<error type=\"could-not-check\""), "{xml}");
    let mut reader = quick_xml::Reader::from_str(&xml);
    while !matches!(reader.read_event().expect("well-formed XML"), quick_xml::events::Event::Eof) {}
    // A stack-file error is 2, before anything is looked at.
    let bad = s.file_with("v1", "bad", |y| y.replace("  keep: 1\n", "  keep: 1\n  gate: { max_5xx: lots }\n"));
    let out = s.stackctl(&["gate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("x-stackctl.gate.max_5xx"), "{}", stderr(&out));
}
