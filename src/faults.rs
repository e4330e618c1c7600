//! Deterministic kill points, for tests only.
//!
//! TEST-ONLY: `STACKCTL_TEST_PAUSE=<point>` makes stackctl print `stackctl: paused at <point>`
//! to stderr when it reaches that point and then sleep (for an hour, or until SIGINT/SIGTERM),
//! so an integration test can wait for the line and kill the process exactly there. Unset (the
//! only setting anyone but a test should use), it does nothing. Points, in deploy order:
//!
//! - `green-created`: right after the green services were created;
//! - `waiting-health`: inside the health wait, after green's tasks were polled once;
//! - `config-installed`: a new config (the routes changed, or nginx had none) passed `nginx -t`
//!   everywhere, not yet reloaded; an ordinary deploy installs none and never gets here;
//! - `switch-file`: the switch file was created or removed (users are on green), not yet
//!   verified or recorded;
//! - `switched`: the record says green is live, before the drain.

use std::time::Duration;

use crate::cancel::Cancel;

/// The variable naming the pause point (test-only).
pub const PAUSE_ENV: &str = "STACKCTL_TEST_PAUSE";

/// Whether the test-only variable names `point`.
pub fn armed(point: &str) -> bool {
    std::env::var(PAUSE_ENV).is_ok_and(|p| p == point)
}

/// Stop at `point` when the test-only variable names it; a signal ends the pause.
pub async fn pause(point: &str, cancel: &Cancel) {
    if !armed(point) {
        return;
    }
    eprintln!("stackctl: paused at {point}");
    cancel.run(tokio::time::sleep(Duration::from_secs(3600))).await;
}
