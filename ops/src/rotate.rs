//! `license rotate-key`: the next license-signing key, made current without breaking a single
//! license already issued.
//!
//! Steps, each safe to repeat, so a rerun after an interruption completes the rotation:
//! 1. **Create** the next KMS key (RSA-2048, sign/verify) with the current key's policy (only
//!    license-minting's role may sign), and record it as pending
//!    (`licenses/rotation-pending.json`). A rerun that finds a pending key goes on with it
//!    instead of creating another.
//! 2. **Publish the key set** `licenses/keys.json` with the new key in it (valid from now; the
//!    current key retires now, and keeps verifying what it signed), and the new key's PEM at
//!    `licenses/keys/{kid}.pem`. Verifiers fetch the set before any license names the key.
//! 3. **Switch** the signing alias to the new key: from here on licenses are signed by it (a
//!    warm license-minting instance notices by itself: see `LicenseService`).
//! 4. **Republish** through license-minting (its `publish` action, with its role): the public
//!    key and the revocation list, signed by the new key.
//! 5. **Finish**: the pending record is removed.
//!
//! An interruption between 1's `CreateKey` and its pending record leaves an unused key (a
//! dollar a month); the report of the next run does not see it, so the operator schedules its
//! deletion by hand (`aws kms schedule-key-deletion`).

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_kms::types::{KeySpec, KeyUsageType, Tag};
use blapi::licensing::{KEY_SET_KEY, KeySet, PublicKey};
use blapi::storage::ObjectStore;
use serde::{Deserialize, Serialize};

/// Where a rotation in progress is recorded.
pub const PENDING_KEY: &str = "licenses/rotation-pending.json";

/// The steps, in order (a test stops after one to play an interruption).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Created,
    Published,
    Switched,
    Republished,
    Finished,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    key_id: String,
    started_at: i64,
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct RotationReport {
    pub alias: String,
    pub previous_kid: String,
    pub new_kid: Option<String>,
    pub new_key_id: Option<String>,
    /// A pending rotation was found and completed.
    pub resumed: bool,
    /// The last step done.
    pub reached: Option<Step>,
    /// The kids of the published set, oldest first.
    pub key_set: Vec<String>,
    pub dry_run: bool,
}

/// The KMS side of a rotation (a port, so the steps can be read apart from the SDK calls).
pub struct Kms<'a> {
    pub client: &'a aws_sdk_kms::Client,
    pub alias: String,
}

impl Kms<'_> {
    async fn key_id(&self, key: &str) -> Result<String> {
        let out = self
            .client
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| anyhow!("kms DescribeKey {key}: {e:?}"))?;
        out.key_metadata()
            .map(|m| m.key_id().to_owned())
            .context("DescribeKey returned no metadata")
    }

    async fn public_key(&self, key: &str) -> Result<PublicKey> {
        let out = self
            .client
            .get_public_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| anyhow!("kms GetPublicKey {key}: {e:?}"))?;
        let der = out.public_key().context("GetPublicKey returned no key")?;
        Ok(PublicKey::from_der(der.as_ref())?)
    }

    /// A key like the current one: same spec, same policy, tagged with the alias it serves.
    async fn create_like(&self, current_key_id: &str) -> Result<String> {
        let policy = self
            .client
            .get_key_policy()
            .key_id(current_key_id)
            .policy_name("default")
            .send()
            .await
            .map_err(|e| anyhow!("kms GetKeyPolicy: {e:?}"))?
            .policy
            .context("the current key has no policy")?;
        let out = self
            .client
            .create_key()
            .key_spec(KeySpec::Rsa2048)
            .key_usage(KeyUsageType::SignVerify)
            .policy(policy)
            .description(format!(
                "blapi license signing key for {} (RSASSA_PKCS1_V1_5_SHA_512), rotated in",
                self.alias
            ))
            .tags(
                Tag::builder()
                    .tag_key("blapi-signing-alias")
                    .tag_value(&self.alias)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| anyhow!("kms CreateKey: {e:?}"))?;
        out.key_metadata()
            .map(|m| m.key_id().to_owned())
            .context("CreateKey returned no metadata")
    }

    async fn point_alias_at(&self, key_id: &str) -> Result<()> {
        self.client
            .update_alias()
            .alias_name(&self.alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(|e| anyhow!("kms UpdateAlias: {e:?}"))?;
        Ok(())
    }
}

/// Rotates the signing key (see the module doc). `republish` runs license-minting's `publish`
/// action; `stop_after` ends early after a step (tests play interruptions with it).
pub async fn rotate<F, Fut>(
    kms: &Kms<'_>,
    files: &dyn ObjectStore,
    republish: F,
    now_ms: i64,
    dry_run: bool,
    stop_after: Option<Step>,
    progress: &dyn Fn(&str),
) -> Result<RotationReport>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value>>,
{
    let current_id = kms.key_id(&kms.alias).await?;
    let current = kms.public_key(&current_id).await?;
    let pending: Option<Pending> = match files.get(PENDING_KEY).await? {
        Some(bytes) => Some(serde_json::from_slice(&bytes).context("the pending rotation record")?),
        None => None,
    };
    let mut set = match files.get(KEY_SET_KEY).await? {
        Some(bytes) => KeySet::from_json(&bytes)?,
        None => KeySet::default(),
    };
    let mut report = RotationReport {
        alias: kms.alias.clone(),
        previous_kid: current.kid().to_owned(),
        new_kid: None,
        new_key_id: pending.as_ref().map(|p| p.key_id.clone()),
        resumed: pending.is_some(),
        reached: None,
        key_set: set.keys.iter().map(|k| k.kid.clone()).collect(),
        dry_run,
    };
    if dry_run {
        progress(&match &pending {
            Some(p) => format!("would complete the pending rotation to key {}", p.key_id),
            None => format!(
                "would create a key, publish it in the key set, point {} at it and republish",
                kms.alias
            ),
        });
        return Ok(report);
    }
    let stop = |step: Step, report: &mut RotationReport| {
        report.reached = Some(step);
        stop_after == Some(step)
    };

    // 1. Create (or find the pending key).
    let new_id = match &pending {
        Some(p) => {
            progress(&format!("resuming the rotation to key {}", p.key_id));
            kms.key_id(&p.key_id).await?
        }
        None => {
            let id = kms.create_like(&current_id).await?;
            let record = serde_json::to_vec(&Pending {
                key_id: id.clone(),
                started_at: now_ms,
            })?;
            files.put(PENDING_KEY, record, "application/json").await?;
            progress(&format!("created key {id}"));
            id
        }
    };
    report.new_key_id = Some(new_id.clone());
    let next = kms.public_key(&new_id).await?;
    report.new_kid = Some(next.kid().to_owned());
    if stop(Step::Created, &mut report) {
        return Ok(report);
    }

    // 2. The key set: the current key first if the set predates rotations, then the new one.
    if set.find(current.kid()).is_none() && current_id != new_id {
        set.add(&current, 0)?;
    }
    let changed = set.add(&next, now_ms)?;
    files
        .put(
            &format!("licenses/keys/{}.pem", next.kid()),
            next.to_pem()?.into_bytes(),
            "application/x-pem-file",
        )
        .await?;
    if changed || files.get(KEY_SET_KEY).await?.is_none() {
        files
            .put(KEY_SET_KEY, set.to_json()?, "application/json")
            .await?;
    }
    report.key_set = set.keys.iter().map(|k| k.kid.clone()).collect();
    progress(&format!(
        "key set published: {} key(s), current {}",
        set.keys.len(),
        next.kid()
    ));
    if stop(Step::Published, &mut report) {
        return Ok(report);
    }

    // 3. Switch.
    if current_id != new_id {
        kms.point_alias_at(&new_id).await?;
        progress(&format!("{} now names key {new_id}", kms.alias));
    }
    if stop(Step::Switched, &mut report) {
        return Ok(report);
    }

    // 4. Republish with license-minting's role.
    let answer = republish().await?;
    if answer["kid"].as_str() != Some(next.kid()) {
        bail!(
            "license-minting republished with key {} (expected {}): run the rotation again",
            answer["kid"],
            next.kid()
        );
    }
    progress("public key and revocation list republished by license-minting");
    if stop(Step::Republished, &mut report) {
        return Ok(report);
    }

    // 5. Finish.
    files.delete(PENDING_KEY).await?;
    report.reached = Some(Step::Finished);
    Ok(report)
}
