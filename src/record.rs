//! The stack record: the cluster's memory of a stack, and its deploy lock.
//!
//! It is a Swarm config named `<stack>_stackctl-record`. Its data is fixed; its *labels* are
//! the mutable part, and Swarm updates them with optimistic concurrency (every update quotes the
//! version it read). That gives us, with no extra infrastructure and on every manager:
//! - `io.stackctl.live.<service>`: the release of each routed service that nginx routes to;
//! - `io.stackctl.seq`: the last release number handed out (numbers are never reused);
//! - `io.stackctl.lock`: who is deploying, since when, and when they last proved to be alive.
//!
//! Two processes, on one machine or two, race on the version: exactly one wins. A holder renews
//! its lock every [`HEARTBEAT`]; a lock not renewed for [`STALE_AFTER`] belongs to a process
//! that died, and is taken over (reported with its holder and age). A holder on the same
//! machine and in the same PID namespace (same boot id and `/proc/self/ns/pid`) whose process
//! is gone is dead for sure, and is taken over at once instead ([`holder_state`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::cancel::Cancel;
use crate::engine::{ConfigInfo, Engine, EngineError};
use crate::release;

pub const LIVE_PREFIX: &str = "io.stackctl.live.";
pub const SEQ: &str = "io.stackctl.seq";
pub const LOCK: &str = "io.stackctl.lock";
/// How often a holder renews its lock.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A lock not renewed for this long is stale: its holder is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

pub fn record_name(stack: &str) -> String {
    format!("{stack}_stackctl-record")
}

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Random id of the holding process; only the holder may renew or release.
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// What it is doing (`deploy`), for the message another process shows.
    pub command: String,
    /// Unix seconds when taken.
    pub since: u64,
    /// Unix seconds of the last renewal.
    pub renewed: u64,
    /// The holder's kernel boot id (`/proc/sys/kernel/random/boot_id`); empty when unknown
    /// (older stackctl, no `/proc`).
    #[serde(default)]
    pub boot_id: String,
    /// The holder's PID namespace (`readlink /proc/self/ns/pid`); empty when unknown.
    #[serde(default)]
    pub pid_ns: String,
}

impl LockInfo {
    pub fn age(&self, now: u64) -> Duration {
        Duration::from_secs(now.saturating_sub(self.since))
    }
    pub fn is_stale(&self, now: u64) -> bool {
        now.saturating_sub(self.renewed) > STALE_AFTER.as_secs()
    }
    /// Holder, pid, host, age and last heartbeat, for messages.
    pub fn describe(&self, now: u64) -> String {
        format!(
            "{} (pid {} on {}), running for {}s, last heartbeat {}s ago",
            self.command,
            self.pid,
            self.host,
            self.age(now).as_secs(),
            now.saturating_sub(self.renewed)
        )
    }
}

/// Where this process runs, as far as telling a dead lock holder apart goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub boot_id: String,
    pub pid_ns: String,
    pub pid: u32,
}

impl Identity {
    /// This process (empty ids where `/proc` cannot tell, which disables the fast path).
    pub fn current() -> Identity {
        Identity {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
            pid: std::process::id(),
        }
    }
}

/// What became of a lock's holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Alive, or possibly alive: wait or give up.
    Alive,
    /// Same machine (boot id) and PID namespace, and its process no longer exists.
    Dead,
    /// No heartbeat for [`STALE_AFTER`].
    Stale,
}

/// Decide whether a lock's holder is gone. Pure: `pid_alive` answers for pids in our own PID
/// namespace, and is only asked when the lock was taken in that same namespace since the same
/// boot, so a pid seen from another machine or container is never trusted. A recycled pid
/// makes a dead holder look alive; that errs on the safe side (the heartbeat decides).
pub fn holder_state(lock: &LockInfo, me: &Identity, pid_alive: impl Fn(u32) -> bool, now: u64) -> Holder {
    let same_pid_space =
        !lock.boot_id.is_empty() && lock.boot_id == me.boot_id && !lock.pid_ns.is_empty() && lock.pid_ns == me.pid_ns;
    if same_pid_space && !pid_alive(lock.pid) {
        Holder::Dead
    } else if lock.is_stale(now) {
        Holder::Stale
    } else {
        Holder::Alive
    }
}

/// Whether process `pid` exists in our PID namespace (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last ')', since comm may contain one.
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()), Some('Z' | 'X')),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // Unreadable but present: assume alive.
        Err(_) => true,
    }
}

/// A lock taken over from a holder that is gone, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    pub lock: LockInfo,
    pub why: Holder,
}

impl TakenOver {
    pub fn describe(&self, now: u64) -> String {
        let why = match self.why {
            Holder::Dead => "its process no longer exists on this machine".to_string(),
            _ => format!("no heartbeat for more than {}s", STALE_AFTER.as_secs()),
        };
        format!("{}; {why}", self.lock.describe(now))
    }
}

/// The record's contents, decoded from labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Live release per routed service.
    pub live: BTreeMap<String, u64>,
    /// Last release number handed out.
    pub seq: u64,
    pub lock: Option<LockInfo>,
}

impl Record {
    /// Decode the labels of the record `name`. A label stackctl wrote that does not parse is an
    /// error rather than "absent": an unreadable lock may belong to a running deploy, an
    /// unreadable release number would be handed out again.
    pub fn from_labels(name: &str, labels: &BTreeMap<String, String>) -> Result<Record, EngineError> {
        let bad = |label: &str, what: &str| {
            EngineError::Other(format!(
                "the stack record {name} has a label {label} that is not {what}; nothing was changed. \
                 It was not written by this stackctl: check it with `docker config inspect {name}`"
            ))
        };
        let mut live = BTreeMap::new();
        for (k, v) in labels {
            if let Some(service) = k.strip_prefix(LIVE_PREFIX) {
                live.insert(service.to_string(), release_number(v).ok_or_else(|| bad(k, "a release number"))?);
            }
        }
        let seq = match labels.get(SEQ) {
            Some(s) => release_number(s).ok_or_else(|| bad(SEQ, "a release number"))?,
            None => 0,
        };
        let lock = match labels.get(LOCK) {
            Some(s) => Some(serde_json::from_str(s).map_err(|_| bad(LOCK, "a lock stackctl can read, so it is not taken over"))?),
            None => None,
        };
        Ok(Record { live, seq, lock })
    }

    pub fn to_labels(&self, stack: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (release::STACK.to_string(), stack.to_string()),
            (release::ROLE.to_string(), "record".to_string()),
            (release::NAMESPACE.to_string(), stack.to_string()),
            (SEQ.to_string(), self.seq.to_string()),
        ]);
        for (service, n) in &self.live {
            labels.insert(format!("{LIVE_PREFIX}{service}"), n.to_string());
        }
        if let Some(lock) = &self.lock {
            labels.insert(LOCK.to_string(), serde_json::to_string(lock).expect("lock info serialises"));
        }
        labels
    }
}

/// A release number as stackctl writes it; `u64::MAX` is refused because the next one would
/// not exist.
pub fn release_number(text: &str) -> Option<u64> {
    text.parse().ok().filter(|&n| n < u64::MAX)
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("stack {stack} is being deployed by {holder}; try again later, or pass --lock-wait to wait for it")]
    Held { stack: String, holder: String },
    #[error("lost the deploy lock of stack {stack}: {detail}")]
    Lost { stack: String, detail: String },
    #[error("interrupted by {signal} while waiting for the deploy lock of stack {stack}; nothing was changed")]
    Interrupted { stack: String, signal: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Read the record without locking (for `status` and planning).
pub async fn read<E: Engine>(engine: &E, stack: &str) -> Result<Option<(ConfigInfo, Record)>, EngineError> {
    match engine.config(&record_name(stack)).await? {
        Some(c) => {
            let r = Record::from_labels(&c.name, &c.labels)?;
            Ok(Some((c, r)))
        }
        None => Ok(None),
    }
}

/// A held lock. Writes to the record go through it, so they are serialised with the heartbeat
/// and refused once the lock is lost.
pub struct Held<E: Engine + Clone + 'static> {
    engine: E,
    stack: String,
    owner: String,
    /// Serialises our own writers (heartbeat and deploy) so they don't fight over versions.
    write: Arc<Mutex<()>>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Set by the heartbeat when someone else took the lock.
    lost: Arc<std::sync::Mutex<Option<String>>>,
    /// A lock we took over from a dead process, for the report.
    pub took_over: Option<TakenOver>,
}

/// Take the stack's lock, waiting up to `wait` for another holder to finish.
pub async fn acquire<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &str,
    command: &str,
    wait: Duration,
) -> Result<Held<E>, LockError> {
    acquire_cancellable(engine, stack, command, wait, &Cancel::new()).await
}

/// [`acquire`] that stops waiting when `cancel` fires.
pub async fn acquire_cancellable<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &str,
    command: &str,
    wait: Duration,
    cancel: &Cancel,
) -> Result<Held<E>, LockError> {
    let owner = random_id();
    let me = Identity::current();
    let started = tokio::time::Instant::now();
    let name = record_name(stack);
    let mut attempted_takeover = None;
    loop {
        if cancel.is_cancelled() {
            return Err(LockError::Interrupted { stack: stack.to_string(), signal: cancel.reason() });
        }
        let now = now_unix();
        let mine = LockInfo {
            owner: owner.clone(),
            host: hostname(),
            pid: me.pid,
            command: command.to_string(),
            since: now,
            renewed: now,
            boot_id: me.boot_id.clone(),
            pid_ns: me.pid_ns.clone(),
        };
        let attempt = match engine.config(&name).await? {
            None => {
                let record = Record { lock: Some(mine), ..Record::default() };
                engine
                    .create_config(&name, format!("stackctl record of stack {stack}\n").as_bytes(), &record.to_labels(stack))
                    .await
                    .map(|_| None)
            }
            Some(info) => {
                let mut record = Record::from_labels(&name, &info.labels)?;
                match record.lock.clone() {
                    // Our write landed although the engine answered with an error (a retried
                    // write then conflicts with itself): the lock is ours.
                    Some(l) if l.owner == owner => Ok(attempted_takeover.take()),
                    current => {
                        let previous = match current {
                            None => None,
                            Some(other) => match holder_state(&other, &me, pid_alive, now) {
                                Holder::Alive => {
                                    if started.elapsed() >= wait {
                                        return Err(LockError::Held { stack: stack.to_string(), holder: other.describe(now) });
                                    }
                                    // Cancelled or not, the next turn of the loop decides.
                                    cancel.run(tokio::time::sleep(Duration::from_millis(500))).await;
                                    continue;
                                }
                                why => Some(TakenOver { lock: other, why }),
                            },
                        };
                        // Versioned: if the holder renewed (or anyone wrote) since we read, this
                        // conflicts and we decide again on fresh data.
                        attempted_takeover = previous.clone();
                        record.lock = Some(mine);
                        engine.update_config_labels(&info, &record.to_labels(stack)).await.map(|_| previous)
                    }
                }
            }
        };
        match attempt {
            Ok(took_over) => {
                let lost = Arc::new(std::sync::Mutex::new(None));
                let write = Arc::new(Mutex::new(()));
                let heartbeat = tokio::spawn(heartbeat(
                    engine.clone(),
                    stack.to_string(),
                    owner.clone(),
                    write.clone(),
                    lost.clone(),
                ));
                return Ok(Held { engine: engine.clone(), stack: stack.to_string(), owner, write, heartbeat, lost, took_over });
            }
            // Someone else wrote first: read again and decide again.
            Err(EngineError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn heartbeat<E: Engine>(
    engine: E,
    stack: String,
    owner: String,
    write: Arc<Mutex<()>>,
    lost: Arc<std::sync::Mutex<Option<String>>>,
) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let _guard = write.lock().await;
        let result = modify(&engine, &stack, &owner, |r| {
            if let Some(l) = r.lock.as_mut() {
                l.renewed = now_unix();
            }
        })
        .await;
        match result {
            Ok(_) => {}
            Err(LockError::Lost { detail, .. }) => {
                *lost.lock().expect("lost flag") = Some(detail);
                return;
            }
            // A transient engine error: the next beat tries again; the lock only goes stale
            // after several missed beats.
            Err(_) => {}
        }
    }
}

/// Read-modify-write of the record, as long as `owner` holds the lock.
async fn modify<E: Engine>(
    engine: &E,
    stack: &str,
    owner: &str,
    change: impl Fn(&mut Record),
) -> Result<Record, LockError> {
    let name = record_name(stack);
    for _ in 0..20 {
        let Some(info) = engine.config(&name).await? else {
            return Err(LockError::Lost { stack: stack.into(), detail: format!("the record {name} was removed") });
        };
        let mut record = Record::from_labels(&name, &info.labels)?;
        match &record.lock {
            Some(l) if l.owner == owner => {}
            Some(l) => {
                return Err(LockError::Lost { stack: stack.into(), detail: format!("now held by {}", l.describe(now_unix())) })
            }
            None => return Err(LockError::Lost { stack: stack.into(), detail: "the lock was released by someone else".into() }),
        }
        change(&mut record);
        match engine.update_config_labels(&info, &record.to_labels(stack)).await {
            Ok(()) => return Ok(record),
            Err(EngineError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(LockError::Lost { stack: stack.into(), detail: "the record kept changing under us".into() })
}

impl<E: Engine + Clone + 'static> Held<E> {
    /// Fail if the heartbeat found the lock taken by someone else.
    pub fn check(&self) -> Result<(), LockError> {
        match self.lost.lock().expect("lost flag").clone() {
            Some(detail) => Err(LockError::Lost { stack: self.stack.clone(), detail }),
            None => Ok(()),
        }
    }

    /// Change the record under the lock.
    pub async fn update(&self, change: impl Fn(&mut Record)) -> Result<Record, LockError> {
        self.check()?;
        let _guard = self.write.lock().await;
        modify(&self.engine, &self.stack, &self.owner, change).await
    }

    /// Current contents (read under the lock, so it reflects our own writes).
    pub async fn record(&self) -> Result<Record, LockError> {
        self.update(|_| {}).await
    }

    /// Give the lock back. Errors are returned so the caller can report them; a lock that
    /// cannot be released goes stale and is taken over after [`STALE_AFTER`].
    pub async fn release(self) -> Result<(), LockError> {
        self.heartbeat.abort();
        let _guard = self.write.lock().await;
        modify(&self.engine, &self.stack, &self.owner, |r| r.lock = None).await.map(|_| ())
    }
}

impl<E: Engine + Clone + 'static> Held<E> {
    /// Remove the record itself, with the lock in it (`down`, as its very last step): a deploy
    /// that starts afterwards finds no record and begins a new stack. Refused when the lock is
    /// no longer ours.
    pub async fn remove_record(self) -> Result<(), LockError> {
        self.heartbeat.abort();
        let _guard = self.write.lock().await;
        let name = record_name(&self.stack);
        let Some(info) = self.engine.config(&name).await? else { return Ok(()) };
        match Record::from_labels(&name, &info.labels)?.lock {
            Some(l) if l.owner == self.owner => {}
            other => {
                let detail = other.map_or("the lock was released by someone else".into(), |l| format!("now held by {}", l.describe(now_unix())));
                return Err(LockError::Lost { stack: self.stack.clone(), detail });
            }
        }
        self.engine.remove_config(&info.id).await?;
        Ok(())
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has a random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS has a random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrips_through_labels() {
        let record = Record {
            live: BTreeMap::from([("web".into(), 7), ("api".into(), 3)]),
            seq: 7,
            lock: Some(lock(1, 10, 20, "boot", "pid:[1]")),
        };
        let labels = record.to_labels("demo");
        assert_eq!(labels.get("io.stackctl.live.web").map(String::as_str), Some("7"));
        assert_eq!(labels.get(release::NAMESPACE).map(String::as_str), Some("demo"));
        assert_eq!(Record::from_labels("demo_stackctl-record", &labels).unwrap(), record);
    }

    #[test]
    fn lock_goes_stale_after_missed_heartbeats() {
        let lock = lock(1, 100, 100, "", "");
        assert!(!lock.is_stale(100 + STALE_AFTER.as_secs()));
        assert!(lock.is_stale(101 + STALE_AFTER.as_secs()));
        assert!(lock.describe(160).contains("running for 60s"));
    }

    fn lock(pid: u32, since: u64, renewed: u64, boot_id: &str, pid_ns: &str) -> LockInfo {
        LockInfo {
            owner: "ab".into(),
            host: "h".into(),
            pid,
            command: "deploy".into(),
            since,
            renewed,
            boot_id: boot_id.into(),
            pid_ns: pid_ns.into(),
        }
    }

    #[test]
    fn a_dead_holder_on_this_machine_is_taken_over_at_once_and_anything_else_waits_for_staleness() {
        let me = Identity { boot_id: "boot-a".into(), pid_ns: "pid:[4026531836]".into(), pid: 500 };
        let only_500_and_42_alive = |pid: u32| pid == 500 || pid == 42;
        let now = 1000;
        let fresh = now - 2;
        let old = now - STALE_AFTER.as_secs() - 1;
        let state = |l: &LockInfo| holder_state(l, &me, only_500_and_42_alive, now);
        // Same boot and pid namespace, process gone: dead, even with a fresh heartbeat.
        assert_eq!(state(&lock(77, fresh, fresh, "boot-a", "pid:[4026531836]")), Holder::Dead);
        // Same place, process alive: wait, until the heartbeat is stale.
        assert_eq!(state(&lock(42, fresh, fresh, "boot-a", "pid:[4026531836]")), Holder::Alive);
        assert_eq!(state(&lock(42, old, old, "boot-a", "pid:[4026531836]")), Holder::Stale);
        // Our own pid is alive: never "dead" (a second acquire in this process waits).
        assert_eq!(state(&lock(500, fresh, fresh, "boot-a", "pid:[4026531836]")), Holder::Alive);
        // Another machine (boot id), another container (pid namespace), or an older stackctl
        // that recorded neither: its pid means nothing here; only the heartbeat counts.
        for (boot, ns) in [("boot-b", "pid:[4026531836]"), ("boot-a", "pid:[4026532000]"), ("", ""), ("boot-a", "")] {
            assert_eq!(state(&lock(77, fresh, fresh, boot, ns)), Holder::Alive, "{boot} {ns}");
            assert_eq!(state(&lock(77, old, old, boot, ns)), Holder::Stale, "{boot} {ns}");
        }
        // An identity that /proc could not tell matches nothing.
        let blind = Identity { boot_id: String::new(), pid_ns: String::new(), pid: 500 };
        assert_eq!(holder_state(&lock(77, fresh, fresh, "", ""), &blind, |_| false, now), Holder::Alive);
    }

    #[test]
    fn takeover_reports_holder_pid_host_age_and_why() {
        let t = TakenOver { lock: lock(77, 900, 990, "b", "n"), why: Holder::Dead };
        let text = t.describe(1000);
        for want in ["pid 77", "on h", "running for 100s", "last heartbeat 10s ago", "no longer exists"] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let t = TakenOver { lock: lock(77, 900, 900, "b", "n"), why: Holder::Stale };
        assert!(t.describe(1000).contains("no heartbeat for more than 30s"));
    }

    #[test]
    fn pid_alive_sees_this_process_and_not_a_reaped_child() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        assert!(!pid_alive(0));
    }

    #[test]
    fn locks_written_before_boot_ids_still_parse() {
        let old = r#"{"owner":"a","host":"h","pid":1,"command":"deploy","since":1,"renewed":2}"#;
        let labels = BTreeMap::from([(LOCK.to_string(), old.to_string())]);
        let l = Record::from_labels("r", &labels).unwrap().lock.expect("parsed");
        assert_eq!((l.boot_id.as_str(), l.pid_ns.as_str()), ("", ""));
    }

    #[test]
    fn this_process_has_an_identity() {
        let me = Identity::current();
        assert!(!me.boot_id.is_empty() && me.pid_ns.starts_with("pid:["), "{me:?}");
    }

    #[test]
    fn garbage_labels_are_errors_that_name_the_record_and_the_label() {
        for (label, value) in [
            (LOCK, "{not json"),
            (SEQ, "x"),
            (SEQ, "18446744073709551615"),
            ("io.stackctl.live.web", "-1"),
            ("io.stackctl.live.web", "18446744073709551615"),
        ] {
            let labels = BTreeMap::from([(label.to_string(), value.to_string())]);
            let err = Record::from_labels("demo_stackctl-record", &labels).unwrap_err().to_string();
            assert!(err.contains("demo_stackctl-record") && err.contains(label), "{label}={value}: {err}");
        }
        let fine = BTreeMap::from([(SEQ.to_string(), (u64::MAX - 1).to_string())]);
        assert_eq!(Record::from_labels("r", &fine).unwrap().seq, u64::MAX - 1);
    }
}
