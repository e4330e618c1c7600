//! The edge on the real engine: a route's nginx settings (body size, read timeout, extra
//! headers) as users meet them, and a WebSocket (Debian's websocketd, image `stackctl-ws`
//! from `tests/rig/setup.sh`) opened on blue that keeps working through a deploy's switch
//! until the old release's drain ends, and is closed and counted then.
//!
//! `#[ignore]`d like every engine test; `tests/run-all.sh` runs them.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;
use common::{docker, serial, stderr, TestStack, REGISTRY};

/// A minimal WebSocket client (RFC 6455) over a raw TCP connection: text frames only, which
/// is all websocketd's line mode speaks.
struct WebSocket {
    stream: TcpStream,
    /// Bytes read but not yet consumed as frames.
    pending: Vec<u8>,
}

/// What reading a message gave.
#[derive(Debug, PartialEq)]
enum Received {
    Text(String),
    /// A close frame or the end of the stream: the connection is over.
    Closed,
    /// Nothing within the timeout.
    Nothing,
}

impl WebSocket {
    /// Connect to nginx on `port` and upgrade `path`; panics unless nginx answers 101.
    fn open(port: u16, path: &str) -> WebSocket {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: c3RhY2tjdGwtZWRnZS10ZXN0\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => panic!("handshake cut short ({other:?}) after {:?}", String::from_utf8_lossy(&head)),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
        WebSocket { stream, pending: Vec::new() }
    }

    /// Send one text message (masked, as a client must).
    fn send(&mut self, text: &str) -> std::io::Result<()> {
        let payload = text.as_bytes();
        assert!(payload.len() < 126, "short messages only");
        let mask = [0x5a, 0x17, 0xc3, 0x88];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame)
    }

    /// The next message, waiting at most `timeout`.
    fn receive(&mut self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((opcode, payload, used)) = frame(&self.pending) {
                self.pending.drain(..used);
                match opcode {
                    0x1 => return Received::Text(String::from_utf8_lossy(&payload).trim_end().to_string()),
                    0x8 => return Received::Closed,
                    _ => continue, // ping/pong: not sent by websocketd in line mode
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Received::Nothing;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return Received::Closed,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Received::Nothing,
                Err(_) => return Received::Closed,
            }
        }
    }
}

/// One unmasked server frame from the front of `bytes`: (opcode, payload, bytes used).
fn frame(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
    let (len, start) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize, 4),
        127 => return None, // never sent for the short lines of these tests
        n => (n as usize, 2),
    };
    let payload = bytes.get(start..start + len)?;
    Some((b0 & 0x0f, payload.to_vec(), start + len))
}

/// The test stack of `s` (nginx and `web`, two replicas, routed at `/`) running
/// stackctl-ws:TAG instead of the demo, with `route_extra` in its route.
fn ws_stack(s: &TestStack, tag: &str, route_extra: &str) -> std::path::PathBuf {
    s.file_with("v1", &format!("ws-{tag}"), |yaml| {
        yaml.replace(&format!("{REGISTRY}/stackctl-demo:v1"), &format!("{REGISTRY}/stackctl-ws:{tag}"))
            .replace("        drain: 1s\n", route_extra)
    })
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn a_websocket_on_blue_keeps_echoing_through_the_switch_until_drain_ends_and_is_counted() {
    let _g = serial();
    let s = TestStack::new("edgews", 18970);
    let (watch, drain) = (Duration::from_secs(1), Duration::from_secs(8));
    let extra = format!(
        "        watch: {}s\n        drain: {}s\n        read_timeout: 1h\n        headers: {{ X-Edge-Test: through nginx }}\n",
        watch.as_secs(),
        drain.as_secs()
    );
    let v1 = ws_stack(&s, "v1", &extra);
    let v2 = ws_stack(&s, "v2", &extra);
    let out = s.stackctl(&["deploy", v1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.get("/").map(|b| b.trim().to_string()).as_deref(), Ok("v1"), "plain HTTP still reaches the release");

    let mut ws = WebSocket::open(s.port, "/");
    ws.send("headers").unwrap();
    let Received::Text(headers) = ws.receive(Duration::from_secs(5)) else { panic!("no answer to 'headers'") };
    assert!(headers.starts_with("v1 "), "{headers}");
    assert!(headers.contains("HTTP_X_EDGE_TEST=through nginx"), "the route's extra header reaches the release: {headers}");
    assert!(headers.contains("HTTP_UPGRADE=websocket"), "{headers}");

    // The deploy runs beside the socket; the socket says something every 200ms meanwhile.
    let started = Instant::now();
    let (report, echoes) = std::thread::scope(|scope| {
        let deploy = scope.spawn(|| s.stackctl(&["deploy", v2.to_str().unwrap(), "--output", "json"]));
        let mut echoes: Vec<(Duration, Received)> = Vec::new();
        let mut switched_at = None;
        let mut n = 0;
        loop {
            n += 1;
            let sent = ws.send(&format!("ping {n}"));
            let got = if sent.is_ok() { ws.receive(Duration::from_secs(3)) } else { Received::Closed };
            let closed = got == Received::Closed;
            echoes.push((started.elapsed(), got));
            if switched_at.is_none() && s.get("/").is_ok_and(|b| b.trim() == "v2") {
                switched_at = Some(started.elapsed());
            }
            if closed || started.elapsed() > Duration::from_secs(120) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = deploy.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ((report, switched_at.expect("users reached v2 during the deploy")), echoes)
    });
    let (report, switched_at) = report;
    let answered: Vec<Duration> = echoes.iter().filter(|(_, r)| matches!(r, Received::Text(t) if t.starts_with("v1 ping"))).map(|(t, _)| *t).collect();
    let closed_at = echoes.last().map(|(t, r)| (*t, r)).filter(|(_, r)| **r == Received::Closed).map(|(t, _)| t);
    let after_switch = answered.iter().filter(|t| **t > switched_at).count();
    let last_echo = answered.last().copied().unwrap_or_default();
    eprintln!(
        "websocket: {} echoes from v1, {after_switch} of them after users reached v2 at {switched_at:.1?}; last echo {last_echo:.1?}, closed at {closed_at:.1?}; deploy took {:.1}s",
        answered.len(),
        report["total_seconds"].as_f64().unwrap_or_default()
    );
    // Every message before the close was answered, by v1, in order.
    for (i, (_, r)) in echoes.iter().enumerate() {
        if *r != Received::Closed {
            assert_eq!(*r, Received::Text(format!("v1 ping {}", i + 1)), "message {}", i + 1);
        }
    }
    let closed_at = closed_at.expect("the socket to v1 is closed once its drain is over");
    // Open through the switch and for the drain after it (the drain counts from the switch,
    // which the GET polling above sees within ~0.5s).
    assert!(last_echo >= switched_at + drain - Duration::from_secs(1), "echoes stopped at {last_echo:?}, switch at {switched_at:?}");
    assert!(closed_at > last_echo);
    // The deploy counted it: the one WebSocket was the only connection left to r1.
    let switched = &report["switched"][0];
    assert_eq!((switched["from"].as_u64(), switched["to"].as_u64()), (Some(1), Some(2)), "{report}");
    assert_eq!(switched["open_after_drain"], 1, "{report}");
    // A new socket goes to v2.
    let mut fresh = WebSocket::open(s.port, "/");
    fresh.send("hello").unwrap();
    assert_eq!(fresh.receive(Duration::from_secs(5)), Received::Text("v2 hello".into()));
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn route_settings_change_what_nginx_accepts_and_how_long_it_waits() {
    let _g = serial();
    let s = TestStack::new("edgeset", 18971);
    // stackctl-demo answers /cgi-bin/slow?N after N seconds.
    let file = s.file_with("v1", "settings", |y| {
        y.replace("        drain: 1s\n", "        drain: 1s\n        client_max_body_size: 4k\n        read_timeout: 1s\n        buffering: false\n")
    });
    let out = s.stackctl(&["deploy", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.get("/").map(|b| b.trim().to_string()).as_deref(), Ok("v1"));

    // A body over client_max_body_size is refused by nginx (413) before the release sees it;
    // one under it is passed on.
    let post = |bytes: usize| {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!("POST /cgi-bin/slow?0 HTTP/1.1\r\nHost: x\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n");
        c.write_all(head.as_bytes()).unwrap();
        let _ = c.write_all(&vec![b'a'; bytes]);
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer.lines().next().unwrap_or_default().to_string()
    };
    let (small, big) = (post(1024), post(8192));
    eprintln!("POST 1 KiB: {small}; POST 8 KiB: {big}");
    assert!(big.contains(" 413 "), "{big}");
    assert!(!small.contains(" 413 ") && small.starts_with("HTTP/1.1 "), "{small}");

    // read_timeout 1s: a release silent for 3s gets 504 after about a second per task tried
    // (nginx tries the other task of the two on a timeout, as `proxy_next_upstream` says).
    let t = Instant::now();
    let slow = s.get("/cgi-bin/slow?3");
    let waited = t.elapsed();
    eprintln!("GET /cgi-bin/slow?3 with read_timeout 1s: {slow:?} after {waited:.2?}");
    assert!(matches!(&slow, Err(e) if e.starts_with("HTTP 504")), "{slow:?}");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(2900), "{waited:?}");
    let quick = s.get("/cgi-bin/slow?0");
    assert_eq!(quick.as_deref().map(str::trim), Ok("v1"));

    // What nginx was given, as nginx itself reads it.
    let proxy = docker(&["ps", "-q", "--filter", "label=com.docker.swarm.service.name=edgeset_proxy"]);
    let conf = docker(&["exec", proxy.trim(), "nginx", "-T"]);
    for directive in ["client_max_body_size 4096;", "proxy_read_timeout 1000ms;", "proxy_buffering off;", "proxy_set_header Connection $stackctl_upgrade_7_edgeset;"] {
        assert!(conf.contains(directive), "{directive} missing from nginx -T");
    }
}

/// The `data:` lines of stackctl-ws's event stream as a client receives them through nginx
/// with `Host: host`, each with its time since the request was sent.
fn events(port: u16, host: &str) -> Vec<(Duration, String)> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent = Instant::now();
    c.write_all(format!("GET /cgi-bin/events HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(c).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("data:") {
            lines.push((sent.elapsed(), line));
        }
    }
    lines
}

#[test]
#[ignore = "needs the rig: a Swarm engine, nginx and registry images (tests/rig/setup.sh); run tests/run-all.sh"]
fn server_sent_events_reach_the_client_as_written_only_with_buffering_off() {
    let _g = serial();
    let s = TestStack::new("edgesse", 18972);
    // Two routes to the same event stream (one event a second, three in all): `buffered.test`
    // with nginx's default buffering, `stream.test` with `buffering: false`.
    let file = s.file_with("v1", "sse", |yaml| {
        let yaml = yaml
            .replace(&format!("{REGISTRY}/stackctl-demo:v1"), &format!("{REGISTRY}/stackctl-ws:v1"))
            .replace("        port: 80\n", "        port: 81\n        host: buffered.test\n");
        format!(
            "{yaml}  events:\n    image: {REGISTRY}/stackctl-ws:v1\n    x-stackctl:\n      route:\n        port: 81\n        host: stream.test\n        health: {{ path: /healthz, interval: 300ms }}\n        buffering: false\n"
        )
    });
    let out = s.stackctl(&["deploy", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let streamed = events(s.port, "stream.test");
    let buffered = events(s.port, "buffered.test");
    let show = |e: &[(Duration, String)]| e.iter().map(|(t, l)| format!("{l:?} at {t:.2?}")).collect::<Vec<_>>().join(", ");
    eprintln!("buffering: false: {}\nbuffering: true (default): {}", show(&streamed), show(&buffered));
    let want: Vec<String> = (1..=3).map(|n| format!("data: v1 {n}")).collect();
    for got in [&streamed, &buffered] {
        assert_eq!(got.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(), want);
    }
    // Unbuffered, each event arrives as it is written, a second apart; buffered, nginx holds
    // them until the response ends.
    assert!(streamed[0].0 < Duration::from_millis(900), "{}", show(&streamed));
    assert!(streamed[2].0 - streamed[0].0 >= Duration::from_millis(1500), "{}", show(&streamed));
    assert!(buffered[0].0 >= Duration::from_millis(1500), "{}", show(&buffered));
}
