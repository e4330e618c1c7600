//! Swarm service specs from the validated stack, built the way `docker stack deploy` builds
//! them (its `cli/compose/convert` package), without touching the network.
//!
//! Determinism matters: the caller hashes the spec to decide whether anything changed, so every
//! list comes out in a fixed order. bollard's label maps are `HashMap`s, whose iteration order
//! changes from run to run: hash [`canonical`] (or anything else that sorts keys), never
//! `serde_json::to_vec(&spec)` directly.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
    EndpointSpecModeEnum, HealthConfig, Limit, Mount, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    NetworkAttachmentConfig, ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use crate::spec::{self, EndpointMode, MountKind, Protocol, PublishMode, Role, Service, Stack};

/// Docker's stack label: `docker stack ls/services/ps` find stackctl's objects by it.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// Docker's label recording the image as written in the file (before pinning to a digest).
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// Swarm configs and secrets the service refers to, by their key in the stack file:
/// `(id, real name)` as created or found in the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRefs {
    pub configs: BTreeMap<String, (String, String)>,
    pub secrets: BTreeMap<String, (String, String)>,
}

/// Describe the Swarm service for `svc`. `swarm_name` is the full Swarm service name (e.g.
/// `demo_web-r3` or `demo_cache`), `image` the reference to run (usually pinned `name@sha256:…`),
/// `service_labels` extra labels for the service (stackctl's bookkeeping labels),
/// `replicas` the replica count to set (the caller may pass 0 to create scaled-down).
pub fn service_spec(
    stack: &Stack,
    svc: &Service,
    swarm_name: &str,
    image: &str,
    service_labels: &BTreeMap<String, String>,
    replicas: u64,
    refs: &ObjectRefs,
) -> ServiceSpec {
    let mut labels = svc.deploy.labels.clone();
    labels.extend(service_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.insert(NAMESPACE_LABEL.into(), stack.name.clone());
    labels.insert(IMAGE_LABEL.into(), svc.image.clone());

    ServiceSpec {
        name: Some(swarm_name.to_string()),
        labels: Some(hash_map(labels)),
        task_template: Some(TaskSpec {
            container_spec: Some(container_spec(stack, svc, image, refs)),
            resources: resources(&svc.deploy.resources),
            restart_policy: svc.deploy.restart_policy.as_ref().map(restart_policy),
            placement: placement(&svc.deploy.placement),
            networks: Some(networks(stack, svc)),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(i64::try_from(replicas).unwrap_or(i64::MAX)) }),
            ..Default::default()
        }),
        update_config: update_config(svc),
        endpoint_spec: Some(endpoint_spec(svc)),
        ..Default::default()
    }
}

fn hash_map(map: BTreeMap<String, String>) -> HashMap<String, String> {
    map.into_iter().collect()
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn container_spec(stack: &Stack, svc: &Service, image: &str, refs: &ObjectRefs) -> TaskSpecContainerSpec {
    let mut labels = svc.labels.clone();
    labels.insert(NAMESPACE_LABEL.into(), stack.name.clone());
    let env: Vec<String> = svc.environment.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<Mount> = svc.volumes.iter().map(|m| mount(stack, m)).collect();
    let configs: Vec<TaskSpecContainerSpecConfigs> = svc.configs.iter().map(|c| config(stack, c, refs)).collect();
    let secrets: Vec<TaskSpecContainerSpecSecrets> = svc.secrets.iter().map(|s| secret(stack, s, refs)).collect();
    TaskSpecContainerSpec {
        image: Some(image.to_string()),
        labels: Some(hash_map(labels)),
        // Docker's API calls the entrypoint `Command` and the command `Args`.
        command: svc.entrypoint.clone(),
        args: svc.command.clone(),
        hostname: svc.hostname.clone(),
        env: (!env.is_empty()).then_some(env),
        dir: svc.working_dir.clone(),
        user: svc.user.clone(),
        read_only: svc.read_only.then_some(true),
        mounts: (!mounts.is_empty()).then_some(mounts),
        stop_signal: svc.stop_signal.clone(),
        stop_grace_period: svc.stop_grace_period.map(nanos),
        health_check: svc.healthcheck.as_ref().map(healthcheck),
        secrets: (!secrets.is_empty()).then_some(secrets),
        configs: (!configs.is_empty()).then_some(configs),
        init: svc.init,
        ..Default::default()
    }
}

fn healthcheck(h: &spec::Healthcheck) -> HealthConfig {
    HealthConfig {
        // An empty test inherits the image's HEALTHCHECK; `["NONE"]` disables it.
        test: (!h.test.is_empty()).then(|| h.test.clone()),
        interval: h.interval.map(nanos),
        timeout: h.timeout.map(nanos),
        retries: h.retries.map(i64::from),
        start_period: h.start_period.map(nanos),
        ..Default::default()
    }
}

fn mount(stack: &Stack, m: &spec::Mount) -> Mount {
    let read_only = m.read_only.then_some(true);
    let target = Some(m.target.clone());
    match m.kind {
        MountKind::Bind => Mount {
            typ: Some(MountType::BIND),
            source: Some(m.source.clone()),
            target,
            read_only,
            ..Default::default()
        },
        MountKind::Tmpfs => Mount { typ: Some(MountType::TMPFS), target, read_only, ..Default::default() },
        MountKind::Volume => {
            let volume = stack.volumes.get(&m.source);
            let source = match volume {
                Some(v) => Some(v.real_name.clone()),
                // Anonymous volume.
                None if m.source.is_empty() => None,
                None => Some(format!("{}_{}", stack.name, m.source)),
            };
            // External volumes are not created, so they get no creation options.
            let volume_options = match volume {
                Some(v) if v.external => None,
                _ => Some(volume_options(stack, volume)),
            };
            Mount { typ: Some(MountType::VOLUME), source, target, read_only, volume_options, ..Default::default() }
        }
    }
}

/// Options Docker uses if the volume does not exist yet on the node the task lands on.
fn volume_options(stack: &Stack, volume: Option<&spec::Volume>) -> MountVolumeOptions {
    let mut labels = volume.map(|v| v.labels.clone()).unwrap_or_default();
    labels.insert(NAMESPACE_LABEL.into(), stack.name.clone());
    let driver_config = volume.and_then(|v| {
        let name = v.driver.clone()?;
        let options = (!v.driver_opts.is_empty()).then(|| hash_map(v.driver_opts.clone()));
        Some(MountVolumeOptionsDriverConfig { name: Some(name), options })
    });
    MountVolumeOptions { labels: Some(hash_map(labels)), driver_config, ..Default::default() }
}

/// `(id, name)` of a config or secret: from `refs` when the caller resolved it, else the name
/// the stack file implies (no id).
fn object_ref(
    key: &str,
    resolved: &BTreeMap<String, (String, String)>,
    declared: &BTreeMap<String, spec::FileObject>,
    stack: &Stack,
) -> (Option<String>, String) {
    match resolved.get(key) {
        // An empty id: named but not created yet (`plan`); the name is all a hash needs.
        Some((id, name)) => ((!id.is_empty()).then(|| id.clone()), name.clone()),
        None => {
            let name = declared.get(key).map_or_else(|| format!("{}_{key}", stack.name), |o| o.real_name.clone());
            (None, name)
        }
    }
}

fn config(stack: &Stack, r: &spec::FileRef, refs: &ObjectRefs) -> TaskSpecContainerSpecConfigs {
    let (id, name) = object_ref(&r.source, &refs.configs, &stack.configs, stack);
    TaskSpecContainerSpecConfigs {
        file: Some(TaskSpecContainerSpecFile1 {
            name: Some(r.target.clone()),
            // `docker stack deploy` writes 0 when the file does not say.
            uid: Some(r.uid.clone().unwrap_or_else(|| "0".into())),
            gid: Some(r.gid.clone().unwrap_or_else(|| "0".into())),
            mode: Some(r.mode),
        }),
        config_id: id,
        config_name: Some(name),
        ..Default::default()
    }
}

fn secret(stack: &Stack, r: &spec::FileRef, refs: &ObjectRefs) -> TaskSpecContainerSpecSecrets {
    let (id, name) = object_ref(&r.source, &refs.secrets, &stack.secrets, stack);
    // The model spells targets as absolute paths; a file directly under /run/secrets is
    // passed as a bare name, which is what Docker itself sends for the default location.
    let file_name = match r.target.strip_prefix("/run/secrets/") {
        Some(name) if !name.is_empty() && !name.contains('/') => name.to_string(),
        _ => r.target.clone(),
    };
    TaskSpecContainerSpecSecrets {
        file: Some(TaskSpecContainerSpecFile {
            name: Some(file_name),
            uid: Some(r.uid.clone().unwrap_or_else(|| "0".into())),
            gid: Some(r.gid.clone().unwrap_or_else(|| "0".into())),
            mode: Some(r.mode),
        }),
        secret_id: id,
        secret_name: Some(name),
    }
}

/// Attachments sorted by network name. Like `docker stack deploy`, the service's name in the
/// file is an alias on every network, so other services reach it as `web` whatever its Swarm
/// name (`demo_web-r3`) is.
fn networks(stack: &Stack, svc: &Service) -> Vec<NetworkAttachmentConfig> {
    let mut attachments: Vec<NetworkAttachmentConfig> = svc
        .networks
        .iter()
        .map(|n| {
            let target = stack
                .networks
                .get(&n.name)
                .map_or_else(|| format!("{}_{}", stack.name, n.name), |net| net.real_name.clone());
            let mut aliases = vec![svc.name.clone()];
            aliases.extend(n.aliases.iter().cloned());
            aliases.sort();
            aliases.dedup();
            NetworkAttachmentConfig { target: Some(target), aliases: Some(aliases), ..Default::default() }
        })
        .collect();
    attachments.sort_by(|a, b| a.target.cmp(&b.target));
    attachments
}

fn endpoint_spec(svc: &Service) -> EndpointSpec {
    let ports: Vec<EndpointPortConfig> = svc
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: Some(match p.protocol {
                Protocol::Tcp => EndpointPortConfigProtocolEnum::TCP,
                Protocol::Udp => EndpointPortConfigProtocolEnum::UDP,
            }),
            target_port: Some(i64::from(p.target)),
            published_port: p.published.map(i64::from),
            publish_mode: Some(match p.mode {
                PublishMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
                PublishMode::Host => EndpointPortConfigPublishModeEnum::HOST,
            }),
            ..Default::default()
        })
        .collect();
    EndpointSpec {
        mode: Some(match svc.deploy.endpoint_mode {
            EndpointMode::Vip => EndpointSpecModeEnum::VIP,
            EndpointMode::Dnsrr => EndpointSpecModeEnum::DNSRR,
        }),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

fn resources(r: &spec::Resources) -> Option<TaskSpecResources> {
    let limits = Limit { nano_cpus: r.limits.nano_cpus, memory_bytes: r.limits.memory_bytes, pids: r.limits.pids };
    let reservations = ResourceObject {
        nano_cpus: r.reservations.nano_cpus,
        memory_bytes: r.reservations.memory_bytes,
        ..Default::default()
    };
    let limits = (limits != Limit::default()).then_some(limits);
    let reservations = (reservations != ResourceObject::default()).then_some(reservations);
    if limits.is_none() && reservations.is_none() {
        return None;
    }
    Some(TaskSpecResources { limits, reservations, ..Default::default() })
}

fn placement(p: &spec::Placement) -> Option<TaskSpecPlacement> {
    if *p == spec::Placement::default() {
        return None;
    }
    let preferences: Vec<TaskSpecPlacementPreferences> = p
        .preferences
        .iter()
        .map(|descriptor| TaskSpecPlacementPreferences {
            spread: Some(TaskSpecPlacementSpread { spread_descriptor: Some(descriptor.clone()) }),
        })
        .collect();
    Some(TaskSpecPlacement {
        constraints: (!p.constraints.is_empty()).then(|| p.constraints.clone()),
        preferences: (!preferences.is_empty()).then_some(preferences),
        max_replicas: p.max_replicas_per_node.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        ..Default::default()
    })
}

fn restart_policy(r: &spec::RestartPolicy) -> TaskSpecRestartPolicy {
    TaskSpecRestartPolicy {
        condition: Some(match r.condition.as_str() {
            "none" => TaskSpecRestartPolicyConditionEnum::NONE,
            "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
            _ => TaskSpecRestartPolicyConditionEnum::ANY,
        }),
        delay: r.delay.map(nanos),
        max_attempts: r.max_attempts.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        window: r.window.map(nanos),
    }
}

/// The update config from the file. For plain services the order defaults to `start-first`:
/// they are updated in place by Swarm, and starting the new task before stopping the old one
/// avoids downtime. Not when the service publishes a host-mode port, though: the new task
/// could not bind it on the node where the old one still runs, so the update would stall;
/// those keep Swarm's `stop-first`. Stateful services keep `stop-first` too (two copies of a
/// database on one volume is what they must never have), and routed services do not use
/// Swarm updates at all (every change is a new release).
fn update_config(svc: &Service) -> Option<ServiceSpecUpdateConfig> {
    let given = svc.deploy.update_config.as_ref();
    let publishes_host_port = svc.ports.iter().any(|p| p.mode == PublishMode::Host && p.published.is_some());
    let default_order =
        (svc.role == Role::Plain && !publishes_host_port).then_some(ServiceSpecUpdateConfigOrderEnum::START_FIRST);
    let order = match given.and_then(|u| u.order.as_deref()) {
        Some("start-first") => Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        Some("stop-first") => Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
        _ => default_order,
    };
    let Some(u) = given else {
        return order.map(|order| ServiceSpecUpdateConfig { order: Some(order), ..Default::default() });
    };
    Some(ServiceSpecUpdateConfig {
        parallelism: u.parallelism.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        delay: u.delay.map(nanos),
        failure_action: u.failure_action.as_deref().map(|a| match a {
            "continue" => ServiceSpecUpdateConfigFailureActionEnum::CONTINUE,
            "rollback" => ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK,
            _ => ServiceSpecUpdateConfigFailureActionEnum::PAUSE,
        }),
        monitor: u.monitor.map(nanos),
        max_failure_ratio: u.max_failure_ratio,
        order,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    /// The spec as JSON, to compare whole specs with readable diffs.
    fn canonical(spec: &ServiceSpec) -> serde_json::Value {
        serde_json::to_value(spec).expect("a spec serialises")
    }
    use crate::spec::{load_str, LoadOptions};

    /// Everything `service_spec` translates, in one service.
    const STACK: &str = r#"
name: shop
x-stackctl:
  proxy: { service: proxy, url: "http://127.0.0.1:8080" }
services:
  proxy:
    image: nginx:1.27
    ports:
      - { target: 8080, published: 8080, mode: host }
    networks: [front]
  api:
    image: registry.example.com/shop/api:1.4
    command: serve --port 80
    entrypoint: ["/tini", "--"]
    environment: { B: "2", A: "1" }
    labels: { com.example.team: checkout }
    ports: ["9090:9090/udp"]
    networks:
      front:
      back: { aliases: [api-internal] }
    volumes:
      - data:/var/lib/api:ro
      - /srv/shared:/shared
      - { type: tmpfs, target: /tmp }
      - /anon
    configs:
      - app
      - { source: app, target: /etc/api.toml, uid: "100", mode: 0440 }
    secrets:
      - token
      - { source: token, target: /etc/token }
    healthcheck:
      test: curl -f http://localhost/healthz
      interval: 5s
      timeout: 1s
      retries: 3
      start_period: 30s
    stop_grace_period: 20s
    stop_signal: SIGINT
    user: "1000"
    working_dir: /app
    hostname: api-host
    init: true
    read_only: true
    deploy:
      replicas: 3
      labels: [com.example.tier=backend]
      resources:
        limits: { cpus: "0.5", memory: 64M, pids: 100 }
        reservations: { cpus: "0.25", memory: 32M }
      placement:
        constraints: ["node.role == worker"]
        preferences: [{ spread: node.labels.zone }]
        max_replicas_per_node: 2
      restart_policy: { condition: on-failure, delay: 5s, max_attempts: 3, window: 1m }
      update_config: { parallelism: 1, delay: 10s, failure_action: rollback, monitor: 30s, max_failure_ratio: 0.1 }
networks:
  front:
  back: { name: shop-back-net }
volumes:
  data: { driver: local, driver_opts: { type: nfs }, labels: { backup: daily } }
configs:
  app: { external: true, name: app-v1 }
secrets:
  token: { external: true }
"#;

    fn stack() -> Stack {
        load_str(Path::new("/srv/shop.yml"), STACK, &LoadOptions::default()).unwrap().stack
    }

    fn refs() -> ObjectRefs {
        ObjectRefs {
            configs: BTreeMap::from([("app".into(), ("cfg-id".into(), "app-v1".into()))]),
            secrets: BTreeMap::from([("token".into(), ("sec-id".into(), "token".into()))]),
        }
    }

    #[test]
    fn describes_every_field() {
        let stack = stack();
        let labels = BTreeMap::from([("io.stackctl.role".to_string(), "plain".to_string())]);
        let spec = service_spec(
            &stack,
            &stack.services["api"],
            "shop_api",
            "registry.example.com/shop/api@sha256:abc",
            &labels,
            3,
            &refs(),
        );
        let want = json!({
            "Name": "shop_api",
            "Labels": {
                "com.docker.stack.image": "registry.example.com/shop/api:1.4",
                "com.docker.stack.namespace": "shop",
                "com.example.tier": "backend",
                "io.stackctl.role": "plain",
            },
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "registry.example.com/shop/api@sha256:abc",
                    "Labels": { "com.docker.stack.namespace": "shop", "com.example.team": "checkout" },
                    "Command": ["/tini", "--"],
                    "Args": ["serve", "--port", "80"],
                    "Hostname": "api-host",
                    "Env": ["A=1", "B=2"],
                    "Dir": "/app",
                    "User": "1000",
                    "ReadOnly": true,
                    "Mounts": [
                        {
                            "Target": "/var/lib/api", "Source": "shop_data", "Type": "volume", "ReadOnly": true,
                            "VolumeOptions": {
                                "Labels": { "backup": "daily", "com.docker.stack.namespace": "shop" },
                                "DriverConfig": { "Name": "local", "Options": { "type": "nfs" } },
                            },
                        },
                        { "Target": "/shared", "Source": "/srv/shared", "Type": "bind" },
                        { "Target": "/tmp", "Type": "tmpfs" },
                        {
                            "Target": "/anon", "Type": "volume",
                            "VolumeOptions": { "Labels": { "com.docker.stack.namespace": "shop" } },
                        },
                    ],
                    "StopSignal": "SIGINT",
                    "StopGracePeriod": 20_000_000_000i64,
                    "HealthCheck": {
                        "Test": ["CMD-SHELL", "curl -f http://localhost/healthz"],
                        "Interval": 5_000_000_000i64,
                        "Timeout": 1_000_000_000,
                        "Retries": 3,
                        "StartPeriod": 30_000_000_000i64,
                    },
                    "Secrets": [
                        { "File": { "Name": "token", "UID": "0", "GID": "0", "Mode": 0o444 }, "SecretID": "sec-id", "SecretName": "token" },
                        { "File": { "Name": "/etc/token", "UID": "0", "GID": "0", "Mode": 0o444 }, "SecretID": "sec-id", "SecretName": "token" },
                    ],
                    "Configs": [
                        { "File": { "Name": "/app", "UID": "0", "GID": "0", "Mode": 0o444 }, "ConfigID": "cfg-id", "ConfigName": "app-v1" },
                        { "File": { "Name": "/etc/api.toml", "UID": "100", "GID": "0", "Mode": 0o440 }, "ConfigID": "cfg-id", "ConfigName": "app-v1" },
                    ],
                    "Init": true,
                },
                "Resources": {
                    "Limits": { "NanoCPUs": 500_000_000, "MemoryBytes": 64 << 20, "Pids": 100 },
                    "Reservations": { "NanoCPUs": 250_000_000, "MemoryBytes": 32 << 20 },
                },
                "RestartPolicy": { "Condition": "on-failure", "Delay": 5_000_000_000i64, "MaxAttempts": 3, "Window": 60_000_000_000i64 },
                "Placement": {
                    "Constraints": ["node.role == worker"],
                    "Preferences": [{ "Spread": { "SpreadDescriptor": "node.labels.zone" } }],
                    "MaxReplicas": 2,
                },
                "Networks": [
                    { "Target": "shop-back-net", "Aliases": ["api", "api-internal"] },
                    { "Target": "shop_front", "Aliases": ["api"] },
                ],
            },
            "Mode": { "Replicated": { "Replicas": 3 } },
            "UpdateConfig": {
                "Parallelism": 1,
                "Delay": 10_000_000_000i64,
                "FailureAction": "rollback",
                "Monitor": 30_000_000_000i64,
                "MaxFailureRatio": 0.1,
                "Order": "start-first",
            },
            "EndpointSpec": {
                // An ingress port keeps the VIP: Swarm refuses dnsrr with ingress ports.
                "Mode": "vip",
                "Ports": [{ "Protocol": "udp", "TargetPort": 9090, "PublishedPort": 9090, "PublishMode": "ingress" }],
            },
        });
        assert_eq!(canonical(&spec), want);
    }

    #[test]
    fn demo_web_release_and_proxy() {
        let stack =
            load_str(Path::new("stacks/demo.yml"), crate::spec::tests::DEMO, &LoadOptions::default()).unwrap().stack;
        let web = service_spec(
            &stack,
            &stack.services["web"],
            "demo_web-r3",
            "img@sha256:1",
            &BTreeMap::new(),
            0,
            &ObjectRefs::default(),
        );
        let want = json!({
            "Name": "demo_web-r3",
            "Labels": { "com.docker.stack.image": "127.0.0.1:5000/stackctl-demo:v1", "com.docker.stack.namespace": "demo" },
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "img@sha256:1",
                    "Labels": { "com.docker.stack.namespace": "demo" },
                    "Env": ["GREETING=hello"],
                    "StopGracePeriod": 5_000_000_000i64,
                },
                "Resources": { "Limits": { "NanoCPUs": 250_000_000, "MemoryBytes": 32 << 20 } },
                "Networks": [{ "Target": "demo_default", "Aliases": ["web"] }],
            },
            "Mode": { "Replicated": { "Replicas": 0 } },
            "EndpointSpec": { "Mode": "dnsrr" },
        });
        assert_eq!(canonical(&web), want);

        // The proxy publishes a host port: no start-first default, dnsrr, host mode.
        let proxy = service_spec(
            &stack,
            &stack.services["proxy"],
            "demo_proxy",
            "nginx",
            &BTreeMap::new(),
            1,
            &ObjectRefs::default(),
        );
        let proxy = canonical(&proxy);
        assert_eq!(
            proxy["EndpointSpec"],
            json!({ "Mode": "dnsrr", "Ports": [{ "Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 8080, "PublishMode": "host" }] })
        );
        assert_eq!(proxy.get("UpdateConfig"), None);
    }

    #[test]
    fn plain_services_default_to_start_first() {
        let text = crate::spec::tests::DEMO.replace("services:\n", "services:\n  cache:\n    image: redis:7\n  db:\n    image: postgres:16\n    x-stackctl: { stateful: true }\n");
        let stack = load_str(Path::new("demo.yml"), &text, &LoadOptions::default()).unwrap().stack;
        let describe = |name: &str| {
            canonical(&service_spec(
                &stack,
                &stack.services[name],
                name,
                "i",
                &BTreeMap::new(),
                1,
                &ObjectRefs::default(),
            ))
        };
        assert_eq!(describe("cache")["UpdateConfig"], json!({ "Order": "start-first" }));
        assert_eq!(describe("db").get("UpdateConfig"), None);
    }

    #[test]
    fn output_is_deterministic() {
        let stack = stack();
        let describe = || {
            canonical(&service_spec(&stack, &stack.services["api"], "a", "i", &BTreeMap::new(), 1, &refs())).to_string()
        };
        let first = describe();
        for _ in 0..20 {
            assert_eq!(describe(), first);
        }
    }
}
