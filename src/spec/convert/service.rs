//! One service: raw Compose keys → [`Service`], with its `x-stackctl` role.

use std::collections::BTreeMap;
use std::time::Duration;

use super::syntax::{
    check_env_key, parse_env_file, parse_port_short, parse_volume_short, protocol, split_shell, HOST_IP_UNSUPPORTED,
};
use super::{Cx, ObjectKind, Scope};
use crate::spec::allow::*;
use crate::spec::locate::{item_path, key_path};
use crate::spec::raw::*;
use crate::spec::units::{parse_bytes, parse_cpus};
use crate::spec::validate::*;
use crate::spec::*;

/// Route defaults (`x-stackctl.route`).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
const MAX_DRAIN: Duration = Duration::from_secs(3600);
const DEFAULT_WATCH: Duration = Duration::from_secs(10);
const MAX_WATCH: Duration = Duration::from_secs(3600);
const MAX_ROLLBACK_WINDOW: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_DEADLINE: Duration = Duration::from_secs(120);
const DEFAULT_HEALTH_SUCCESSES: u32 = 3;

impl Cx<'_, '_> {
    pub(super) fn service(&mut self, name: &str, raw: RawService, scope: &Scope) -> Service {
        let path = key_path("services", name);
        self.ok(&path, check_service_name(name));

        let image = self.image(&path, name, raw.image);
        let command = self.shell_words(&key_path(&path, "command"), raw.command);
        let entrypoint = self.shell_words(&key_path(&path, "entrypoint"), raw.entrypoint);
        let environment = self.environment(&path, raw.env_file, raw.environment);
        let labels = self.labels(&key_path(&path, "labels"), raw.labels);
        let ports = self.ports(&key_path(&path, "ports"), raw.ports);
        let networks = self.service_networks(&key_path(&path, "networks"), raw.networks, scope.networks);
        let volumes = self.mounts(&key_path(&path, "volumes"), raw.volumes, scope.volumes);
        let configs = self.file_refs(&path, ObjectKind::Config, raw.configs, scope.configs);
        let secrets = self.file_refs(&path, ObjectKind::Secret, raw.secrets, scope.secrets);
        let healthcheck = raw.healthcheck.map(|h| self.healthcheck(&key_path(&path, "healthcheck"), h));
        let stop_grace_period = self.duration(&key_path(&path, "stop_grace_period"), raw.stop_grace_period);
        let role = self.role(&path, name, raw.x_stackctl, scope);
        let (deploy, endpoint_mode) = self.deploy(&key_path(&path, "deploy"), raw.deploy.unwrap_or_default());

        if let Role::Routed(_) = role {
            self.check_routed(&path, name, &ports, scope.stack);
        }
        self.warn_ingress_ports(&path, &ports);
        let endpoint_mode = self.endpoint_mode(&path, endpoint_mode, &ports, &role);

        Service {
            name: name.to_string(),
            role,
            image: image.unwrap_or_default(),
            command,
            entrypoint,
            environment,
            labels,
            ports,
            networks,
            volumes,
            configs,
            secrets,
            healthcheck,
            stop_grace_period,
            stop_signal: raw.stop_signal,
            user: raw.user.map(|t| t.0),
            working_dir: raw.working_dir,
            hostname: raw.hostname,
            init: raw.init.map(|f| f.0),
            read_only: raw.read_only.is_some_and(|f| f.0),
            deploy: Deploy { endpoint_mode, ..deploy },
        }
    }

    /// A routed service runs as several Swarm services (one per release) behind nginx.
    fn check_routed(&mut self, path: &str, name: &str, ports: &[Port], stack: Option<&str>) {
        if !ports.is_empty() {
            self.diag.error(
                &key_path(path, "ports"),
                "a routed service is reached through the proxy and runs two releases side by side during a \
                 deploy, so it cannot publish ports; remove ports:",
            );
        }
        if let Some(stack) = stack {
            let longest = stack.len() + 1 + name.len() + RELEASE_SUFFIX_ROOM;
            if longest > MAX_SWARM_SERVICE_NAME {
                self.diag.error(
                    path,
                    format!(
                        "release names {stack}_{name}-r<N> can reach {longest} characters, over Swarm's \
                         {MAX_SWARM_SERVICE_NAME}; shorten the stack or service name"
                    ),
                );
            }
        }
    }

    fn warn_ingress_ports(&mut self, path: &str, ports: &[Port]) {
        for (i, port) in ports.iter().enumerate().filter(|(_, p)| p.mode == PublishMode::Ingress) {
            self.diag.warn(
                &item_path(&key_path(path, "ports"), i),
                format!(
                    "port {} is published in ingress mode (the default, and the only mode of the short syntax), \
                     which needs the ip_vs kernel module for Swarm's routing mesh; use the long syntax with mode: host",
                    port.published.unwrap_or(port.target)
                ),
            );
        }
    }

    fn image(&mut self, path: &str, name: &str, from_file: Option<String>) -> Option<String> {
        let field = key_path(path, "image");
        let (image, origin) = match (self.opts.image_overrides.get(name), from_file) {
            (Some(image), _) => (image.clone(), " (from --image)"),
            (None, Some(image)) => (image, ""),
            (None, None) => {
                self.diag.error(path, "missing image: every service needs an image (stackctl does not build images)");
                return None;
            }
        };
        self.ok(&field, check_image_ref(&image).map_err(|e| format!("{e}{origin}"))).map(|()| image)
    }

    fn shell_words(&mut self, field: &str, raw: Option<StrOrList>) -> Option<Vec<String>> {
        match raw? {
            StrOrList::List(words) => Some(words),
            StrOrList::Str(line) => self.ok(field, split_shell(&line)),
        }
    }

    /// `env_file:` entries, then `environment:` over them.
    fn environment(
        &mut self,
        path: &str,
        env_file: Option<StrOrList>,
        environment: Option<MapOrList<Option<Text>>>,
    ) -> BTreeMap<String, String> {
        let mut vars = self.env_files(&key_path(path, "env_file"), env_file);
        let field = key_path(path, "environment");
        let entries: Vec<(String, String, Option<String>)> = match environment {
            None => Vec::new(),
            Some(MapOrList::Map(map)) => {
                map.into_iter().map(|(k, v)| (key_path(&field, &k), k, v.map(|t| t.0))).collect()
            }
            Some(MapOrList::List(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item.split_once('=') {
                    Some((k, v)) => (item_path(&field, i), k.to_string(), Some(v.to_string())),
                    None => (item_path(&field, i), item, None),
                })
                .collect(),
        };
        for (at, key, value) in entries {
            if let Err(message) = check_env_key(&key) {
                self.diag.error(&at, message);
                continue;
            }
            // A bare KEY (or `KEY:` with no value) passes stackctl's own variable through;
            // when that is unset the variable is left out, as Compose does.
            match value.or_else(|| self.opts.env.get(&key).cloned()) {
                Some(value) => {
                    vars.insert(key, value);
                }
                None => {
                    vars.remove(&key);
                }
            }
        }
        vars
    }

    /// The variables of the `env_file:` files, in order (later files win).
    fn env_files(&mut self, field: &str, env_file: Option<StrOrList>) -> BTreeMap<String, String> {
        let files = match env_file {
            None => Vec::new(),
            Some(StrOrList::Str(f)) => vec![(field.to_string(), f)],
            Some(StrOrList::List(fs)) => fs.into_iter().enumerate().map(|(i, f)| (item_path(field, i), f)).collect(),
        };
        let mut vars = BTreeMap::new();
        for (at, file) in files {
            let full = self.host_path(&file);
            let text = match std::fs::read_to_string(&full) {
                Ok(text) => text,
                Err(e) => {
                    self.diag.error(
                        &at,
                        format!("cannot read env file {}: {e}; paths are relative to the stack file", full.display()),
                    );
                    continue;
                }
            };
            match parse_env_file(&text) {
                Ok(entries) => {
                    for (key, value) in entries {
                        if let Some(value) = value.or_else(|| self.opts.env.get(&key).cloned()) {
                            vars.insert(key, value);
                        }
                    }
                }
                Err((line, message)) => self.diag.error(&at, format!("{}:{line}: {message}", full.display())),
            }
        }
        vars
    }

    fn ports(&mut self, field: &str, raw: Option<Vec<ShortOrLong<RawPort>>>) -> Vec<Port> {
        let mut ports = Vec::new();
        for (i, raw) in raw.unwrap_or_default().into_iter().enumerate() {
            let at = item_path(field, i);
            match raw {
                ShortOrLong::Short(spec) => {
                    if let Some(mut more) = self.ok(&at, parse_port_short(&spec)) {
                        ports.append(&mut more);
                    }
                }
                ShortOrLong::Long(long) => {
                    if let Some(port) = self.port_long(&at, long) {
                        ports.push(port);
                    }
                }
            }
        }
        ports
    }

    fn port_long(&mut self, at: &str, raw: RawPort) -> Option<Port> {
        if raw.host_ip.is_some() {
            self.diag.error(&key_path(at, "host_ip"), HOST_IP_UNSUPPORTED);
        }
        let target = match raw.target {
            Some(n) => self.port(&key_path(at, "target"), n.0),
            None => {
                self.diag.error(at, "missing target: the container port");
                None
            }
        };
        let published = match raw.published {
            Some(n) => Some(self.port(&key_path(at, "published"), n.0)?),
            None => None,
        };
        let protocol = match raw.protocol.as_deref() {
            None => Some(Protocol::Tcp),
            Some(p) => self.one_of(&key_path(at, "protocol"), p, &["tcp", "udp"]).map(|p| protocol(&p)),
        };
        let mode = match raw.mode.as_deref() {
            None => Some(PublishMode::Ingress),
            Some(m) => self.one_of(&key_path(at, "mode"), m, &["host", "ingress"]).map(|m| {
                if m == "host" {
                    PublishMode::Host
                } else {
                    PublishMode::Ingress
                }
            }),
        };
        Some(Port { target: target?, published, protocol: protocol?, mode: mode? })
    }

    fn service_networks(
        &mut self,
        field: &str,
        raw: Option<MapOrList<Option<RawServiceNetwork>>>,
        defined: &BTreeMap<String, Network>,
    ) -> Vec<ServiceNetwork> {
        let entries: Vec<(String, String, Vec<String>)> = match raw {
            None => Vec::new(),
            Some(MapOrList::List(names)) => {
                names.into_iter().enumerate().map(|(i, n)| (item_path(field, i), n, Vec::new())).collect()
            }
            Some(MapOrList::Map(map)) => map
                .into_iter()
                .map(|(n, attach)| {
                    let aliases = attach.and_then(|a| a.aliases).unwrap_or_default();
                    (key_path(field, &n), n, aliases)
                })
                .collect(),
        };
        if entries.is_empty() {
            return vec![ServiceNetwork { name: "default".into(), aliases: Vec::new() }];
        }
        let mut networks: Vec<ServiceNetwork> = Vec::new();
        for (at, name, aliases) in entries {
            if name != "default" && !defined.contains_key(&name) {
                let hint = match nearest(&name, defined.keys().map(String::as_str)) {
                    Some(best) => format!("did you mean {best:?}?"),
                    None => "add it under the top-level networks:".into(),
                };
                self.diag.error(&at, format!("network {name:?} is not defined; {hint}"));
                continue;
            }
            for (i, alias) in aliases.iter().enumerate() {
                self.ok(&item_path(&key_path(&at, "aliases"), i), check_object_name("network alias", alias));
            }
            if !networks.iter().any(|n| n.name == name) {
                networks.push(ServiceNetwork { name, aliases });
            }
        }
        networks
    }

    fn mounts(
        &mut self,
        field: &str,
        raw: Option<Vec<ShortOrLong<RawMount>>>,
        volumes: &BTreeMap<String, Volume>,
    ) -> Vec<Mount> {
        let mut mounts = Vec::new();
        for (i, raw) in raw.unwrap_or_default().into_iter().enumerate() {
            let at = item_path(field, i);
            let parsed = match raw {
                ShortOrLong::Short(spec) => self.ok(&at, parse_volume_short(&spec)),
                ShortOrLong::Long(long) => self.mount_long(&at, long),
            };
            let Some(mut mount) = parsed else { continue };
            if !mount.target.starts_with('/') {
                self.diag.error(
                    &at,
                    format!("the mount target {:?} must be an absolute path in the container", mount.target),
                );
                continue;
            }
            match mount.kind {
                MountKind::Bind => {
                    if mount.source.starts_with('~') {
                        self.diag.error(
                            &at,
                            format!("{:?}: '~' is not expanded; write the host path in full", mount.source),
                        );
                        continue;
                    }
                    mount.source = self.host_path(&mount.source).to_string_lossy().into_owned();
                }
                MountKind::Volume if !mount.source.is_empty() && !volumes.contains_key(&mount.source) => {
                    let hint = match nearest(&mount.source, volumes.keys().map(String::as_str)) {
                        Some(best) => format!("did you mean {best:?}?"),
                        None => "add it under the top-level volumes: (or write ./path for a bind mount)".into(),
                    };
                    self.diag.error(&at, format!("volume {:?} is not defined; {hint}", mount.source));
                    continue;
                }
                MountKind::Volume | MountKind::Tmpfs => {}
            }
            mounts.push(mount);
        }
        mounts
    }

    fn mount_long(&mut self, at: &str, raw: RawMount) -> Option<Mount> {
        let kind = match raw.kind.as_deref() {
            None => {
                self.diag.error(at, "missing type: volume, bind or tmpfs");
                return None;
            }
            Some(kind) => match self.one_of(&key_path(at, "type"), kind, &["volume", "bind", "tmpfs"])?.as_str() {
                "bind" => MountKind::Bind,
                "tmpfs" => MountKind::Tmpfs,
                _ => MountKind::Volume,
            },
        };
        let Some(target) = raw.target else {
            self.diag.error(at, "missing target: the path in the container");
            return None;
        };
        let source = match (&kind, raw.source) {
            (MountKind::Bind, None) => {
                self.diag.error(at, "missing source: the host path of the bind mount");
                return None;
            }
            (MountKind::Tmpfs, Some(_)) => {
                self.diag.error(&key_path(at, "source"), "a tmpfs mount has no source; remove it");
                return None;
            }
            (_, source) => source.unwrap_or_default(),
        };
        Some(Mount { kind, source, target, read_only: raw.read_only.is_some_and(|f| f.0) })
    }

    fn file_refs(
        &mut self,
        path: &str,
        kind: ObjectKind,
        raw: Option<Vec<ShortOrLong<RawFileRef>>>,
        defined: &BTreeMap<String, FileObject>,
    ) -> Vec<FileRef> {
        let field = key_path(path, kind.section());
        let mut refs = Vec::new();
        for (i, raw) in raw.unwrap_or_default().into_iter().enumerate() {
            let at = item_path(&field, i);
            let raw = match raw {
                ShortOrLong::Short(source) => {
                    RawFileRef { source: Some(source), target: None, uid: None, gid: None, mode: None }
                }
                ShortOrLong::Long(long) => long,
            };
            let Some(source) = raw.source else {
                self.diag.error(
                    &at,
                    format!("missing source: the name of the {} under the top-level {}:", kind.noun(), kind.section()),
                );
                continue;
            };
            if !defined.contains_key(&source) {
                self.diag.error(
                    &at,
                    format!(
                        "{} {source:?} is not defined; add it under the top-level {}:",
                        kind.noun(),
                        kind.section()
                    ),
                );
                continue;
            }
            let target = match (kind, raw.target) {
                (ObjectKind::Config, None) => format!("/{source}"),
                (ObjectKind::Secret, None) => format!("/run/secrets/{source}"),
                (_, Some(t)) if t.starts_with('/') => t,
                // Docker puts a secret with a relative target under /run/secrets.
                (ObjectKind::Secret, Some(t)) => format!("/run/secrets/{t}"),
                (ObjectKind::Config, Some(t)) => {
                    self.diag
                        .error(&key_path(&at, "target"), format!("the config target {t:?} must be an absolute path"));
                    continue;
                }
            };
            let uid = raw.uid.map(|t| t.0);
            let gid = raw.gid.map(|t| t.0);
            for (name, id) in [("uid", &uid), ("gid", &gid)] {
                if let Some(id) = id {
                    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                        self.diag.error(&key_path(&at, name), format!("{name} {id:?} must be a number"));
                    }
                }
            }
            refs.push(FileRef { source, target, uid, gid, mode: raw.mode.map_or(0o444, |m| m.0) });
        }
        refs
    }

    fn healthcheck(&mut self, field: &str, raw: RawHealthcheck) -> Healthcheck {
        let disabled = raw.disable.is_some_and(|f| f.0);
        let test = match raw.test {
            _ if disabled => vec!["NONE".to_string()],
            None => Vec::new(),
            Some(StrOrList::Str(command)) => vec!["CMD-SHELL".to_string(), command],
            Some(StrOrList::List(test)) => {
                if !matches!(test.first().map(String::as_str), Some("CMD" | "CMD-SHELL" | "NONE")) {
                    self.diag.error(
                        &key_path(field, "test"),
                        "a test list must start with CMD, CMD-SHELL or NONE; write a string for a shell command",
                    );
                }
                test
            }
        };
        Healthcheck {
            test,
            interval: self.duration(&key_path(field, "interval"), raw.interval),
            timeout: self.duration(&key_path(field, "timeout"), raw.timeout),
            retries: raw.retries.map(|n| n.0),
            start_period: self.duration(&key_path(field, "start_period"), raw.start_period),
        }
    }

    /// The deploy section, and the explicit endpoint mode (decided later, with the ports).
    fn deploy(&mut self, field: &str, raw: RawDeploy) -> (Deploy, Option<EndpointMode>) {
        if let Some(mode) = raw.mode.as_deref() {
            match mode {
                "replicated" => {}
                "global" => self.diag.error(
                    &key_path(field, "mode"),
                    "mode: global is not supported yet; use mode: replicated with replicas: N and \
                     placement.max_replicas_per_node: 1",
                ),
                _ => {
                    self.one_of(&key_path(field, "mode"), mode, &["replicated"]);
                }
            }
        }
        let endpoint_mode = raw.endpoint_mode.as_deref().and_then(|m| {
            self.one_of(&key_path(field, "endpoint_mode"), m, &["vip", "dnsrr"]).map(|m| {
                if m == "vip" {
                    EndpointMode::Vip
                } else {
                    EndpointMode::Dnsrr
                }
            })
        });
        let deploy = Deploy {
            replicas: raw.replicas.map_or(1, |n| n.0),
            resources: self.resources(&key_path(field, "resources"), raw.resources),
            placement: self.placement(&key_path(field, "placement"), raw.placement),
            restart_policy: raw.restart_policy.map(|r| self.restart_policy(&key_path(field, "restart_policy"), r)),
            update_config: raw.update_config.map(|u| self.update_config(&key_path(field, "update_config"), u)),
            endpoint_mode: EndpointMode::default(),
            labels: self.labels(&key_path(field, "labels"), raw.labels),
        };
        (deploy, endpoint_mode)
    }

    fn resources(&mut self, field: &str, raw: Option<RawResources>) -> Resources {
        let Some(raw) = raw else { return Resources::default() };
        let limits = raw.limits.map_or_else(ResourceSet::default, |l| {
            let at = key_path(field, "limits");
            let pids = l.pids.map(|n| n.0);
            if pids.is_some_and(|p| p < 1) {
                self.diag.error(&key_path(&at, "pids"), "pids must be at least 1; remove it for no limit");
            }
            ResourceSet {
                nano_cpus: l.cpus.and_then(|c| self.ok(&key_path(&at, "cpus"), parse_cpus(&c.0))),
                memory_bytes: l.memory.and_then(|m| self.ok(&key_path(&at, "memory"), parse_bytes(&m.0))),
                pids,
            }
        });
        let reservations = raw.reservations.map_or_else(ResourceSet::default, |r| {
            let at = key_path(field, "reservations");
            ResourceSet {
                nano_cpus: r.cpus.and_then(|c| self.ok(&key_path(&at, "cpus"), parse_cpus(&c.0))),
                memory_bytes: r.memory.and_then(|m| self.ok(&key_path(&at, "memory"), parse_bytes(&m.0))),
                pids: None,
            }
        });
        Resources { limits, reservations }
    }

    fn placement(&mut self, field: &str, raw: Option<RawPlacement>) -> Placement {
        let Some(raw) = raw else { return Placement::default() };
        let constraints = raw.constraints.unwrap_or_default();
        for (i, c) in constraints.iter().enumerate() {
            if !(c.contains("==") || c.contains("!=")) {
                self.diag.error(
                    &item_path(&key_path(field, "constraints"), i),
                    format!("constraint {c:?} needs == or !=, e.g. node.role == manager"),
                );
            }
        }
        let preferences = raw.preferences.unwrap_or_default().into_iter().map(|p| p.spread).collect();
        Placement { constraints, preferences, max_replicas_per_node: raw.max_replicas_per_node.map(|n| n.0) }
    }

    fn restart_policy(&mut self, field: &str, raw: RawRestartPolicy) -> RestartPolicy {
        let condition = match raw.condition.as_deref() {
            None => "any".to_string(),
            Some(c) => {
                self.one_of(&key_path(field, "condition"), c, &["none", "on-failure", "any"]).unwrap_or_default()
            }
        };
        RestartPolicy {
            condition,
            delay: self.duration(&key_path(field, "delay"), raw.delay),
            max_attempts: raw.max_attempts.map(|n| n.0),
            window: self.duration(&key_path(field, "window"), raw.window),
        }
    }

    fn update_config(&mut self, field: &str, raw: RawUpdateConfig) -> UpdateConfig {
        let failure_action = raw
            .failure_action
            .and_then(|a| self.one_of(&key_path(field, "failure_action"), &a, &["pause", "continue", "rollback"]));
        let order = raw.order.and_then(|o| self.one_of(&key_path(field, "order"), &o, &["stop-first", "start-first"]));
        let max_failure_ratio = raw.max_failure_ratio.map(|r| r.0);
        if max_failure_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            self.diag.error(&key_path(field, "max_failure_ratio"), "max_failure_ratio must be between 0 and 1");
        }
        UpdateConfig {
            parallelism: raw.parallelism.map(|n| n.0),
            delay: self.duration(&key_path(field, "delay"), raw.delay),
            failure_action,
            monitor: self.duration(&key_path(field, "monitor"), raw.monitor),
            max_failure_ratio,
            order,
        }
    }

    /// Endpoint mode. The VIP needs ip_vs in the kernel and nginx talks to task IPs anyway, so
    /// the default is `dnsrr` for every service, except one that publishes an ingress-mode
    /// port: Swarm refuses dnsrr with those, so it keeps Compose's default, `vip`.
    fn endpoint_mode(
        &mut self,
        path: &str,
        explicit: Option<EndpointMode>,
        ports: &[Port],
        role: &Role,
    ) -> EndpointMode {
        let ingress = ports.iter().any(|p| p.mode == PublishMode::Ingress);
        let field = key_path(&key_path(path, "deploy"), "endpoint_mode");
        match explicit {
            Some(EndpointMode::Dnsrr) if ingress => {
                self.diag.error(
                    &field,
                    "Swarm refuses endpoint_mode: dnsrr with ports published in ingress mode; publish them with \
                     mode: host (long syntax) or remove endpoint_mode",
                );
                EndpointMode::Dnsrr
            }
            Some(EndpointMode::Vip) if matches!(role, Role::Routed(_)) => {
                self.diag.warn(
                    &field,
                    "endpoint_mode: vip is not needed for a routed service (nginx reaches its tasks directly) and \
                     needs the ip_vs kernel module; remove it to use dnsrr",
                );
                EndpointMode::Vip
            }
            Some(mode) => mode,
            None if ingress => EndpointMode::Vip,
            None => EndpointMode::Dnsrr,
        }
    }

    // -----------------------------------------------------------------------------------------
    // x-stackctl on a service

    fn role(&mut self, path: &str, name: &str, raw: Option<RawServiceX>, scope: &Scope) -> Role {
        let field = key_path(path, "x-stackctl");
        let (route, stateful) = match raw {
            Some(x) => (x.route, x.stateful.is_some_and(|f| f.0)),
            None => (None, false),
        };
        if scope.proxy == Some(name) {
            if route.is_some() || stateful {
                self.diag.error(
                    &field,
                    "this service is the proxy (x-stackctl.proxy.service); it cannot be routed or stateful itself",
                );
            }
            return Role::Proxy;
        }
        match (route, stateful) {
            (Some(_), true) => {
                self.diag.error(&field, "a service is either routed (route:) or stateful: true, not both");
                Role::Plain
            }
            (Some(route), false) => {
                self.route(&key_path(&field, "route"), route, scope.keep).map_or(Role::Plain, Role::Routed)
            }
            (None, true) => Role::Stateful,
            (None, false) => Role::Plain,
        }
    }

    fn route(&mut self, field: &str, mut raw: RawRoute, default_keep: u32) -> Option<Route> {
        let settings = self.route_settings(field, &mut raw);
        let port = match raw.port {
            Some(n) => self.port(&key_path(field, "port"), n.0),
            None => {
                self.diag.error(field, "missing port: the container port nginx sends traffic to");
                None
            }
        };
        let hosts = self.route_hosts(field, raw.host, raw.hosts);
        let path = raw.path.unwrap_or_else(|| "/".into());
        let path = self.ok(&key_path(field, "path"), check_path("route path", &path)).map(|()| path);
        let health = self.health(&key_path(field, "health"), raw.health);
        let drain = self.duration(&key_path(field, "drain"), raw.drain).unwrap_or(DEFAULT_DRAIN);
        if drain > MAX_DRAIN {
            self.diag.error(&key_path(field, "drain"), "drain must be at most 1h");
        }
        let watch = self.duration(&key_path(field, "watch"), raw.watch).unwrap_or(DEFAULT_WATCH);
        if watch > MAX_WATCH {
            self.diag.error(&key_path(field, "watch"), "watch must be at most 1h (0s disables it)");
        }
        let rollback_window = self.duration(&key_path(field, "rollback_window"), raw.rollback_window).unwrap_or(Duration::ZERO);
        if rollback_window > MAX_ROLLBACK_WINDOW {
            self.diag.error(&key_path(field, "rollback_window"), "rollback_window must be at most 24h (0s: no standby)");
        }
        let keep = raw.keep.map_or(default_keep, |n| n.0);
        Some(Route { port: port?, hosts: hosts?, path: path?, health: health?, drain, watch, keep, rollback_window, settings })
    }

    /// The route's nginx settings, each refused at its own key when outside
    /// [`crate::spec::allow`]'s bounds (the default stays in its place, so one error is reported
    /// once and the rest of the route is still checked).
    fn route_settings(&mut self, field: &str, raw: &mut RawRoute) -> RouteSettings {
        let mut settings = RouteSettings::default();
        if let Some(text) = raw.client_max_body_size.take() {
            let at = key_path(field, "client_max_body_size");
            let bytes = self.ok(&at, parse_bytes(&text.0)).and_then(|n| u64::try_from(n).ok());
            settings.client_max_body_size = bytes.and_then(|n| self.ok(&at, check_body_size(n)).map(|()| n));
        }
        for (key, text, slot) in [
            ("read_timeout", raw.read_timeout.take(), &mut settings.read_timeout),
            ("send_timeout", raw.send_timeout.take(), &mut settings.send_timeout),
        ] {
            let at = key_path(field, key);
            *slot = self.duration(&at, text).and_then(|t| self.ok(&at, check_proxy_timeout(key, t)).map(|()| t));
        }
        settings.buffering = raw.buffering.is_none_or(|f| f.0);
        let headers = raw.headers.take().unwrap_or_default();
        let at = key_path(field, "headers");
        if headers.len() > MAX_HEADERS {
            self.diag.error(&at, format!("{} headers; the limit is {MAX_HEADERS} per route", headers.len()));
            return settings;
        }
        for (name, value) in headers {
            let key = key_path(&at, &name);
            let checked = check_header_name(&name).and_then(|()| check_header_value(&name, &value.0));
            if self.ok(&key, checked).is_none() {
                continue;
            }
            if settings.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                self.diag.error(&key, format!("header {name:?} is set twice (header names are case-insensitive)"));
                continue;
            }
            settings.headers.push((name, value.0));
        }
        settings
    }

    fn route_hosts(&mut self, field: &str, host: Option<String>, hosts: Option<Vec<String>>) -> Option<Vec<String>> {
        let entries: Vec<(String, String)> = match (host, hosts) {
            (Some(_), Some(_)) => {
                self.diag.error(field, "use either host: or hosts:, not both");
                return None;
            }
            (Some(h), None) => vec![(key_path(field, "host"), h)],
            (None, Some(hs)) => {
                let at = key_path(field, "hosts");
                hs.into_iter().enumerate().map(|(i, h)| (item_path(&at, i), h)).collect()
            }
            (None, None) => Vec::new(),
        };
        let mut all_ok = true;
        let mut hosts: Vec<String> = Vec::new();
        for (at, host) in entries {
            if self.ok(&at, check_host(&host)).is_none() {
                all_ok = false;
            } else if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        all_ok.then_some(hosts)
    }

    fn health(&mut self, field: &str, raw: Option<RawHealth>) -> Option<HealthProbe> {
        let raw = raw.unwrap_or(RawHealth {
            path: None,
            status: None,
            interval: None,
            timeout: None,
            successes: None,
            deadline: None,
        });
        let path = raw.path.unwrap_or_else(|| "/".into());
        let path = self.ok(&key_path(field, "path"), check_health_path(&path)).map(|()| path);
        let status = raw.status.map_or(200, |n| n.0);
        if !(100..=599).contains(&status) {
            self.diag.error(&key_path(field, "status"), format!("status {status} is not an HTTP status (100-599)"));
        }
        let interval = self.positive_duration(&key_path(field, "interval"), raw.interval, DEFAULT_HEALTH_INTERVAL);
        let timeout = self.positive_duration(&key_path(field, "timeout"), raw.timeout, DEFAULT_HEALTH_TIMEOUT);
        let deadline = self.positive_duration(&key_path(field, "deadline"), raw.deadline, DEFAULT_HEALTH_DEADLINE);
        if timeout > deadline {
            self.diag.error(
                &key_path(field, "timeout"),
                "the probe timeout is longer than the deadline; lower timeout or raise deadline",
            );
        }
        let successes = raw.successes.map_or(DEFAULT_HEALTH_SUCCESSES, |n| n.0);
        if successes == 0 {
            self.diag.error(&key_path(field, "successes"), "successes must be at least 1");
        }
        Some(HealthProbe { path: path?, status: u16::try_from(status).ok()?, interval, timeout, successes, deadline })
    }
}
