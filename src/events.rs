//! How a command tells its caller what is happening: a stream of [`Event`]s into sinks.
//!
//! The deploy emits events; it does not know who listens. Sinks today: the terminal (a spinner
//! per phase on a tty; timestamped lines elsewhere, because a cron or CI log should read well
//! too) and JSON lines on stderr (`--events json`, for machines following a deploy). The HTTP
//! API and metrics are meant to be further sinks. Whatever the sinks, [`Events`] keeps the
//! phase durations and warnings for the result on stdout and the history.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

/// One thing that happened, as every sink receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase started (the previous one ended just before, with [`Event::PhaseDone`]).
    Phase { phase: String },
    PhaseDone { phase: String, seconds: f64 },
    /// Progress within the running phase (a terminal overwrites it in place).
    Progress { message: String },
    Info { message: String },
    Warning { message: String },
}

/// Where events go. `at` is the time since the command started.
pub trait Sink: Send {
    fn event(&mut self, at: Duration, event: &Event);
}

/// The handle a command holds: shared by reference (no `&mut` threading), so any step can
/// report without owning the output.
pub struct Events {
    inner: Mutex<Inner>,
    started: Instant,
}

struct Inner {
    sinks: Vec<Box<dyn Sink>>,
    current: Option<(String, Instant)>,
    phases: Vec<PhaseTime>,
    warnings: Vec<String>,
}

impl Events {
    /// Events for a command whose result goes to stdout in `output`, with progress on stderr
    /// as text, or as JSON lines when `json_lines`.
    pub fn new(output: Format, json_lines: bool) -> Events {
        let sink: Box<dyn Sink> = if json_lines { Box::new(JsonLines) } else { Box::new(Terminal::new(output)) };
        Events::to(vec![sink])
    }

    pub fn to(sinks: Vec<Box<dyn Sink>>) -> Events {
        Events { inner: Mutex::new(Inner { sinks, current: None, phases: Vec::new(), warnings: Vec::new() }), started: Instant::now() }
    }

    /// Events nobody sees (tests, and commands whose progress is not worth showing).
    pub fn silent() -> Events {
        Events::to(Vec::new())
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A sink that panicked mid-event leaves nothing half-written that matters here.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, inner: &mut Inner, event: Event) {
        let at = self.started.elapsed();
        for sink in inner.sinks.iter_mut() {
            sink.event(at, &event);
        }
    }

    /// Start a phase (ending the previous one).
    pub fn phase(&self, name: &str) {
        let mut inner = self.inner();
        self.finish(&mut inner);
        inner.current = Some((name.to_string(), Instant::now()));
        self.emit(&mut inner, Event::Phase { phase: name.to_string() });
    }

    pub fn progress(&self, msg: &str) {
        let mut inner = self.inner();
        self.emit(&mut inner, Event::Progress { message: msg.to_string() });
    }

    pub fn info(&self, msg: &str) {
        let mut inner = self.inner();
        self.emit(&mut inner, Event::Info { message: msg.to_string() });
    }

    pub fn warn(&self, msg: &str) {
        let mut inner = self.inner();
        inner.warnings.push(msg.to_string());
        self.emit(&mut inner, Event::Warning { message: msg.to_string() });
    }

    /// End the current phase, recording its duration.
    pub fn end_phase(&self) {
        let mut inner = self.inner();
        self.finish(&mut inner);
    }

    fn finish(&self, inner: &mut Inner) {
        if let Some((phase, start)) = inner.current.take() {
            let seconds = start.elapsed().as_secs_f64();
            inner.phases.push(PhaseTime { phase: phase.clone(), seconds });
            self.emit(inner, Event::PhaseDone { phase, seconds });
        }
    }

    pub fn phases(&self) -> Vec<PhaseTime> {
        self.inner().phases.clone()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.inner().warnings.clone()
    }

    pub fn total(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Progress for people: a spinner per phase on a terminal, timestamped lines elsewhere.
/// With `--output json` only warnings reach stderr (stdout carries the result).
struct Terminal {
    format: Format,
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Terminal {
    fn new(format: Format) -> Terminal {
        Terminal { format, bar: None, tty: std::io::stderr().is_terminal() && format == Format::Text }
    }

    fn line(&self, at: Duration, msg: &str) {
        if self.format == Format::Text {
            eprintln!("[{:>7.2}s] {msg}", at.as_secs_f64());
        }
    }
}

impl Sink for Terminal {
    fn event(&mut self, at: Duration, event: &Event) {
        match event {
            Event::Phase { phase } if self.tty => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}").expect("valid template"));
                bar.set_prefix(phase.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                self.bar = Some(bar);
            }
            Event::Phase { phase } => self.line(at, &format!("{phase} ...")),
            Event::PhaseDone { phase, seconds } => match self.bar.take() {
                Some(bar) => bar.finish_with_message(format!("done in {seconds:.1}s")),
                None => self.line(at, &format!("{phase} done in {seconds:.2}s")),
            },
            Event::Progress { message } => match &self.bar {
                Some(bar) => bar.set_message(message.clone()),
                None => self.line(at, message),
            },
            Event::Info { message } => match &self.bar {
                Some(bar) => bar.println(format!("  {message}")),
                None => self.line(at, message),
            },
            Event::Warning { message } => match &self.bar {
                Some(bar) => bar.println(format!("warning: {message}")),
                None if self.format == Format::Text => eprintln!("warning: {message}"),
                None => {}
            },
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// One JSON object per line on stderr: `{"at":1.23,"event":"phase","phase":"switch"}`.
struct JsonLines;

impl Sink for JsonLines {
    fn event(&mut self, at: Duration, event: &Event) {
        let mut value = serde_json::to_value(event).expect("events serialise");
        value["at"] = serde_json::json!((at.as_secs_f64() * 1000.0).round() / 1000.0);
        eprintln!("{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A sink that keeps what it saw, for assertions.
    struct Keep(Arc<Mutex<Vec<Event>>>);
    impl Sink for Keep {
        fn event(&mut self, _: Duration, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[test]
    fn phases_end_in_order_and_every_sink_sees_every_event() {
        let (a, b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let ev = Events::to(vec![Box::new(Keep(a.clone())), Box::new(Keep(b.clone()))]);
        ev.phase("lock");
        ev.warn("stale lock taken over");
        ev.phase("switch");
        ev.end_phase();
        ev.end_phase();
        let seen = a.lock().unwrap().clone();
        assert_eq!(seen, *b.lock().unwrap());
        let kinds: Vec<String> = seen.iter().map(|e| serde_json::to_value(e).unwrap()["event"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["phase", "warning", "phase_done", "phase", "phase_done"]);
        assert_eq!(ev.phases().iter().map(|p| p.phase.as_str()).collect::<Vec<_>>(), ["lock", "switch"]);
        assert_eq!(ev.warnings(), ["stale lock taken over"]);
    }

    #[test]
    fn a_json_line_names_the_event_and_its_fields() {
        let v = serde_json::to_value(Event::PhaseDone { phase: "switch".into(), seconds: 0.5 }).unwrap();
        assert_eq!(v, serde_json::json!({"event": "phase_done", "phase": "switch", "seconds": 0.5}));
    }
}
