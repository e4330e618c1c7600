//! `stackctl promote` end to end: the checked-in base file `stacks/shop.yml` with a staging and
//! a production overlay (two stacks with their own names, ports and variables), deployed by the
//! real binary to the real engine of `tests/rig/setup.sh`. Staging runs v2 (its env file),
//! production v1. A gate that holds staging's release refuses the promote (exit 5) and leaves
//! production as it was; once staging's gate passes, production runs exactly the digest staging
//! runs, with production's own replicas, and its history says where the release came from;
//! from an environment that is not deployed the gate could not check (exit 4).
//!
//! `#[ignore]`d like tests/e2e.rs; run with `--include-ignored` under the engine lock.
//! Stacks are named `promo*` and publish nginx on ports 19066–19069 (`promo-qa`, never deployed, names 19068).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{docker, get, serial, stderr, stdout, RemovedOnDrop, REGISTRY};

const STAGING_PORT: u16 = 19066;
const PROD_PORT: u16 = 19067;
const DIR: &str = "stackctl-e2e-promote";

/// An environment's overlay: its own stack name and nginx port, and `gate` as its gate block.
fn overlay(name: &str, port: u16, gate: &str) -> String {
    format!(
        "name: {name}\nx-stackctl:\n  proxy:\n    url: http://127.0.0.1:{port}\n  gate: {gate}\nservices:\n  proxy:\n    ports:\n      - {{ target: 8080, published: {port}, mode: host }}\n"
    )
}

/// Staging's overlay with `gate` (a release's gate block changes no release).
fn staging_gate(base: &Path, gate: &str) {
    std::fs::write(base.with_file_name("shop.staging.yml"), overlay("promo-staging", STAGING_PORT, gate)).unwrap();
}

/// `stacks/shop.yml` in a fresh directory, staging on v2 with one replica (its env file),
/// production on the base's v1 with two.
fn shop_files() -> PathBuf {
    let dir = std::env::temp_dir().join(DIR);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("shop.yml");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/shop.yml"), &base).unwrap();
    staging_gate(&base, "{ soak: 0s, min_requests: 0 }");
    std::fs::write(dir.join("shop.staging.env"), format!("WEB_IMAGE={REGISTRY}/stackctl-demo:v2\nWEB_REPLICAS=1\n")).unwrap();
    std::fs::write(dir.join("shop.production.yml"), overlay("promo-prod", PROD_PORT, "{ soak: 0s, min_requests: 0 }")).unwrap();
    base
}

/// The binary with `args`; the run is echoed for the log.
fn stackctl(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
    cmd.args(args).env_remove("WEB_IMAGE").env_remove("WEB_REPLICAS").env_remove("DOCKER_CONTEXT");
    let out = cmd.output().expect("run stackctl");
    eprintln!("$ stackctl {}\n-> {:?}\n--- stdout\n{}--- stderr\n{}", args.join(" "), out.status.code(), stdout(&out), stderr(&out));
    out
}

/// The image in the Swarm spec of a service (pinned to its digest by the deploy).
fn image(swarm_name: &str) -> String {
    docker(&["service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", swarm_name]).trim().to_string()
}

/// `stackctl history --output json` of an environment.
fn history(base: &str, env: &str) -> Vec<serde_json::Value> {
    let out = stackctl(&["history", base, "--env", env, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn promote_ships_stagings_digest_to_production_only_when_stagings_gate_passes() {
    let _g = serial();
    let (_staging, _prod) = (RemovedOnDrop("promo-staging"), RemovedOnDrop("promo-prod"));
    common::remove_stack("promo-staging");
    common::remove_stack("promo-prod");
    let base = shop_files();
    let file = base.to_str().unwrap();
    for env in ["staging", "production"] {
        let out = stackctl(&["deploy", file, "--env", env]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(get(STAGING_PORT, "/").as_deref(), Ok("v2"));
    assert_eq!(get(PROD_PORT, "/").as_deref(), Ok("v1"));
    let staging_image = image("promo-staging_web-r1");
    let prod_before = image("promo-prod_web-r1");
    assert!(staging_image.contains("stackctl-demo:v2@sha256:"), "{staging_image}");
    let prod_history = history(file, "production").len();

    // Staging's gate holds (not soaked): refused with exit 5, production untouched.
    staging_gate(&base, "{ soak: 1h, min_requests: 0 }");
    let started = std::time::Instant::now();
    let out = stackctl(&["promote", file, "--from", "staging", "--to", "production", "--output", "json"]);
    eprintln!("measured: a refused promote took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exit_code"], 5, "{json}");
    assert_eq!(json["gate"]["verdict"], "held", "{json}");
    assert!(json["error"].as_str().unwrap().contains("soak web"), "{json}");
    assert!(stderr(&out).contains("nothing was promoted"), "{}", stderr(&out));
    let text = stdout(&stackctl(&["promote", file, "--from", "staging", "--to", "production"]));
    assert!(text.contains("gate of stack promo-staging (env staging): HELD"), "{text}");
    assert_eq!(get(PROD_PORT, "/").as_deref(), Ok("v1"), "production still serves v1");
    assert_eq!(image("promo-prod_web-r1"), prod_before);
    assert!(!common::services("promo-prod").contains(&"promo-prod_web-r2".to_string()), "no release was created");
    assert_eq!(history(file, "production").len(), prod_history, "production's history is unchanged");
    let gate_entry = &history(file, "staging")[0];
    assert_eq!((gate_entry["verb"].as_str(), gate_entry["outcome"].as_str()), (Some("gate"), Some("held")), "{gate_entry}");

    // The gate passes: production runs exactly staging's digest, with its own two replicas.
    staging_gate(&base, "{ soak: 0s, min_requests: 0 }");
    let started = std::time::Instant::now();
    let out = stackctl(&["promote", file, "--from", "staging", "--to", "production", "--output", "json"]);
    eprintln!("measured: promote staging → production took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((json["stack"].as_str(), json["outcome"].as_str()), (Some("promo-prod"), Some("deployed")), "{json}");
    assert_eq!(json["promoted_from"]["env"], "staging", "{json}");
    assert_eq!(json["promoted_from"]["stack"], "promo-staging", "{json}");
    assert_eq!(json["promoted_from"]["releases"]["web"], 1, "{json}");
    assert_eq!(json["promoted_from"]["gate"], "passed", "{json}");
    assert_eq!(image("promo-prod_web-r2"), staging_image, "production runs staging's exact image");
    assert_eq!(get(PROD_PORT, "/").as_deref(), Ok("v2"));
    assert_eq!(common::replicas("promo-prod_web-r2"), "2", "production's own replica count");
    let newest = &history(file, "production")[0];
    assert_eq!((newest["verb"].as_str(), newest["env"].as_str()), (Some("deploy"), Some("production")), "{newest}");
    assert_eq!(newest["promoted_from"], json["promoted_from"], "{newest}");
    assert_eq!(newest["services"][0]["image"].as_str(), Some(staging_image.as_str()), "{newest}");
    let passed = &history(file, "staging")[0];
    assert_eq!(passed["outcome"], "passed", "{passed}");
    assert_eq!(json["promoted_from"]["gate_entry"], passed["number"], "{json}");
    let table = stdout(&stackctl(&["history", file, "--env", "production"]));
    assert!(table.contains("web r1→r2 (from staging web r1)"), "{table}");

    // Promoting again: the same digest is already live, so nothing to deploy.
    let out = stackctl(&["promote", file, "--from", "staging", "--to", "production"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("promoted from staging (stack promo-staging: web r1), gate passed"), "{}", stdout(&out));
    assert!(stdout(&out).contains("stack promo-prod unchanged: nothing to deploy"), "{}", stdout(&out));

    // A --from environment that is not deployed: its gate could not check, exit 4, nothing done.
    std::fs::write(base.with_file_name("shop.qa.yml"), overlay("promo-qa", 19068, "{ soak: 0s, min_requests: 0 }")).unwrap();
    let out = stackctl(&["promote", file, "--from", "qa", "--to", "production", "--output", "json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exit_code"], 4, "{json}");
    assert!(json["error"].as_str().unwrap().contains("could not check stack promo-qa"), "{json}");
    assert_eq!(image("promo-prod_web-r2"), staging_image);
    assert!(common::services("promo-qa").is_empty(), "nothing was created for qa");

    // --from and --to the same: a usage error, nothing looked at.
    let out = stackctl(&["promote", file, "--from", "staging", "--to", "staging"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
