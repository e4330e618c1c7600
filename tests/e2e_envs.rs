//! Environments, end to end: the checked-in base file `stacks/shop.yml` with two overlays, one
//! per environment (two stacks with their own names, ports and variables standing in for
//! staging and production), deployed by the real binary to the real engine of
//! `tests/rig/setup.sh`; each serves its own release on its own port through its own nginx,
//! `status` says which environment each stack is, a Docker context reaches the same engine,
//! and a missing overlay changes nothing.
//!
//! `#[ignore]`d like tests/e2e.rs; run with `--include-ignored` under the engine lock.
//! Stacks are named `envs*` and publish nginx on ports 19010–19019.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{docker, get, serial, stderr, stdout, RemovedOnDrop, REGISTRY};

const STAGING_PORT: u16 = 19010;
const PROD_PORT: u16 = 19011;

/// An environment's overlay: its own stack name and nginx port.
fn overlay(name: &str, port: u16) -> String {
    format!(
        "name: {name}\nx-stackctl:\n  proxy:\n    url: http://127.0.0.1:{port}\nservices:\n  proxy:\n    ports:\n      - {{ target: 8080, published: {port}, mode: host }}\n"
    )
}

/// `stacks/shop.yml` copied into a fresh directory with a staging overlay (its env file picks
/// v2 and one replica) and a production overlay (the base's v1); the base file's path.
fn shop_files() -> PathBuf {
    let dir = std::env::temp_dir().join("stackctl-e2e-envs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("shop.yml");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/shop.yml"), &base).unwrap();
    std::fs::write(dir.join("shop.staging.yml"), overlay("envs-staging", STAGING_PORT)).unwrap();
    std::fs::write(dir.join("shop.staging.env"), format!("WEB_IMAGE={REGISTRY}/stackctl-demo:v2\nWEB_REPLICAS=1\n")).unwrap();
    std::fs::write(dir.join("shop.production.yml"), overlay("envs-prod", PROD_PORT)).unwrap();
    base
}

/// The binary with `args`, `vars` added to its environment; the run is echoed for the log.
fn stackctl(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
    cmd.args(args).env_remove("WEB_IMAGE").env_remove("WEB_REPLICAS").env_remove("DOCKER_CONTEXT");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run stackctl");
    eprintln!("$ stackctl {}\n-> {:?}\n--- stdout\n{}--- stderr\n{}", args.join(" "), out.status.code(), stdout(&out), stderr(&out));
    out
}

fn status_json(base: &str, env: &str, vars: &[(&str, &str)]) -> serde_json::Value {
    let out = stackctl(&["status", base, "--env", env, "--output", "json"], vars);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn one_base_file_two_environments_each_with_its_own_stack_port_variables_and_engine() {
    let _g = serial();
    let (_staging, _prod) = (RemovedOnDrop("envs-staging"), RemovedOnDrop("envs-prod"));
    common::remove_stack("envs-staging");
    common::remove_stack("envs-prod");
    let base = shop_files();
    let file = base.to_str().unwrap();

    for env in ["staging", "production"] {
        let started = std::time::Instant::now();
        let out = stackctl(&["deploy", file, "--env", env], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        eprintln!("measured: deploy --env {env} took {:.1} s", started.elapsed().as_secs_f64());
    }
    // Each environment is its own stack, on its own port, with its own variables.
    assert_eq!(get(STAGING_PORT, "/").as_deref(), Ok("v2"), "staging serves the image its env file names");
    assert_eq!(get(PROD_PORT, "/").as_deref(), Ok("v1"), "production serves the base file's default");
    assert_eq!(common::replicas("envs-staging_web-r1"), "1", "staging's WEB_REPLICAS");
    assert_eq!(common::replicas("envs-prod_web-r1"), "2", "the base file's default");
    assert!(common::services("envs-staging").contains(&"envs-staging_proxy".to_string()));
    assert!(common::services("envs-prod").contains(&"envs-prod_proxy".to_string()));
    // The environment's overlay went into the service: staging's nginx publishes 19010 only.
    let published = docker(&["service", "inspect", "envs-staging_proxy", "--format", "{{range .Spec.EndpointSpec.Ports}}{{.PublishedPort}} {{end}}"]);
    assert_eq!(published.trim(), STAGING_PORT.to_string());

    // `status` says which environment each stack is, in JSON and in text.
    let staging = status_json(file, "staging", &[]);
    assert_eq!((staging["stack"].as_str(), staging["env"].as_str()), (Some("envs-staging"), Some("staging")), "{staging}");
    assert_eq!(staging["live"]["web"], 1);
    assert_eq!(staging["problems"], serde_json::json!([]), "{staging}");
    let prod = status_json(file, "production", &[]);
    assert_eq!((prod["stack"].as_str(), prod["env"].as_str()), (Some("envs-prod"), Some("production")), "{prod}");
    let out = stackctl(&["status", file, "--env", "production"], &[]);
    assert!(stdout(&out).starts_with("stack envs-prod (environment production)\n"), "{}", stdout(&out));
    // The history says it too.
    let out = stackctl(&["history", file, "--env", "staging", "--output", "json"], &[]);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history JSON");
    assert_eq!(history[0]["env"].as_str(), Some("staging"), "{history}");
    // Pointing production's file at staging's stack is reported, not hidden.
    let out = stackctl(&["status", file, "--env", "production", "--name", "envs-staging", "--output", "json"], &[]);
    let mixed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(mixed["problems"].to_string().contains("last deployed as environment staging"), "{mixed}");

    // A Docker context, as the docker CLI keeps it, reaches the engine; a missing one is named.
    let config = base.with_file_name("docker-config");
    docker(&["--config", config.to_str().unwrap(), "context", "create", "envs-local", "--docker", "host=unix:///var/run/docker.sock"]);
    let vars = [("DOCKER_CONFIG", config.to_str().unwrap())];
    let out = stackctl(&["status", file, "--env", "staging", "--context", "envs-local", "--output", "json"], &vars);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let via_context: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!((via_context["env"].as_str(), via_context["live"]["web"].as_u64()), (Some("staging"), Some(1)));
    let via_variable = status_json(file, "staging", &[vars[0], ("DOCKER_CONTEXT", "envs-local")]);
    assert_eq!(via_variable["env"].as_str(), Some("staging"));
    let out = stackctl(&["status", file, "--env", "staging"], &[("DOCKER_CONFIG", config.to_str().unwrap()), ("DOCKER_CONTEXT", "envs-nowhere")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Docker context envs-nowhere (from DOCKER_CONTEXT): no such context"), "{}", stderr(&out));

    // A missing overlay is a stack-file error naming the file; nothing changed.
    let before = (common::services("envs-staging"), common::services("envs-prod"));
    let out = stackctl(&["deploy", file, "--env", "qa"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{} does not exist", base.with_file_name("shop.qa.yml").display())), "{}", stderr(&out));
    assert_eq!((common::services("envs-staging"), common::services("envs-prod")), before);

    // `down --env` removes one environment's stack, and only that one.
    let out = stackctl(&["down", file, "--env", "staging", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(common::services("envs-staging").is_empty());
    assert_eq!(get(PROD_PORT, "/").as_deref(), Ok("v1"), "production is untouched");
}
