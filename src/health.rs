//! Waiting until a release is healthy: Swarm's view of its tasks, then HTTP through nginx.
//!
//! Swarm already folds Docker's own health check into task state: a task whose image has a
//! HEALTHCHECK stays `starting` until the container is `healthy`, and an unhealthy container
//! is killed and replaced. So "every task `running`" means "every container healthy". The HTTP
//! probe then goes through the same nginx path users take, and counts only answers that nginx
//! says came from the release under test (`X-Stackctl-Upstream`), so a probe cannot be fooled
//! by a fallback to the old release or by nginx's default server.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::engine::{Engine, EngineError, TaskInfo};

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{running} of {wanted} tasks of {service} running after {waited:?}{}", last_error.as_ref().map(|e| format!("; last task error: {e}")).unwrap_or_default())]
    TasksNotRunning { service: String, running: usize, wanted: u64, waited: Duration, last_error: Option<String> },
    #[error("tasks of {service} keep failing ({failed} failed attempts); last error: {last_error}")]
    TasksFailing { service: String, failed: usize, last_error: String },
    #[error("HTTP probe {what} did not pass {wanted} times in a row within {waited:?}; last result: {last}")]
    Probe { what: String, wanted: u32, waited: Duration, last: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Wait until `replicas` tasks of the service are running (healthy), or fail with why not.
pub async fn wait_running<E: Engine>(
    engine: &E,
    service: &str,
    replicas: u64,
    deadline: Instant,
    mut progress: impl FnMut(usize, u64),
) -> Result<Vec<TaskInfo>, HealthError> {
    let started = Instant::now();
    loop {
        let tasks = engine.tasks(service).await?;
        let running = tasks.iter().filter(|t| t.is_running()).count();
        progress(running, replicas);
        if let Some(running) = judge_tasks(service, &tasks, replicas, started, deadline)? {
            return Ok(running);
        }
        tokio::time::sleep(TASK_POLL).await;
    }
}

/// How often a wait for tasks looks at them again. Every poll late is time users wait for a
/// rollback or a deploy; a task listing is cheap (one per look for a whole deploy).
pub const TASK_POLL: Duration = Duration::from_millis(100);

/// One look at a service's tasks (newest first) during a wait that began at `started`: its
/// running tasks once there are `replicas` of them, `None` to look again later, or why it
/// will not get there (a crash loop, or `deadline` passed). [`wait_running`] polls one service
/// with it; a deploy judges all its greens from one listing of the stack's tasks.
pub fn judge_tasks(
    service: &str,
    tasks: &[TaskInfo],
    replicas: u64,
    started: Instant,
    deadline: Instant,
) -> Result<Option<Vec<TaskInfo>>, HealthError> {
    let running: Vec<TaskInfo> = tasks.iter().filter(|t| t.is_running()).cloned().collect();
    if running.len() as u64 >= replicas {
        return Ok(Some(running));
    }
    // A crash-looping image fails fast instead of burning the whole deadline.
    let give_up_after = (2 * replicas as usize).max(3);
    let failed: Vec<&TaskInfo> = tasks.iter().filter(|t| matches!(t.state.as_str(), "failed" | "rejected")).collect();
    let last_error = failed.first().and_then(|t| t.error.clone().or_else(|| t.message.clone()));
    if failed.len() >= give_up_after {
        return Err(HealthError::TasksFailing {
            service: service.to_string(),
            failed: failed.len(),
            last_error: last_error.unwrap_or_else(|| "unknown".into()),
        });
    }
    if Instant::now() >= deadline {
        return Err(HealthError::TasksNotRunning {
            service: service.to_string(),
            running: running.len(),
            wanted: replicas,
            waited: started.elapsed(),
            last_error,
        });
    }
    Ok(None)
}

/// One HTTP GET, on a fresh connection, with a deadline on the whole exchange.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `host:port` to connect to.
    pub authority: String,
    pub path: String,
    /// `Host` header (a routed host name), or the authority when `None`.
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The backend nginx used, when it echoed one (last of a retried list).
    pub upstream: Option<String>,
    /// The first bytes of the body, for messages.
    pub body: String,
    /// The hash of the config nginx has loaded, when it echoed one (`X-Stackctl-Config`, sent
    /// only to requests carrying the config's token).
    pub config: Option<String>,
}

impl Probe {
    pub async fn send(&self) -> Result<Response, String> {
        self.send_as(hyper::Method::GET, 0).await.map(|(r, _)| r)
    }

    /// The request with `method` (no body); also the first `keep` bytes of the answer's body,
    /// whole (a smoke check matches a pattern against it).
    pub async fn send_as(&self, method: hyper::Method, keep: usize) -> Result<(Response, Bytes), String> {
        match tokio::time::timeout(self.timeout, self.exchange(method, keep)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn exchange(&self, method: hyper::Method, keep: usize) -> Result<(Response, Bytes), String> {
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| format!("connect {}: {e}", self.authority))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(&self.path).header("host", self.host.as_deref().unwrap_or(&self.authority));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| format!("request: {e}"))?;
        let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let upstream = upstream_of(resp.headers());
        let config = (resp.headers().get_all("x-stackctl-config").iter().last())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        conn.abort();
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
        let kept = body.slice(..body.len().min(keep));
        Ok((Response { status, upstream, body: excerpt, config }, kept))
    }
}

/// The backend nginx says answered: the last `X-Stackctl-Upstream` header, which is the one
/// nginx adds after the backend's headers (the config also hides a backend's own), and the last
/// address of its list (nginx lists every backend it tried).
fn upstream_of(headers: &hyper::HeaderMap) -> Option<String> {
    let last = headers.get_all("x-stackctl-upstream").iter().last()?;
    last.to_str().ok().and_then(|v| v.rsplit(',').next()).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// What a passing answer must look like.
#[derive(Debug, Clone)]
pub struct Expect {
    pub status: u16,
    /// Backends (`ip:port`) allowed to answer; empty means any.
    pub upstreams: BTreeSet<String>,
}

impl Expect {
    pub fn check(&self, r: &Response) -> Result<(), String> {
        if r.status != self.status {
            return Err(format!("status {} (wanted {}), body {:?}", r.status, self.status, r.body));
        }
        if !self.upstreams.is_empty() {
            match &r.upstream {
                Some(u) if self.upstreams.contains(u) => {}
                Some(u) => return Err(format!("answered by {u}, which is not the release under test")),
                None => return Err("nginx did not say which backend answered (is the stackctl config loaded?)".into()),
            }
        }
        Ok(())
    }
}

/// Send `probe` every `interval` until it passes `successes` times in a row, or `deadline`.
pub async fn probe_until(
    probe: &Probe,
    expect: &Expect,
    successes: u32,
    interval: Duration,
    deadline: Instant,
) -> Result<u32, HealthError> {
    let started = Instant::now();
    let mut streak = 0;
    let mut attempts = 0;
    let mut last = String::from("no probe sent");
    loop {
        attempts += 1;
        // `interval` runs from one probe's start to the next (as a Docker HEALTHCHECK's does):
        // a slow answer does not push every later probe back, and the gate takes
        // `(successes - 1) × interval` plus one answer, not plus one per probe.
        let sent = Instant::now();
        match probe.send().await.and_then(|r| expect.check(&r)) {
            Ok(()) => {
                streak += 1;
                if streak >= successes {
                    return Ok(attempts);
                }
            }
            Err(e) => {
                streak = 0;
                last = e;
            }
        }
        let next = sent + interval;
        if next > deadline {
            return Err(HealthError::Probe {
                what: format!("GET {}{}", probe.authority, probe.path),
                wanted: successes,
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep_until(next).await;
    }
}

/// The rule of the watch window after the switch: green fails once `limit` of its last
/// `2 × limit` probes failed (`limit` is `health.successes`: 3 of the last 6 by default). That
/// catches a green that stopped answering (`limit` failures in a row) and one that flaps (every
/// other probe failing), and tolerates a stray failure now and then.
#[derive(Debug, Clone)]
pub struct Watch {
    limit: usize,
    /// The last `2 × limit` probes, oldest first; `true` = failed.
    recent: VecDeque<bool>,
    /// Probes sent so far.
    pub sent: u32,
}

impl Watch {
    pub fn new(limit: u32) -> Watch {
        let limit = limit.max(1) as usize;
        Watch { limit, recent: VecDeque::with_capacity(2 * limit), sent: 0 }
    }

    /// Record one probe; `Err` says why green failed the watch.
    pub fn record(&mut self, probe: Result<(), String>) -> Result<(), String> {
        self.sent += 1;
        if self.recent.len() == 2 * self.limit {
            self.recent.pop_front();
        }
        self.recent.push_back(probe.is_err());
        let failed = self.recent.iter().filter(|f| **f).count();
        match probe {
            Err(last) if failed >= self.limit => {
                Err(format!("{failed} of the last {} probes failed (last: {last})", self.recent.len()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed a pattern (`.` passes, `x` fails); the 1-based probe at which the watch failed.
    fn watch_fails_at(limit: u32, pattern: &str) -> Option<usize> {
        let mut w = Watch::new(limit);
        pattern.chars().position(|c| w.record(if c == 'x' { Err("status 500".into()) } else { Ok(()) }).is_err()).map(|i| i + 1)
    }

    #[test]
    fn the_watch_fails_a_dead_or_flapping_green_and_tolerates_a_stray_failure() {
        assert_eq!(watch_fails_at(3, "............"), None);
        assert_eq!(watch_fails_at(3, "....xxx....."), Some(7), "three in a row");
        assert_eq!(watch_fails_at(3, ".x.x.x.x"), Some(6), "every other probe fails");
        assert_eq!(watch_fails_at(3, "x..x..x..x..x..x"), None, "one in three is tolerated at limit 3");
        assert_eq!(watch_fails_at(3, "x...x...x...x..."), None);
        assert_eq!(watch_fails_at(3, "xx....xx"), None, "the older failures left the window");
        assert_eq!(watch_fails_at(1, "...x"), Some(4), "successes: 1 tolerates nothing");
        assert_eq!(watch_fails_at(2, ".x.x"), Some(4));
    }

    #[test]
    fn the_watch_says_how_many_failed_and_the_last_reason() {
        let mut w = Watch::new(2);
        assert!(w.record(Ok(())).is_ok());
        assert!(w.record(Err("status 404".into())).is_ok());
        let err = w.record(Err("connect refused".into())).unwrap_err();
        assert_eq!(err, "2 of the last 3 probes failed (last: connect refused)");
        assert_eq!(w.sent, 3);
    }

    fn resp(status: u16, upstream: Option<&str>) -> Response {
        Response { status, upstream: upstream.map(String::from), body: "x".into(), config: None }
    }

    #[test]
    fn expect_checks_status_and_backend() {
        let e = Expect { status: 200, upstreams: BTreeSet::from(["10.0.0.5:80".to_string()]) };
        assert!(e.check(&resp(200, Some("10.0.0.5:80"))).is_ok());
        assert!(e.check(&resp(500, Some("10.0.0.5:80"))).unwrap_err().contains("status 500"));
        assert!(e.check(&resp(200, Some("10.0.0.9:80"))).unwrap_err().contains("not the release under test"));
        assert!(e.check(&resp(200, None)).unwrap_err().contains("did not say"));
    }

    /// A tiny server on loopback that answers with a scripted sequence of statuses.
    async fn scripted_server(statuses: Vec<u16>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for status in statuses.into_iter().cycle() {
                let (mut sock, _) = listener.accept().await.unwrap();
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let msg = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nx-stackctl-upstream: 10.0.0.1:80, 10.0.0.5:80\r\nconnection: close\r\n\r\nok"
                );
                let _ = sock.write_all(msg.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_flapping_backend_never_reaches_the_streak() {
        let addr = scripted_server(vec![200, 200, 500]).await;
        let probe = Probe { authority: addr, path: "/healthz".into(), host: None, headers: vec![], timeout: Duration::from_secs(1) };
        let expect = Expect { status: 200, upstreams: BTreeSet::from(["10.0.0.5:80".to_string()]) };
        let deadline = Instant::now() + Duration::from_millis(400);
        let err = probe_until(&probe, &expect, 3, Duration::from_millis(10), deadline).await.unwrap_err();
        assert!(err.to_string().contains("status 500"), "{err}");
    }

    #[tokio::test]
    async fn a_steady_backend_passes_and_the_last_upstream_counts() {
        let addr = scripted_server(vec![200]).await;
        let probe = Probe { authority: addr, path: "/".into(), host: Some("a.example".into()), headers: vec![], timeout: Duration::from_secs(1) };
        let expect = Expect { status: 200, upstreams: BTreeSet::from(["10.0.0.5:80".to_string()]) };
        let attempts = probe_until(&probe, &expect, 3, Duration::from_millis(1), Instant::now() + Duration::from_secs(5)).await.unwrap();
        assert_eq!(attempts, 3);
    }

    #[test]
    fn the_upstream_is_the_header_nginx_added_last() {
        let mut headers = hyper::HeaderMap::new();
        // A backend that forges the header, followed by the one nginx adds.
        headers.append("x-stackctl-upstream", "10.0.0.66:80".parse().unwrap());
        headers.append("x-stackctl-upstream", "10.0.0.1:80, 10.0.0.5:80".parse().unwrap());
        assert_eq!(upstream_of(&headers).as_deref(), Some("10.0.0.5:80"));
        let mut empty = hyper::HeaderMap::new();
        empty.append("x-stackctl-upstream", "".parse().unwrap());
        assert_eq!(upstream_of(&empty), None);
    }

    #[tokio::test]
    async fn a_dead_port_is_reported_with_the_address() {
        let probe = Probe { authority: "127.0.0.1:1".into(), path: "/".into(), host: None, headers: vec![], timeout: Duration::from_secs(1) };
        let err = probe.send().await.unwrap_err();
        assert!(err.starts_with("connect 127.0.0.1:1"), "{err}");
    }
}
