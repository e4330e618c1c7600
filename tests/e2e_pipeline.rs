//! README's example pipelines, run (issue 9 item 6): the test reads the GitHub Actions and the
//! GitLab CI blocks of README's "Example pipelines", checks that both run the same `docker` and
//! `stackctl` commands in the same order (build, push, deploy to staging, gate, promote), and
//! runs those commands with `sh -c` against the engine of `tests/rig/setup.sh`, so the example
//! cannot rot. The variables are the rig's: `REGISTRY=127.0.0.1:5000`, a fresh `TAG`, a
//! Dockerfile `FROM` a rig image (the legacy builder works offline), and `stacks/shop.yml` with
//! two overlays of the test's own (`pipe-staging` on :19121, `pipe-prod` on :19122).
//!
//! `#[ignore]`d like tests/e2e.rs; run with `--include-ignored` under the engine lock.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{docker, docker_maybe, get, serial, stderr, stdout, RemovedOnDrop, REGISTRY};

const STAGING_PORT: u16 = 19121;
const PROD_PORT: u16 = 19122;

/// The fenced code block that follows the first line containing `title` after `section`.
fn block_after<'a>(readme: &'a str, section: &str, title: &str) -> &'a str {
    let rest = &readme[readme.find(section).unwrap_or_else(|| panic!("README has no {section:?}"))..];
    let rest = &rest[rest.find(title).unwrap_or_else(|| panic!("README's {section:?} has no {title:?}"))..];
    let start = rest.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = rest[start..].find("```").expect("the block's end");
    &rest[start..start + end]
}

/// The shell commands of a pipeline that call `docker` or `stackctl`, in order: GitHub's
/// `run:` steps and GitLab's `script:` items alike.
fn commands(block: &str) -> Vec<String> {
    (block.lines())
        .map(|l| l.trim().trim_start_matches("- ").trim_start_matches("run: ").trim())
        .filter(|l| l.starts_with("docker ") || l.starts_with("stackctl "))
        .map(String::from)
        .collect()
}

/// `stacks/shop.yml` and its staging env file copied into `dir/stacks`, with overlays of the
/// test's own names and ports; the gates need no users (a fresh staging has none).
fn shop_files(dir: &Path) {
    let stacks = dir.join("stacks");
    std::fs::create_dir_all(&stacks).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks");
    for f in ["shop.yml", "shop.staging.env"] {
        std::fs::copy(repo.join(f), stacks.join(f)).unwrap();
    }
    let overlay = |name: &str, port: u16| {
        format!(
            "name: {name}\nx-stackctl:\n  proxy:\n    url: http://127.0.0.1:{port}\n  gate:\n    soak: 0s\n    min_requests: 0\n    smoke:\n      - {{ path: /healthz }}\nservices:\n  proxy:\n    ports:\n      - {{ target: 8080, published: {port}, mode: host }}\n"
        )
    };
    std::fs::write(stacks.join("shop.staging.yml"), overlay("pipe-staging", STAGING_PORT)).unwrap();
    std::fs::write(stacks.join("shop.production.yml"), overlay("pipe-prod", PROD_PORT)).unwrap();
}

/// One pipeline command, run by `sh` in `dir` as a CI runner runs it: the rig's registry, the
/// run's tag, this build's stackctl first on the PATH.
fn run(dir: &Path, command: &str, tag: &str) -> Output {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_stackctl"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .env("PATH", path)
        .env("REGISTRY", REGISTRY)
        .env("TAG", tag)
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("WEB_IMAGE")
        .env_remove("WEB_REPLICAS")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("run sh");
    eprintln!("$ {command}\n-> {:?}\n--- stdout\n{}--- stderr\n{}", out.status.code(), stdout(&out), stderr(&out));
    out
}

/// The image of the live release of `stack`'s web service, as its Swarm spec pins it.
fn live_image(stack: &str, live: u64) -> String {
    docker(&["service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", &format!("{stack}_web-r{live}")]).trim().to_string()
}

fn live_release(dir: &Path, env: &str) -> u64 {
    let file = dir.join("stacks/shop.yml");
    let out = Command::new(env!("CARGO_BIN_EXE_stackctl")).args(["status", file.to_str().unwrap(), "--env", env, "--output", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["live"]["web"].as_u64().unwrap_or_else(|| panic!("no live web release in {env}: {status}"))
}

#[test]
fn readmes_two_pipelines_run_the_same_commands_in_the_same_order() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let github = commands(block_after(&readme, "### Example pipelines", "GitHub Actions"));
    let gitlab = commands(block_after(&readme, "### Example pipelines", "GitLab CI"));
    assert_eq!(github, gitlab, "README's GitHub Actions and GitLab CI pipelines differ");
    let verbs: Vec<String> = github.iter().map(|c| c.split_whitespace().take(2).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(verbs, ["docker build", "docker push", "stackctl deploy", "stackctl gate", "stackctl promote"]);
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn readmes_pipeline_builds_once_deploys_to_staging_gates_and_promotes_the_same_digest() {
    let _g = serial();
    let (_staging, _prod) = (RemovedOnDrop("pipe-staging"), RemovedOnDrop("pipe-prod"));
    common::remove_stack("pipe-staging");
    common::remove_stack("pipe-prod");
    let dir = std::env::temp_dir().join("stackctl-e2e-pipeline");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    shop_files(&dir);
    let tag = format!("pipe-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    // The app's Dockerfile: the demo's v2 with the commit as a label, so this build is new.
    std::fs::write(dir.join("Dockerfile"), format!("FROM {REGISTRY}/stackctl-demo:v2\nLABEL org.opencontainers.image.revision={tag}\n")).unwrap();

    // Production already runs an earlier release (the base file's v1).
    let out = run(&dir, "stackctl deploy stacks/shop.yml --env production", &tag);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(get(PROD_PORT, "/").as_deref(), Ok("v1"));

    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let steps = commands(block_after(&readme, "### Example pipelines", "GitHub Actions"));
    assert_eq!(steps.len(), 5, "{steps:?}");
    let started = std::time::Instant::now();
    for step in &steps {
        let out = run(&dir, step, &tag);
        assert_eq!(out.status.code(), Some(0), "the pipeline step {step:?} failed: {}", stderr(&out));
    }
    eprintln!("MEASURED: the five pipeline steps took {:.1?}", started.elapsed());

    // The gate passed, and said so in JUnit.
    let junit = std::fs::read_to_string(dir.join("gate-staging.xml")).expect("the gate's JUnit report");
    assert!(junit.contains("failures=\"0\" errors=\"0\""), "{junit}");
    assert!(junit.contains("name=\"smoke GET /healthz\""), "{junit}");

    // Staging runs the build, pinned to its digest; production runs that very digest.
    let staging = live_image("pipe-staging", live_release(&dir, "staging"));
    let prod = live_image("pipe-prod", live_release(&dir, "production"));
    assert!(staging.starts_with(&format!("{REGISTRY}/shop-web:{tag}@sha256:")), "{staging}");
    let digest = |image: &str| image.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap();
    assert_eq!(digest(&prod), digest(&staging), "production {prod} vs staging {staging}");
    assert_eq!(get(STAGING_PORT, "/").as_deref(), Ok("v2"));
    assert_eq!(get(PROD_PORT, "/").as_deref(), Ok("v2"));
    let history = Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .args(["history", dir.join("stacks/shop.yml").to_str().unwrap(), "--env", "production", "--output", "json"])
        .output()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(entries[0]["promoted_from"]["env"], "staging", "{}", entries[0]);
    assert_eq!(entries[0]["promoted_from"]["gate"], "passed", "{}", entries[0]);
    let _ = docker_maybe(&["image", "rm", &format!("{REGISTRY}/shop-web:{tag}")]);
}
