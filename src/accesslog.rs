//! What nginx saw: its access log, one JSON line per request, read back through the Docker API.
//!
//! stackctl's nginx config (`nginx-templates/stackctl.conf`) logs every request of a stack's
//! servers to nginx's stdout in a format of its own ([`crate::proxy::log_format_name`]):
//! the stack, when (`msec`, unix seconds), host, method, path, status, the upstream's status,
//! the request time, the colour's alias the request went to (`target`, `<stack>_<service>.<colour>:<port>`, without
//! the port when it is 80),
//! the task that answered (`upstream`) and whether it was one of stackctl's own probes (`own`).
//! The config names colours, never releases, so it stays the same from deploy to deploy; which
//! release a colour is comes from the labels of the releases when the log is read.
//!
//! [`read`] fetches the lines of every nginx task since a time; [`parse`] turns one into a
//! [`Request`] (anything else nginx writes there, such as other servers' lines, is skipped);
//! [`figures`] counts what users of one release got.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError};
use crate::release::Color;

/// One request as nginx logged it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Request {
    /// The stack whose server answered (configs of several stacks share one nginx).
    pub stackctl: String,
    /// Unix seconds, with milliseconds, when nginx finished the request.
    pub msec: f64,
    pub host: String,
    pub method: String,
    /// The URI without its query string.
    pub path: String,
    pub status: u16,
    /// What the release answered, one per upstream tried (`"502, 200"`); empty when nginx
    /// answered itself.
    pub upstream_status: String,
    /// Seconds from the first byte read from the client to the last byte sent.
    pub request_time: f64,
    /// The colour's alias and port the request was sent to; empty when no route matched.
    pub target: String,
    /// The tasks nginx tried, last the one that answered.
    pub upstream: String,
    /// 1 for stackctl's own probes.
    pub own: u8,
}

impl Request {
    /// The routed service and colour the request went to, when it went to one of `stack`'s.
    pub fn routed_to(&self, stack: &str) -> Option<(&str, Color)> {
        // nginx leaves the port out when it is the scheme's (80).
        let alias = self.target.rsplit_once(':').map_or(self.target.as_str(), |(alias, _port)| alias);
        let (name, colour) = alias.rsplit_once('.')?;
        let service = name.strip_prefix(stack)?.strip_prefix('_')?;
        Some((service, Color::parse(colour)?))
    }
}

/// One log line, when it is a request logged by stackctl's format; `None` for anything else
/// nginx writes to its stdout (another server's format, a startup notice).
pub fn parse(line: &str) -> Option<Request> {
    let line = line.trim();
    if !line.starts_with("{\"stackctl\":") {
        return None;
    }
    serde_json::from_str(line).ok()
}

/// What users of one release got over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// User requests (stackctl's own left out).
    pub requests: u64,
    /// Of them, answered with a 5xx status.
    pub errors: u64,
    /// 99th percentile of nginx's request time (nearest rank); `None` without requests.
    pub p99: Option<Duration>,
}

impl Figures {
    /// The share of 5xx answers in percent (0 without requests).
    pub fn error_percent(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 * 100.0 / self.requests as f64 }
    }
}

/// The figures of the users' requests to `service`'s `colour` of `stack` since `since` (unix
/// seconds).
pub fn figures<'a>(requests: impl IntoIterator<Item = &'a Request>, stack: &str, service: &str, colour: Color, since: f64) -> Figures {
    let mut times: Vec<f64> = Vec::new();
    let mut errors = 0;
    for r in requests {
        if r.stackctl != stack || r.own != 0 || r.msec < since || r.routed_to(stack) != Some((service, colour)) {
            continue;
        }
        if (500..600).contains(&r.status) {
            errors += 1;
        }
        times.push(r.request_time);
    }
    times.sort_by(f64::total_cmp);
    // Nearest rank: the smallest time at least 99% of requests did not exceed.
    let rank = ((times.len() as f64) * 0.99).ceil() as usize;
    // nginx logs request times in milliseconds.
    let p99 = times.get(rank.saturating_sub(1)).map(|s| Duration::from_millis((s.max(0.0) * 1000.0).round() as u64));
    Figures { requests: times.len() as u64, errors, p99 }
}

/// What was read from nginx's tasks.
#[derive(Debug, Clone, Default)]
pub struct Read {
    pub requests: Vec<Request>,
    /// Tasks whose log could not be read in full (gone, cut at the size limit).
    pub notes: Vec<String>,
}

/// The requests logged by every task of the nginx service `proxy` (running or exited, on this
/// node) since `since` (unix seconds).
pub async fn read<E: Engine>(engine: &E, proxy: &str, since: f64) -> Result<Read, EngineError> {
    let mut read = Read::default();
    let tasks = engine.tasks(proxy).await?;
    if tasks.is_empty() {
        return Err(EngineError::NotFound(format!("the proxy service {proxy} has no task, so nginx's log cannot be read")));
    }
    for task in tasks {
        let Some(container) = task.container_id.clone() else { continue };
        match engine.container_logs(&container, since.floor() as i64).await {
            Ok(logs) => {
                if logs.truncated {
                    read.notes.push(format!("the log of nginx task {} was cut at {} MiB", task.id, crate::engine::MAX_LOG_BYTES >> 20));
                }
                read.requests.extend(logs.lines.iter().filter_map(|l| parse(l)));
            }
            // An exited task's container removed, or on another node.
            Err(EngineError::NotFound(_)) if !task.is_running() => {}
            Err(EngineError::NotFound(e)) => read.notes.push(format!("the log of nginx task {} cannot be read: {e}", task.id)),
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

/// Users' requests read a piece at a time, for a deploy's watch window: each read fetches the
/// log from a second before the last cut (Docker filters by whole seconds, and by when it got
/// the line, a moment after nginx wrote it) and keeps only the requests that finished between
/// the last cut and this one. No request is counted twice, and a read late in a long window
/// costs no more than an early one.
#[derive(Debug, Clone)]
pub struct Tail {
    /// Unix seconds the tail starts at: requests that finished earlier are not taken.
    pub start: f64,
    /// Requests that finished before this have been taken.
    cut: f64,
    /// The stack's requests taken so far.
    pub requests: Vec<Request>,
    /// What could not be read, once each.
    pub notes: Vec<String>,
}

impl Tail {
    pub fn since(start: f64) -> Tail {
        Tail { start, cut: start, requests: Vec::new(), notes: Vec::new() }
    }

    /// Read what nginx's tasks logged and take `stack`'s requests that finished before `until`.
    pub async fn advance<E: Engine>(&mut self, engine: &E, proxy: &str, stack: &str, until: f64) -> Result<(), EngineError> {
        if until <= self.cut {
            return Ok(());
        }
        let read = read(engine, proxy, self.cut - 1.0).await?;
        self.take(read, stack, until);
        Ok(())
    }

    /// The pure half of [`Tail::advance`]: keep the requests of `read` in `[cut, until)`.
    pub fn take(&mut self, read: Read, stack: &str, until: f64) {
        let cut = self.cut;
        self.requests.extend(read.requests.into_iter().filter(|r| r.stackctl == stack && r.msec >= cut && r.msec < until));
        for note in read.notes {
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
        }
        self.cut = until.max(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(status: u16, time: f64, target: &str, own: u8, msec: f64) -> String {
        format!(
            r#"{{"stackctl":"shop","msec":{msec},"host":"a.example","method":"GET","path":"/x\"y","status":{status},"upstream_status":"{status}","request_time":{time},"target":"{target}","upstream":"10.0.0.7:80","own":{own}}}"#
        )
    }

    #[test]
    fn parses_stackctl_lines_and_skips_everything_else() {
        let r = parse(&line(503, 0.012, "shop_web.green:80", 0, 1700000000.5)).unwrap();
        assert_eq!((r.status, r.path.as_str(), r.request_time, r.own), (503, "/x\"y", 0.012, 0));
        assert_eq!(r.routed_to("shop"), Some(("web", Color::Green)));
        assert_eq!(r.routed_to("sho"), None);
        let port_80 = parse(&line(200, 0.001, "shop_web.blue", 1, 1.0)).unwrap();
        assert_eq!(port_80.routed_to("shop"), Some(("web", Color::Blue)));
        for other in [
            "",
            "2026/12/07 05:00:00 [notice] 1#1: start worker processes",
            r#"10.0.0.2 - - [07/Dec/2026:05:00:00 +0000] "GET / HTTP/1.1" 200 3 "-" "curl/7""#,
            r#"{"stackctl":"shop","msec":"not a number"}"#,
            r#"{"other":1}"#,
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
        // nginx's 404 for a path no route covers: no target.
        let unrouted = parse(&line(404, 0.0, "", 0, 1.0)).unwrap();
        assert_eq!(unrouted.routed_to("shop"), None);
    }

    #[test]
    fn figures_count_only_users_of_the_release_since_the_start() {
        let lines = [
            line(200, 0.010, "shop_web.green:80", 0, 100.0),
            line(500, 0.020, "shop_web.green:80", 0, 101.0),
            line(502, 0.030, "shop_web.green:80", 1, 101.0), // stackctl's own probe
            line(500, 0.040, "shop_web.blue:80", 0, 101.0),  // the other colour
            line(500, 0.050, "shop_api.green:80", 0, 101.0), // another service
            line(500, 0.060, "shop_web.green:80", 0, 50.0),  // before the window
            line(404, 0.005, "shop_web.green:80", 0, 102.0), // a 4xx is the user's, not an error
        ];
        let requests: Vec<Request> = lines.iter().filter_map(|l| parse(l)).collect();
        let f = figures(&requests, "shop", "web", Color::Green, 90.0);
        assert_eq!((f.requests, f.errors), (3, 1));
        assert!((f.error_percent() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(f.p99, Some(Duration::from_millis(20)));
        let none = figures(&requests, "shop", "web", Color::Green, 1000.0);
        assert_eq!((none.requests, none.errors, none.p99, none.error_percent()), (0, 0, None, 0.0));
    }

    #[test]
    fn a_tail_takes_each_request_once_however_the_reads_overlap() {
        let at = |msec: f64| parse(&line(500, 0.01, "shop_web.green:80", 0, msec)).unwrap();
        let mut tail = Tail::since(100.0);
        // The first read sees a request from before the start and two after it.
        tail.take(Read { requests: vec![at(99.5), at(100.2), at(100.9)], notes: vec![] }, "shop", 101.0);
        assert_eq!(tail.requests.len(), 2);
        // The next read starts a second early, so it sees 100.9 again, and one not yet finished
        // at its cut; another stack's request is left out.
        let mut other = at(101.5);
        other.stackctl = "other".into();
        tail.take(Read { requests: vec![at(100.9), at(101.5), at(102.4), other], notes: vec!["cut".into()] }, "shop", 102.0);
        assert_eq!(tail.requests.iter().map(|r| r.msec).collect::<Vec<_>>(), [100.2, 100.9, 101.5]);
        tail.take(Read { requests: vec![at(101.5), at(102.4)], notes: vec!["cut".into()] }, "shop", 103.0);
        assert_eq!(tail.requests.iter().map(|r| r.msec).collect::<Vec<_>>(), [100.2, 100.9, 101.5, 102.4]);
        assert_eq!(tail.notes, ["cut"]);
        // A cut never goes back.
        tail.take(Read { requests: vec![at(102.4)], notes: vec![] }, "shop", 102.5);
        assert_eq!(tail.requests.len(), 4);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let requests: Vec<Request> =
            (1..=200).map(|ms| parse(&line(200, ms as f64 / 1000.0, "shop_web.blue:80", 0, 5.0)).unwrap()).collect();
        // 99% of 200 is 198: the 198th smallest time.
        assert_eq!(figures(&requests, "shop", "web", Color::Blue, 0.0).p99, Some(Duration::from_millis(198)));
        let one = [parse(&line(200, 0.5, "shop_web.blue:80", 0, 5.0)).unwrap()];
        assert_eq!(figures(&one, "shop", "web", Color::Blue, 0.0).p99, Some(Duration::from_millis(500)));
    }
}
