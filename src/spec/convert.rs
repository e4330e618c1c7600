//! Raw Compose structs → the validated model.
//!
//! Each function converts one part, reports every problem it finds to [`Diag`] with the
//! field's path, and carries on with a best guess so that one pass finds all errors. The
//! result is only used when no error was reported. This module does the stack level and
//! the checks across services; [`service`] converts one service, [`syntax`] parses the
//! Compose short syntaxes (ports, volumes, env files, shell words).

mod gate;
mod service;
mod syntax;

pub(super) use syntax::parse_env_file;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::allow::*;
use super::locate::{item_path, key_path};
use super::raw::*;
use super::units::parse_duration;
use super::validate::*;
use super::*;
use syntax::port_number;

/// `x-stackctl` defaults.
pub const DEFAULT_KEEP: u32 = 2;
pub const DEFAULT_HISTORY: u32 = 100;
/// More entries than anyone reads, and each is a Swarm config every manager stores.
const MAX_HISTORY: u32 = 10_000;
const DEFAULT_LISTEN: u16 = 8080;
const DEFAULT_CONFIG_DIR: &str = "/etc/nginx/stackctl";
/// Swarm refuses configs and secrets larger than 500 KiB.
const MAX_FILE_OBJECT: usize = 500 * 1024;

/// Convert `raw`; `None` only if an error was reported.
pub(super) fn build(raw: RawStack, opts: &LoadOptions, diag: &mut Diag) -> Option<Stack> {
    let source = diag.locator().file().to_path_buf();
    let base_dir = match source.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut cx = Cx { diag, opts, base_dir };

    let name = cx.stack_name(raw.name.as_deref());
    let stack = name.clone().unwrap_or_default();
    let mut networks = cx.networks(&stack, raw.networks.unwrap_or_default());
    let volumes = cx.volumes(&stack, raw.volumes.unwrap_or_default());
    let configs = cx.file_objects(ObjectKind::Config, &stack, raw.configs.unwrap_or_default());
    let secrets = cx.file_objects(ObjectKind::Secret, &stack, raw.secrets.unwrap_or_default());
    let context = raw.x_stackctl.as_ref().and_then(|x| x.context.clone());
    let context = match context {
        Some(c) => cx.ok("x-stackctl.context", check_context_name(&c)).map(|()| Some(c)),
        None => Some(None),
    };
    let x = cx.stack_x(raw.x_stackctl);

    let raw_services = raw.services.unwrap_or_default();
    if raw_services.is_empty() {
        cx.diag.error("services", "the stack has no services; add a services: section with at least one service");
    }
    cx.check_image_overrides(&raw_services);
    let scope = Scope {
        stack: name.as_deref(),
        proxy: x.as_ref().map(|x| x.proxy.service.as_str()),
        keep: x.as_ref().map_or(DEFAULT_KEEP, |x| x.keep),
        networks: &networks,
        volumes: &volumes,
        configs: &configs,
        secrets: &secrets,
    };
    let services: BTreeMap<String, Service> = raw_services
        .into_iter()
        .map(|(name, raw)| {
            let service = cx.service(&name, raw, &scope);
            (name, service)
        })
        .collect();

    // Without services, "the proxy is missing" would only repeat the error above.
    if let Some(x) = x.as_ref().filter(|_| !services.is_empty()) {
        cx.check_proxy(x, &services);
    }
    cx.check_routes(&services);
    cx.check_release_names(&services);
    cx.check_published_ports(&services);
    if services.values().any(|s| s.networks.iter().any(|n| n.name == "default")) && !networks.contains_key("default") {
        networks.insert("default".into(), default_network(&stack));
    }

    let environment = Environment { name: opts.environment.clone(), context: context? };
    Some(Stack { name: name?, source, services, networks, volumes, configs, secrets, x: x?, environment })
}

/// The implicit network of services that name none, as `docker stack deploy` creates it.
fn default_network(stack: &str) -> Network {
    Network {
        driver: "overlay".into(),
        // Attachable so test and debugging containers (`docker run --network demo_default`)
        // can join the stack's network; stackctl itself does not need it.
        attachable: true,
        external: false,
        real_name: format!("{stack}_default"),
        labels: BTreeMap::new(),
        driver_opts: BTreeMap::new(),
    }
}

/// What a service conversion needs to know about the rest of the stack.
struct Scope<'a> {
    /// `None` when the stack name is missing or invalid (already reported).
    stack: Option<&'a str>,
    proxy: Option<&'a str>,
    keep: u32,
    networks: &'a BTreeMap<String, Network>,
    volumes: &'a BTreeMap<String, Volume>,
    configs: &'a BTreeMap<String, FileObject>,
    secrets: &'a BTreeMap<String, FileObject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Config,
    Secret,
}

impl ObjectKind {
    fn section(self) -> &'static str {
        match self {
            ObjectKind::Config => "configs",
            ObjectKind::Secret => "secrets",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Secret => "secret",
        }
    }
}

struct Cx<'d, 'l> {
    diag: &'d mut Diag<'l>,
    opts: &'d LoadOptions,
    /// Directory of the stack file: relative paths in it are relative to this.
    base_dir: PathBuf,
}

impl Cx<'_, '_> {
    // -----------------------------------------------------------------------------------------
    // Small helpers: each reports the error and returns None.

    fn ok<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.diag.error(field, message)).ok()
    }

    fn duration(&mut self, field: &str, text: Option<Text>) -> Option<Duration> {
        let text = text?;
        self.ok(field, parse_duration(&text.0))
    }

    fn positive_duration(&mut self, field: &str, text: Option<Text>, default: Duration) -> Duration {
        let value = self.duration(field, text).unwrap_or(default);
        if value.is_zero() {
            self.diag.error(field, "must be greater than 0");
            return default;
        }
        value
    }

    fn port(&mut self, field: &str, value: u64) -> Option<u16> {
        self.ok(field, port_number(value))
    }

    fn one_of(&mut self, field: &str, value: &str, allowed: &[&str]) -> Option<String> {
        if allowed.contains(&value) {
            return Some(value.to_string());
        }
        let message = match nearest(value, allowed.iter().copied()) {
            Some(best) => {
                format!("{value:?} is not valid here; did you mean {best:?}? (one of: {})", allowed.join(", "))
            }
            None => format!("{value:?} is not valid here; use one of: {}", allowed.join(", ")),
        };
        self.diag.error(field, message);
        None
    }

    /// A path in the stack file's directory (or absolute), made absolute and normalised.
    fn host_path(&self, path: &str) -> PathBuf {
        let joined = self.base_dir.join(path);
        let absolute = std::path::absolute(&joined).unwrap_or(joined);
        normalize(&absolute)
    }

    fn labels(&mut self, field: &str, raw: Option<Labels>) -> BTreeMap<String, String> {
        let pairs: Vec<(String, String, String)> = match raw {
            None => Vec::new(),
            Some(MapOrList::Map(map)) => {
                map.into_iter().map(|(k, v)| (key_path(field, &k), k, v.map(|t| t.0).unwrap_or_default())).collect()
            }
            Some(MapOrList::List(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                    (item_path(field, i), k.to_string(), v.to_string())
                })
                .collect(),
        };
        let mut labels = BTreeMap::new();
        for (at, key, value) in pairs {
            if key.trim().is_empty() {
                self.diag.error(&at, "label with an empty key; write KEY=VALUE");
            } else {
                labels.insert(key, value);
            }
        }
        labels
    }

    // -----------------------------------------------------------------------------------------
    // Stack level

    fn stack_name(&mut self, from_file: Option<&str>) -> Option<String> {
        let (field, name) = match (&self.opts.name, from_file) {
            (Some(name), _) => ("--name", name.as_str()),
            (None, Some(name)) => ("name", name),
            (None, None) => {
                self.diag.error("name", "the stack has no name; add name: at the top of the file or pass --name");
                return None;
            }
        };
        let result = check_stack_name(name).map_err(|e| format!("{e} (stack names become Swarm name prefixes)"));
        self.ok(field, result).map(|()| name.to_string())
    }

    /// Real name of a stack-level object: `name:`, else the key for external objects (they
    /// exist already under that name), else `<stack>_<key>` as `docker stack deploy` does.
    fn real_name(&mut self, field: &str, stack: &str, key: &str, name: Option<String>, external: bool) -> String {
        match name {
            Some(name) => {
                self.ok(&key_path(field, "name"), check_object_name("name", &name));
                name
            }
            None if external => key.to_string(),
            None => {
                let derived = format!("{stack}_{key}");
                if !stack.is_empty() && derived.len() > 64 {
                    self.diag.error(
                        field,
                        format!(
                            "the Swarm name {derived:?} is longer than 64 characters; shorten the key or set name:"
                        ),
                    );
                }
                derived
            }
        }
    }

    fn networks(&mut self, stack: &str, raw: BTreeMap<String, Option<RawNetwork>>) -> BTreeMap<String, Network> {
        let mut networks = BTreeMap::new();
        for (key, raw) in raw {
            let field = key_path("networks", &key);
            self.ok(&field, check_object_name("network name", &key));
            let raw = raw.unwrap_or(RawNetwork {
                driver: None,
                attachable: None,
                external: None,
                name: None,
                labels: None,
                driver_opts: None,
            });
            let external = raw.external.is_some_and(|f| f.0);
            if external
                && (raw.driver.is_some()
                    || raw.attachable.is_some()
                    || raw.labels.is_some()
                    || raw.driver_opts.is_some())
            {
                self.diag.error(
                    &field,
                    "an external network already exists and is not created, so driver, attachable, labels and \
                     driver_opts would be ignored; remove them",
                );
            }
            let real_name = self.real_name(&field, stack, &key, raw.name, external);
            let network = Network {
                driver: raw.driver.unwrap_or_else(|| "overlay".into()),
                // See `default_network` for why stackctl's networks are attachable.
                attachable: raw.attachable.map_or(!external, |f| f.0),
                external,
                real_name,
                labels: self.labels(&key_path(&field, "labels"), raw.labels),
                driver_opts: raw.driver_opts.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
            };
            networks.insert(key, network);
        }
        networks
    }

    fn volumes(&mut self, stack: &str, raw: BTreeMap<String, Option<RawVolume>>) -> BTreeMap<String, Volume> {
        let mut volumes = BTreeMap::new();
        for (key, raw) in raw {
            let field = key_path("volumes", &key);
            self.ok(&field, check_object_name("volume name", &key));
            let raw =
                raw.unwrap_or(RawVolume { driver: None, driver_opts: None, external: None, name: None, labels: None });
            let external = raw.external.is_some_and(|f| f.0);
            if external && (raw.driver.is_some() || raw.labels.is_some() || raw.driver_opts.is_some()) {
                self.diag.error(
                    &field,
                    "an external volume already exists and is not created, so driver, labels and driver_opts \
                     would be ignored; remove them",
                );
            }
            let real_name = self.real_name(&field, stack, &key, raw.name, external);
            let volume = Volume {
                driver: raw.driver,
                external,
                real_name,
                labels: self.labels(&key_path(&field, "labels"), raw.labels),
                driver_opts: raw.driver_opts.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
            };
            volumes.insert(key, volume);
        }
        volumes
    }

    fn file_objects(
        &mut self,
        kind: ObjectKind,
        stack: &str,
        raw: BTreeMap<String, Option<RawFileObject>>,
    ) -> BTreeMap<String, FileObject> {
        let mut objects = BTreeMap::new();
        for (key, raw) in raw {
            let field = key_path(kind.section(), &key);
            self.ok(&field, check_object_name(&format!("{} name", kind.noun()), &key));
            let raw = raw.unwrap_or(RawFileObject { file: None, external: None, name: None, labels: None });
            let external = raw.external.is_some_and(|f| f.0);
            let content = match (&raw.file, external) {
                (Some(_), true) => {
                    self.diag.error(
                        &field,
                        format!("a {} is either external: true or read from file:, not both", kind.noun()),
                    );
                    None
                }
                (None, false) => {
                    self.diag.error(
                        &field,
                        format!(
                            "set file: (read relative to the stack file) or external: true for this {}",
                            kind.noun()
                        ),
                    );
                    None
                }
                (None, true) => None,
                (Some(file), false) => self.read_object_file(&key_path(&field, "file"), file),
            };
            let real_name = self.real_name(&field, stack, &key, raw.name, external);
            let object = FileObject {
                content,
                external,
                real_name,
                labels: self.labels(&key_path(&field, "labels"), raw.labels),
            };
            objects.insert(key, object);
        }
        objects
    }

    fn read_object_file(&mut self, field: &str, file: &str) -> Option<Vec<u8>> {
        let path = self.host_path(file);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() > MAX_FILE_OBJECT => {
                self.diag.error(
                    field,
                    format!("{} is {} bytes; Swarm limits configs and secrets to 500 KiB", path.display(), bytes.len()),
                );
                None
            }
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.diag
                    .error(field, format!("cannot read {}: {e}; paths are relative to the stack file", path.display()));
                None
            }
        }
    }

    fn stack_x(&mut self, raw: Option<RawStackX>) -> Option<StackX> {
        const FIELD: &str = "x-stackctl";
        let example =
            "add x-stackctl: { proxy: { service: NAME, url: \"http://127.0.0.1:8080\" } } naming the nginx service";
        let Some(raw) = raw else {
            self.diag.error(FIELD, format!("missing x-stackctl: {example}"));
            return None;
        };
        let keep = raw.keep.map_or(DEFAULT_KEEP, |n| n.0);
        let history = raw.history.map_or(DEFAULT_HISTORY, |n| n.0);
        if !(1..=MAX_HISTORY).contains(&history) {
            self.diag.error(&key_path(FIELD, "history"), format!("history must be 1 to {MAX_HISTORY} entries, not {history}"));
        }
        let field = key_path(FIELD, "proxy");
        let Some(proxy) = raw.proxy else {
            self.diag.error(FIELD, format!("missing x-stackctl.proxy: {example}"));
            return None;
        };
        let service = match proxy.service {
            Some(s) => self.ok(&key_path(&field, "service"), check_service_name(&s)).map(|()| s),
            None => {
                self.diag.error(&field, "missing service: name the service (in this file) that runs nginx");
                None
            }
        };
        let url = match proxy.url {
            Some(u) => self.ok(&key_path(&field, "url"), check_proxy_url(&u)).map(|()| u),
            None => {
                self.diag.error(&field, "missing url: how stackctl reaches nginx, e.g. url: http://127.0.0.1:8080");
                None
            }
        };
        let listen = match proxy.listen {
            Some(n) => self.port(&key_path(&field, "listen"), n.0),
            None => Some(DEFAULT_LISTEN),
        };
        let config_dir = proxy.config_dir.unwrap_or_else(|| DEFAULT_CONFIG_DIR.into());
        let config_dir = self
            .ok(&key_path(&field, "config_dir"), check_container_dir("config_dir", &config_dir))
            .map(|()| config_dir);
        let gate = self.gate(&key_path(FIELD, "gate"), raw.gate);
        let maintenance = self.maintenance(&key_path(FIELD, "maintenance"), raw.maintenance);
        Some(StackX { proxy: ProxyX { service: service?, url: url?, listen: listen?, config_dir: config_dir? }, keep, history, gate, maintenance })
    }

    /// `x-stackctl.maintenance`: `retry_after` (whole seconds, by the allowlist, as it is
    /// rendered into nginx's config) and `page` (a file beside the stack file).
    fn maintenance(&mut self, field: &str, raw: Option<RawMaintenance>) -> MaintenanceSpec {
        let defaults = MaintenanceSpec::default();
        let Some(raw) = raw else { return defaults };
        let retry_field = key_path(field, "retry_after");
        let retry_after = match self.duration(&retry_field, raw.retry_after) {
            Some(d) => self.ok(&retry_field, allow::check_retry_after(d)).map_or(defaults.retry_after, |()| d),
            None => defaults.retry_after,
        };
        let page = raw.page.and_then(|file| self.read_object_file(&key_path(field, "page"), &file));
        MaintenanceSpec { retry_after, page }
    }

    fn check_image_overrides(&mut self, services: &BTreeMap<String, RawService>) {
        for (name, image) in &self.opts.image_overrides {
            if !services.contains_key(name) {
                let known: Vec<&str> = services.keys().map(String::as_str).collect();
                let hint = match nearest(name, known.iter().copied()) {
                    Some(best) => format!("did you mean {best:?}?"),
                    None => format!("services: {}", known.join(", ")),
                };
                self.diag.error(
                    "services",
                    format!("--image {name}={image}: there is no service {name:?} in this stack; {hint}"),
                );
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Whole-stack checks

    fn check_proxy(&mut self, x: &StackX, services: &BTreeMap<String, Service>) {
        let Some(proxy) = services.get(&x.proxy.service) else {
            let hint = match nearest(&x.proxy.service, services.keys().map(String::as_str)) {
                Some(best) => format!("did you mean {best:?}?"),
                None => "add the nginx service to services:".into(),
            };
            self.diag.error(
                "x-stackctl.proxy.service",
                format!("the proxy service {:?} is not in services:; {hint}", x.proxy.service),
            );
            return;
        };
        let proxy_networks: BTreeSet<&str> = proxy.networks.iter().map(|n| n.name.as_str()).collect();
        for service in services.values().filter(|s| matches!(s.role, Role::Routed(_))) {
            if !service.networks.iter().any(|n| proxy_networks.contains(n.name.as_str())) {
                self.diag.error(
                    &key_path(&key_path("services", &service.name), "networks"),
                    format!(
                        "nginx (service {:?}) cannot reach {:?}: they share no network; attach both to a common network",
                        x.proxy.service, service.name
                    ),
                );
            }
        }
    }

    /// Two routed services must not claim the same host and path. Paths are compared without a
    /// trailing `/` because nginx serves `/api` and `/api/` from the same route.
    fn check_routes(&mut self, services: &BTreeMap<String, Service>) {
        let mut claimed: BTreeMap<(String, String), &str> = BTreeMap::new();
        for service in services.values() {
            let Role::Routed(route) = &service.role else { continue };
            let path = match route.path.trim_end_matches('/') {
                "" => "/",
                p => p,
            };
            let hosts = if route.hosts.is_empty() { vec![String::new()] } else { route.hosts.clone() };
            for host in hosts {
                if let Some(other) = claimed.insert((host.clone(), path.to_string()), &service.name) {
                    let shown = if host.is_empty() { "any host".to_string() } else { host };
                    self.diag.error(
                        &format!("services.{}.x-stackctl.route.path", service.name),
                        format!("{path} on {shown} is already routed to service {other:?}; give one of them another path or host"),
                    );
                }
            }
        }
    }

    /// Routed releases are named `<service>-r<N>`; no other service may look like one.
    fn check_release_names(&mut self, services: &BTreeMap<String, Service>) {
        for routed in services.values().filter(|s| matches!(s.role, Role::Routed(_))) {
            let prefix = format!("{}-r", routed.name);
            for other in services.keys() {
                let collides =
                    other.strip_prefix(&prefix).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                if collides {
                    self.diag.error(
                        &key_path("services", other),
                        format!("the name {other:?} collides with the release names of routed service {:?} ({}1, {}2, …); rename it", routed.name, prefix, prefix),
                    );
                }
            }
        }
    }

    /// A published port can only be used once in a stack (once per node in host mode, which is
    /// not worth distinguishing for one stack).
    fn check_published_ports(&mut self, services: &BTreeMap<String, Service>) {
        let mut used: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
        for service in services.values() {
            for (i, port) in service.ports.iter().enumerate() {
                let Some(published) = port.published else { continue };
                if let Some(other) = used.insert((published, port.protocol.clone()), &service.name) {
                    self.diag.error(
                        &item_path(&key_path(&key_path("services", &service.name), "ports"), i),
                        format!("port {published} is already published by service {other:?}"),
                    );
                }
            }
        }
    }
}

/// Resolve `.` and `..` lexically (no symlinks: the path is on the Swarm node, maybe not here).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize(Path::new("/srv/stack/./data/../conf")), PathBuf::from("/srv/stack/conf"));
    }
}
