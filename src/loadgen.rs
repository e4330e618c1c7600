//! A small HTTP load generator for the zero-downtime test and the benchmark.
//!
//! Workers send GETs back to back, some on kept-alive connections and some on a new connection
//! per request, and record every answer (which version answered, latency, time) or failure.
//! HTTP/1.1 is spoken by hand on a plain `TcpStream`, so that when a connection breaks the
//! generator knows exactly how far the exchange got ([`Broken`]):
//!
//! - [`Broken::Unsent`]: refused or closed before the request was fully written. The server
//!   cannot have acted on it.
//! - [`Broken::NoResponse`]: the request was written, then the connection was reset or closed
//!   before any response byte.
//! - [`Broken::Partial`]: part of a response arrived (status line, headers or body), then EOF or
//!   a reset. Always a failure: the server was answering, and a client cannot pretend it was not.
//!
//! Retries. Only a request on a *reused* kept-alive connection is retried, once, on a new
//! connection, and only for `Unsent` and `NoResponse`. `Unsent` is the case RFC 9110 §9.2.2 has
//! in mind. `NoResponse` is retried too because it is what a reload of nginx does to a client
//! whose request crosses the old worker closing its idle connection, and because well-written
//! clients retry it for an idempotent request on a reused connection (Go's net/http retries any
//! read error before the first response byte there; Chromium resends on a reused socket closed
//! or reset with nothing received). A client that never retries (wrk, curl in a loop) or a
//! non-idempotent request (POST) would have seen a failure, so these retries are counted apart
//! ([`Summary::retried_no_response`]) and the tests bound them. A kept-alive connection found
//! closed *before* a request is written (the client saw the server's FIN while idle) costs
//! nothing and is not counted: any client opens a new one. Connections opened for this request
//! are never retried, and neither are timeouts and HTTP errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// How far an exchange got when its connection broke (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Refused or closed before the request was fully written.
    Unsent,
    /// Request written; reset or closed before any response byte.
    NoResponse,
    /// Part of a response read, then EOF or a reset.
    Partial,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the request was sent, since the start of the run.
    pub sent: Duration,
    pub latency: Duration,
    /// The body (trimmed) on HTTP 200, else the status or error.
    pub result: Result<String, String>,
    pub keepalive: bool,
    /// Retried once on a new connection after its reused connection broke.
    pub retried: bool,
    /// Why it was retried: `Unsent` or `NoResponse` (never `Partial`); `None` when not retried.
    pub retry_cause: Option<Broken>,
    /// How the connection broke when that is what failed the request (the final attempt's);
    /// `None` for answers, HTTP errors and timeouts.
    pub broken: Option<Broken>,
}

/// Samples as the workers record them, shared so that a caller can watch them arrive and a
/// worker that panics keeps what it already recorded.
pub type Sink = Arc<Mutex<Vec<Sample>>>;

/// Run until `stop` turns true; returns every sample, in no particular order. A worker that
/// panicked adds one failed sample saying so.
pub async fn run(config: Config, stop: watch::Receiver<bool>) -> Vec<Sample> {
    let sink = Sink::default();
    run_into(config, stop, sink.clone()).await;
    let samples = std::mem::take(&mut *lock(&sink));
    samples
}

/// [`run`], adding every sample to `sink` as soon as it is recorded.
pub async fn run_into(config: Config, stop: watch::Receiver<bool>, sink: Sink) {
    let start = Instant::now();
    let mut workers = Vec::new();
    for i in 0..config.keepalive_workers + config.fresh_workers {
        let keepalive = i < config.keepalive_workers;
        let (config, stop, sink) = (config.clone(), stop.clone(), sink.clone());
        workers.push((keepalive, tokio::spawn(async move { worker(config, keepalive, start, stop, sink).await })));
    }
    join_workers(workers, start, &sink).await;
}

fn lock(sink: &Sink) -> std::sync::MutexGuard<'_, Vec<Sample>> {
    // A worker panicking while it pushed leaves a complete Vec: push does not unwind halfway.
    sink.lock().unwrap_or_else(|e| e.into_inner())
}

async fn join_workers(workers: Vec<(bool, tokio::task::JoinHandle<()>)>, start: Instant, sink: &Sink) {
    for (keepalive, handle) in workers {
        if let Err(e) = handle.await {
            lock(sink).push(Sample {
                sent: start.elapsed(),
                latency: Duration::ZERO,
                result: Err(format!("load worker failed: {e}")),
                keepalive,
                retried: false,
                retry_cause: None,
                broken: None,
            });
        }
    }
}

async fn worker(config: Config, keepalive: bool, start: Instant, stop: watch::Receiver<bool>, sink: Sink) {
    let mut conn: Option<Conn> = None;
    while !*stop.borrow() {
        let sample = send(&config, &mut conn, keepalive, start).await;
        lock(&sink).push(sample);
    }
}

/// One request, retried at most once (see the module documentation for when).
async fn send(config: &Config, conn: &mut Option<Conn>, keepalive: bool, start: Instant) -> Sample {
    let sent = start.elapsed();
    let began = Instant::now();
    let (mut result, reused) = attempt(config, conn, keepalive).await;
    let mut retry_cause = None;
    if let Err(Failure { broken: Some(b @ (Broken::Unsent | Broken::NoResponse)), .. }) = &result {
        if reused {
            retry_cause = Some(*b);
            *conn = None;
            result = attempt(config, conn, keepalive).await.0;
        }
    }
    Sample {
        sent,
        latency: began.elapsed(),
        broken: result.as_ref().err().and_then(|f| f.broken),
        result: result.map_err(|f| f.message),
        keepalive,
        retried: retry_cause.is_some(),
        retry_cause,
    }
}

#[derive(Debug)]
struct Failure {
    broken: Option<Broken>,
    message: String,
}

impl Failure {
    fn other(message: String) -> Failure {
        Failure { broken: None, message }
    }
}

/// One connection and the bytes read from it that no response has used yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Whether a kept-alive connection can carry another request: the server has not closed
    /// it (nor reset it, nor sent anything unasked) while it was idle.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        self.buf.is_empty() && matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Read more bytes into `buf`; 0 at EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// [`Conn::fill`] where the response must go on: how the connection ended, if it did.
    async fn more(&mut self) -> Result<usize, &'static str> {
        match self.fill().await {
            Ok(0) => Err("by the server"),
            Ok(n) => Ok(n),
            Err(_) => Err("by a reset"),
        }
    }
}

/// One exchange on `conn` (a new connection when there is none usable). Returns the body of a
/// 200 or the failure, and whether the connection was reused. Leaves `conn` set only when the
/// connection can carry the next request.
async fn attempt(config: &Config, conn: &mut Option<Conn>, keepalive: bool) -> (Result<String, Failure>, bool) {
    if conn.as_ref().is_some_and(|c| !c.still_open()) {
        *conn = None;
    }
    let reused = conn.is_some();
    let mut c = match conn.take() {
        Some(c) => c,
        None => match tokio::time::timeout(config.timeout, TcpStream::connect(&config.authority)).await {
            Ok(Ok(stream)) => Conn { stream, buf: Vec::new() },
            Ok(Err(e)) => return (Err(Failure { broken: Some(Broken::Unsent), message: format!("connect: {e}") }), false),
            Err(_) => return (Err(Failure::other(format!("connect: timeout after {:?}", config.timeout))), false),
        },
    };
    match tokio::time::timeout(config.timeout, exchange(config, &mut c, keepalive)).await {
        Ok(Ok((status, body, reusable))) => {
            if reusable && keepalive {
                *conn = Some(c);
            }
            if status == 200 {
                (Ok(body), reused)
            } else {
                // Char by char: a byte index could fall inside a multi-byte character.
                let head: String = body.chars().take(80).collect();
                (Err(Failure::other(format!("HTTP {status}: {head}"))), reused)
            }
        }
        Ok(Err(f)) => (Err(f), reused),
        Err(_) => (Err(Failure::other(format!("timeout after {:?}", config.timeout))), reused),
    }
}

/// Write the request and read one whole response: status, trimmed body, and whether the
/// connection may carry another request.
async fn exchange(config: &Config, c: &mut Conn, keepalive: bool) -> Result<(u16, String, bool), Failure> {
    let close = if keepalive { "" } else { "connection: close\r\n" };
    let request = format!("GET {} HTTP/1.1\r\nhost: {}\r\n{close}\r\n", config.path, config.authority);
    if let Err(e) = c.stream.write_all(request.as_bytes()).await {
        return Err(Failure { broken: Some(Broken::Unsent), message: format!("write: {e}") });
    }
    let mut received = 0;
    // Any byte of the response turns a broken connection from NoResponse into Partial.
    let broke = |received: usize, what: &str| {
        let broken = if received == 0 { Broken::NoResponse } else { Broken::Partial };
        Failure { broken: Some(broken), message: format!("connection closed {what} ({received} response bytes read)") }
    };
    let head_end = loop {
        if let Some(i) = find(&c.buf, b"\r\n\r\n") {
            break i + 4;
        }
        match c.more().await {
            Ok(n) => received += n,
            Err(how) => return Err(broke(received, &format!("{how} before the end of the response headers"))),
        }
    };
    let head = String::from_utf8_lossy(&c.buf[..head_end]).into_owned();
    c.buf.drain(..head_end);
    let status: u16 = head
        .split("\r\n")
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::other(format!("not an HTTP response: {:?}", head.chars().take(80).collect::<String>())))?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_ascii_lowercase()))
    };
    let mut reusable = header("connection").is_none_or(|v| !v.contains("close"));
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&c.buf, b"\r\n") {
                    break i;
                }
                match c.more().await {
                    Ok(n) => received += n,
                    Err(how) => return Err(broke(received, &format!("{how} in a chunked body"))),
                }
            };
            let size_text = String::from_utf8_lossy(&c.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Failure::other(format!("bad chunk size {size_text:?}")))?;
            c.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers (none expected), up to the empty line.
                let end = loop {
                    if c.buf.starts_with(b"\r\n") {
                        break 2;
                    }
                    if let Some(i) = find(&c.buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    match c.more().await {
                        Ok(n) => received += n,
                        Err(how) => return Err(broke(received, &format!("{how} after the last chunk"))),
                    }
                };
                c.buf.drain(..end);
                break body;
            }
            while c.buf.len() < size + 2 {
                match c.more().await {
                    Ok(n) => received += n,
                    Err(how) => return Err(broke(received, &format!("{how} in a chunked body"))),
                }
            }
            body.extend_from_slice(&c.buf[..size]);
            c.buf.drain(..size + 2);
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| Failure::other(format!("bad content-length {len:?}")))?;
        while c.buf.len() < len {
            match c.more().await {
                Ok(n) => received += n,
                Err(how) => return Err(broke(received, &format!("{how} after {} of {len} body bytes", c.buf.len()))),
            }
        }
        c.buf.drain(..len).collect()
    } else {
        // Delimited by the end of the connection.
        reusable = false;
        loop {
            match c.fill().await {
                Ok(0) => break std::mem::take(&mut c.buf),
                Ok(n) => received += n,
                Err(_) => return Err(broke(received, "by a reset in a body delimited by the connection's end")),
            }
        }
    };
    Ok((status, String::from_utf8_lossy(&body).trim().to_string(), reusable))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Numbers drawn from a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: usize,
    /// Requests that got no 200 answer, whatever the reason (the three below included).
    pub failures: usize,
    /// The first few failure messages, for the report.
    pub failure_examples: Vec<String>,
    /// Failed because the connection broke before the request was written (new connections).
    pub unsent: usize,
    /// Failed because the connection broke after the request, before any response byte.
    pub no_response: usize,
    /// Failed because the connection broke in the middle of a response.
    pub partial: usize,
    /// Requests retried once on a new connection (the two below together).
    pub retried: usize,
    /// Retried because the reused connection broke before the request was written.
    pub retried_unsent: usize,
    /// Retried because the reused connection broke after the request, before any response
    /// byte: a client that does not retry would have failed here.
    pub retried_no_response: usize,
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
    let count = |f: &dyn Fn(&Sample) -> bool| samples.iter().filter(|s| f(s)).count();
    Summary {
        requests: samples.len(),
        failures: count(&|s| s.result.is_err()),
        failure_examples,
        unsent: count(&|s| s.result.is_err() && s.broken == Some(Broken::Unsent)),
        no_response: count(&|s| s.result.is_err() && s.broken == Some(Broken::NoResponse)),
        partial: count(&|s| s.result.is_err() && s.broken == Some(Broken::Partial)),
        retried: count(&|s| s.retried),
        retried_unsent: count(&|s| s.retry_cause == Some(Broken::Unsent)),
        retried_no_response: count(&|s| s.retry_cause == Some(Broken::NoResponse)),
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
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    fn sample(sent_ms: u64, latency_ms: u64, body: Result<&str, &str>) -> Sample {
        Sample {
            sent: Duration::from_millis(sent_ms),
            latency: Duration::from_millis(latency_ms),
            result: body.map(String::from).map_err(String::from),
            keepalive: true,
            retried: false,
            retry_cause: None,
            broken: None,
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

    #[test]
    fn summary_counts_each_kind_of_broken_connection_and_retry_apart() {
        let broken = |b: Option<Broken>, result: Result<&str, &str>, cause: Option<Broken>| Sample { broken: b, retried: cause.is_some(), retry_cause: cause, ..sample(0, 1, result) };
        let s = vec![
            broken(Some(Broken::Unsent), Err("connect: refused"), None),
            broken(Some(Broken::NoResponse), Err("closed"), None),
            broken(Some(Broken::Partial), Err("closed"), None),
            broken(Some(Broken::Partial), Err("closed"), Some(Broken::NoResponse)),
            broken(None, Ok("v1"), Some(Broken::Unsent)),
            broken(None, Ok("v1"), Some(Broken::NoResponse)),
            broken(None, Err("HTTP 502: bad gateway"), None),
        ];
        let sum = summarize(&s);
        assert_eq!((sum.failures, sum.unsent, sum.no_response, sum.partial), (5, 1, 1, 2));
        assert_eq!((sum.retried, sum.retried_unsent, sum.retried_no_response), (3, 1, 2));
        assert_eq!(sum.versions["v1"], 2);
    }

    /// A loopback server running `script` on every connection it accepts (numbered from 0).
    async fn server<F, Fut>(script: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                tokio::spawn(script(count.fetch_add(1, Ordering::SeqCst), sock));
            }
        });
        (authority, accepted)
    }

    /// Read one request (up to its blank line); false when the client closed first.
    async fn read_request(sock: &mut TcpStream) -> bool {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while find(&got, b"\r\n\r\n").is_none() {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        true
    }

    const V1: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv1";

    fn config(authority: &str) -> Config {
        Config { authority: authority.into(), path: "/".into(), keepalive_workers: 1, fresh_workers: 0, timeout: Duration::from_secs(5) }
    }

    /// Requests in a row from one client, as a worker sends them.
    async fn requests(authority: &str, keepalive: bool, n: usize) -> Vec<Sample> {
        let (cfg, mut conn, start) = (config(authority), None, Instant::now());
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(send(&cfg, &mut conn, keepalive, start).await);
        }
        out
    }

    #[tokio::test]
    async fn a_refused_connection_is_unsent_and_a_new_connection_is_not_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        drop(listener);
        let s = requests(&authority, true, 1).await.remove(0);
        assert!(s.result.as_ref().is_err_and(|e| e.starts_with("connect: ")), "{s:?}");
        assert_eq!((s.broken, s.retried), (Some(Broken::Unsent), false), "{s:?}");
    }

    /// The write of a request fails once the server has reset the connection: nothing reached
    /// it. (Through `send`, a reset seen while idle just opens a new connection; this calls
    /// the exchange on the reset connection directly.)
    #[tokio::test]
    async fn a_write_on_a_reset_connection_is_unsent() {
        let (authority, _) = server(|_, sock| async move {
            sock.set_zero_linger().unwrap();
            drop(sock); // an RST, not a FIN
        })
        .await;
        let stream = TcpStream::connect(&authority).await.unwrap();
        stream.readable().await.unwrap(); // the reset has arrived
        let mut c = Conn { stream, buf: Vec::new() };
        let f = exchange(&config(&authority), &mut c, true).await.unwrap_err();
        assert_eq!(f.broken, Some(Broken::Unsent), "{f:?}");
    }

    /// A server that closes before reading cannot stop the client's write (TCP takes it into
    /// the send buffer), so the client sees its request written and nothing read.
    #[tokio::test]
    async fn closed_before_reading_is_no_response_and_fails_on_a_new_connection() {
        let (authority, _) = server(|_, sock| async move { drop(sock) }).await;
        for keepalive in [true, false] {
            let s = requests(&authority, keepalive, 1).await.remove(0);
            assert!(s.result.is_err(), "{s:?}");
            assert_eq!((s.broken, s.retried), (Some(Broken::NoResponse), false), "{s:?}");
        }
    }

    #[tokio::test]
    async fn read_then_closed_on_a_reused_connection_is_retried_once_and_counted() {
        // First connection: one answer, then the next request is read and the connection closed.
        let (authority, accepted) = server(|n, mut sock| async move {
            while read_request(&mut sock).await {
                if n == 0 && sock.write_all(V1).await.is_ok() && read_request(&mut sock).await {
                    return;
                }
                let _ = sock.write_all(V1).await;
            }
        })
        .await;
        let s = requests(&authority, true, 3).await;
        assert_eq!(s[0].result.as_deref(), Ok("v1"));
        assert!(!s[0].retried);
        assert_eq!(s[1].result.as_deref(), Ok("v1"), "{:?}", s[1]);
        assert_eq!((s[1].retried, s[1].retry_cause, s[1].broken), (true, Some(Broken::NoResponse), None), "{:?}", s[1]);
        assert_eq!(s[2].result.as_deref(), Ok("v1"));
        assert!(!s[2].retried, "the retry's connection is kept alive");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let sum = summarize(&s);
        assert_eq!((sum.failures, sum.retried, sum.retried_no_response, sum.retried_unsent), (0, 1, 1, 0));
    }

    #[tokio::test]
    async fn read_then_closed_on_a_new_connection_is_a_failure() {
        let (authority, _) = server(|_, mut sock| async move {
            read_request(&mut sock).await;
        })
        .await;
        let s = requests(&authority, false, 1).await.remove(0);
        assert!(s.result.is_err(), "{s:?}");
        assert_eq!((s.broken, s.retried), (Some(Broken::NoResponse), false));
    }

    /// Half the headers, or half the body, then the connection ends: a failure, never retried,
    /// even on a reused connection where a retry would have succeeded.
    #[tokio::test]
    async fn a_partial_response_is_a_failure_and_never_retried() {
        for cut in [&b"HTTP/1.1 200 OK\r\ncontent-le"[..], b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nv1"] {
            let (authority, _) = server(move |n, mut sock| async move {
                while read_request(&mut sock).await {
                    let _ = sock.write_all(V1).await;
                    if n == 0 && read_request(&mut sock).await {
                        let _ = sock.write_all(cut).await;
                        return;
                    }
                }
            })
            .await;
            let s = requests(&authority, true, 2).await;
            assert_eq!(s[0].result.as_deref(), Ok("v1"));
            assert!(s[1].result.is_err(), "{:?}", s[1]);
            assert_eq!((s[1].broken, s[1].retried), (Some(Broken::Partial), false), "{:?}", s[1]);
            let sum = summarize(&s);
            assert_eq!((sum.failures, sum.partial, sum.retried), (1, 1, 0));
        }
    }

    #[tokio::test]
    async fn whole_responses_by_length_chunks_or_close_are_answers() {
        let (authority, accepted) = server(|_, mut sock| async move {
            let answers: [&[u8]; 3] = [V1, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nv\r\n1\r\n2\r\n0\r\n\r\n", b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nv3\n"];
            for a in answers {
                if !read_request(&mut sock).await || sock.write_all(a).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let s = requests(&authority, true, 4).await;
        let bodies: Vec<_> = s.iter().map(|x| x.result.clone()).collect();
        assert_eq!(bodies, vec![Ok("v1".into()), Ok("v2".into()), Ok("v3".into()), Ok("v1".into())]);
        assert!(s.iter().all(|x| !x.retried && x.broken.is_none()), "{s:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "kept alive until the server said close");
    }

    #[tokio::test]
    async fn an_error_body_is_cut_on_a_character_boundary() {
        let (authority, _) = server(|_, mut sock| async move {
            let body = "é".repeat(100);
            read_request(&mut sock).await;
            let _ = sock.write_all(format!("HTTP/1.1 500 Oops\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
        })
        .await;
        let s = requests(&authority, false, 1).await.remove(0);
        assert_eq!(s.result, Err(format!("HTTP 500: {}", "é".repeat(80))));
        assert_eq!(s.broken, None);
    }

    #[tokio::test]
    async fn a_worker_that_panics_keeps_its_samples_and_is_reported() {
        let sink = Sink::default();
        let start = Instant::now();
        let recorded = sink.clone();
        let worker = tokio::spawn(async move {
            for i in 0..3 {
                lock(&recorded).push(sample(i, 1, Ok("v1")));
            }
            panic!("worker bug");
        });
        let fine = tokio::spawn(async {});
        join_workers(vec![(true, worker), (false, fine)], start, &sink).await;
        let samples = std::mem::take(&mut *lock(&sink));
        let sum = summarize(&samples);
        assert_eq!((sum.requests, sum.failures, sum.versions["v1"]), (4, 1, 3), "{sum:?}");
        assert!(sum.failure_examples[0].contains("load worker failed") && sum.failure_examples[0].contains("panicked"), "{sum:?}");
    }

    /// A loopback server that closes every kept-alive connection shortly after one answer,
    /// without saying so: requests either find the connection closed while idle (not counted)
    /// or cross the close (retried, counted as NoResponse); none fails.
    #[tokio::test]
    async fn a_server_closing_idle_connections_causes_counted_retries_not_failures() {
        let (authority, _) = server(|_, mut sock| async move {
            if read_request(&mut sock).await {
                let _ = sock.write_all(V1).await;
            }
            // Keep-alive was promised; close shortly after, as a reloading nginx does.
            tokio::time::sleep(Duration::from_millis(5)).await;
        })
        .await;
        let (tx, rx) = watch::channel(false);
        let cfg = Config { authority, path: "/".into(), keepalive_workers: 2, fresh_workers: 1, timeout: Duration::from_secs(2) };
        let run = tokio::spawn(run(cfg, rx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(true).unwrap();
        let samples = run.await.unwrap();
        let sum = summarize(&samples);
        assert!(sum.requests > 10, "{sum:?}");
        assert_eq!(sum.failures, 0, "{sum:?}");
        assert_eq!(sum.retried, sum.retried_no_response + sum.retried_unsent, "{sum:?}");
        assert_eq!(sum.versions.get("v1"), Some(&sum.requests));
    }
}
