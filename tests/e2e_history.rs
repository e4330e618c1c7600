//! The release history, end to end: the real `stackctl` binary deploys against the real engine
//! of `tests/rig/setup.sh`, and `stackctl history` reads back what the cluster keeps (Swarm
//! configs), never anything on this machine.
//!
//! `#[ignore]`d like tests/e2e.rs; run with `--include-ignored` under the engine lock.

use std::path::PathBuf;

mod common;
use common::{docker, docker_maybe, serial, stderr, stdout, TestStack};

/// The stack's history configs, by name, as docker lists them.
fn history_configs(stack: &str) -> Vec<String> {
    let out = docker(&[
        "config",
        "ls",
        "--filter",
        &format!("label=io.stackctl.stack={stack}"),
        "--filter",
        "label=io.stackctl.history",
        "--format",
        "{{.Name}}",
    ]);
    let mut names: Vec<String> = out.lines().map(String::from).collect();
    names.sort();
    names
}

fn history_json(s: &TestStack, file: &PathBuf, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["history", file.to_str().unwrap(), "--output", "json"];
    args.extend_from_slice(extra);
    let out = s.stackctl(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("history JSON").as_array().expect("a list of entries").clone()
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn history_records_deploys_and_a_failed_deploy_but_not_a_deploy_that_changed_nothing() {
    let _g = serial();
    let s = TestStack::new("e2ehist", 18800);
    assert_eq!(s.deploy("v1", &[]).status.code(), Some(0));
    assert_eq!(s.deploy("v2", &[]).status.code(), Some(0));
    let unchanged = s.deploy("v2", &[]);
    assert!(stdout(&unchanged).contains("unchanged"), "{}", stdout(&unchanged));
    let failed = s.deploy("broken", &["--timeout", "20s"]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let v2_image = docker(&["service", "inspect", "e2ehist_web-r2", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}"]).trim().to_string();
    assert!(v2_image.contains("stackctl-demo:v2@sha256:"), "{v2_image}");

    // One config per entry; the deploy that changed nothing wrote none.
    assert_eq!(
        history_configs("e2ehist"),
        vec!["e2ehist_stackctl-history-00000001", "e2ehist_stackctl-history-00000002", "e2ehist_stackctl-history-00000003"]
    );

    let file = s.file("v1");
    let entries = history_json(&s, &file, &[]);
    let numbers: Vec<u64> = entries.iter().map(|e| e["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![3, 2, 1], "newest first");
    let (failed, second, first) = (&entries[0], &entries[1], &entries[2]);

    assert_eq!((first["verb"].as_str(), first["outcome"].as_str(), first["exit_code"].as_i64()), (Some("deploy"), Some("deployed"), Some(0)));
    assert_eq!(first["release"], 1);
    assert_eq!(first["services"][0]["service"], "web");
    assert_eq!((first["services"][0]["release"].as_u64(), first["services"][0]["switched"].as_bool()), (Some(1), Some(true)));
    assert!(first["services"][0]["from"].is_null(), "a first release replaced nothing: {first}");
    assert!(first["services"][0]["image"].as_str().unwrap().contains("stackctl-demo:v1@sha256:"), "{first}");

    assert_eq!(second["outcome"], "deployed");
    let web = &second["services"][0];
    assert_eq!((web["release"].as_u64(), web["from"].as_u64(), web["switched"].as_bool()), (Some(2), Some(1), Some(true)));
    assert_eq!(web["image"].as_str(), Some(v2_image.as_str()), "the image pinned to the digest that ran");
    let hash = docker(&["service", "inspect", "e2ehist_web-r2", "--format", "{{index .Spec.Labels \"io.stackctl.spec-hash\"}}"]);
    assert_eq!(web["spec_hash"].as_str(), Some(hash.trim()));
    // The full Swarm spec of the live release, as the engine has it: enough to recreate it.
    let spec = &second["specs"]["e2ehist_web-r2"];
    let live_spec: serde_json::Value = serde_json::from_str(&docker(&["service", "inspect", "e2ehist_web-r2", "--format", "{{json .Spec}}"])).unwrap();
    assert_eq!(spec["TaskTemplate"]["ContainerSpec"]["Image"], live_spec["TaskTemplate"]["ContainerSpec"]["Image"]);
    assert_eq!(spec["Labels"], live_spec["Labels"]);
    assert_eq!(spec["Mode"], live_spec["Mode"]);
    assert!(second["phases"].as_array().unwrap().iter().any(|p| p["phase"] == "switch"), "{second}");
    assert!(second["seconds"].as_f64().unwrap() > 0.0);
    assert!(!second["who"]["user"].as_str().unwrap().is_empty() && !second["who"]["host"].as_str().unwrap().is_empty());
    let command: Vec<&str> = second["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(&command[1..2], &["deploy"], "{command:?}");
    assert!(command[2].ends_with("stack-v2.yml"), "{command:?}");

    assert_eq!((failed["outcome"].as_str(), failed["exit_code"].as_i64()), (Some("failed"), Some(1)));
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("waiting for green to become healthy") && reason.contains("The live release is intact"), "{reason}");
    assert_eq!(failed["release"], 3, "the number the failed deploy used up");
    assert_eq!((failed["services"][0]["release"].as_u64(), failed["services"][0]["switched"].as_bool()), (Some(2), Some(false)), "r2 stayed live");
    assert!(failed["specs"]["e2ehist_web-r2"].is_object());

    // The table, newest first.
    let out = s.stackctl(&["history", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("#") && lines[0].contains("OUTCOME") && lines[0].contains("REASON"), "{text}");
    assert!(lines[1].starts_with("3 ") && lines[1].contains("failed") && lines[1].contains("tried r3") && lines[1].contains("deploy of stack e2ehist failed"), "{text}");
    assert!(lines[2].starts_with("2 ") && lines[2].contains("deployed") && lines[2].contains("web r1→r2"), "{text}");
    assert!(lines[3].starts_with("1 ") && lines[3].contains("web →r1"), "{text}");

    // --service: the service's entries; another service has none.
    assert_eq!(history_json(&s, &file, &["--service", "web"]).len(), 3);
    let out = s.stackctl(&["history", file.to_str().unwrap(), "--service", "api"]);
    assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "stack e2ehist has no history for service api"));

    // Any file naming the stack, anywhere, reads the same history: it lives in the cluster.
    let elsewhere = std::env::temp_dir().join("stackctl-e2e-e2ehist-elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other = elsewhere.join("other.yml");
    std::fs::copy(&file, &other).unwrap();
    let out = s.stackctl(&["history", other.to_str().unwrap(), "--name", "e2ehist", "--output", "json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().len(), 3);

    // Numbers for the report (nothing asserted): entry sizes and the time to read the history.
    for name in history_configs("e2ehist") {
        eprintln!("{name}: {} bytes", docker(&["config", "inspect", &name, "--format", "{{len .Spec.Data}}"]).trim());
    }
    let started = std::time::Instant::now();
    s.stackctl(&["history", file.to_str().unwrap()]);
    eprintln!("stackctl history of 3 entries took {:?}", started.elapsed());

    // Refused after the lock (the image does not exist): recorded as failed, no number used up.
    let missing = s.deploy("no-such-tag", &[]);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    let entries = history_json(&s, &file, &[]);
    let refused = &entries[0];
    assert_eq!((refused["number"].as_u64(), refused["outcome"].as_str(), refused["exit_code"].as_i64()), (Some(4), Some("failed"), Some(1)));
    assert!(refused["release"].is_null(), "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("no-such-tag"), "{refused}");

    // An engine that cannot be reached: exit 1 and a clear message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .args(["history", file.to_str().unwrap()])
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach the Docker engine"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn history_is_pruned_to_its_bound() {
    let _g = serial();
    let s = TestStack::new("e2ehistprune", 18801);
    // The usual stack file, keeping two entries.
    let bounded = |image: &str| {
        let text = std::fs::read_to_string(s.file(image)).unwrap();
        assert!(text.contains("  keep: 1\n"));
        let path = s.dir.join(format!("stack-{image}-history2.yml"));
        std::fs::write(&path, text.replace("  keep: 1\n", "  keep: 1\n  history: 2\n")).unwrap();
        path
    };
    for image in ["v1", "v2", "v1"] {
        let file = bounded(image);
        let out = s.stackctl(&["deploy", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(history_configs("e2ehistprune"), vec!["e2ehistprune_stackctl-history-00000002", "e2ehistprune_stackctl-history-00000003"]);
    let entries = history_json(&s, &bounded("v1"), &[]);
    let summary: Vec<(u64, u64)> = entries.iter().map(|e| (e["number"].as_u64().unwrap(), e["services"][0]["release"].as_u64().unwrap())).collect();
    assert_eq!(summary, vec![(3, 3), (2, 2)], "the newest two, numbers never reused");
    // A removed entry stays removed: docker no longer knows it.
    assert!(docker_maybe(&["config", "inspect", "e2ehistprune_stackctl-history-00000001"]).is_err());
}
