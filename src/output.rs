//! How a command tells its caller what is happening.
//!
//! Progress goes to stderr; the result goes to stdout (a summary, or JSON with `--output json`).
//! On a terminal each phase is a spinner (indicatif); elsewhere (cron, CI) plain timestamped
//! lines, because a log file should read well too. Phase durations are always recorded, for
//! the JSON result and the benchmark.

use std::io::IsTerminal;
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

pub struct Output {
    format: Format,
    /// Spinner for the running phase (terminal only).
    bar: Option<ProgressBar>,
    tty: bool,
    current: Option<(String, Instant)>,
    started: Instant,
    pub phases: Vec<PhaseTime>,
    pub warnings: Vec<String>,
}

impl Output {
    pub fn new(format: Format) -> Output {
        Output {
            format,
            bar: None,
            tty: std::io::stderr().is_terminal() && format == Format::Text,
            current: None,
            started: Instant::now(),
            phases: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Start a phase (ending the previous one).
    pub fn phase(&mut self, name: &str) {
        self.end_phase();
        self.current = Some((name.to_string(), Instant::now()));
        if self.tty {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}").expect("valid template"));
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            self.bar = Some(bar);
        } else {
            self.line(&format!("{name} ..."));
        }
    }

    /// Progress within the current phase.
    pub fn progress(&mut self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => self.line(msg),
        }
    }

    pub fn info(&mut self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("  {msg}")),
            None => self.line(msg),
        }
    }

    pub fn warn(&mut self, msg: &str) {
        self.warnings.push(msg.to_string());
        match &self.bar {
            Some(bar) => bar.println(format!("warning: {msg}")),
            None if self.format == Format::Text => eprintln!("warning: {msg}"),
            None => {}
        }
    }

    /// End the current phase, recording its duration.
    pub fn end_phase(&mut self) {
        if let Some((name, start)) = self.current.take() {
            let took = start.elapsed();
            self.phases.push(PhaseTime { phase: name.clone(), seconds: took.as_secs_f64() });
            match self.bar.take() {
                Some(bar) => bar.finish_with_message(format!("done in {:.1}s", took.as_secs_f64())),
                None => self.line(&format!("{name} done in {:.2}s", took.as_secs_f64())),
            }
        }
    }

    pub fn total(&self) -> Duration {
        self.started.elapsed()
    }

    fn line(&self, msg: &str) {
        if self.format == Format::Text {
            eprintln!("[{:>7.2}s] {msg}", self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
