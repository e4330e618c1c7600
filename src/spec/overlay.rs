//! Merging an environment's overlay file over the base stack file, by Compose's merge rules
//! (what `docker stack deploy -c base.yml -c overlay.yml` does), on the untyped YAML tree.
//!
//! Both files are parsed, screened and interpolated on their own first (as Compose loads each
//! file before merging), then merged here, then deserialised and validated as one stack. The
//! merge keeps, for every node it takes from the overlay or moves, where it was written
//! ([`Origins`]), so an error in the merged stack names the file and line the value came from.
//!
//! The rules, later file = overlay:
//! - mappings merge key by key; a scalar or a key only one file has: the overlay's wins;
//! - a `null` in the overlay (`key:` with no value) leaves the base value;
//! - services merge by name; a top-level network, volume, config or secret of the same name is
//!   replaced whole;
//! - `environment`, `labels`, `deploy.labels`: merged by variable or label name, the list form
//!   (`KEY=VALUE`) read as a mapping first;
//! - `ports`: the union, an identical port given twice kept once; `volumes`: by container
//!   path (`target`); `secrets` and `configs`: by `source`; an item of the overlay replaces the
//!   base item with the same key where it stood, a new one is appended;
//! - `networks` of a service: the union of the names; where either file gives a mapping, by
//!   name, an overlay entry's `aliases` replacing the base's;
//! - `command`, `entrypoint`, `healthcheck.test`, each of `ulimits`: replaced;
//! - `logging`: options merged when the driver is the same, else replaced;
//! - any other list (`dns`, `expose`, `env_file`, `deploy.placement.constraints`, …): the
//!   base's items, then the overlay's;
//! - `x-stackctl` (stack and service): merged key by key, lists replaced (docker drops top-level
//!   extensions of later files; stackctl needs them, e.g. for the proxy's URL per environment).
//!
//! Where stackctl differs from docker/cli on purpose: an explicit `false`, `0` or `""` in the
//! overlay wins (docker/cli's merge skips such "empty" values), `healthcheck.test` is replaced
//! rather than appended, and list items keep their order instead of being sorted.

use std::collections::HashMap;

use serde_yaml::{Mapping, Value};

use super::locate::{item_path, key_path};
use super::tree::key_text;

/// Which file a node of the merged tree came from: 0 the base file, 1 the overlay.
pub type Layer = usize;
pub const BASE: Layer = 0;
pub const OVERLAY: Layer = 1;

/// Where nodes of the merged tree were written, by their path in the merged tree. A path not
/// recorded is found under its nearest recorded ancestor (plus the rest of the path), or in
/// the base file at the same path.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Origins {
    map: HashMap<String, (Layer, String)>,
}

impl Origins {
    /// The file and the path in it where the merged tree's `path` was written.
    pub fn resolve(&self, path: &str) -> (Layer, String) {
        let mut prefix = path;
        loop {
            if let Some((layer, original)) = self.map.get(prefix) {
                return (*layer, format!("{original}{}", &path[prefix.len()..]));
            }
            match super::locate::parent(prefix) {
                Some(p) => prefix = p,
                None => return (BASE, path.to_string()),
            }
        }
    }

    fn record(&mut self, merged: &str, layer: Layer, original: &str) {
        self.map.insert(merged.to_string(), (layer, original.to_string()));
    }
}

/// Merge `overlay` over `base` (both whole stack files as YAML trees).
pub fn merge(base: Value, overlay: Value) -> (Value, Origins) {
    let mut origins = Origins::default();
    let merged = merge_node(base, overlay, &Paths { merged: String::new(), base: String::new(), overlay: String::new() }, &mut origins);
    (merged, origins)
}

/// The path of the node being merged: in the result, in the base file, in the overlay file.
struct Paths {
    merged: String,
    base: String,
    overlay: String,
}

impl Paths {
    fn key(&self, key: &str) -> Paths {
        Paths { merged: key_path(&self.merged, key), base: key_path(&self.base, key), overlay: key_path(&self.overlay, key) }
    }
}

/// How the node at a path merges.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Mappings key by key, lists appended, scalars replaced.
    Deep,
    /// Like `Deep`, but lists are replaced (extensions, a service's network entry).
    DeepReplacingLists,
    /// The overlay's value, whole.
    Replace,
    /// `KEY=VALUE` list or mapping, merged by key.
    Dict,
    /// A list merged by the key of each item.
    Keyed(fn(&Value) -> String),
    Networks,
    Logging,
}

/// The rule for the node at the (mapping-key) path `segments`.
fn rule(segments: &[String]) -> Rule {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    // Everything below an extension or a service's network entry (`aliases`).
    if s.contains(&"x-stackctl") || matches!(s.as_slice(), ["services", _, "networks", _, ..]) {
        return Rule::DeepReplacingLists;
    }
    match s.as_slice() {
        ["networks" | "volumes" | "configs" | "secrets", _] => Rule::Replace,
        ["services", _, key] => match *key {
            "environment" | "labels" => Rule::Dict,
            "command" | "entrypoint" => Rule::Replace,
            "ports" => Rule::Keyed(port_key),
            "volumes" => Rule::Keyed(volume_target),
            "secrets" | "configs" => Rule::Keyed(file_source),
            "networks" => Rule::Networks,
            "logging" => Rule::Logging,
            _ => Rule::Deep,
        },
        ["services", _, "deploy", "labels"] => Rule::Dict,
        ["services", _, "healthcheck", "test"] | ["services", _, "ulimits", _] => Rule::Replace,
        _ => Rule::Deep,
    }
}

/// The mapping keys of a merged path (`services.web.ports` → services, web, ports). Merging
/// only descends mappings, so the path has no list indices.
fn segments(paths: &Paths) -> Vec<String> {
    // Keys may contain dots; the rule only looks at fixed key names, and a service name with
    // a dot is refused by validation later anyway.
    if paths.merged.is_empty() {
        Vec::new()
    } else {
        paths.merged.split('.').map(String::from).collect()
    }
}

fn take_overlay(overlay: Value, paths: &Paths, origins: &mut Origins) -> Value {
    origins.record(&paths.merged, OVERLAY, &paths.overlay);
    overlay
}

fn merge_node(base: Value, overlay: Value, paths: &Paths, origins: &mut Origins) -> Value {
    if overlay.is_null() {
        return base;
    }
    let rule = rule(&segments(paths));
    match (rule, base, overlay) {
        (Rule::Replace, _, overlay) => take_overlay(overlay, paths, origins),
        (Rule::Dict, base, overlay) => match (as_dict(&base), as_dict(&overlay)) {
            (Some(b), Some(o)) => merge_dict(b, o, paths, origins),
            _ => take_overlay(overlay, paths, origins),
        },
        (Rule::Keyed(key), Value::Sequence(base), Value::Sequence(overlay)) => merge_keyed(base, overlay, key, paths, origins),
        (Rule::Networks, Value::Sequence(b), Value::Sequence(o)) if all_strings(&b) && all_strings(&o) => {
            let dedupe = |v: &Value| v.as_str().unwrap_or_default().to_string();
            merge_keyed(b, o, dedupe, paths, origins)
        }
        (Rule::Networks, base, overlay) => match (as_dict(&base), as_dict(&overlay)) {
            (Some(b), Some(o)) => {
                let (b, b_at) = dict_mapping(b, BASE, paths);
                let (o, o_at) = dict_mapping(o, OVERLAY, paths);
                let overlay_wins = |key: &str| {
                    o.get(key).is_some_and(|v| !v.is_null()) || !b.contains_key(key)
                };
                let owners: Vec<(String, Layer, String)> =
                    b_at.into_iter().chain(o_at).filter(|(key, layer, _)| (*layer == OVERLAY) == overlay_wins(key)).collect();
                let merged = merge_mappings(b, o, paths, origins);
                // Where each network was named: an entry the overlay gave a value, or only the
                // overlay names, is the overlay's; any other the base's.
                for (key, layer, written) in owners {
                    origins.record(&key_path(&paths.merged, &key), layer, &written);
                }
                merged
            }
            _ => take_overlay(overlay, paths, origins),
        },
        (Rule::Logging, Value::Mapping(b), Value::Mapping(o)) => {
            let driver = |m: &Mapping| m.get("driver").and_then(Value::as_str).map(String::from);
            match (driver(&b), driver(&o)) {
                (Some(x), Some(y)) if x != y => take_overlay(Value::Mapping(o), paths, origins),
                _ => merge_mappings(b, o, paths, origins),
            }
        }
        (_, Value::Mapping(b), Value::Mapping(o)) => merge_mappings(b, o, paths, origins),
        (Rule::Deep, Value::Sequence(mut b), Value::Sequence(o)) => {
            origins.record(&paths.merged, BASE, &paths.base);
            let start = b.len();
            for (i, item) in o.into_iter().enumerate() {
                origins.record(&item_path(&paths.merged, start + i), OVERLAY, &item_path(&paths.overlay, i));
                b.push(item);
            }
            Value::Sequence(b)
        }
        (_, _, overlay) => take_overlay(overlay, paths, origins),
    }
}

fn merge_mappings(mut base: Mapping, overlay: Mapping, paths: &Paths, origins: &mut Origins) -> Value {
    origins.record(&paths.merged, BASE, &paths.base);
    for (key, value) in overlay {
        let child = paths.key(&key_text(&key));
        // In place, so the base's order of keys is kept.
        match base.get_mut(&key) {
            Some(existing) => *existing = merge_node(std::mem::take(existing), value, &child, origins),
            None => {
                base.insert(key, take_overlay(value, &child, origins));
            }
        }
    }
    Value::Mapping(base)
}

/// One entry of `environment:`/`labels:`: its value (null for a bare `KEY`) and its path in
/// its own file.
type DictEntry = (String, Value, String);

/// The entries of a `KEY=VALUE` list or a mapping; `None` for anything else.
fn as_dict(value: &Value) -> Option<Vec<(String, Value, String)>> {
    match value {
        Value::Mapping(m) => Some(m.iter().map(|(k, v)| (key_text(k), v.clone(), key_text(k))).collect()),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let text = item.as_str()?;
                let (k, v) = match text.split_once('=') {
                    Some((k, v)) => (k, Value::String(v.to_string())),
                    None => (text, Value::Null),
                };
                Some((k.to_string(), v, item_path("", i)))
            })
            .collect(),
        _ => None,
    }
}

/// The entries as a mapping, and where each was written (in a list its path in the file is
/// an item, not a key): (key, layer, path in that file).
fn dict_mapping(entries: Vec<DictEntry>, layer: Layer, paths: &Paths) -> (Mapping, Vec<(String, Layer, String)>) {
    let own = if layer == BASE { &paths.base } else { &paths.overlay };
    let mut map = Mapping::new();
    let mut written = Vec::new();
    for (key, value, at) in entries {
        let path = if at.starts_with('[') { format!("{own}{at}") } else { key_path(own, &at) };
        written.push((key.clone(), layer, path));
        map.insert(Value::String(key), value);
    }
    (map, written)
}

/// `environment`/`labels`: by key, the overlay's entry winning even when it is a bare `KEY`.
fn merge_dict(base: Vec<DictEntry>, overlay: Vec<DictEntry>, paths: &Paths, origins: &mut Origins) -> Value {
    origins.record(&paths.merged, BASE, &paths.base);
    let (mut merged, base_at) = dict_mapping(base, BASE, paths);
    let (overlay, overlay_at) = dict_mapping(overlay, OVERLAY, paths);
    for (key, value) in overlay {
        merged.insert(key, value);
    }
    // Later records win: the overlay's entries over the base's.
    for (key, layer, written) in base_at.into_iter().chain(overlay_at) {
        origins.record(&key_path(&paths.merged, &key), layer, &written);
    }
    Value::Mapping(merged)
}

/// A list merged by `key`: an overlay item replaces the base item with its key where that
/// stood, others are appended.
fn merge_keyed(mut base: Vec<Value>, overlay: Vec<Value>, key: fn(&Value) -> String, paths: &Paths, origins: &mut Origins) -> Value {
    origins.record(&paths.merged, BASE, &paths.base);
    for (i, item) in overlay.into_iter().enumerate() {
        let k = key(&item);
        let at = match base.iter().position(|b| key(b) == k) {
            Some(at) => {
                base[at] = item;
                at
            }
            None => {
                base.push(item);
                base.len() - 1
            }
        };
        origins.record(&item_path(&paths.merged, at), OVERLAY, &item_path(&paths.overlay, i));
    }
    Value::Sequence(base)
}

fn all_strings(items: &[Value]) -> bool {
    items.iter().all(Value::is_string)
}

/// A value as text, for keys of items that have no better one.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other).unwrap_or_default(),
    }
}

/// A port's identity: published, target, protocol, mode, with the defaults filled in, so
/// `"8080:80"` and its long form are the same port. A short form with ranges or a host IP is
/// its own text.
fn port_key(value: &Value) -> String {
    let field = |m: &Mapping, k: &str, default: &str| m.get(k).map(scalar_text).unwrap_or_else(|| default.to_string());
    match value {
        Value::Mapping(m) => {
            format!("{}:{}/{}/{}", field(m, "published", ""), field(m, "target", ""), field(m, "protocol", "tcp"), field(m, "mode", "ingress"))
        }
        short => {
            let text = scalar_text(short);
            let (ports, protocol) = text.split_once('/').unwrap_or((&text, "tcp"));
            let parts: Vec<&str> = ports.split(':').collect();
            match parts.as_slice() {
                [target] if !target.contains('-') => format!(":{target}/{protocol}/ingress"),
                [published, target] if !published.contains('-') && !target.contains('-') => {
                    format!("{published}:{target}/{protocol}/ingress")
                }
                _ => text,
            }
        }
    }
}

/// A service volume's container path: the second field of `source:/target[:mode]`, the only
/// field of `/target`, or `target:` of the long form.
fn volume_target(value: &Value) -> String {
    match value {
        Value::Mapping(m) => m.get("target").map(scalar_text).unwrap_or_default(),
        short => {
            let text = scalar_text(short);
            let parts: Vec<&str> = text.split(':').collect();
            match parts.as_slice() {
                [target] => target.to_string(),
                [_, target, ..] => target.to_string(),
                [] => text.clone(),
            }
        }
    }
}

/// A service secret's or config's `source`: the short form is the source.
fn file_source(value: &Value) -> String {
    match value {
        Value::Mapping(m) => m.get("source").map(scalar_text).unwrap_or_default(),
        short => scalar_text(short),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn merged(base: &str, overlay: &str) -> Value {
        merge(yaml(base), yaml(overlay)).0
    }

    /// (what, base, overlay, expected): one row per merge rule.
    const RULES: &[(&str, &str, &str, &str)] = &[
        ("scalars: the overlay wins", "name: shop\nversion: '3.8'", "name: shop-staging", "name: shop-staging\nversion: '3.8'"),
        ("null in the overlay keeps the base", "services: {web: {image: a, user: app}}", "services: {web: {user: }}", "services: {web: {image: a, user: app}}"),
        ("explicit false and 0 win", "services: {web: {image: a, read_only: true, deploy: {replicas: 2}}}", "services: {web: {read_only: false, deploy: {replicas: 0}}}", "services: {web: {image: a, read_only: false, deploy: {replicas: 0}}}"),
        ("services merge by name, new ones are added", "services: {web: {image: a}, db: {image: d}}", "services: {web: {image: b}, cache: {image: c}}", "services: {web: {image: b}, db: {image: d}, cache: {image: c}}"),
        ("nested mappings merge key by key", "services: {web: {image: a, deploy: {replicas: 2, resources: {limits: {cpus: '0.5', memory: 32M}}}}}", "services: {web: {deploy: {resources: {limits: {memory: 64M}}}}}", "services: {web: {image: a, deploy: {replicas: 2, resources: {limits: {cpus: '0.5', memory: 64M}}}}}"),
        ("environment: mapping over mapping", "services: {web: {environment: {A: '1', B: '2'}}}", "services: {web: {environment: {B: '3', C: '4'}}}", "services: {web: {environment: {A: '1', B: '3', C: '4'}}}"),
        ("environment: list over mapping", "services: {web: {environment: {A: '1', B: '2'}}}", "services: {web: {environment: [B=3, C]}}", "services: {web: {environment: {A: '1', B: '3', C: null}}}"),
        ("environment: mapping over list, a bare KEY wins", "services: {web: {environment: [A=1, B=x=y]}}", "services: {web: {environment: {A: }}}", "services: {web: {environment: {A: null, B: x=y}}}"),
        ("labels and deploy.labels by key", "services: {web: {labels: [a=1], deploy: {labels: {b: '1'}}}}", "services: {web: {labels: {a: '2'}, deploy: {labels: [c=3]}}}", "services: {web: {labels: {a: '2'}, deploy: {labels: {b: '1', c: '3'}}}}"),
        ("ports: union, an identical port once", "services: {proxy: {ports: ['8080:80', {target: 81, published: 8081}]}}", "services: {proxy: {ports: [{target: 80, published: 8080, protocol: tcp}, '9090:90']}}", "services: {proxy: {ports: [{target: 80, published: 8080, protocol: tcp}, {target: 81, published: 8081}, '9090:90']}}"),
        ("ports: another published port is another port", "services: {proxy: {ports: [{target: 8080, published: 19010, mode: host}]}}", "services: {proxy: {ports: [{target: 8080, published: 19011, mode: host}]}}", "services: {proxy: {ports: [{target: 8080, published: 19010, mode: host}, {target: 8080, published: 19011, mode: host}]}}"),
        ("volumes by target", "services: {db: {volumes: ['data:/var/lib/db', '/cache', {type: tmpfs, target: /tmp}]}}", "services: {db: {volumes: ['other:/var/lib/db:ro', '/logs']}}", "services: {db: {volumes: ['other:/var/lib/db:ro', '/cache', {type: tmpfs, target: /tmp}, '/logs']}}"),
        ("secrets and configs by source", "services: {web: {secrets: [a, {source: b, target: /b}], configs: [c]}}", "services: {web: {secrets: [{source: b, target: /run/b}, d], configs: [{source: c, mode: 0400}]}}", "services: {web: {secrets: [a, {source: b, target: /run/b}, d], configs: [{source: c, mode: 0400}]}}"),
        ("command and entrypoint replaced", "services: {web: {command: [a, b], entrypoint: sh -c}}", "services: {web: {command: [c]}}", "services: {web: {command: [c], entrypoint: sh -c}}"),
        ("healthcheck.test replaced, the rest merged", "services: {web: {healthcheck: {test: [CMD, a], interval: 5s}}}", "services: {web: {healthcheck: {test: [CMD, b]}}}", "services: {web: {healthcheck: {test: [CMD, b], interval: 5s}}}"),
        ("other lists appended", "services: {web: {dns: [1.1.1.1], expose: ['80'], deploy: {placement: {constraints: [a]}}}}", "services: {web: {dns: [8.8.8.8], expose: ['81'], deploy: {placement: {constraints: [b]}}}}", "services: {web: {dns: [1.1.1.1, 8.8.8.8], expose: ['80', '81'], deploy: {placement: {constraints: [a, b]}}}}"),
        ("networks: lists unite", "services: {web: {networks: [front, back]}}", "services: {web: {networks: [back, edge]}}", "services: {web: {networks: [front, back, edge]}}"),
        ("networks: list over mapping, by name", "services: {web: {networks: {front: {aliases: [a]}, back: }}}", "services: {web: {networks: [front, edge]}}", "services: {web: {networks: {front: {aliases: [a]}, back: null, edge: null}}}"),
        ("networks: mapping over list", "services: {web: {networks: [front]}}", "services: {web: {networks: {front: {aliases: [b]}, edge: }}}", "services: {web: {networks: {front: {aliases: [b]}, edge: null}}}"),
        ("networks: aliases replaced", "services: {web: {networks: {front: {aliases: [a]}}}}", "services: {web: {networks: {front: {aliases: [b]}}}}", "services: {web: {networks: {front: {aliases: [b]}}}}"),
        ("top-level definitions replaced whole", "networks: {front: {driver: overlay, attachable: true}}\nvolumes: {data: {driver: local}}", "networks: {front: {external: true}, back: {}}", "networks: {front: {external: true}, back: {}}\nvolumes: {data: {driver: local}}"),
        ("ulimits replaced per name", "services: {web: {ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}}}", "services: {web: {ulimits: {nofile: {soft: 3}}}}", "services: {web: {ulimits: {nofile: {soft: 3}, nproc: 5}}}"),
        ("logging: same driver merges options", "services: {web: {logging: {driver: json-file, options: {max-size: 1m}}}}", "services: {web: {logging: {options: {max-file: '3'}}}}", "services: {web: {logging: {driver: json-file, options: {max-size: 1m, max-file: '3'}}}}"),
        ("logging: another driver replaces", "services: {web: {logging: {driver: json-file, options: {max-size: 1m}}}}", "services: {web: {logging: {driver: syslog}}}", "services: {web: {logging: {driver: syslog}}}"),
        ("x-stackctl merged key by key, lists replaced", "x-stackctl: {proxy: {service: proxy, url: 'http://127.0.0.1:8080'}, keep: 2}\nservices: {web: {x-stackctl: {route: {port: 80, hosts: [a.test], drain: 2s}}}}", "x-stackctl: {proxy: {url: 'http://127.0.0.1:19010'}}\nservices: {web: {x-stackctl: {route: {hosts: [b.test]}}}}", "x-stackctl: {proxy: {service: proxy, url: 'http://127.0.0.1:19010'}, keep: 2}\nservices: {web: {x-stackctl: {route: {port: 80, hosts: [b.test], drain: 2s}}}}"),
        ("a type change takes the overlay's", "services: {web: {environment: {A: '1'}, user: {x: 1}}}", "services: {web: {environment: 3, user: app}}", "services: {web: {environment: 3, user: app}}"),
        ("an empty overlay changes nothing", "name: shop\nservices: {web: {image: a}}", "{}", "name: shop\nservices: {web: {image: a}}"),
    ];

    #[test]
    fn merge_rules() {
        for (what, base, overlay, want) in RULES {
            assert_eq!(merged(base, overlay), yaml(want), "{what}");
        }
    }

    #[test]
    fn base_order_is_kept_and_new_keys_follow() {
        let m = merged("services: {b: {image: x}, a: {image: y}}", "services: {c: {image: z}, a: {image: w}}");
        let names: Vec<String> = m["services"].as_mapping().unwrap().keys().map(key_text).collect();
        assert_eq!(names, ["b", "a", "c"]);
    }

    /// (merged path, expected file, expected path in it).
    #[test]
    fn origins_name_the_file_and_path_written() {
        let base = "services:\n  web:\n    image: a\n    environment: [A=1, B=2]\n    ports: ['8080:80']\n";
        let overlay = "services:\n  web:\n    image: b\n    environment: {B: '3'}\n    ports: ['9090:90']\n    deploy: {replicas: 3}\n";
        let (_, origins) = merge(yaml(base), yaml(overlay));
        let table = [
            ("services.web.image", OVERLAY, "services.web.image"),
            ("services.web.environment.A", BASE, "services.web.environment[0]"),
            ("services.web.environment.B", OVERLAY, "services.web.environment.B"),
            ("services.web.ports[0]", BASE, "services.web.ports[0]"),
            ("services.web.ports[1]", OVERLAY, "services.web.ports[0]"),
            ("services.web.deploy.replicas", OVERLAY, "services.web.deploy.replicas"),
            ("services.web", BASE, "services.web"),
            ("services.web.healthcheck", BASE, "services.web.healthcheck"),
            ("name", BASE, "name"),
        ];
        for (path, layer, original) in table {
            assert_eq!(origins.resolve(path), (layer, original.to_string()), "{path}");
        }
    }

    #[test]
    fn port_identities() {
        assert_eq!(port_key(&yaml("'8080:80'")), port_key(&yaml("{published: 8080, target: 80}")));
        assert_eq!(port_key(&yaml("'80/udp'")), port_key(&yaml("{target: 80, protocol: udp}")));
        assert_ne!(port_key(&yaml("'8080:80'")), port_key(&yaml("{published: 8080, target: 80, mode: host}")));
        assert_eq!(port_key(&yaml("'8000-8001:80-81'")), "8000-8001:80-81");
        assert_eq!(volume_target(&yaml("'./rel:/app:ro'")), "/app");
        assert_eq!(file_source(&yaml("{source: s, target: /t}")), "s");
    }
}
