//! The Compose file as written: serde structs, the screening of keys Swarm ignores or refuses,
//! and the typed deserialisation step.
//!
//! # Keys
//!
//! **Top level**: `version` (ignored), `name`, `services`, `networks`, `volumes`, `configs`,
//! `secrets`, `x-stackctl`; other `x-*` keys are ignored (use them for anchors).
//!
//! **Service** (`x-*` keys are ignored here too, except `x-stackctl`):
//! `image` (required), `command`, `entrypoint` (string, split like a shell, or list),
//! `environment` (map or `KEY=VAL` list; a bare `KEY` takes the value from stackctl's own
//! environment), `env_file` (string or list, relative to the stack file), `labels`, `ports`
//! (short `"8080:80"`, `"80"`, `"8080:80/udp"`, ranges `"8000-8001:9000-9001"`; long `target`,
//! `published`, `protocol`, `mode`), `networks` (list, or map with `aliases`), `volumes` (short
//! `name:/path[:ro]`, `/host:/path`, `./rel:/path`, `/path`; long `type` (volume, bind, tmpfs),
//! `source`, `target`, `read_only`), `configs` and `secrets` (short name, long `source`,
//! `target`, `uid`, `gid`, `mode`), `healthcheck` (`test`, `interval`, `timeout`,
//! `start_period`, `retries`, `disable`), `stop_grace_period`, `stop_signal`, `user`,
//! `working_dir`, `hostname`, `init`, `read_only`, `deploy`, `x-stackctl`.
//!
//! **deploy**: `mode` (`replicated` only), `replicas`, `resources.limits` (`cpus`, `memory`,
//! `pids`), `resources.reservations` (`cpus`, `memory`), `placement` (`constraints`,
//! `preferences` as `- spread: LABEL`, `max_replicas_per_node`), `restart_policy`
//! (`condition`, `delay`, `max_attempts`, `window`), `update_config` (`parallelism`, `delay`,
//! `failure_action`, `monitor`, `max_failure_ratio`, `order`), `endpoint_mode`, `labels`;
//! `rollback_config` is accepted and ignored with a warning.
//!
//! **networks**: `driver` (default `overlay`), `attachable` (default true), `external`,
//! `name`, `labels`, `driver_opts`. **volumes**: `driver`, `driver_opts`, `external`, `name`,
//! `labels`. **configs**/**secrets**: `file`, `external`, `name`, `labels`.
//!
//! Accepted with a warning, because Swarm ignores them ([`SERVICE_KEYS`]): `build`,
//! `container_name`, `depends_on`, `links`, `external_links`, `restart`, `expose`,
//! `profiles`, `pull_policy`, `scale`, `mac_address`, `domainname`; and because stackctl does
//! not pass them on: `logging`, `tty`, `stdin_open`.
//!
//! Refused, because dropping them would silently change how the container runs: Swarm cannot
//! do `privileged`, `devices`, `network_mode`, `pid`, `ipc`, `uts`, `userns_mode`,
//! `cgroupns_mode`, `cgroup_parent`, `security_opt`, `shm_size`, `volumes_from`,
//! `volume_driver`, `runtime`, `platform`, `gpus`, `storage_opt`, `blkio_config`,
//! `device_cgroup_rules`, and the container-level resource keys (`cpus`, `cpu_shares`,
//! `cpu_quota`, `cpu_period`, `cpuset`, `mem_limit`, `mem_reservation`, `memswap_limit`,
//! `mem_swappiness`, `oom_kill_disable`, `pids_limit`: use `deploy.resources`); stackctl
//! does not support yet `cap_add`, `cap_drop`, `ulimits`, `sysctls`, `dns`, `dns_search`,
//! `dns_opt`, `extra_hosts`, `tmpfs` (use a volume of `type: tmpfs`), `isolation`,
//! `credential_spec`, `group_add`, `oom_score_adj`, `extends`, `label_file`; top-level
//! `include`; network `internal`, `ipam`, `enable_ipv6`; config/secret `content`,
//! `environment`, `template_driver`, `driver`. Any other key is an error that suggests the
//! nearest valid key.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::locate::{key_path, Locator};
use super::tree::key_text;
use super::validate::nearest;
use super::{Diag, SpecError};

// ---------------------------------------------------------------------------------------------
// Key screening
// ---------------------------------------------------------------------------------------------

/// What happens to a Compose key stackctl does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Dropped with a warning: Swarm ignores it too (`docker stack deploy` warns the same way).
    IgnoredBySwarm,
    /// Dropped with a warning: harmless, but stackctl does not pass it on.
    IgnoredByStackctl,
    /// Error: Swarm services cannot do it, so dropping it would change how the container runs.
    RefusedBySwarm,
    /// Error: Swarm could, stackctl does not (yet).
    RefusedByStackctl,
}

use Action::*;

/// A Compose key with special treatment, and why.
pub type KeyRule = (&'static str, Action, &'static str);

const USE_RESOURCES: &str = "use deploy.resources";

pub const TOP_LEVEL_KEYS: &[KeyRule] = &[("include", RefusedByStackctl, "stackctl reads one file")];

pub const SERVICE_KEYS: &[KeyRule] = &[
    ("build", IgnoredBySwarm, "Swarm only runs images; build and push the image, then set image:"),
    ("container_name", IgnoredBySwarm, "Swarm names containers itself"),
    (
        "depends_on",
        IgnoredBySwarm,
        "Swarm starts services independently; make each service retry until what it needs answers",
    ),
    ("links", IgnoredBySwarm, "services on a shared network reach each other by service name"),
    ("external_links", IgnoredBySwarm, "services on a shared network reach each other by service name"),
    ("restart", IgnoredBySwarm, "use deploy.restart_policy"),
    ("expose", IgnoredBySwarm, "container ports are reachable on the stack's networks anyway"),
    ("profiles", IgnoredBySwarm, "every service in the file is deployed"),
    ("pull_policy", IgnoredBySwarm, "Swarm resolves and pulls images itself"),
    ("scale", IgnoredBySwarm, "use deploy.replicas"),
    ("mac_address", IgnoredBySwarm, "Swarm assigns addresses"),
    ("domainname", IgnoredBySwarm, "not supported for services"),
    ("logging", IgnoredByStackctl, "containers use the Docker daemon's default log driver"),
    ("tty", IgnoredByStackctl, "services run without a terminal"),
    ("stdin_open", IgnoredByStackctl, "services run without stdin"),
    ("privileged", RefusedBySwarm, "services cannot run privileged containers"),
    ("devices", RefusedBySwarm, "services cannot map host devices"),
    ("network_mode", RefusedBySwarm, "services attach to networks: use networks:"),
    ("pid", RefusedBySwarm, "services cannot share a PID namespace"),
    ("ipc", RefusedBySwarm, "services cannot share an IPC namespace"),
    ("uts", RefusedBySwarm, "services cannot share a UTS namespace"),
    ("userns_mode", RefusedBySwarm, "services cannot choose a user namespace"),
    ("cgroupns_mode", RefusedBySwarm, "services cannot choose a cgroup namespace"),
    ("cgroup_parent", RefusedBySwarm, "services cannot choose a cgroup parent"),
    ("security_opt", RefusedBySwarm, "services cannot set security options"),
    ("shm_size", RefusedBySwarm, "mount a volume of type: tmpfs at /dev/shm instead"),
    ("volumes_from", RefusedBySwarm, "share a named volume instead"),
    ("volume_driver", RefusedBySwarm, "set driver: on the top-level volume"),
    ("runtime", RefusedBySwarm, "services use the default runtime"),
    ("platform", RefusedBySwarm, "use deploy.placement.constraints"),
    ("gpus", RefusedBySwarm, "use generic resources on the nodes"),
    ("storage_opt", RefusedBySwarm, "not supported for services"),
    ("blkio_config", RefusedBySwarm, "not supported for services"),
    ("device_cgroup_rules", RefusedBySwarm, "not supported for services"),
    ("cpus", RefusedBySwarm, USE_RESOURCES),
    ("cpu_count", RefusedBySwarm, USE_RESOURCES),
    ("cpu_percent", RefusedBySwarm, USE_RESOURCES),
    ("cpu_shares", RefusedBySwarm, USE_RESOURCES),
    ("cpu_quota", RefusedBySwarm, USE_RESOURCES),
    ("cpu_period", RefusedBySwarm, USE_RESOURCES),
    ("cpu_rt_period", RefusedBySwarm, USE_RESOURCES),
    ("cpu_rt_runtime", RefusedBySwarm, USE_RESOURCES),
    ("cpuset", RefusedBySwarm, USE_RESOURCES),
    ("mem_limit", RefusedBySwarm, USE_RESOURCES),
    ("mem_reservation", RefusedBySwarm, USE_RESOURCES),
    ("memswap_limit", RefusedBySwarm, USE_RESOURCES),
    ("mem_swappiness", RefusedBySwarm, USE_RESOURCES),
    ("oom_kill_disable", RefusedBySwarm, USE_RESOURCES),
    ("pids_limit", RefusedBySwarm, "use deploy.resources.limits.pids"),
    ("cap_add", RefusedByStackctl, "it would be dropped"),
    ("cap_drop", RefusedByStackctl, "it would be dropped"),
    ("ulimits", RefusedByStackctl, "it would be dropped"),
    ("sysctls", RefusedByStackctl, "it would be dropped"),
    ("dns", RefusedByStackctl, "it would be dropped"),
    ("dns_search", RefusedByStackctl, "it would be dropped"),
    ("dns_opt", RefusedByStackctl, "it would be dropped"),
    ("extra_hosts", RefusedByStackctl, "it would be dropped"),
    ("tmpfs", RefusedByStackctl, "use a volume with type: tmpfs"),
    ("isolation", RefusedByStackctl, "it would be dropped"),
    ("credential_spec", RefusedByStackctl, "it would be dropped"),
    ("group_add", RefusedByStackctl, "it would be dropped"),
    ("oom_score_adj", RefusedByStackctl, "it would be dropped"),
    ("extends", RefusedByStackctl, "use YAML anchors and merge keys (<<: *defaults)"),
    ("label_file", RefusedByStackctl, "use labels:"),
];

pub const DEPLOY_KEYS: &[KeyRule] = &[(
    "rollback_config",
    IgnoredByStackctl,
    "stackctl rolls routed services back by switching nginx to the previous release",
)];

pub const NETWORK_KEYS: &[KeyRule] = &[
    ("internal", RefusedByStackctl, "it would be dropped"),
    ("ipam", RefusedByStackctl, "it would be dropped"),
    ("enable_ipv6", RefusedByStackctl, "it would be dropped"),
    ("enable_ipv4", RefusedByStackctl, "it would be dropped"),
];

pub const FILE_OBJECT_KEYS: &[KeyRule] = &[
    ("content", RefusedByStackctl, "use file:"),
    ("environment", RefusedByStackctl, "use file:"),
    ("template_driver", RefusedByStackctl, "it would be dropped"),
    ("driver", RefusedByStackctl, "it would be dropped"),
    ("driver_opts", RefusedByStackctl, "it would be dropped"),
];

/// Remove extension keys (`x-*`) other than `x-stackctl`: Compose allows them for anchors.
fn strip_extensions(map: &mut Mapping) {
    map.retain(|key, _| match key.as_str() {
        Some(k) => !k.starts_with("x-") || k == "x-stackctl",
        None => true,
    });
}

/// Strip extensions, then warn about and drop ignored keys and report refused ones.
fn screen_map(map: &mut Mapping, path: &str, rules: &[KeyRule], diag: &mut Diag) {
    strip_extensions(map);
    for &(key, action, why) in rules {
        if !map.contains_key(key) {
            continue;
        }
        let field = key_path(path, key);
        match action {
            IgnoredBySwarm => diag.warn(&field, format!("ignored by Swarm: {key} ({why})")),
            IgnoredByStackctl => diag.warn(&field, format!("ignored by stackctl: {key} ({why})")),
            RefusedBySwarm => {
                diag.error(&field, format!("{key} is not supported by Swarm services ({why}); remove it"))
            }
            RefusedByStackctl => {
                diag.error(&field, format!("{key} is not supported by stackctl yet ({why}); remove it"))
            }
        }
        map.remove(key);
    }
}

/// Apply the key rules to every level that has them. Runs before interpolation, so values of
/// dropped keys are never interpolated.
pub fn screen(root: &mut Value, diag: &mut Diag) {
    let Value::Mapping(top) = root else { return };
    screen_map(top, "", TOP_LEVEL_KEYS, diag);
    if let Some(Value::Mapping(services)) = top.get_mut("services") {
        for (name, service) in services.iter_mut() {
            let Value::Mapping(service) = service else { continue };
            let path = key_path("services", &key_text(name));
            screen_map(service, &path, SERVICE_KEYS, diag);
            if let Some(Value::Mapping(deploy)) = service.get_mut("deploy") {
                screen_map(deploy, &key_path(&path, "deploy"), DEPLOY_KEYS, diag);
            }
        }
    }
    for (section, rules) in
        [("networks", NETWORK_KEYS), ("volumes", &[][..]), ("configs", FILE_OBJECT_KEYS), ("secrets", FILE_OBJECT_KEYS)]
    {
        if let Some(Value::Mapping(defs)) = top.get_mut(section) {
            for (name, def) in defs.iter_mut() {
                if let Value::Mapping(def) = def {
                    screen_map(def, &key_path(section, &key_text(name)), rules, diag);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Typed deserialisation
// ---------------------------------------------------------------------------------------------

/// Deserialise the screened, interpolated tree. A type error is located through the path
/// `serde_path_to_error` tracks.
pub fn deserialize(doc: Value, locator: &Locator) -> Result<RawStack, SpecError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        let mut message = humanize(&e.inner().to_string());
        // Values under `environment:` are often secrets; serde quotes what it did not expect.
        if path.split(['.', '[']).any(|segment| segment == "environment") {
            message = without_quoted(&message);
        }
        locator.error(&path, message)
    })
}

/// `message` with every `"…"` replaced by `(value not shown)`.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        let mut escaped = false;
        let end = rest[start + 1..].char_indices().find(|&(_, c)| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close
        });
        out.push_str("(value not shown)");
        rest = match end {
            Some((i, _)) => &rest[start + 1 + i + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Reword serde's messages for people who write YAML rather than Rust.
fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut names = rest.split('`').step_by(2);
        let unknown = names.next().unwrap_or_default();
        let valid: Vec<&str> = names.filter(|n| !n.is_empty()).collect();
        return match nearest(unknown, valid.iter().copied()) {
            Some(best) => format!("unknown key {unknown:?}; did you mean {best:?}?"),
            None if valid.is_empty() => format!("unknown key {unknown:?}; nothing is allowed here"),
            None => format!("unknown key {unknown:?}; valid keys here: {}", valid.join(", ")),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return format!("missing required key {name:?}");
    }
    let mut out = message.replace("invalid type: unit value", "empty value").replace("invalid type: ", "wrong type: ");
    // "expected struct RawRoute" means "expected a mapping" to a YAML author.
    while let Some(i) = out.find("struct Raw") {
        let word = i + "struct ".len();
        let end = out[word..].find(|c: char| !c.is_alphanumeric()).map_or(out.len(), |e| word + e);
        out.replace_range(i..end, "a mapping");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Lenient scalars. Interpolation always produces strings, so every typed scalar also accepts
// its string spelling (`replicas: ${REPLICAS:-2}`).
// ---------------------------------------------------------------------------------------------

/// Text: a string, or a number or boolean taken as written (`user: 1000`, `cpus: 0.5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Integer types `Num` can hold.
pub trait Int: Copy + FromStr + TryFrom<u64> + TryFrom<i64> + fmt::Display {
    const MAX: Self;
}
macro_rules! int {
    ($($t:ty),*) => { $(impl Int for $t { const MAX: Self = <$t>::MAX; })* };
}
int!(u16, u32, u64, i64);

/// A whole number, written as a number or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Num<T>(pub T);

impl<'de, T: Int> Deserialize<'de> for Num<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: Int> V<T> {
            fn range<E: de::Error>(v: impl fmt::Display) -> E {
                E::custom(format!("{v} is out of range (0 to {})", T::MAX))
            }
        }
        impl<T: Int> Visitor<'_> for V<T> {
            type Value = Num<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num<T>, E> {
                T::try_from(v).map(Num).map_err(|_| Self::range(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num<T>, E> {
                T::try_from(v).map(Num).map_err(|_| Self::range(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num<T>, E> {
                Err(E::custom(format!("expected a whole number, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num<T>, E> {
                let s = v.trim();
                if let Ok(n) = s.parse::<u64>() {
                    return self.visit_u64(n);
                }
                if let Ok(n) = s.parse::<i64>() {
                    return self.visit_i64(n);
                }
                Err(E::custom(format!("expected a whole number, got {v:?}")))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A decimal number, written as a number or a string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Float(pub f64);

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Float;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Float, E> {
                Ok(Float(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Float, E> {
                v.trim().parse().map(Float).map_err(|_| E::custom(format!("expected a number, got {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `true`/`false`, also as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" => Ok(Flag(true)),
                    "false" => Ok(Flag(false)),
                    _ => Err(E::custom(format!("expected true or false, got {v:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A file mode. Numbers are taken as YAML wrote them (`0o440` is octal in YAML 1.2); strings
/// are octal, which is what `mode: 0440` is (YAML 1.2 reads a leading-zero number as a
/// string) and what an interpolated `"${MODE}"` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn checked<E: de::Error>(mode: u64, written: &dyn fmt::Display) -> Result<FileMode, E> {
            match u32::try_from(mode) {
                Ok(mode) if mode <= 0o7777 => Ok(FileMode(mode)),
                _ => Err(E::custom(format!("{written} is not a file mode; write it in octal, e.g. 0440"))),
            }
        }
        impl Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file mode such as 0440")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FileMode, E> {
                checked(v, &v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileMode, E> {
                let s = v.trim();
                let digits = s.strip_prefix("0o").unwrap_or(s);
                match u64::from_str_radix(digits, 8) {
                    Ok(mode) => checked(mode, &format!("{v:?}")),
                    Err(_) => Err(E::custom(format!("{v:?} is not an octal file mode such as 0440"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Polymorphic Compose fields (one key, two spellings). Written as visitors rather than
// untagged enums so errors inside the long form keep their path and message.
// ---------------------------------------------------------------------------------------------

/// `command: echo hi` or `command: [echo, hi]`.
#[derive(Debug, Clone, PartialEq)]
pub enum StrOrList {
    Str(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for StrOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrList, E> {
                Ok(StrOrList::Str(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<StrOrList, A::Error> {
                let items = Vec::<Text>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(StrOrList::List(items.into_iter().map(|t| t.0).collect()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `environment:`/`labels:` as a mapping or as a `KEY=VALUE` list; `networks:` as a mapping
/// or a list of names.
#[derive(Debug, Clone, PartialEq)]
pub enum MapOrList<V> {
    Map(BTreeMap<String, V>),
    List(Vec<String>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOrList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = MapOrList<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping or a list")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapOrList<T>, A::Error> {
                BTreeMap::deserialize(MapAccessDeserializer::new(map)).map(MapOrList::Map)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MapOrList<T>, A::Error> {
                let items = Vec::<Text>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(MapOrList::List(items.into_iter().map(|t| t.0).collect()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Short syntax (a string or number) or long syntax (a mapping): ports, volumes, configs.
#[derive(Debug, Clone, PartialEq)]
pub enum ShortOrLong<L> {
    Short(String),
    Long(L),
}

impl<'de, L: Deserialize<'de>> Deserialize<'de> for ShortOrLong<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<L>(PhantomData<L>);
        impl<'de, L: Deserialize<'de>> Visitor<'de> for V<L> {
            type Value = ShortOrLong<L>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (short syntax) or a mapping (long syntax)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShortOrLong<L>, E> {
                Ok(ShortOrLong::Short(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ShortOrLong<L>, E> {
                Ok(ShortOrLong::Short(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ShortOrLong<L>, E> {
                Ok(ShortOrLong::Short(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ShortOrLong<L>, A::Error> {
                L::deserialize(MapAccessDeserializer::new(map)).map(ShortOrLong::Long)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// The structs. Every field is optional here; required-ness and defaults are decided in
// `convert`, which can say what to do about it.
// ---------------------------------------------------------------------------------------------

/// `labels:` and similar: a mapping (null values become "") or a `KEY=VALUE` list.
pub type Labels = MapOrList<Option<Text>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStack {
    #[allow(dead_code)]
    pub version: Option<IgnoredAny>,
    pub name: Option<String>,
    pub services: Option<BTreeMap<String, RawService>>,
    pub networks: Option<BTreeMap<String, Option<RawNetwork>>>,
    pub volumes: Option<BTreeMap<String, Option<RawVolume>>>,
    pub configs: Option<BTreeMap<String, Option<RawFileObject>>>,
    pub secrets: Option<BTreeMap<String, Option<RawFileObject>>>,
    #[serde(rename = "x-stackctl")]
    pub x_stackctl: Option<RawStackX>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub image: Option<String>,
    pub command: Option<StrOrList>,
    pub entrypoint: Option<StrOrList>,
    pub environment: Option<MapOrList<Option<Text>>>,
    pub env_file: Option<StrOrList>,
    pub labels: Option<Labels>,
    pub ports: Option<Vec<ShortOrLong<RawPort>>>,
    pub networks: Option<MapOrList<Option<RawServiceNetwork>>>,
    pub volumes: Option<Vec<ShortOrLong<RawMount>>>,
    pub configs: Option<Vec<ShortOrLong<RawFileRef>>>,
    pub secrets: Option<Vec<ShortOrLong<RawFileRef>>>,
    pub healthcheck: Option<RawHealthcheck>,
    pub stop_grace_period: Option<Text>,
    pub stop_signal: Option<String>,
    pub user: Option<Text>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub init: Option<Flag>,
    pub read_only: Option<Flag>,
    pub deploy: Option<RawDeploy>,
    #[serde(rename = "x-stackctl")]
    pub x_stackctl: Option<RawServiceX>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub target: Option<Num<u64>>,
    pub published: Option<Num<u64>>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
    /// Accepted only to refuse it with a useful message.
    pub host_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceNetwork {
    pub aliases: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<Flag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileRef {
    pub source: Option<String>,
    pub target: Option<String>,
    pub uid: Option<Text>,
    pub gid: Option<Text>,
    pub mode: Option<FileMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthcheck {
    pub test: Option<StrOrList>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub start_period: Option<Text>,
    pub retries: Option<Num<u32>>,
    pub disable: Option<Flag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    pub mode: Option<String>,
    pub replicas: Option<Num<u64>>,
    pub resources: Option<RawResources>,
    pub placement: Option<RawPlacement>,
    pub restart_policy: Option<RawRestartPolicy>,
    pub update_config: Option<RawUpdateConfig>,
    pub endpoint_mode: Option<String>,
    pub labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub limits: Option<RawLimits>,
    pub reservations: Option<RawReservations>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub cpus: Option<Text>,
    pub memory: Option<Text>,
    pub pids: Option<Num<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReservations {
    pub cpus: Option<Text>,
    pub memory: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlacement {
    pub constraints: Option<Vec<String>>,
    pub preferences: Option<Vec<RawPreference>>,
    pub max_replicas_per_node: Option<Num<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreference {
    pub spread: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestartPolicy {
    pub condition: Option<String>,
    pub delay: Option<Text>,
    pub max_attempts: Option<Num<u64>>,
    pub window: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpdateConfig {
    pub parallelism: Option<Num<u64>>,
    pub delay: Option<Text>,
    pub failure_action: Option<String>,
    pub monitor: Option<Text>,
    pub max_failure_ratio: Option<Float>,
    pub order: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub driver: Option<String>,
    pub attachable: Option<Flag>,
    pub external: Option<Flag>,
    pub name: Option<String>,
    pub labels: Option<Labels>,
    pub driver_opts: Option<BTreeMap<String, Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVolume {
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, Text>>,
    pub external: Option<Flag>,
    pub name: Option<String>,
    pub labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileObject {
    pub file: Option<String>,
    pub external: Option<Flag>,
    pub name: Option<String>,
    pub labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStackX {
    pub proxy: Option<RawProxy>,
    /// A Docker context name; usually in an environment's overlay.
    pub context: Option<String>,
    pub keep: Option<Num<u32>>,
    pub history: Option<Num<u32>>,
    pub gate: Option<RawGate>,
    pub maintenance: Option<RawMaintenance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    pub retry_after: Option<Text>,
    pub page: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub soak: Option<Text>,
    pub window: Option<Text>,
    pub max_5xx: Option<Text>,
    pub min_requests: Option<Num<u64>>,
    pub p99: Option<Text>,
    pub smoke: Option<Vec<RawSmoke>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmoke {
    pub method: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub status: Option<Num<u64>>,
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub service: Option<String>,
    pub url: Option<String>,
    pub listen: Option<Num<u64>>,
    pub config_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceX {
    pub route: Option<RawRoute>,
    pub stateful: Option<Flag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub port: Option<Num<u64>>,
    pub host: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub path: Option<String>,
    pub health: Option<RawHealth>,
    pub drain: Option<Text>,
    pub watch: Option<Text>,
    pub rollback_window: Option<Text>,
    pub keep: Option<Num<u32>>,
    pub client_max_body_size: Option<Text>,
    pub read_timeout: Option<Text>,
    pub send_timeout: Option<Text>,
    pub buffering: Option<Flag>,
    pub headers: Option<BTreeMap<String, Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<String>,
    pub status: Option<Num<u64>>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub successes: Option<Num<u32>>,
    pub deadline: Option<Text>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_suggest_the_nearest_key() {
        assert_eq!(
            humanize("unknown field `imgae`, expected one of `image`, `command`"),
            "unknown key \"imgae\"; did you mean \"image\"?"
        );
        assert_eq!(
            humanize("unknown field `zzz`, expected `route` or `stateful`"),
            "unknown key \"zzz\"; valid keys here: route, stateful"
        );
        assert_eq!(humanize("missing field `spread`"), "missing required key \"spread\"");
        assert_eq!(humanize("invalid type: unit value, expected struct RawService"), "empty value, expected a mapping");
        assert_eq!(
            humanize("invalid type: string \"x\", expected struct RawHealth or something"),
            "wrong type: string \"x\", expected a mapping or something"
        );
    }

    #[test]
    fn quoted_values_can_be_left_out() {
        assert_eq!(
            without_quoted(r#"wrong type: string "pa\"ss", expected "a" or b"#),
            "wrong type: string (value not shown), expected (value not shown) or b"
        );
        assert_eq!(without_quoted(r#"open "x"#), "open (value not shown)");
    }

    #[test]
    fn every_rule_is_listed_once() {
        let mut keys: Vec<&str> = SERVICE_KEYS.iter().map(|r| r.0).collect();
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(before, keys.len());
    }
}
