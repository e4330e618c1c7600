//! The identity of a release: Swarm names, bookkeeping labels and the spec hash.
//!
//! A *release* is one numbered deploy of a stack. Every routed service changed by that deploy
//! gets its own Swarm service named `<stack>_<service>-r<N>`; plain, stateful and proxy services
//! keep the unversioned name `<stack>_<service>` that `docker stack deploy` would give them.
//! The cluster is always observed through these labels, never by name prefix, so a user's own
//! service called `demo_web-r9` is never mistaken for ours.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Label on every object stackctl creates: the stack it belongs to.
pub const STACK: &str = "io.stackctl.stack";
/// The service's name in the stack file (`web`).
pub const SERVICE: &str = "io.stackctl.service";
/// Release number, on versioned (routed) services only.
pub const RELEASE: &str = "io.stackctl.release";
/// `blue` or `green`: alternates between consecutive releases of a routed service.
pub const COLOR: &str = "io.stackctl.color";
/// Hash of the described service spec; equal hashes mean nothing to deploy.
pub const SPEC_HASH: &str = "io.stackctl.spec-hash";
/// What stackctl does with it: `routed`, `plain`, `stateful`, `proxy`, `record`.
pub const ROLE: &str = "io.stackctl.role";
/// Replica count the release runs with when live; kept so a scaled-down release can come back.
pub const REPLICAS: &str = "io.stackctl.replicas";
/// On an old release kept at full scale after a switch (a route's `rollback_window`): the Unix
/// second until which it stays up, so a rollback can flip back to it at once. Past it, the
/// next run retires it like any old release.
pub const STANDBY_UNTIL: &str = "io.stackctl.standby-until";
/// Docker's own label, so `docker stack ls/services/ps` show stackctl's stacks.
pub const NAMESPACE: &str = "com.docker.stack.namespace";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
    pub fn parse(s: &str) -> Option<Color> {
        match s {
            "blue" => Some(Color::Blue),
            "green" => Some(Color::Green),
            _ => None,
        }
    }
}

/// Swarm name of a versioned release of a routed service.
pub fn versioned_name(stack: &str, service: &str, release: u64) -> String {
    format!("{stack}_{service}-r{release}")
}

/// The network alias the release of `service` that has `colour` carries on the network nginx
/// reaches it by: in `dnsrr` mode it resolves to that release's running tasks, and the nginx
/// config routes to colours, never to releases. The dot keeps it apart from every Swarm
/// service name stackctl makes (stack and service names have none).
pub fn colour_alias(stack: &str, service: &str, colour: Color) -> String {
    format!("{stack}_{service}.{}", colour.as_str())
}

/// Swarm name of an unversioned service (proxy, plain, stateful), as `docker stack deploy` names it.
pub fn plain_name(stack: &str, service: &str) -> String {
    format!("{stack}_{service}")
}

/// Labels common to every service stackctl creates for `stack`.
pub fn base_labels(stack: &str, service: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (STACK.to_string(), stack.to_string()),
        (SERVICE.to_string(), service.to_string()),
        (ROLE.to_string(), role.to_string()),
    ])
}

/// `spec` as the release of `service` with `colour`: the colour label, and the colour's alias
/// (see [`colour_alias`]) on each network it joins, the other colour's alias gone. `None` when
/// the spec already says so, so a running release is never restarted for nothing (Swarm rolls
/// the tasks of a service whose networks change).
pub fn coloured(spec: &bollard::models::ServiceSpec, stack: &str, service: &str, colour: Color) -> Option<bollard::models::ServiceSpec> {
    let mut spec = spec.clone();
    let (mine, other) = (colour_alias(stack, service, colour), colour_alias(stack, service, colour.other()));
    let mut changed = false;
    let labels = spec.labels.get_or_insert_with(Default::default);
    changed |= labels.insert(COLOR.to_string(), colour.as_str().to_string()).as_deref() != Some(colour.as_str());
    // Swarm reads the networks of the task template (the service-level field is deprecated).
    let template = spec.task_template.get_or_insert_with(Default::default);
    for attachment in template.networks.iter_mut().flatten() {
        let aliases = attachment.aliases.get_or_insert_with(Vec::new);
        let before = aliases.len();
        aliases.retain(|a| a != &other);
        changed |= aliases.len() != before;
        if !aliases.contains(&mine) {
            aliases.push(mine.clone());
            changed = true;
        }
    }
    changed.then_some(spec)
}

/// Short, stable hash of anything serialisable to JSON. Going through `serde_json::Value`
/// sorts object keys, so the HashMaps inside bollard's specs (labels, options) hash the same in
/// every process; vectors keep their order, so callers hand in sorted ones.
pub fn hash_json<T: serde::Serialize>(value: &T) -> String {
    let canonical = serde_json::to_value(value).expect("serialising a spec to JSON cannot fail");
    let bytes = serde_json::to_vec(&canonical).expect("serialising a JSON value cannot fail");
    let digest = Sha256::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Short content hash for immutable Swarm objects (configs, secrets) whose name carries it.
pub fn hash_bytes(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(5).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_stack_conventions() {
        assert_eq!(versioned_name("demo", "web", 3), "demo_web-r3");
        assert_eq!(plain_name("demo", "proxy"), "demo_proxy");
    }

    #[test]
    fn a_colour_is_a_label_and_an_alias_on_every_network() {
        use bollard::models::{NetworkAttachmentConfig, ServiceSpec, TaskSpec};
        let net = |target: &str, aliases: &[&str]| NetworkAttachmentConfig {
            target: Some(target.into()),
            aliases: Some(aliases.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        };
        let spec = ServiceSpec {
            task_template: Some(TaskSpec { networks: Some(vec![net("demo_default", &["web"]), net("demo_back", &["web", "demo_web.blue"])]), ..Default::default() }),
            ..Default::default()
        };
        let green = coloured(&spec, "demo", "web", Color::Green).expect("a change");
        assert_eq!(green.labels.as_ref().unwrap()[COLOR], "green");
        let aliases: Vec<Vec<String>> = green.task_template.as_ref().unwrap().networks.iter().flatten().map(|n| n.aliases.clone().unwrap()).collect();
        assert_eq!(aliases, [vec!["web", "demo_web.green"], vec!["web", "demo_web.green"]]);
        assert_eq!(coloured(&green, "demo", "web", Color::Green), None, "already green: nothing to update");
        let blue = coloured(&green, "demo", "web", Color::Blue).expect("a change");
        assert_eq!(blue.task_template.unwrap().networks.unwrap()[0].aliases.clone().unwrap(), ["web", "demo_web.blue"]);
        assert_eq!(colour_alias("demo", "web", Color::Blue), "demo_web.blue");
    }

    #[test]
    fn colors_alternate() {
        assert_eq!(Color::Blue.other(), Color::Green);
        assert_eq!(Color::parse(Color::Green.as_str()), Some(Color::Green));
        assert_eq!(Color::parse("red"), None);
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = BTreeMap::from([("image", "x@sha256:1"), ("replicas", "2")]);
        let b = BTreeMap::from([("image", "x@sha256:2"), ("replicas", "2")]);
        assert_eq!(hash_json(&a), hash_json(&a.clone()));
        assert_ne!(hash_json(&a), hash_json(&b));
        assert_eq!(hash_json(&a).len(), 16);
    }

    /// Regression: bollard's specs hold HashMaps, whose iteration order differs between
    /// processes; every deploy looked like a change.
    #[test]
    fn hash_ignores_hashmap_order() {
        let mut one = std::collections::HashMap::new();
        let mut two = std::collections::HashMap::new();
        for i in 0..50 {
            one.insert(format!("k{i}"), i);
        }
        for i in (0..50).rev() {
            two.insert(format!("k{i}"), i);
        }
        assert_eq!(hash_json(&one), hash_json(&two));
    }
}
