//! `stackctl maintenance` on the real engine and nginx, under the project's load generator:
//! on, every user request gets a 503 with `Retry-After` and the stack's page; a deploy meanwhile
//! goes through and keeps the maintenance; off, users reach the (new) release. Not one
//! connection error or client retry at either switch, and nginx never reloads.
//!
//! `#[ignore]`d like every engine test; `tests/run-all.sh` runs them.

use std::process::Command;
use std::time::Duration;

mod common;
use common::{containers, nginx_reloads, serial, stderr, stdout, Load, TestStack};
use stackctl::loadgen::summarize;

/// A marker only the stack's own page carries.
const PAGE_MARK: &str = "maint-e2e-page: back soon";

/// The test stack of `s` with `x-stackctl.maintenance` declared: Retry-After 2m and a page
/// beside the stack file.
fn maintenance_stack(s: &TestStack, image: &str) -> std::path::PathBuf {
    std::fs::write(s.dir.join("maint.html"), format!("<p>{PAGE_MARK}</p>\n")).unwrap();
    s.file_with(image, "maint", |yaml| yaml.replace("  keep: 1\n", "  keep: 1\n  maintenance:\n    retry_after: 2m\n    page: maint.html\n"))
}

/// `curl -si` through nginx: (status, headers lowercased, body).
fn curl(port: u16, args: &[&str]) -> (u16, String, String) {
    let url = format!("http://127.0.0.1:{port}/");
    let out = Command::new("curl").args(["-sS", "-i", "--max-time", "5"]).args(args).arg(&url).output().expect("curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn maintenance_serves_503_with_retry_after_and_the_page_and_back_without_a_failed_request() {
    let _g = serial();
    let s = TestStack::new("maint", 19140);
    let v1 = maintenance_stack(&s, "v1");
    let v2 = maintenance_stack(&s, "v2");
    let file = v1.to_str().unwrap();
    let out = s.stackctl(&["deploy", file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let nginx = containers(&format!("{}_proxy", s.name));
    let reloads_before: Vec<usize> = nginx.iter().map(|c| nginx_reloads(c)).collect();

    // A service that is not routed is a usage error; nothing changes.
    let out = s.stackctl(&["maintenance", "on", file, "--service", "proxy"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(s.get("/").map(|b| b.trim().to_string()).as_deref(), Ok("v1"));

    let load = Load::steady(&format!("127.0.0.1:{}", s.port));
    // Users on the release first, so the switch to maintenance has traffic on both sides.
    load.wait_answers_since(Duration::ZERO, 50);
    let on_started = load.now();
    let out = s.stackctl(&["maintenance", "on", file, "--service", "web", "--output", "json"]);
    let on_done = load.now();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["state"].as_str(), report["changed"][0].as_str(), report["retry_after_seconds"].as_u64()), (Some("on"), Some("web"), Some(120)), "{report}");

    // What a user sees: GET, HEAD and POST alike.
    let (status, head, body) = curl(s.port, &[]);
    assert_eq!(status, 503, "{head}{body}");
    assert!(head.contains("\nretry-after: 120\n"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains(PAGE_MARK), "{body}");
    let (status, head, _) = curl(s.port, &["-X", "POST", "--data", "x=1"]);
    assert_eq!(status, 503, "POST: {head}");
    assert!(head.contains("\nretry-after: 120\n"), "POST: {head}");
    let (status, head, _) = curl(s.port, &["-I"]);
    assert_eq!(status, 503, "HEAD: {head}");
    // Running it again changes nothing and records nothing.
    let out = s.stackctl(&["maintenance", "on", file, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((again["changed"].as_array().map(Vec::len), &again["history_entry"]), (Some(0), &serde_json::Value::Null), "{again}");
    let status = s.status_json();
    assert_eq!(status["maintenance"], serde_json::json!(["web"]), "{status}");

    // A deploy during maintenance is gated through nginx (stackctl's own requests pass) and
    // keeps the maintenance.
    let deploy_started = load.now();
    let out = s.stackctl(&["deploy", v2.to_str().unwrap()]);
    let deploy_done = load.now();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (status, head, body) = curl(s.port, &[]);
    assert_eq!(status, 503, "still in maintenance after the deploy: {head}{body}");

    let off_started = load.now();
    let out = s.stackctl(&["maintenance", "off", file]);
    let off_done = load.now();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("web: maintenance off"), "{}", stdout(&out));
    load.wait_answers_since(off_done, 200);
    let samples = load.stop().remove(0);

    let sum = summarize(&samples);
    let in_window = |from: Duration, to: Duration| samples.iter().filter(move |x| x.sent >= from && x.sent + x.latency <= to);
    let before: Vec<_> = in_window(Duration::ZERO, on_started).collect();
    let during: Vec<_> = in_window(on_done, off_started).collect();
    let after: Vec<_> = samples.iter().filter(|x| x.sent >= off_done).collect();
    let is_page = |r: &Result<String, String>| matches!(r, Err(e) if e.starts_with("HTTP 503") && e.contains(PAGE_MARK));
    let not_page_503: Vec<_> = samples.iter().filter(|x| !(x.result.is_ok() || is_page(&x.result))).collect();
    eprintln!(
        "maintenance under load: {} requests ({} before on, {} during maintenance incl. a {:.1}s deploy, {} after off); \
         switch on took {:.2}s, off {:.2}s; connection failures: unsent {}, no response {}, partial {}; client retries {}; other failures {}",
        sum.requests,
        before.len(),
        during.len(),
        (deploy_done - deploy_started).as_secs_f64(),
        after.len(),
        (on_done - on_started).as_secs_f64(),
        (off_done - off_started).as_secs_f64(),
        sum.unsent,
        sum.no_response,
        sum.partial,
        sum.retried,
        not_page_503.len()
    );
    // Not one broken connection or retry anywhere, and every answer is the release or the page.
    assert_eq!((sum.unsent, sum.no_response, sum.partial, sum.retried), (0, 0, 0, 0), "{sum:?}");
    assert!(not_page_503.is_empty(), "{:?}", not_page_503.iter().take(5).collect::<Vec<_>>());
    assert!(before.len() >= 20 && during.len() >= 200 && after.len() >= 200, "too few requests to prove anything: {sum:?}");
    assert!(before.iter().all(|x| x.result.as_deref() == Ok("v1")));
    assert!(during.iter().all(|x| is_page(&x.result)), "every request during maintenance gets the page");
    assert!(after.iter().all(|x| x.result.as_deref() == Ok("v2")), "after off, the release deployed meanwhile");
    // Neither switch nor the deploy reloaded nginx.
    let reloads_after: Vec<usize> = nginx.iter().map(|c| nginx_reloads(c)).collect();
    assert_eq!(reloads_after, reloads_before, "nginx reloaded");

    // The history has both switches, and status no maintenance.
    let out = s.stackctl(&["history", file, "--output", "json", "--service", "web"]);
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let maint: Vec<(&str, &str)> = (entries.as_array().unwrap().iter())
        .filter(|e| e["verb"] == "maintenance")
        .map(|e| (e["outcome"].as_str().unwrap(), e["maintenance"][0].as_str().unwrap()))
        .collect();
    assert_eq!(maint, [("off", "web"), ("on", "web")], "{entries}");
    let status = s.status_json();
    assert_eq!(status["maintenance"], serde_json::json!([]), "{status}");
}
