//! Which engine a command talks to: a Docker context, as the docker CLI keeps them.
//!
//! The first of these that is set decides: `--context NAME`; `DOCKER_HOST` (the engine as
//! before); `DOCKER_CONTEXT`; the stack's `x-stackctl.context` (usually in an environment's
//! overlay, so `--env production` reaches production's engine); else `DOCKER_HOST`'s default,
//! the local socket. The context `default` is that default too. A named context is read from
//! `$DOCKER_CONFIG/contexts/meta/<sha256 of the name>/meta.json` (`~/.docker` without
//! `DOCKER_CONFIG`): its `Endpoints.docker.Host`.
//!
//! Pure but for reading that file: the environment is passed in, so the order is tested
//! without touching the process's variables.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::spec::check_context_name;

/// Where the engine is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `unix:///…` or `tcp://…`; `None`: connect as before (`DOCKER_HOST` or the local socket).
    pub host: Option<String>,
    /// The context it came from, for messages (`None` when no context was named).
    pub context: Option<String>,
}

/// Decide the engine: `flag` is `--context`, `var` reads the process environment, `stack` is
/// the file's `x-stackctl.context`.
pub fn resolve(flag: Option<&str>, var: impl Fn(&str) -> Option<String>, stack: Option<&str>) -> Result<Target, String> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    let chosen = match (flag, var("DOCKER_HOST"), var("DOCKER_CONTEXT")) {
        (Some(name), _, _) => Some((name.to_string(), "--context")),
        (None, Some(_), _) => None,
        (None, None, Some(name)) => Some((name, "DOCKER_CONTEXT")),
        (None, None, None) => stack.map(|name| (name.to_string(), "x-stackctl.context")),
    };
    let Some((name, from)) = chosen else { return Ok(Target { host: None, context: None }) };
    if name == "default" {
        return Ok(Target { host: None, context: Some(name) });
    }
    check_context_name(&name).map_err(|e| format!("{from}: {e}"))?;
    let dir = config_dir(&var);
    let host = context_host(&dir, &name).map_err(|e| format!("Docker context {name} (from {from}): {e}"))?;
    Ok(Target { host: Some(host), context: Some(name) })
}

/// `$DOCKER_CONFIG`, else `$HOME/.docker`.
fn config_dir(var: &impl Fn(&str) -> Option<String>) -> PathBuf {
    match var("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(var("HOME").unwrap_or_else(|| "/root".into())).join(".docker"),
    }
}

/// The largest `meta.json` read; the docker CLI writes a few hundred bytes.
const MAX_META_BYTES: u64 = 64 * 1024;

/// The docker endpoint of context `name` under the docker config directory `dir`.
pub fn context_host(dir: &Path, name: &str) -> Result<String, String> {
    use std::io::Read;
    let id = format!("{:x}", Sha256::digest(name.as_bytes()));
    let meta = dir.join("contexts").join("meta").join(&id).join("meta.json");
    let mut text = String::new();
    std::fs::File::open(&meta)
        .and_then(|f| f.take(MAX_META_BYTES).read_to_string(&mut text))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("no such context: {} does not exist (`docker context ls` lists the contexts)", meta.display()),
            _ => format!("cannot read {}: {e}", meta.display()),
        })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", meta.display()))?;
    let host = json
        .pointer("/Endpoints/docker/Host")
        .and_then(serde_json::Value::as_str)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{} names no Endpoints.docker.Host", meta.display()))?;
    if !(host.starts_with("unix://") || host.starts_with("tcp://")) {
        return Err(format!("its host {:?} is not unix:// or tcp://, the kinds stackctl connects to", crate::spec::printable(host)));
    }
    if dir.join("contexts").join("tls").join(&id).join("docker").exists() {
        return Err("it uses TLS certificates, which stackctl does not read from contexts yet; set DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH instead".into());
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A docker config directory with the given contexts (name, host).
    fn config(name: &str, contexts: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stackctl-context-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (context, host) in contexts {
            let id = format!("{:x}", Sha256::digest(context.as_bytes()));
            let meta = dir.join("contexts/meta").join(id);
            std::fs::create_dir_all(&meta).unwrap();
            let json = serde_json::json!({"Name": context, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}});
            std::fs::write(meta.join("meta.json"), json.to_string()).unwrap();
        }
        dir
    }

    #[test]
    fn the_first_source_set_decides() {
        let dir = config("order", &[("staging", "unix:///run/staging.sock"), ("prod", "tcp://10.0.0.1:2375"), ("env", "unix:///run/env.sock")]);
        let dir = dir.to_string_lossy().into_owned();
        let host = |t: Result<Target, String>| t.unwrap().host;
        // (--context, DOCKER_HOST, DOCKER_CONTEXT, x-stackctl.context) → host
        type Row<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let table: &[Row] = &[
            (Some("prod"), Some("unix:///x"), Some("env"), Some("staging"), Some("tcp://10.0.0.1:2375")),
            (None, Some("unix:///x"), Some("env"), Some("staging"), None),
            (None, None, Some("env"), Some("staging"), Some("unix:///run/env.sock")),
            (None, Some(""), None, Some("staging"), Some("unix:///run/staging.sock")),
            (None, None, None, None, None),
            (Some("default"), None, None, Some("staging"), None),
        ];
        for &(flag, docker_host, docker_context, stack, want) in table {
            let var = |name: &str| match name {
                "DOCKER_HOST" => docker_host.map(String::from),
                "DOCKER_CONTEXT" => docker_context.map(String::from),
                "DOCKER_CONFIG" => Some(dir.clone()),
                _ => None,
            };
            assert_eq!(host(resolve(flag, var, stack)), want.map(String::from), "{flag:?} {docker_host:?} {docker_context:?} {stack:?}");
        }
    }

    #[test]
    fn bad_contexts_are_refused_with_the_reason() {
        let dir = config("bad", &[("ssh", "ssh://me@host"), ("tls", "tcp://h:2376")]);
        std::fs::create_dir_all(dir.join("contexts/tls").join(format!("{:x}", Sha256::digest(b"tls"))).join("docker")).unwrap();
        let d = dir.to_string_lossy().into_owned();
        let var = |name: &str| (name == "DOCKER_CONFIG").then(|| d.clone());
        let err = |flag: &str| resolve(Some(flag), var, None).unwrap_err();
        assert!(err("missing").contains("no such context"), "{}", err("missing"));
        assert!(err("ssh").contains("not unix:// or tcp://"), "{}", err("ssh"));
        assert!(err("tls").contains("TLS"), "{}", err("tls"));
        // A name that would leave the directory, or reach a terminal.
        assert!(err("../../etc").contains("--context"), "{}", err("../../etc"));
        assert!(err("a\u{1b}[31m").contains("--context"));
        let e = resolve(None, |n: &str| (n == "DOCKER_CONTEXT").then(|| "x/y".to_string()), None).unwrap_err();
        assert!(e.starts_with("DOCKER_CONTEXT:"), "{e}");
    }
}
