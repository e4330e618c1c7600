//! What a run of `deploy` or `rollback` ends with: the report of what changed, or a typed
//! error that carries its exit code and what the user should do next. Its own module so that
//! the history, the plan and `main` read results without depending on the deploy itself.

use serde::Serialize;

use crate::events::PhaseTime;
use crate::spec::SpecError;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Deployed,
    Unchanged,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Switched {
    pub service: String,
    pub from: Option<u64>,
    pub to: u64,
    pub image: String,
    /// Connections nginx still held to `from` when its drain ended (WebSockets, event streams,
    /// requests slower than `drain`): scaling `from` down closes them. `None`: nothing was
    /// drained, or they could not be counted (a warning says why).
    pub open_after_drain: Option<usize>,
}

/// The result of a deploy, printed as a summary or as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub stack: String,
    /// `deploy` or `rollback`.
    pub verb: &'static str,
    pub outcome: Outcome,
    /// The release number this deploy created, if any.
    pub release: Option<u64>,
    pub switched: Vec<Switched>,
    /// Other changes: proxy created, plain services updated, orphans removed, releases pruned.
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
    pub phases: Vec<PhaseTime>,
    pub total_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Refused before anything changed (engine unreachable, lock held, image unknown).
    #[error("{0}")]
    Refused(String),
    #[error("deploy of stack {stack} failed while {phase}: {reason}\n{}", if *live_intact { "The live release is intact and still serving." } else { "The live release may NOT be serving: check `stackctl status` and nginx now." })]
    Failed { stack: String, phase: String, reason: String, live_intact: bool },
    /// Stopped by a signal before the switch and undone; the live release is intact.
    #[error("deploy of stack {stack} interrupted by {signal} while {phase}: {detail}\nThe live release is intact and still serving.")]
    Interrupted { stack: String, phase: String, signal: String, detail: String },
    /// `down` stopped part way; what is left is still labelled and the record still there.
    #[error("{0}")]
    Unfinished(String),
}

impl DeployError {
    /// 2: fix the stack file or the command line; 1: refused or failed, live intact;
    /// 3: failed and the live release needs attention.
    pub fn exit_code(&self) -> i32 {
        match self {
            DeployError::Spec(_) => 2,
            DeployError::Refused(_) | DeployError::Interrupted { .. } | DeployError::Unfinished(_) => 1,
            DeployError::Failed { live_intact: true, .. } => 1,
            DeployError::Failed { live_intact: false, .. } => 3,
        }
    }

    /// What the user should do next, one sentence (printed after the error, and in the JSON
    /// result as `next`).
    pub fn next_step(&self) -> String {
        match self {
            DeployError::Spec(_) => "fix the stack file where the error points and run the command again; nothing was changed".into(),
            DeployError::Refused(_) => "nothing was changed; deal with what the error names and run the command again".into(),
            DeployError::Failed { live_intact: true, .. } => {
                "users are still on the live release; see why in `stackctl history` and in `docker service logs` of the new release, fix it and deploy again".into()
            }
            DeployError::Failed { live_intact: false, .. } => {
                "check `stackctl status` now; running the same command again repairs the stack, starting from where nginx sends users".into()
            }
            DeployError::Interrupted { .. } => "nothing is left to clean up; run the command again when you are ready".into(),
            DeployError::Unfinished(_) => "part of the stack is removed; run the same command again, it carries on with what is left".into(),
        }
    }
}

/// Refused before anything changed.
pub(crate) fn refused(e: impl std::fmt::Display) -> DeployError {
    DeployError::Refused(e.to_string())
}
