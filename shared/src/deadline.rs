//! The invocation's deadline: when Lambda ends the invocation, how near that is, and a
//! task-local copy that the retry loop ([`crate::retry::retry`]) and outgoing HTTP
//! ([`crate::http::send_with_retry`]) consult without it being threaded through every port.
//!
//! - [`Deadline::from_context`]: from `lambda_runtime::Context::deadline` (epoch ms; `0`, as in
//!   `Context::default()`, means no deadline; a value too small to be an epoch time, such as
//!   `cargo lambda watch`'s `600000`, is a budget in ms from now).
//! - [`Deadline::scope`] / [`within`]: run a future with the deadline set;
//!   [`Deadline::current`] reads it (`None` outside any scope).
//! - [`Margin`]: how long before the deadline [`crate::queue::process_batch`] stops starting
//!   records: the larger of a floor (2 s) and a share (10 %) of the time the invocation had when
//!   it started, configurable with [`MARGIN_FLOOR_VAR`] and [`MARGIN_PERCENT_VAR`].
//!
//! Inside a scope, a retry wait that would not end [`Deadline::RESERVE`] before the deadline is
//! not slept (the call returns its retryable error at once), and each HTTP attempt is cut at
//! that point, so a record fails in time to be reported instead of the invocation being killed.

use crate::config::{ConfigError, Env};
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The margin's floor in milliseconds (default 2000).
pub const MARGIN_FLOOR_VAR: &str = "BATCH_DEADLINE_MARGIN_MS";
/// The margin as a percentage of the time the invocation started with (default 10, at most 90).
pub const MARGIN_PERCENT_VAR: &str = "BATCH_DEADLINE_MARGIN_PERCENT";

/// The longest deadline taken at face value (Lambda's limit is 15 minutes).
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// Deadline header values below this (2001-09-09 in epoch ms) are not epoch times: local
/// emulators send the budget itself (`cargo lambda watch`: `Lambda-Runtime-Deadline-Ms: 600000`).
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// How long before the deadline a batch stops starting new records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Margin {
    /// Never less than this.
    pub floor: Duration,
    /// This share, in percent, of the time the invocation had when it started (about the
    /// function's timeout), when that is larger than the floor.
    pub percent: u32,
}

impl Default for Margin {
    fn default() -> Self {
        Self {
            floor: Duration::from_secs(2),
            percent: 10,
        }
    }
}

impl Margin {
    /// From [`MARGIN_FLOOR_VAR`] and [`MARGIN_PERCENT_VAR`], the defaults when absent.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = Self::default();
        let floor_ms: u64 = env.parsed_or(
            MARGIN_FLOOR_VAR,
            u64::try_from(default.floor.as_millis()).unwrap_or(u64::MAX),
        )?;
        let percent: u32 = env.parsed_or(MARGIN_PERCENT_VAR, default.percent)?;
        if percent > 90 {
            return Err(ConfigError::Malformed {
                name: MARGIN_PERCENT_VAR.to_owned(),
                reason: format!("{percent} is more than 90"),
            });
        }
        Ok(Self {
            floor: Duration::from_millis(floor_ms),
            percent,
        })
    }

    /// The process's margin, read from its environment once; a malformed variable is logged
    /// and the default used (a tuning knob must not stop a function).
    pub fn configured() -> Self {
        static MARGIN: OnceLock<Margin> = OnceLock::new();
        *MARGIN.get_or_init(|| {
            Self::from_env(&Env::process()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "deadline margin: using the default");
                Self::default()
            })
        })
    }

    /// The margin of an invocation that had `budget` left when it started.
    pub fn of(&self, budget: Duration) -> Duration {
        self.floor.max(budget.saturating_mul(self.percent) / 100)
    }
}

tokio::task_local! {
    static CURRENT: Deadline;
}

/// When the invocation ends, and the margin before it at which a batch stops starting records.
/// Cheap to copy; measured on tokio's clock (so tests can pause it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    margin: Duration,
}

impl Deadline {
    /// Kept back after any retry wait or outgoing call: the time to fail the record, report it
    /// and return the batch response before Lambda ends the invocation.
    pub const RESERVE: Duration = Duration::from_millis(500);

    /// A deadline `remaining` from now, with the default [`Margin`] of that budget.
    pub fn after(remaining: Duration) -> Self {
        Self::with_budget(remaining, Margin::default())
    }

    fn with_budget(remaining: Duration, margin: Margin) -> Self {
        let remaining = remaining.min(LONGEST);
        Self {
            at: Instant::now() + remaining,
            margin: margin.of(remaining),
        }
    }

    /// From an epoch-milliseconds deadline with the process's [`Margin::configured`]; `None`
    /// for `0` (no deadline known). A deadline already past is near at once. A value below
    /// 2001 in epoch ms is an emulator's budget and counts from now.
    pub fn from_epoch_ms(deadline_ms: u64) -> Option<Self> {
        if deadline_ms == 0 {
            return None;
        }
        if deadline_ms < EPOCH_MS_FLOOR {
            return Some(Self::with_budget(
                Duration::from_millis(deadline_ms),
                Margin::configured(),
            ));
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        Some(Self::with_budget(remaining, Margin::configured()))
    }

    /// The invocation's deadline from its Lambda context (`None` for `Context::default()`).
    pub fn from_context(context: &lambda_runtime::Context) -> Option<Self> {
        Self::from_epoch_ms(context.deadline)
    }

    /// The same deadline with another margin.
    pub fn with_margin(self, margin: Duration) -> Self {
        Self { margin, ..self }
    }

    /// The margin at which a batch stops starting records.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The instant it falls due.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The time left (zero once past).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether less than `margin` is left.
    pub fn near(&self, margin: Duration) -> bool {
        self.remaining() < margin
    }

    /// Whether waiting `wait` still leaves [`Self::RESERVE`] before the deadline.
    pub fn allows_wait(&self, wait: Duration) -> bool {
        !self.near(wait.saturating_add(Self::RESERVE))
    }

    /// When an outgoing call must have answered: [`Self::RESERVE`] before the deadline.
    pub fn cutoff(&self) -> Instant {
        self.at.checked_sub(Self::RESERVE).unwrap_or(self.at)
    }

    /// The deadline of the scope the current task runs in, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|d| *d).ok()
    }

    /// Runs `fut` with this deadline as [`Deadline::current`] (a nested scope wins).
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// Runs `fut` inside the deadline of the invocation `context` is of (as it is when the context
/// has none, as `Context::default()` in tests).
pub async fn in_invocation<F: Future>(context: &lambda_runtime::Context, fut: F) -> F::Output {
    within(Deadline::from_context(context), fut).await
}

/// Runs `fut` inside `deadline`'s scope, or as it is when there is none.
pub async fn within<F: Future>(deadline: Option<Deadline>, fut: F) -> F::Output {
    match deadline {
        Some(d) => d.scope(fut).await,
        None => fut.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_the_floor_or_a_share_of_the_budget() {
        let m = Margin::default();
        assert_eq!(m.of(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(m.of(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(m.of(Duration::from_secs(300)), Duration::from_secs(30));
        let env = Env::from_map([(MARGIN_FLOOR_VAR, "500"), (MARGIN_PERCENT_VAR, "20")]);
        let m = Margin::from_env(&env).unwrap();
        assert_eq!(m.floor, Duration::from_millis(500));
        assert_eq!(m.of(Duration::from_secs(60)), Duration::from_secs(12));
        assert_eq!(
            Margin::from_env(&Env::from_map([("X", "1")])),
            Ok(Margin::default())
        );
        for (var, bad) in [(MARGIN_PERCENT_VAR, "95"), (MARGIN_FLOOR_VAR, "2s")] {
            let e = Margin::from_env(&Env::from_map([(var, bad)])).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    #[test]
    fn no_deadline_in_a_default_context_and_a_past_one_is_near() {
        assert_eq!(
            Deadline::from_context(&lambda_runtime::Context::default()),
            None
        );
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let past = Deadline::from_epoch_ms(now_ms - 1_000).unwrap();
        assert_eq!(past.remaining(), Duration::ZERO);
        assert!(past.near(Duration::from_millis(1)));
        assert!(!past.allows_wait(Duration::ZERO));
    }

    #[test]
    fn an_emulators_relative_deadline_is_a_budget_from_now() {
        // `cargo lambda watch` sends `Lambda-Runtime-Deadline-Ms: 600000`.
        let local = Deadline::from_epoch_ms(600_000).unwrap();
        assert!(local.remaining() > Duration::from_secs(590), "{local:?}");
        assert!(local.remaining() <= Duration::from_secs(600));
        assert!(!local.near(Duration::from_secs(60)));
        let tiny = Deadline::from_epoch_ms(1).unwrap();
        assert!(tiny.remaining() <= Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_near_and_waits_follow_the_clock() {
        let d = Deadline::after(Duration::from_secs(10)).with_margin(Duration::from_secs(3));
        assert_eq!(d.remaining(), Duration::from_secs(10));
        assert!(!d.near(d.margin()));
        assert!(d.allows_wait(Duration::from_secs(9)));
        assert!(!d.allows_wait(Duration::from_millis(9_600)));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(d.remaining(), Duration::from_secs(2));
        assert!(d.near(d.margin()));
        assert_eq!(d.cutoff(), d.instant() - Deadline::RESERVE);
    }

    #[tokio::test]
    async fn the_scope_sets_the_current_deadline() {
        assert_eq!(Deadline::current(), None);
        let outer = Deadline::after(Duration::from_secs(60));
        let inner = Deadline::after(Duration::from_secs(5));
        let seen = outer
            .scope(async {
                let nested = inner.scope(async { Deadline::current() }).await;
                (Deadline::current(), nested)
            })
            .await;
        assert_eq!(seen, (Some(outer), Some(inner)));
        assert_eq!(within(None, async { Deadline::current() }).await, None);
    }
}
