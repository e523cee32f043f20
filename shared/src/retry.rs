//! Retries with exponential backoff and full jitter, for outgoing HTTP calls (Stripe, the
//! enrichment provider, Salesforce). AWS SDK calls have their own retry layer.

use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No waiting between attempts (tests).
    pub fn immediate(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// The delay before attempt `attempt + 1` (`attempt` starts at 1): a random duration in
    /// `[0, min(max, base * 2^(attempt-1))]` ("full jitter").
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let cap = exp.min(self.max_delay);
        if cap.is_zero() {
            return cap;
        }
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(jitter(nanos))
    }
}

fn jitter(max: u64) -> u64 {
    // Cheap randomness is enough to de-synchronise retries.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    x % (max + 1)
}

/// What an attempt asks of the retry loop.
#[derive(Debug)]
pub enum Attempt<T, E> {
    Done(T),
    /// Retry, optionally no sooner than the given delay (e.g. `Retry-After`).
    Retry(E, Option<Duration>),
    Fail(E),
}

/// Runs `op` until it is done, fails for good, or the attempts run out (the last error is
/// returned).
pub async fn retry<T, E, F, Fut>(policy: RetryPolicy, mut op: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry(e, after) => {
                if attempt >= policy.max_attempts {
                    return Err(e);
                }
                // A server-given delay is honoured, within reason.
                let wait =
                    after.map_or_else(|| policy.delay(attempt), |a| a.min(Duration::from_secs(60)));
                tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is treated as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        };
        for attempt in 1..10 {
            assert!(p.delay(attempt) <= Duration::from_millis(400));
        }
        assert!(p.delay(1) <= Duration::from_millis(100));
        assert_eq!(RetryPolicy::immediate(3).delay(5), Duration::ZERO);
    }

    #[tokio::test]
    async fn retries_until_done_or_exhausted() {
        let r: Result<u32, &str> = retry(RetryPolicy::immediate(5), |n| async move {
            if n < 3 {
                Attempt::Retry("busy", None)
            } else {
                Attempt::Done(n)
            }
        })
        .await;
        assert_eq!(r, Ok(3));

        let mut calls = 0;
        let r: Result<u32, &str> = retry(RetryPolicy::immediate(2), |_| {
            calls += 1;
            async { Attempt::Retry("busy", None) }
        })
        .await;
        assert_eq!(r, Err("busy"));
        assert_eq!(calls, 2);

        let mut calls = 0;
        let r: Result<u32, &str> = retry(RetryPolicy::immediate(5), |_| {
            calls += 1;
            async { Attempt::Fail("bad request") }
        })
        .await;
        assert_eq!(r, Err("bad request"));
        assert_eq!(calls, 1);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }
}
