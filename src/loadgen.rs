//! A small HTTP load generator for the zero-downtime test and the benchmark.
//!
//! Workers send GETs back to back, some on kept-alive connections and some on a new connection
//! per request, and record every answer (which version answered, latency, time) or failure.
//! Clients behave as well-written HTTP clients do (browsers, Go's net/http, hyper's pool): a
//! GET on a *reused* idle connection that the server closed before sending any response byte
//! is retried once on a new connection (RFC 9110 §9.2.2; the request is idempotent). Those
//! retries are counted separately and reported, never hidden; any other error is a failure.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of nginx.
    pub authority: String,
    pub path: String,
    /// Workers that keep one connection open and reuse it.
    pub keepalive_workers: usize,
    /// Workers that open a new connection for every request.
    pub fresh_workers: usize,
    /// Per-request timeout.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the request was sent, since the start of the run.
    pub sent: Duration,
    pub latency: Duration,
    /// The body (trimmed) on HTTP 200, else the status or error.
    pub result: Result<String, String>,
    pub keepalive: bool,
    /// Retried once after a reused connection was closed under it.
    pub retried: bool,
}

/// Run until `stop` turns true; returns every sample, in no particular order.
pub async fn run(config: Config, stop: watch::Receiver<bool>) -> Vec<Sample> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..config.keepalive_workers + config.fresh_workers {
        let keepalive = i < config.keepalive_workers;
        let config = config.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move { worker(config, keepalive, start, stop).await }));
    }
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.await.unwrap_or_default());
    }
    samples
}

async fn worker(config: Config, keepalive: bool, start: Instant, stop: watch::Receiver<bool>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut conn: Option<SendRequest<Empty<Bytes>>> = None;
    while !*stop.borrow() {
        let sent = start.elapsed();
        let began = Instant::now();
        let reused = conn.as_ref().is_some_and(|c| !c.is_closed());
        let mut retried = false;
        let mut result = request(&config, &mut conn, keepalive).await;
        if let Err(Failure::BeforeResponse(_)) = &result {
            if reused {
                retried = true;
                conn = None;
                result = request(&config, &mut conn, keepalive).await;
            }
        }
        if !keepalive {
            conn = None;
        }
        samples.push(Sample {
            sent,
            latency: began.elapsed(),
            result: result.map_err(|f| f.to_string()),
            keepalive,
            retried,
        });
    }
    samples
}

#[derive(Debug)]
enum Failure {
    /// The connection failed before any response arrived (safe to retry a GET).
    BeforeResponse(String),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::BeforeResponse(e) | Failure::Other(e) => f.write_str(e),
        }
    }
}

async fn request(config: &Config, conn: &mut Option<SendRequest<Empty<Bytes>>>, keepalive: bool) -> Result<String, Failure> {
    let exchange = async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = TcpStream::connect(&config.authority).await.map_err(|e| Failure::Other(format!("connect: {e}")))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Other(format!("handshake: {e}")))?;
            tokio::spawn(connection);
            *conn = Some(sender);
        }
        let sender = conn.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| Failure::BeforeResponse(format!("connection closed: {e}")))?;
        let mut req = Request::get(&config.path).header("host", &config.authority);
        if !keepalive {
            req = req.header("connection", "close");
        }
        let req = req.body(Empty::new()).map_err(|e| Failure::Other(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| Failure::BeforeResponse(format!("request: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| Failure::Other(format!("body: {e}")))?.to_bytes();
        let body = String::from_utf8_lossy(&body).trim().to_string();
        if status == 200 {
            Ok(body)
        } else {
            Err(Failure::Other(format!("HTTP {status}: {}", &body[..body.len().min(80)])))
        }
    };
    match tokio::time::timeout(config.timeout, exchange).await {
        Ok(r) => {
            if r.is_err() {
                *conn = None;
            }
            r
        }
        Err(_) => {
            *conn = None;
            Err(Failure::Other(format!("timeout after {:?}", config.timeout)))
        }
    }
}

/// Numbers drawn from a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: usize,
    pub failures: usize,
    /// The first few failure messages, for the report.
    pub failure_examples: Vec<String>,
    pub retried: usize,
    /// Answers per version (body).
    pub versions: std::collections::BTreeMap<String, usize>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn summarize<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Summary {
    let samples: Vec<&Sample> = samples.into_iter().collect();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mut versions = std::collections::BTreeMap::new();
    let mut failure_examples = Vec::new();
    for s in &samples {
        match &s.result {
            Ok(body) => *versions.entry(body.clone()).or_insert(0) += 1,
            Err(e) if failure_examples.len() < 5 => failure_examples.push(e.clone()),
            Err(_) => {}
        }
    }
    Summary {
        requests: samples.len(),
        failures: samples.iter().filter(|s| s.result.is_err()).count(),
        failure_examples,
        retried: samples.iter().filter(|s| s.retried).count(),
        versions,
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

/// The mixed-version window: from the first answer of `new` to the last answer of `old`
/// (by the time each answer arrived). Zero when they never overlap.
pub fn mixed_window(samples: &[Sample], old: &str, new: &str) -> Duration {
    let done = |s: &Sample| s.sent + s.latency;
    let first_new = samples.iter().filter(|s| s.result.as_deref() == Ok(new)).map(done).min();
    let last_old = samples.iter().filter(|s| s.result.as_deref() == Ok(old)).map(done).max();
    match (first_new, last_old) {
        (Some(n), Some(o)) if o > n => o - n,
        _ => Duration::ZERO,
    }
}

/// Answers of `old` to requests sent after some client had already received `new`: users
/// sent back to the old release after they saw the new one. Empty for a clean switch.
pub fn backwards<'a>(samples: &'a [Sample], old: &str, new: &str) -> Vec<&'a Sample> {
    let Some(first_new) = samples.iter().filter(|s| s.result.as_deref() == Ok(new)).map(|s| s.sent + s.latency).min() else {
        return Vec::new();
    };
    let mut back: Vec<&Sample> = samples.iter().filter(|s| s.result.as_deref() == Ok(old) && s.sent > first_new).collect();
    back.sort_by_key(|s| s.sent);
    back
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent_ms: u64, latency_ms: u64, body: Result<&str, &str>) -> Sample {
        Sample {
            sent: Duration::from_millis(sent_ms),
            latency: Duration::from_millis(latency_ms),
            result: body.map(String::from).map_err(String::from),
            keepalive: true,
            retried: false,
        }
    }

    #[test]
    fn mixed_window_spans_first_new_to_last_old() {
        let s = vec![sample(0, 5, Ok("v1")), sample(10, 5, Ok("v2")), sample(12, 10, Ok("v1")), sample(30, 1, Ok("v2"))];
        assert_eq!(mixed_window(&s, "v1", "v2"), Duration::from_millis(7));
        let clean = vec![sample(0, 5, Ok("v1")), sample(10, 5, Ok("v2"))];
        assert_eq!(mixed_window(&clean, "v1", "v2"), Duration::ZERO);
    }

    #[test]
    fn backwards_finds_old_answers_to_requests_sent_after_the_new_one_was_seen() {
        // v1 in flight at the switch (sent 12, before v2 arrived at 15) is not going back.
        let clean = vec![sample(0, 5, Ok("v1")), sample(10, 5, Ok("v2")), sample(12, 10, Ok("v1")), sample(30, 1, Ok("v2"))];
        assert!(backwards(&clean, "v1", "v2").is_empty());
        let flip_flop = vec![sample(0, 5, Ok("v1")), sample(10, 5, Ok("v2")), sample(16, 1, Ok("v1")), sample(40, 1, Ok("v1"))];
        let back: Vec<Duration> = backwards(&flip_flop, "v1", "v2").iter().map(|s| s.sent).collect();
        assert_eq!(back, vec![Duration::from_millis(16), Duration::from_millis(40)]);
        assert!(backwards(&flip_flop[..1], "v1", "v2").is_empty(), "no v2 seen: nothing went back");
    }

    #[test]
    fn summary_counts_failures_versions_and_percentiles() {
        let mut s: Vec<Sample> = (0..99).map(|i| sample(i, 1, Ok("v1"))).collect();
        s.push(sample(100, 50, Err("connect: refused")));
        let sum = summarize(&s);
        assert_eq!(sum.requests, 100);
        assert_eq!(sum.failures, 1);
        assert_eq!(sum.versions["v1"], 99);
        assert_eq!(sum.p50, Duration::from_millis(1));
        assert_eq!(sum.max, Duration::from_millis(50));
        assert_eq!(sum.failure_examples, vec!["connect: refused".to_string()]);
    }

    /// A loopback server that closes every kept-alive connection after one answer, without
    /// saying so: the client's one retry hides nothing else.
    #[tokio::test]
    async fn a_server_closing_idle_connections_causes_counted_retries_not_failures() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    if sock.read(&mut buf).await.unwrap_or(0) > 0 {
                        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv1").await;
                    }
                    // Keep-alive was promised; close shortly after, as a reloading nginx does.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                });
            }
        });
        let (tx, rx) = watch::channel(false);
        let cfg = Config { authority, path: "/".into(), keepalive_workers: 2, fresh_workers: 1, timeout: Duration::from_secs(2) };
        let run = tokio::spawn(run(cfg, rx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(true).unwrap();
        let samples = run.await.unwrap();
        let sum = summarize(&samples);
        assert!(sum.requests > 10, "{sum:?}");
        assert_eq!(sum.failures, 0, "{sum:?}");
        assert_eq!(sum.versions.get("v1"), Some(&sum.requests));
    }
}
