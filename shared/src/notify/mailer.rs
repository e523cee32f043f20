//! The mail port: send one rendered e-mail, get the provider's message id.
//!
//! The SES adapter lives in the notifications function (only it links the SES SDK);
//! [`MemoryMailer`] records what was sent and can be told to throttle, for tests and benches.

use crate::error::{Error, Result};
use crate::values::Email;
use async_trait::async_trait;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// One e-mail, rendered. Its `Debug` shows neither the address nor the content.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    pub from: Email,
    pub to: Email,
    /// One line.
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject_bytes", &self.subject.len())
            .field("text_bytes", &self.text.len())
            .field("html_bytes", &self.html.len())
            .finish()
    }
}

/// Sends e-mail.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends `mail`; the provider's message id. Throttling is a retryable error (the caller
    /// retries with backoff), a refusal of this e-mail is not.
    async fn send(&self, mail: &Mail) -> Result<String>;
}

/// In-memory mailer: records every e-mail sent; [`MemoryMailer::throttle`] makes the next
/// sends fail as SES does when the sending rate is exceeded.
#[derive(Debug, Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<(String, Mail)>>,
    throttled: AtomicU32,
    attempts: AtomicU64,
    delay_ms: AtomicU64,
}

impl MemoryMailer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` sends fail with a retryable throttling error.
    pub fn throttle(&self, n: u32) {
        self.throttled.store(n, Ordering::SeqCst);
    }

    /// Each send takes this long (for tests of concurrent deliveries).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every e-mail sent, in order.
    pub fn sent(&self) -> Vec<Mail> {
        self.lock().iter().map(|(_, m)| m.clone()).collect()
    }

    /// Send attempts so far, throttled ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Forgets what was sent (benches).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Mail)>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, mail: &Mail) -> Result<String> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let throttled = self
            .throttled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
            .is_ok();
        if throttled {
            return Err(Error::dependency(
                "ses",
                true,
                "TooManyRequestsException: maximum sending rate exceeded (simulated)",
            ));
        }
        let id = format!("mem-{n:08}");
        self.lock().push((id.clone(), mail.clone()));
        Ok(id)
    }
}
