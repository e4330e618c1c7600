//! `stackctl maintenance on|off`: users of routed services get a 503 with `Retry-After` (and
//! the stack's page) instead of the release, and back.
//!
//! The switch is a file per service in nginx's config directory
//! ([`proxy::maintenance_file`]), checked by the config on every request, like the colour
//! switch: no reload, so no connection is reset at either switch. `on` first puts the page
//! ([`proxy::maintenance_page`]) in place, then creates the files; `off` removes the files and
//! leaves the page (it is only served while a file exists). stackctl's own requests pass, so a
//! deploy during maintenance is gated and switched as ever and the maintenance stays.
//!
//! Runs under the stack's lock, as every writer does, and records what it did in the history.

use std::time::Duration;

use serde::Serialize;

use crate::engine::Engine;
use crate::events::Events;
use crate::history::{self, Entry, Verb, Who};
use crate::outcome::DeployError;
use crate::proxy::{self, nginx::NginxProxy};
use crate::record;
use crate::spec::Stack;

/// The page served while a stack declares none (`x-stackctl.maintenance.page`).
pub const DEFAULT_PAGE: &[u8] = b"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>503 Service Unavailable</title></head>\n<body><h1>Down for maintenance</h1><p>This service is down for maintenance. Please try again later.</p></body></html>\n";

/// What `maintenance` did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MaintenanceReport {
    pub stack: String,
    /// `on` or `off`: the state the services are in now.
    pub state: &'static str,
    /// The routed services asked for (`--service`, else all).
    pub services: Vec<String>,
    /// Those whose state this run changed (the others were already there).
    pub changed: Vec<String>,
    /// `Retry-After` the config in nginx sends, in seconds.
    pub retry_after_seconds: u64,
    /// Whether the page served is the stack's own (`x-stackctl.maintenance.page`).
    pub own_page: bool,
    /// The history entry written; `None` when nothing changed or it could not be written.
    pub history_entry: Option<u64>,
    pub total_seconds: f64,
}

impl MaintenanceReport {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for service in &self.services {
            let already = if self.changed.contains(service) { "" } else { " (already)" };
            match self.state {
                "on" => s.push_str(&format!("{service}: maintenance on{already}: users get 503 with Retry-After: {}\n", self.retry_after_seconds)),
                _ => s.push_str(&format!("{service}: maintenance off{already}: users reach the live release\n")),
            }
        }
        s.push_str(&format!("stack {}: maintenance {} in {:.1}s\n", self.stack, self.state, self.total_seconds));
        s
    }
}

/// The routed services `service` names: that one (which must be routed), or every routed one.
/// `Err` is a usage error (exit 2).
pub fn services(stack: &Stack, service: Option<&str>) -> Result<Vec<String>, String> {
    let routed: Vec<String> = crate::spec::routed(stack).map(|(n, _)| n.clone()).collect();
    match service {
        Some(s) if routed.iter().any(|r| r == s) => Ok(vec![s.to_string()]),
        Some(s) => Err(format!("{s} is not a routed service of stack {} (routed: {}); maintenance applies to routed services", stack.name, routed.join(", "))),
        None if routed.is_empty() => Err(format!("stack {} routes no service through nginx: nothing to put in maintenance", stack.name)),
        None => Ok(routed),
    }
}

/// Switch `services` of `stack` on or off, under the stack's lock.
pub async fn maintenance<E: Engine + Clone + 'static>(
    engine: &E,
    stack: &Stack,
    on: bool,
    services: Vec<String>,
    lock_wait: Duration,
    out: &Events,
) -> Result<MaintenanceReport, DeployError> {
    let state = if on { "on" } else { "off" };
    let nginx = NginxProxy::of(engine, stack);
    let refused = |e: &dyn std::fmt::Display| DeployError::Refused(format!("maintenance {state} of stack {}: {e}; nothing was changed", stack.name));
    out.phase("reading nginx");
    let files = nginx.files().await.map_err(|e| refused(&e))?;
    let config = files.config().ok_or_else(|| refused(&"nginx has no stackctl config (deploy the stack first)"))?;
    let summary = proxy::parse_summary(&config).ok_or_else(|| refused(&"the config in nginx carries no routing summary stackctl can read"))?;
    // The config in nginx must carry the switch: one rendered before maintenance existed does
    // not, and installing one here would reload nginx, which a deploy does anyway.
    let missing: Vec<&String> = services.iter().filter(|s| !summary.maintenance_files.contains_key(*s)).collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        return Err(refused(&format!(
            "the config in nginx has no maintenance switch for {} (it predates it, or the route is not deployed yet); deploy the stack once, then run this again",
            names.join(", ")
        )));
    }
    let flags: Vec<String> = services.iter().map(|s| proxy::maintenance_file(s)).collect();
    let was = summary.in_maintenance(&files.present(&flags));

    out.phase("taking the stack's lock");
    let lock = record::acquire(engine, &stack.name, &format!("maintenance {state}"), lock_wait)
        .await
        .map_err(|e| DeployError::Refused(format!("{e}; nothing was changed")))?;
    let result = switch(&nginx, stack, on, &services, &flags, out).await;
    let changed: Vec<String> = services.iter().filter(|s| was.contains(*s) != on).cloned().collect();
    let mut history_entry = None;
    if result.is_ok() && !changed.is_empty() {
        out.phase("recording");
        history_entry = record_history(engine, stack, on, &changed, out).await;
    }
    if let Err(e) = lock.release().await {
        out.warn(&format!("could not release the lock of stack {}: {e}", stack.name));
    }
    result?;
    out.end_phase();
    Ok(MaintenanceReport {
        stack: stack.name.clone(),
        state,
        services,
        changed,
        retry_after_seconds: stack.x.maintenance.retry_after.as_secs(),
        own_page: stack.x.maintenance.page.is_some(),
        history_entry,
        total_seconds: out.total().as_secs_f64(),
    })
}

/// The switch itself: on, the pages then the files (all replicas or none); off, the files.
/// Checked by reading every replica's directory again.
async fn switch<E: Engine>(nginx: &NginxProxy<'_, E>, stack: &Stack, on: bool, services: &[String], flags: &[String], out: &Events) -> Result<(), DeployError> {
    use crate::proxy::Proxy as _;
    let failed = |e: &dyn std::fmt::Display| {
        DeployError::Refused(format!("maintenance {} of stack {} failed: {e}; running the same command again is safe", if on { "on" } else { "off" }, stack.name))
    };
    if on {
        out.phase("writing the maintenance page");
        let page = stack.x.maintenance.page.as_deref().unwrap_or(DEFAULT_PAGE);
        for service in services {
            nginx.put_atomically(&proxy::maintenance_page(service), page).await.map_err(|e| failed(&e))?;
        }
    }
    out.phase(if on { "switching maintenance on" } else { "switching maintenance off" });
    nginx.flip(flags, on).await.map_err(|e| failed(&e))?;
    let files = nginx.files().await.map_err(|e| failed(&e))?;
    let wrong: Vec<&String> = flags.iter().filter(|f| files.replicas.iter().any(|r| r.contains_key(*f) != on)).collect();
    if !wrong.is_empty() {
        return Err(failed(&format!("after the switch, {wrong:?} {} on some nginx replica", if on { "is missing" } else { "is still there" })));
    }
    Ok(())
}

/// One history entry for the services switched. Never fails the command: a history that cannot
/// be written is a warning.
async fn record_history<E: Engine>(engine: &E, stack: &Stack, on: bool, changed: &[String], out: &Events) -> Option<u64> {
    let entry = Entry {
        number: 0,
        time: record::now_unix(),
        verb: Verb::Maintenance,
        who: Who::current(),
        command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
        outcome: if on { history::Outcome::On } else { history::Outcome::Off },
        reason: None,
        exit_code: 0,
        release: None,
        services: Vec::new(),
        phases: out.phases(),
        seconds: out.total().as_secs_f64(),
        specs: Default::default(),
        specs_left_out: None,
        env: stack.environment.name.clone(),
        checks: Vec::new(),
        promoted_from: None,
        maintenance: changed.to_vec(),
        repairs: Vec::new(),
    };
    match history::append(engine, &stack.name, stack.x.history, entry).await {
        Ok(done) => Some(done.number),
        Err(e) => {
            out.warn(&format!("the maintenance switch was not written to the history of stack {}: {e}", stack.name));
            None
        }
    }
}
