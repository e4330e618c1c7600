//! The desired state of a stack: what every Swarm service should look like, computed without
//! writing anything to the cluster.
//!
//! `deploy` and `plan` both start here, so they agree on the spec hash that decides whether a
//! service changed. Two things make that possible without creating anything first:
//! - configs and secrets are named by a hash of their content ([`objects`]), so their names
//!   are known before they exist;
//! - the spec hash ([`spec_hash`]) leaves out the Swarm ids of configs and secrets, which only
//!   exist once the objects do. The name carries the content, so nothing is lost.

use std::collections::BTreeMap;

use bollard::models::{Mount, MountType, MountVolumeOptions, ServiceSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile1};

use crate::engine::describe::{self, ObjectRefs};
use crate::engine::{Engine, EngineError};
use crate::events::Events;
use crate::plan::{Desired, Kind};
use crate::release;
use crate::spec::{Role, Service, Stack};

/// Key under which the proxy's include file sits in [`ObjectRefs::configs`].
pub const INCLUDE_KEY: &str = "\u{0}stackctl-include";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Config,
    Secret,
    Network,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Secret => "secret",
            ObjectKind::Network => "network",
        }
    }
}

/// A config, secret or network the stack needs, under the name it has in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: ObjectKind,
    /// Key in the stack file ([`INCLUDE_KEY`] for the proxy's include file).
    pub key: String,
    pub name: String,
    /// Content of a config or secret stackctl creates; `None` for an external one (which must
    /// exist) and for networks.
    pub content: Option<Vec<u8>>,
    /// Declared `external: true`: never created, only found.
    pub external: bool,
}

/// Every config, secret and network of the stack, named as the deploy creates or finds them.
/// Pure: content-hashed names need no cluster.
pub fn objects(stack: &Stack) -> Vec<Object> {
    let mut out = Vec::new();
    for (kind, declared) in [(ObjectKind::Config, &stack.configs), (ObjectKind::Secret, &stack.secrets)] {
        for (key, obj) in declared {
            let (name, content) = match &obj.content {
                Some(data) => (format!("{}-{}", obj.real_name, release::hash_bytes(data)), Some(data.clone())),
                None => (obj.real_name.clone(), None),
            };
            out.push(Object { kind, key: key.clone(), name, external: content.is_none(), content });
        }
    }
    // The one-line file that makes the stock nginx.conf (`include conf.d/*.conf`) read the
    // config stackctl writes into the proxy's volume.
    if stack.services.contains_key(&stack.x.proxy.service) {
        let include = format!("include {}/*.conf;\n", stack.x.proxy.config_dir);
        let name = format!("{}_stackctl-include-{}", stack.name, release::hash_bytes(include.as_bytes()));
        out.push(Object { kind: ObjectKind::Config, key: INCLUDE_KEY.into(), name, content: Some(include.into_bytes()), external: false });
    }
    for (key, net) in &stack.networks {
        out.push(Object { kind: ObjectKind::Network, key: key.clone(), name: net.real_name.clone(), content: None, external: net.external });
    }
    out
}

/// Look the stack's configs and secrets up without creating any: the refs of those that exist
/// (with their ids), and the objects that do not exist yet. Networks are looked up too.
pub async fn lookup<E: Engine>(engine: &E, stack: &Stack) -> Result<(ObjectRefs, Vec<Object>), EngineError> {
    let mut refs = ObjectRefs::default();
    let mut missing = Vec::new();
    for obj in objects(stack) {
        let id = match obj.kind {
            ObjectKind::Config => engine.find_config(&obj.name).await?,
            ObjectKind::Secret => engine.find_secret(&obj.name).await?,
            ObjectKind::Network => engine.find_network(&obj.name).await?,
        };
        match (obj.kind, id) {
            (ObjectKind::Config, Some(id)) => _ = refs.configs.insert(obj.key.clone(), (id, obj.name.clone())),
            (ObjectKind::Secret, Some(id)) => _ = refs.secrets.insert(obj.key.clone(), (id, obj.name.clone())),
            (ObjectKind::Network, Some(_)) => {}
            (_, None) => missing.push(obj),
        }
    }
    Ok((refs, missing))
}

/// Refs naming every config and secret, with the ids of those that exist (see [`lookup`]) and
/// no id for the others: enough to describe specs and hash them ([`spec_hash`] ignores ids).
pub fn refs_by_name(stack: &Stack, found: &ObjectRefs) -> ObjectRefs {
    let mut refs = found.clone();
    for obj in objects(stack) {
        let map = match obj.kind {
            ObjectKind::Config => &mut refs.configs,
            ObjectKind::Secret => &mut refs.secrets,
            ObjectKind::Network => continue,
        };
        map.entry(obj.key).or_insert((String::new(), obj.name));
    }
    refs
}

/// Hash of a described spec, without the Swarm ids of its configs and secrets: the same
/// whether or not those objects exist yet, so `plan` and `deploy` agree.
pub fn spec_hash(spec: &ServiceSpec) -> String {
    let mut spec = spec.clone();
    if let Some(c) = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()) {
        for config in c.configs.iter_mut().flatten() {
            config.config_id = None;
        }
        for secret in c.secrets.iter_mut().flatten() {
            secret.secret_id = None;
        }
    }
    release::hash_json(&spec)
}

/// The hash stackctl computed before [`spec_hash`] left the Swarm ids out (see
/// `Desired::legacy_hash`); only when every config and secret the spec names exists.
fn legacy_hash(spec: &ServiceSpec) -> Option<String> {
    let c = spec.task_template.as_ref().and_then(|t| t.container_spec.as_ref());
    let configs = c.and_then(|c| c.configs.as_ref()).into_iter().flatten().all(|x| x.config_id.as_deref().is_some_and(|id| !id.is_empty()));
    let secrets = c.and_then(|c| c.secrets.as_ref()).into_iter().flatten().all(|x| x.secret_id.as_deref().is_some_and(|id| !id.is_empty()));
    (configs && secrets).then(|| release::hash_json(spec))
}

/// Every service's desired hash and its spec template (named without a release). `images` are
/// the pinned images by service.
pub fn services(stack: &Stack, images: &BTreeMap<String, String>, refs: &ObjectRefs) -> BTreeMap<String, (Desired, ServiceSpec)> {
    stack
        .services
        .iter()
        .map(|(name, svc)| {
            let kind = kind_of(&svc.role);
            let base = release::plain_name(&stack.name, name);
            let spec = describe(stack, svc, &base, &images[name], &BTreeMap::new(), svc.deploy.replicas, refs);
            (name.clone(), (Desired { kind, hash: spec_hash(&spec), legacy_hash: legacy_hash(&spec) }, spec))
        })
        .collect()
}

/// The Swarm spec of a service, with stackctl's labels and, for the proxy, the volume and
/// include file that let nginx find the routing config.
pub fn describe(
    stack: &Stack,
    svc: &Service,
    swarm_name: &str,
    image: &str,
    extra: &BTreeMap<String, String>,
    replicas: u64,
    refs: &ObjectRefs,
) -> ServiceSpec {
    let mut labels = release::base_labels(&stack.name, &svc.name, kind_of(&svc.role).as_str());
    labels.extend(extra.clone());
    let mut spec = describe::service_spec(stack, svc, swarm_name, image, &labels, replicas, refs);
    if svc.role == Role::Proxy {
        add_proxy_plumbing(&mut spec, stack, refs);
    }
    spec
}

pub fn kind_of(role: &Role) -> Kind {
    match role {
        Role::Proxy => Kind::Proxy,
        Role::Routed(_) => Kind::Routed,
        Role::Stateful => Kind::Stateful,
        Role::Plain => Kind::Plain,
    }
}

/// Named volume holding the routing config, so a replacement nginx task finds it.
pub fn proxy_volume(stack: &str) -> String {
    format!("{stack}_stackctl-proxy")
}

fn add_proxy_plumbing(spec: &mut ServiceSpec, stack: &Stack, refs: &ObjectRefs) {
    let Some(container) = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()) else { return };
    let labels = std::collections::HashMap::from([(release::NAMESPACE.to_string(), stack.name.clone())]);
    container.mounts.get_or_insert_with(Vec::new).push(Mount {
        target: Some(stack.x.proxy.config_dir.clone()),
        source: Some(proxy_volume(&stack.name)),
        typ: Some(MountType::VOLUME),
        volume_options: Some(MountVolumeOptions { labels: Some(labels), ..Default::default() }),
        ..Default::default()
    });
    if let Some((id, name)) = refs.configs.get(INCLUDE_KEY) {
        container.configs.get_or_insert_with(Vec::new).push(TaskSpecContainerSpecConfigs {
            file: Some(TaskSpecContainerSpecFile1 {
                name: Some(format!("/etc/nginx/conf.d/stackctl-{}.conf", stack.name)),
                uid: Some("0".into()),
                gid: Some("0".into()),
                mode: Some(0o444),
            }),
            config_id: (!id.is_empty()).then(|| id.clone()),
            config_name: Some(name.clone()),
            ..Default::default()
        });
    }
}

/// Pin every image to its registry digest (read only): what runs is exactly what was resolved,
/// and a re-pushed tag is a change.
pub async fn resolve_images<E: Engine>(engine: &E, stack: &Stack, out: &Events) -> Result<BTreeMap<String, String>, String> {
    let mut images = BTreeMap::new();
    // One registry lookup per distinct reference: twenty services on one image cost twenty
    // lookups otherwise (tests/bench_plan.rs), and services sharing a tag get one digest even
    // if the tag is pushed again while the lookups run.
    let mut pinned: BTreeMap<&str, String> = BTreeMap::new();
    for (name, svc) in &stack.services {
        if let Some(digest) = pinned.get(svc.image.as_str()) {
            images.insert(name.clone(), digest.clone());
            continue;
        }
        out.progress(&format!("resolving {}", svc.image));
        let digest = engine.resolve_image(&svc.image).await.map_err(|e| {
            format!(
                "cannot resolve the image of service {name} ({}): {e}. Is the tag pushed and the registry reachable from the Docker engine?",
                svc.image
            )
        })?;
        pinned.insert(&svc.image, digest.clone());
        images.insert(name.clone(), digest);
    }
    Ok(images)
}
