//! The object-store port: raw webhook archive, claim checks, license files, invoice artifacts,
//! CRM exports. [`S3Store`] writes with server-side encryption; [`MemoryStore`] is for unit tests.

use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes `body` at `key` (overwriting: keys are chosen so a rewrite is the same content).
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()>;
    /// Reads `key`; `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Removes `key` (nothing when it does not exist). On a versioned bucket this hides the
    /// object behind a delete marker; its versions stay until the lifecycle expires them.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Erases `key` for good: every version and delete marker of exactly that key (what a
    /// privacy erasure needs). Returns how many versions and markers were deleted.
    async fn erase_all_versions(&self, key: &str) -> Result<u64>;
    /// Reads `key` if it holds at most `max` bytes; a larger object is refused
    /// ([`Error::Invalid`]) without being read whole where the store can tell its size first.
    async fn get_at_most(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>> {
        let got = self.get(key).await?;
        if got.as_ref().is_some_and(|b| b.len() > max) {
            return Err(too_large(key, max));
        }
        Ok(got)
    }
    /// The keys under `prefix` (current objects), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// A link that reads `key` without credentials until `ttl` has passed.
    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<String>;
    /// The bucket (or store) name, for messages that point into it.
    fn bucket(&self) -> &str;
}

/// S3 bucket adapter. Every object is written with SSE (AES256).
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

impl S3Store {
    /// Reads `key` if it holds at most `max` bytes. The size is known before the body is
    /// read, so a too large object is not read.
    async fn fetch(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                if out
                    .content_length()
                    .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > max))
                {
                    return Err(too_large(key, max));
                }
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| Error::dependency("s3", true, e))?
                    .into_bytes()
                    .to_vec();
                if bytes.len() > max {
                    return Err(too_large(key, max));
                }
                Ok(Some(bytes))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(Error::aws("s3", e)),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| Error::aws("s3", e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::aws("s3", e))?;
        Ok(())
    }

    async fn erase_all_versions(&self, key: &str) -> Result<u64> {
        let mut erased = 0u64;
        // Paged by (key, version) markers; only exact matches of `key` are touched (the
        // listing is by prefix).
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| Error::aws("s3", e))?;
            let versions = out
                .versions()
                .iter()
                .filter(|v| v.key() == Some(key))
                .map(|v| v.version_id().map(str::to_owned));
            let markers = out
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(key))
                .map(|m| m.version_id().map(str::to_owned));
            for version in versions.chain(markers).collect::<Vec<_>>() {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_version_id(version)
                    .send()
                    .await
                    .map_err(|e| Error::aws("s3", e))?;
                erased += 1;
            }
            if out.is_truncated() != Some(true) {
                return Ok(erased);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.fetch(key, usize::MAX).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| Error::aws("s3", e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<String> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| Error::Invalid(format!("presigned link: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| Error::aws("s3", e))?;
        Ok(req.uri().to_owned())
    }

    async fn get_at_most(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>> {
        self.fetch(key, max).await
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn too_large(key: &str, max: usize) -> Error {
    Error::Invalid(format!("object {key} is larger than {max} bytes; not read"))
}

/// In-memory store for unit tests. `fail_puts` simulates an unavailable bucket.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
    fail_puts: std::sync::atomic::AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following `put` fail with a retryable error (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.fail_puts
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Vec<u8>, String)>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The stored bytes at `key`.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).map(|(b, _)| b.clone())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        if self.fail_puts.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::dependency(
                "s3",
                true,
                "store unavailable (simulated)",
            ));
        }
        self.lock()
            .insert(key.to_owned(), (body, content_type.to_owned()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.object(key))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.lock().remove(key);
        Ok(())
    }

    async fn erase_all_versions(&self, key: &str) -> Result<u64> {
        Ok(u64::from(self.lock().remove(key).is_some()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<String> {
        Ok(format!("memory://{key}?expires_in={}", ttl.as_secs()))
    }

    fn bucket(&self) -> &str {
        "memory"
    }
}
