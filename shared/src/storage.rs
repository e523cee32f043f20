//! The object-store port: the event archive, claim checks, license files, invoice artifacts,
//! CRM exports. [`S3Store`] writes with server-side encryption; [`MemoryStore`] is for unit tests.
//!
//! Besides plain reads and writes, the port offers what a read-modify-write of a shared object
//! needs (the event archive's seal and erasure, [`crate::archive`]): a read that returns the
//! object's ETag and version ([`ObjectStore::get_tagged`]), a write conditional on that ETag
//! ([`ObjectStore::put_if`], S3's `If-Match` / `If-None-Match`), the deletion of one exact
//! version ([`ObjectStore::delete_version`]) and of every older version
//! ([`ObjectStore::erase_noncurrent_versions`]).

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
    /// Reads `key` with its ETag and version id; `None` when it does not exist.
    async fn get_tagged(&self, key: &str) -> Result<Option<Tagged>> {
        Err(unsupported(key, "conditional reads"))
    }
    /// Writes `body` at `key` only if the object is still what was read: `expected` is the
    /// ETag it had ([`Tagged::etag`]), or `None` for "must not exist yet". Anything else is
    /// [`Error::Conflict`] (not retryable as such: read again and redo the change).
    async fn put_if(
        &self,
        key: &str,
        _body: Vec<u8>,
        _content_type: &str,
        _expected: Option<&str>,
    ) -> Result<()> {
        Err(unsupported(key, "conditional writes"))
    }
    /// Deletes exactly one version of `key` for good (`None`: the object itself, a plain
    /// delete; on an unversioned store the same thing).
    async fn delete_version(&self, key: &str, _version: Option<&str>) -> Result<()> {
        Err(unsupported(key, "version deletes"))
    }
    /// Erases every version and delete marker of exactly `key` except the current object:
    /// what an overwrite leaves behind. Returns how many were deleted.
    async fn erase_noncurrent_versions(&self, key: &str) -> Result<u64> {
        Err(unsupported(key, "version deletes"))
    }
}

/// An object read with what identifies this exact version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub body: Vec<u8>,
    /// The ETag, for [`ObjectStore::put_if`].
    pub etag: String,
    /// The version id on a versioned bucket, for [`ObjectStore::delete_version`].
    pub version: Option<String>,
}

fn unsupported(key: &str, what: &str) -> Error {
    Error::Invalid(format!("this object store offers no {what} ({key})"))
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
    /// Reads `key` (with its ETag and version) if it holds at most `max` bytes. The size is
    /// known before the body is read, so a too large object is not read; the body is also
    /// counted as it streams in, so an answer longer than it said is cut at `max` too.
    async fn fetch(&self, key: &str, max: usize) -> Result<Option<Tagged>> {
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
                let etag = out.e_tag().unwrap_or_default().to_owned();
                let version = out
                    .version_id()
                    .filter(|v| !v.is_empty() && *v != "null")
                    .map(str::to_owned);
                let declared = out
                    .content_length()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0);
                let mut stream = out.body;
                let mut body = Vec::with_capacity(declared.min(max));
                while let Some(chunk) = stream
                    .try_next()
                    .await
                    .map_err(|e| Error::dependency("s3", true, e))?
                {
                    if chunk.len() > max.saturating_sub(body.len()) {
                        return Err(too_large(key, max));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(Some(Tagged {
                    body,
                    etag,
                    version,
                }))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(Error::aws("s3", e)),
        }
    }

    /// Every version and delete marker of exactly `key` (the listing is by prefix): (version
    /// id, whether it is the current one).
    async fn versions(&self, key: &str) -> Result<Vec<(Option<String>, bool)>> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| Error::aws("s3", e))?;
            out.extend(
                page.versions()
                    .iter()
                    .filter(|v| v.key() == Some(key))
                    .map(|v| {
                        (
                            v.version_id().map(str::to_owned),
                            v.is_latest() == Some(true),
                        )
                    }),
            );
            out.extend(
                page.delete_markers()
                    .iter()
                    .filter(|m| m.key() == Some(key))
                    .map(|m| {
                        (
                            m.version_id().map(str::to_owned),
                            m.is_latest() == Some(true),
                        )
                    }),
            );
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
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
        // Only exact matches of `key` are touched (the listing is by prefix).
        let versions = self.versions(key).await?;
        for (version, _) in &versions {
            self.delete_version(key, version.as_deref()).await?;
        }
        Ok(versions.len() as u64)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.fetch(key, usize::MAX).await?.map(|t| t.body))
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
        Ok(self.fetch(key, max).await?.map(|t| t.body))
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<Tagged>> {
        self.fetch(key, usize::MAX).await
    }

    async fn put_if(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        expected: Option<&str>,
    ) -> Result<()> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(body));
        let req = match expected {
            Some(etag) => req.if_match(etag),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                // 412: the ETag changed (or the object now exists); 409: a concurrent
                // conditional write won; 404: it was deleted meanwhile.
                let status = e.raw_response().map(|r| r.status().as_u16());
                if matches!(status, Some(412 | 409 | 404)) {
                    Err(Error::Conflict(format!("{key} changed since it was read")))
                } else {
                    Err(Error::aws("s3", e))
                }
            }
        }
    }

    async fn delete_version(&self, key: &str, version: Option<&str>) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
            .map_err(|e| Error::aws("s3", e))?;
        Ok(())
    }

    async fn erase_noncurrent_versions(&self, key: &str) -> Result<u64> {
        let old: Vec<Option<String>> = self
            .versions(key)
            .await?
            .into_iter()
            .filter(|(_, current)| !current)
            .map(|(version, _)| version)
            .collect();
        for version in &old {
            self.delete_version(key, version.as_deref()).await?;
        }
        Ok(old.len() as u64)
    }
}

fn too_large(key: &str, max: usize) -> Error {
    Error::Invalid(format!("object {key} is larger than {max} bytes; not read"))
}

/// In-memory store for unit tests. `fail_puts` simulates an unavailable bucket. It keeps no
/// old versions; each write gets a new ETag (a counter), so conditional writes behave as on S3.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Stored>>,
    fail_puts: std::sync::atomic::AtomicBool,
    /// Puts left to succeed before the store fails (`None`: no such plan).
    fail_after: Mutex<Option<u64>>,
    writes: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
struct Stored {
    body: Vec<u8>,
    content_type: String,
    /// The write that made it (its ETag and version).
    write: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following `put` fail with a retryable error (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.fail_puts
            .store(failing, std::sync::atomic::Ordering::SeqCst);
        *self.fail_after.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Lets the next `puts` writes succeed, then makes every `put` fail until
    /// [`MemoryStore::set_failing`]`(false)`: a store that goes away in the middle of a set.
    pub fn set_failing_after(&self, puts: u64) {
        *self.fail_after.lock().unwrap_or_else(|p| p.into_inner()) = Some(puts);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The stored bytes at `key`.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).map(|o| o.body.clone())
    }

    /// The content type `key` was written with.
    pub fn content_type(&self, key: &str) -> Option<String> {
        self.lock().get(key).map(|o| o.content_type.clone())
    }

    fn check_failing(&self) -> Result<()> {
        let mut after = self.fail_after.lock().unwrap_or_else(|p| p.into_inner());
        match *after {
            Some(0) => self
                .fail_puts
                .store(true, std::sync::atomic::Ordering::SeqCst),
            Some(n) => *after = Some(n - 1),
            None => {}
        }
        drop(after);
        if self.fail_puts.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::dependency(
                "s3",
                true,
                "store unavailable (simulated)",
            ));
        }
        Ok(())
    }

    fn stored(&self, body: Vec<u8>, content_type: &str) -> Stored {
        Stored {
            body,
            content_type: content_type.to_owned(),
            write: self
                .writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1,
        }
    }
}

fn memory_etag(write: u64) -> String {
    format!("\"w{write}\"")
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        self.check_failing()?;
        let stored = self.stored(body, content_type);
        self.lock().insert(key.to_owned(), stored);
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

    async fn get_tagged(&self, key: &str) -> Result<Option<Tagged>> {
        Ok(self.lock().get(key).map(|o| Tagged {
            body: o.body.clone(),
            etag: memory_etag(o.write),
            version: Some(o.write.to_string()),
        }))
    }

    async fn put_if(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        expected: Option<&str>,
    ) -> Result<()> {
        self.check_failing()?;
        let stored = self.stored(body, content_type);
        let mut objects = self.lock();
        let current = objects.get(key).map(|o| memory_etag(o.write));
        if current.as_deref() != expected {
            return Err(Error::Conflict(format!("{key} changed since it was read")));
        }
        objects.insert(key.to_owned(), stored);
        Ok(())
    }

    async fn delete_version(&self, key: &str, version: Option<&str>) -> Result<()> {
        let mut objects = self.lock();
        // No old versions are kept: only the current one can match.
        let current = objects.get(key).map(|o| o.write.to_string());
        if version.is_none() || current.as_deref() == version {
            objects.remove(key);
        }
        Ok(())
    }

    async fn erase_noncurrent_versions(&self, _key: &str) -> Result<u64> {
        Ok(0)
    }
}
