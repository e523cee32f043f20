//! Retries with exponential backoff and full jitter, for outgoing HTTP calls (Stripe, the
//! enrichment provider, Salesforce). AWS SDK calls have their own retry layer. No wait outlasts
//! the invocation's [`Deadline`].

use crate::deadline::Deadline;
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
///
/// Inside a [`Deadline`] scope (set by [`crate::queue::process_batch`] and the handlers), a
/// wait (backoff or `Retry-After`) that would not end [`Deadline::RESERVE`] before the deadline
/// is not slept: the last error, retryable, is returned at once.
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
                // Never past the invocation's deadline: the caller fails the record now and
                // SQS redelivers it, rather than Lambda killing the invocation mid-sleep.
                if let Some(deadline) = Deadline::current().filter(|d| !d.allows_wait(wait)) {
                    tracing::info!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        remaining_ms = deadline.remaining().as_millis() as u64,
                        "not retrying: the wait would end past the invocation's deadline"
                    );
                    return Err(e);
                }
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

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_not_slept() {
        let deadline = Deadline::after(Duration::from_secs(10));
        let mut calls = 0;
        let r: Result<u32, &str> = deadline
            .scope(retry(RetryPolicy::immediate(5), |_| {
                calls += 1;
                async { Attempt::Retry("throttled", Some(Duration::from_secs(60))) }
            }))
            .await;
        assert_eq!(r, Err("throttled"));
        assert_eq!(calls, 1, "no second attempt");
        assert_eq!(
            deadline.remaining(),
            Duration::from_secs(10),
            "nothing slept"
        );

        // A wait that ends in time is slept as before.
        let mut calls = 0;
        let r: Result<u32, &str> = deadline
            .scope(retry(RetryPolicy::immediate(5), |n| {
                calls += 1;
                async move {
                    if n < 3 {
                        Attempt::Retry("throttled", Some(Duration::from_secs(2)))
                    } else {
                        Attempt::Done(n)
                    }
                }
            }))
            .await;
        assert_eq!(r, Ok(3));
        assert_eq!(calls, 3);
        assert_eq!(deadline.remaining(), Duration::from_secs(6));
    }

    mod stripe {
        use super::*;
        use crate::config::Secret;
        use crate::stripe::StripeClient;
        use wiremock::{Mock, MockServer, ResponseTemplate};

        fn stripe(server: &MockServer) -> StripeClient {
            StripeClient::new(
                server.uri(),
                Secret::new("sk_test_x".into()),
                Duration::from_secs(30),
            )
            .unwrap()
            .with_retry(RetryPolicy::default())
        }

        #[tokio::test]
        async fn a_long_retry_after_from_stripe_fails_the_call_at_once_near_the_deadline() {
            let server = MockServer::start().await;
            Mock::given(wiremock::matchers::any())
                .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "60"))
                .mount(&server)
                .await;
            let c = stripe(&server);
            let began = std::time::Instant::now();
            let e = Deadline::after(Duration::from_secs(1))
                .scope(c.get::<serde_json::Value>("customers/cus_1", &[]))
                .await
                .unwrap_err();
            assert!(e.is_retryable(), "{e:?}");
            assert_eq!(server.received_requests().await.unwrap().len(), 1);
            assert_eq!(c.calls(), 1);
            // A guard against a hang (the 60 s sleep), not a performance bound.
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "{:?}",
                began.elapsed()
            );
        }

        #[tokio::test]
        async fn a_slow_answer_is_cut_before_the_deadline_as_retryable() {
            let server = MockServer::start().await;
            Mock::given(wiremock::matchers::any())
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(serde_json::json!({"id": "cus_1"}))
                        .set_delay(Duration::from_secs(20)),
                )
                .mount(&server)
                .await;
            let c = stripe(&server);
            let began = std::time::Instant::now();
            let e = Deadline::after(Duration::from_millis(1_500))
                .scope(c.get::<serde_json::Value>("customers/cus_1", &[]))
                .await
                .unwrap_err();
            assert!(e.is_retryable(), "{e:?}");
            assert!(e.chain().to_string().contains("deadline"), "{e:?}");
            assert_eq!(c.calls(), 1, "cut, then not retried");
            assert!(
                began.elapsed() < Duration::from_secs(15),
                "{:?}",
                began.elapsed()
            );
        }
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }
}
