//! stackctl: blue-green releases of Docker Swarm stacks behind nginx.
//!
//! A tour, in the order a deploy touches things:
//!
//! - [`spec`] reads a Compose stack file with its `x-stackctl` extension into a validated
//!   [`spec::Stack`]. Nothing downstream re-validates; every error names file, line and field.
//! - [`release`] owns the identity of a release: Swarm names, the labels stackctl writes, and
//!   the spec hash that tells whether anything changed.
//! - [`engine`] is the Docker/Swarm API behind the small [`engine::Engine`] trait; the bollard
//!   implementation lives in [`engine::docker`], and [`engine::describe`] builds Swarm service
//!   specs without touching the network.
//! - [`record`] is the stack's record in the cluster (a Swarm config whose labels hold the live
//!   release of each service and the deploy lock), so the truth never lives on one laptop.
//! - [`desired`] computes what every service should look like without writing anything
//!   (configs and secrets named by content hash); [`observe`] reads the cluster once.
//! - [`plan`] is pure: (desired stack, observed cluster) → the steps to take; [`dry_run`] is
//!   `stackctl plan`, which shows them and the nginx diff without changing anything.
//! - [`proxy`] renders the nginx config (askama templates in `nginx-templates/`), installs it
//!   into the running nginx tasks through the Docker API, tests, reloads and verifies.
//! - [`health`] waits for Swarm tasks and probes HTTP through nginx, with deadlines.
//! - [`accesslog`] reads what nginx saw (its JSON access log, through the Docker API), all at
//!   once for the gate or a piece at a time for the deploy's watch window;
//!   [`gate`] is `stackctl gate`: tasks, smoke checks, soak and users' 5xx share, for CI;
//!   [`promote`] ships the digests live in one environment to another once its gate passed.
//! - [`deploy`] is the blue-green story in one readable function; [`status`] reports;
//!   [`history`] keeps what each deploy did in the cluster (one Swarm config per entry);
//!   [`down`] removes a stack and everything stackctl created for it, keeping named volumes;
//!   [`maintenance`] puts routed services behind a 503 and back, switched by a file in nginx;
//!   [`reconcile`] (cron) puts back what drifted from the last recorded release, the pure
//!   [`drift`] deciding what drifted and what to do about it.
//! - [`cli`] turns arguments into requests; `main.rs` maps errors to exit codes; [`context`]
//!   picks the engine (`--context`, `DOCKER_HOST`, `DOCKER_CONTEXT`, `x-stackctl.context`).
//! - [`cancel`] turns SIGINT/SIGTERM into a flag the deploy checks; [`faults`] holds the
//!   test-only pause points that integration tests kill the process at.

pub mod accesslog;
pub mod cancel;
pub mod cli;
pub mod context;
pub mod deploy;
pub mod desired;
pub mod down;
pub mod drift;
pub mod dry_run;
pub mod engine;
pub mod faults;
pub mod gate;
pub mod health;
pub mod history;
pub mod loadgen;
pub mod maintenance;
pub mod observe;
pub mod outcome;
pub mod events;
pub mod plan;
pub mod promote;
pub mod proxy;
pub mod reconcile;
pub mod record;
pub mod release;
pub mod spec;
pub mod status;
