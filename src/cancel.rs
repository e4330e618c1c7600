//! Stopping a deploy safely on SIGINT and SIGTERM.
//!
//! A signal never kills stackctl mid-step: it sets a shared flag ([`Cancel`]) that the deploy
//! checks at every phase boundary and inside its waits. Before the switch the deploy undoes
//! itself (nginx back to the live release, green removed, lock released, exit 1); from the
//! switch on it finishes, and only a second signal cuts its remaining waits short. Further signals while
//! cleaning up are reported and ignored, so an impatient Ctrl-C cannot leave a half state.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a signal means right now; the deploy moves it forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before the switch: a signal stops the deploy and undoes it.
    Running,
    /// Undoing a deploy: further signals are ignored until the cleanup is done.
    Cleanup,
    /// The switch has started: the deploy finishes; a second signal cuts its remaining waits
    /// (watch window, drain) short.
    Committed,
}

/// A cancellation flag shared between the signal listener and a deploy. Cheap to clone; a
/// fresh one is never cancelled unless [`Cancel::signal`] is called.
#[derive(Clone, Debug)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Decisions are taken under this lock, so a signal and [`Cancel::commit`] never interleave.
    state: Mutex<State>,
    /// Number of signals received, for waiters.
    count: watch::Sender<u32>,
}

#[derive(Debug)]
struct State {
    count: u32,
    /// Name of the first signal (`SIGINT`), for messages.
    first: Option<String>,
    stage: Stage,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel {
            inner: Arc::new(Inner {
                state: Mutex::new(State { count: 0, first: None, stage: Stage::Running }),
                count: watch::channel(0).0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a signal (or any other reason to stop) and say on stderr what happens now.
    pub fn signal(&self, name: &str) {
        let (n, stage) = {
            let mut st = self.state();
            st.count += 1;
            st.first.get_or_insert_with(|| name.to_string());
            (st.count, st.stage)
        };
        self.inner.count.send_replace(n);
        let what = match (stage, n) {
            (Stage::Running, 1) => "stopping the deploy safely: the new release is removed and the live one keeps serving",
            (Stage::Running, _) => "already stopping; please wait",
            (Stage::Cleanup, _) => "cleanup in progress (nginx back to the live release, new release removed, lock released); please wait",
            (Stage::Committed, 1) => "the switch has started; finishing the deploy (send it again to cut the remaining watch and drain short)",
            (Stage::Committed, _) => "cutting the remaining watch and drain short",
        };
        eprintln!("stackctl: received {name}: {what}");
    }

    pub fn is_cancelled(&self) -> bool {
        self.count() > 0
    }

    /// How many signals arrived.
    pub fn count(&self) -> u32 {
        self.state().count
    }

    /// The first signal's name (`SIGTERM`), or `"a signal"`.
    pub fn reason(&self) -> String {
        self.state().first.clone().unwrap_or_else(|| "a signal".into())
    }

    pub fn stage(&self) -> Stage {
        self.state().stage
    }

    /// From now on signals are reported as ignored: a cleanup is running.
    pub fn cleaning_up(&self) {
        self.state().stage = Stage::Cleanup;
    }

    /// Enter [`Stage::Committed`] unless a signal already arrived (then `false`: undo instead).
    pub fn commit(&self) -> bool {
        let mut st = self.state();
        if st.count > 0 {
            return false;
        }
        st.stage = Stage::Committed;
        true
    }

    /// Resolves once at least `n` signals arrived.
    pub async fn at_least(&self, n: u32) {
        let mut rx = self.inner.count.subscribe();
        // The sender lives as long as `self`, so this only returns when the count is reached.
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Resolves on the first signal.
    pub async fn cancelled(&self) {
        self.at_least(1).await
    }

    /// Run `fut` unless cancelled first; `None` when cancelled (`fut` is dropped).
    pub async fn run<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.cancelled() => None,
            v = fut => Some(v),
        }
    }

    /// Turn SIGINT and SIGTERM into [`Cancel::signal`] for the rest of the process's life
    /// (Unix; elsewhere only Ctrl-C). Call inside a tokio runtime.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = signal(SignalKind::interrupt())?;
            let mut term = signal(SignalKind::terminate())?;
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(()) = int.recv() => me.signal("SIGINT"),
                        Some(()) = term.recv() => me.signal("SIGTERM"),
                        else => break,
                    }
                }
            });
        }
        #[cfg(not(unix))]
        {
            let me = self.clone();
            tokio::spawn(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    me.signal("Ctrl-C");
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_cancels_waits_and_counts() {
        let c = Cancel::new();
        assert!(!c.is_cancelled());
        assert_eq!(c.run(async { 7 }).await, Some(7));
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c2.signal("SIGTERM");
        });
        assert_eq!(c.run(tokio::time::sleep(Duration::from_secs(60))).await, None);
        assert!(c.is_cancelled());
        assert_eq!(c.reason(), "SIGTERM");
        assert!(!c.commit(), "a cancelled deploy does not switch");
        c.cleaning_up();
        c.signal("SIGINT");
        assert_eq!(c.count(), 2);
        assert_eq!(c.stage(), Stage::Cleanup);
        assert_eq!(c.reason(), "SIGTERM", "the first signal names the interruption");
        tokio::time::timeout(Duration::from_secs(1), c.at_least(2)).await.expect("second signal seen");
    }

    #[test]
    fn commit_wins_over_a_later_signal() {
        let c = Cancel::new();
        assert!(c.commit());
        assert_eq!(c.stage(), Stage::Committed);
        c.signal("SIGINT");
        assert_eq!(c.stage(), Stage::Committed);
    }
}
