//! `x-stackctl.gate`: the checks `stackctl gate` runs before a release moves on. Every value
//! is checked here, with its field, so the gate itself never meets a bad one: smoke hosts and
//! paths by the allowlist nginx's own values pass ([`crate::spec::allow`]), body patterns by
//! compiling them ([`body_regex`]).

use std::time::Duration;

use super::Cx;
use crate::spec::allow::{check_health_path, check_host};
use crate::spec::validate::body_regex;
use crate::spec::locate::{item_path, key_path};
use crate::spec::raw::{RawGate, RawSmoke, Text};
use crate::spec::{GateSpec, Smoke};

/// Methods a smoke check may send (without a body).
pub const SMOKE_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
/// Most smoke checks in one file.
const MAX_SMOKE: usize = 64;
/// The longest window or soak: a week (as every duration in the file).
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// `1%`, `0.5%`, `0%`: a share in percent, from 0 to 100.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let bad = || format!("expected a share in percent such as 1% or 0.5%, got {text:?}");
    let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("{text:?} is not between 0% and 100%"));
    }
    Ok(value)
}

impl Cx<'_, '_> {
    pub(super) fn gate(&mut self, field: &str, raw: Option<RawGate>) -> GateSpec {
        let defaults = GateSpec::default();
        let Some(raw) = raw else { return defaults };
        let soak = self.bounded_duration(&key_path(field, "soak"), raw.soak).unwrap_or(defaults.soak);
        let window = match self.bounded_duration(&key_path(field, "window"), raw.window) {
            Some(w) if w.is_zero() => {
                self.diag.error(&key_path(field, "window"), "must be greater than 0");
                defaults.window
            }
            w => w.unwrap_or(defaults.window),
        };
        let max_5xx_percent = match raw.max_5xx {
            Some(t) => self.ok(&key_path(field, "max_5xx"), parse_percent(&t.0)).unwrap_or(defaults.max_5xx_percent),
            None => defaults.max_5xx_percent,
        };
        let min_requests = raw.min_requests.map_or(defaults.min_requests, |n| n.0);
        let p99 = match self.bounded_duration(&key_path(field, "p99"), raw.p99) {
            Some(p) if p.is_zero() => {
                self.diag.error(&key_path(field, "p99"), "must be greater than 0 (leave it out to not check the p99)");
                None
            }
            p => p,
        };
        let raw_smoke = raw.smoke.unwrap_or_default();
        let smoke_field = key_path(field, "smoke");
        if raw_smoke.len() > MAX_SMOKE {
            self.diag.error(&smoke_field, format!("{} smoke checks; the limit is {MAX_SMOKE}", raw_smoke.len()));
        }
        let smoke = (raw_smoke.into_iter().take(MAX_SMOKE).enumerate())
            .filter_map(|(i, s)| self.smoke(&item_path(&smoke_field, i), s))
            .collect();
        GateSpec { soak, window, max_5xx_percent, min_requests, p99, smoke }
    }

    fn bounded_duration(&mut self, field: &str, text: Option<Text>) -> Option<Duration> {
        let value = self.duration(field, text)?;
        if value > MAX_WINDOW {
            self.diag.error(field, "at most 168h");
            return None;
        }
        Some(value)
    }

    fn smoke(&mut self, field: &str, raw: RawSmoke) -> Option<Smoke> {
        let method = raw.method.unwrap_or_else(|| "GET".into());
        let method = self.one_of(&key_path(field, "method"), &method, SMOKE_METHODS);
        let host = match raw.host {
            Some(h) if h.starts_with("*.") => {
                self.diag.error(&key_path(field, "host"), format!("host {h:?} is a wildcard; a smoke check sends one Host, name it (e.g. www{})", &h[1..]));
                None
            }
            Some(h) => self.ok(&key_path(field, "host"), check_host(&h)).map(|()| Some(h)),
            None => Some(None),
        };
        let path = match raw.path {
            Some(p) => self.ok(&key_path(field, "path"), check_health_path(&p)).map(|()| p),
            None => {
                self.diag.error(field, "missing path: the path to request, e.g. path: /healthz");
                None
            }
        };
        let status = match raw.status.map(|n| n.0) {
            None => Some(200),
            Some(n @ 100..=599) => Some(n as u16),
            Some(n) => {
                self.diag.error(&key_path(field, "status"), format!("{n} is not an HTTP status (100 to 599)"));
                None
            }
        };
        let body = match raw.body {
            Some(b) => self.ok(&key_path(field, "body"), body_regex(&b).map(|_| Some(b))),
            None => Some(None),
        };
        Some(Smoke { method: method?, host: host?, path: path?, status: status?, body: body? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percents() {
        assert_eq!(parse_percent("1%"), Ok(1.0));
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert_eq!(parse_percent("100%"), Ok(100.0));
        for bad in ["1", "", "%", "-1%", "1e2%", "101%", "NaN%", "inf%", "1 %x"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

}
