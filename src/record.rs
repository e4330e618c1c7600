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
//! that died, and is taken over (reported with its holder and age).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

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
}

impl LockInfo {
    pub fn age(&self, now: u64) -> Duration {
        Duration::from_secs(now.saturating_sub(self.since))
    }
    pub fn is_stale(&self, now: u64) -> bool {
        now.saturating_sub(self.renewed) > STALE_AFTER.as_secs()
    }
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
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Record {
        let live = labels
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(LIVE_PREFIX)?.to_string(), v.parse().ok()?)))
            .collect();
        Record {
            live,
            seq: labels.get(SEQ).and_then(|s| s.parse().ok()).unwrap_or(0),
            lock: labels.get(LOCK).and_then(|s| serde_json::from_str(s).ok()),
        }
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

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("stack {stack} is being deployed by {holder}; try again later, or pass --lock-wait to wait for it")]
    Held { stack: String, holder: String },
    #[error("lost the deploy lock of stack {stack}: {detail}")]
    Lost { stack: String, detail: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Read the record without locking (for `status` and planning).
pub async fn read<E: Engine>(engine: &E, stack: &str) -> Result<Option<(ConfigInfo, Record)>, EngineError> {
    Ok(engine.config(&record_name(stack)).await?.map(|c| {
        let r = Record::from_labels(&c.labels);
        (c, r)
    }))
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
    pub took_over: Option<LockInfo>,
}

/// Take the stack's lock, waiting up to `wait` for another holder to finish.
pub async fn acquire<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &str,
    command: &str,
    wait: Duration,
) -> Result<Held<E>, LockError> {
    let owner = random_id();
    let started = tokio::time::Instant::now();
    let name = record_name(stack);
    loop {
        let now = now_unix();
        let mine = LockInfo {
            owner: owner.clone(),
            host: hostname(),
            pid: std::process::id(),
            command: command.to_string(),
            since: now,
            renewed: now,
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
                let mut record = Record::from_labels(&info.labels);
                match record.lock.clone() {
                    Some(other) if !other.is_stale(now) => {
                        if started.elapsed() >= wait {
                            return Err(LockError::Held { stack: stack.to_string(), holder: other.describe(now) });
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    previous => {
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
        let mut record = Record::from_labels(&info.labels);
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

fn hostname() -> String {
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
            lock: Some(LockInfo { owner: "ab".into(), host: "h".into(), pid: 1, command: "deploy".into(), since: 10, renewed: 20 }),
        };
        let labels = record.to_labels("demo");
        assert_eq!(labels.get("io.stackctl.live.web").map(String::as_str), Some("7"));
        assert_eq!(labels.get(release::NAMESPACE).map(String::as_str), Some("demo"));
        assert_eq!(Record::from_labels(&labels), record);
    }

    #[test]
    fn lock_goes_stale_after_missed_heartbeats() {
        let lock = LockInfo { owner: "a".into(), host: "h".into(), pid: 1, command: "deploy".into(), since: 100, renewed: 100 };
        assert!(!lock.is_stale(100 + STALE_AFTER.as_secs()));
        assert!(lock.is_stale(101 + STALE_AFTER.as_secs()));
        assert!(lock.describe(160).contains("running for 60s"));
    }

    #[test]
    fn garbage_labels_do_not_panic() {
        let labels = BTreeMap::from([
            (LOCK.to_string(), "{not json".to_string()),
            (SEQ.to_string(), "x".to_string()),
            ("io.stackctl.live.web".to_string(), "-1".to_string()),
        ]);
        assert_eq!(Record::from_labels(&labels), Record::default());
    }
}
