//! The license store port: [`DynamoLicenseStore`] on `LICENSES_TABLE`, [`MemoryLicenseStore`]
//! for unit tests. The item layout is documented in the [module doc](super).

use super::format::LicenseId;
use super::revocation::{RevocationReason, RevokedLicense};
use crate::aws::dynamo::{cancelled_by_condition, get_item, get_n, get_s, has_code, n, s};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Where a license is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LicenseStatus {
    /// Recorded and signed; its file is being written. Never handed out.
    Issuing,
    /// Valid: its file is in S3.
    Active,
    /// Replaced by a newer license for the same period (seat or SKU change).
    Superseded,
    /// Revoked; listed in the revocation list.
    Revoked,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Issuing => "ISSUING",
            LicenseStatus::Active => "ACTIVE",
            LicenseStatus::Superseded => "SUPERSEDED",
            LicenseStatus::Revoked => "REVOKED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ISSUING" => LicenseStatus::Issuing,
            "ACTIVE" => LicenseStatus::Active,
            "SUPERSEDED" => LicenseStatus::Superseded,
            "REVOKED" => LicenseStatus::Revoked,
            _ => return None,
        })
    }
}

/// A license as stored: its facts, its state and the signed file itself (a few KB), so a
/// retry can rewrite the exact bytes and the admin actions can serve it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LicenseRecord {
    pub license_id: LicenseId,
    pub customer_id: String,
    pub subscription_id: String,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub quantity: u32,
    pub sku: String,
    #[serde(serialize_with = "ser_status")]
    pub status: LicenseStatus,
    pub supersedes: Option<LicenseId>,
    pub superseded_by: Option<LicenseId>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<RevocationReason>,
    pub issued_at: i64,
    pub starts_at: i64,
    pub expires_at: i64,
    pub is_trial: bool,
    pub kid: String,
    /// S3 key of the file.
    pub file_key: String,
    /// The license file (base64 text).
    #[serde(skip)]
    pub file: String,
}

fn ser_status<S: serde::Serializer>(
    s: &LicenseStatus,
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// The current license of one subscription period: the lock the minting rules compare and
/// swap, read with strong consistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermHead {
    pub subscription_id: String,
    pub period_start_ms: i64,
    pub customer_id: String,
    pub license_id: LicenseId,
}

/// The store port.
#[async_trait]
pub trait LicenseStore: Send + Sync {
    /// The head of one period (consistent read).
    async fn head(&self, subscription_id: &str, period_start_ms: i64) -> Result<Option<TermHead>>;
    /// Every period head of a subscription (consistent).
    async fn heads(&self, subscription_id: &str) -> Result<Vec<TermHead>>;
    /// One license (consistent).
    async fn get(&self, customer_id: &str, license_id: &LicenseId)
    -> Result<Option<LicenseRecord>>;
    /// A license by id alone (index gsi2; eventually consistent).
    async fn find(&self, license_id: &LicenseId) -> Result<Option<LicenseRecord>>;
    /// A customer's licenses (consistent).
    async fn by_customer(&self, customer_id: &str) -> Result<Vec<LicenseRecord>>;
    /// Drops the copy of a license's file kept beside its record (a privacy erasure of a
    /// license that no longer binds anyone: superseded, revoked or expired). The record's
    /// facts stay. `true` when there was a copy.
    async fn forget_file(&self, customer_id: &str, license_id: &LicenseId) -> Result<bool>;
    /// A subscription's licenses, every period and state (index gsi1; eventually consistent).
    async fn by_subscription(&self, subscription_id: &str) -> Result<Vec<LicenseRecord>>;
    /// Records `record` (status ISSUING) and moves its period's head from `previous` (`None`:
    /// no head yet) to it, atomically, unless the subscription was [ended](Self::end_subscription).
    /// `false`: the head moved, the license exists already or the subscription ended.
    async fn begin(&self, record: &LicenseRecord, previous: Option<&LicenseId>) -> Result<bool>;
    /// ISSUING -> ACTIVE, and `supersede` ACTIVE -> SUPERSEDED with its revocation entry
    /// (reason `superseded`, effective at `revoked_at_ms`), atomically. In the same write it
    /// checks that the subscription has not [ended](Self::end_subscription), that `record`
    /// is still its period's head, that the customer is not suspended, and — when `record`
    /// supersedes a license that is not passed as `supersede` — that this predecessor is a
    /// license suspended for non-payment (a reinstatement), never one revoked for good.
    /// `false`: a condition failed (someone else did it, or the state moved).
    async fn activate(
        &self,
        record: &LicenseRecord,
        supersede: Option<&LicenseRecord>,
        revoked_at_ms: i64,
    ) -> Result<bool>;
    /// Marks the subscription ended (cancelled for good), before its licenses are revoked:
    /// from then on [`begin`](Self::begin) and [`activate`](Self::activate) refuse it inside
    /// their own transactions, so a mint racing the cancellation can never leave an ACTIVE
    /// license behind the revocation sweep. Idempotent (the first time is kept).
    async fn end_subscription(&self, subscription_id: &str, at_ms: i64) -> Result<()>;
    /// Whether the subscription was marked ended (consistent).
    async fn ended(&self, subscription_id: &str) -> Result<bool>;
    /// ISSUING|ACTIVE|SUPERSEDED -> REVOKED plus its revocation entry, atomically (a license
    /// revoked as `suspended` may be revoked again for good; a license still issuing is
    /// revoked before it was ever activated). `false`: it was not in a revocable state
    /// (already revoked).
    async fn revoke(
        &self,
        record: &LicenseRecord,
        reason: RevocationReason,
        at_ms: i64,
    ) -> Result<bool>;
    /// Every revocation entry (consistent).
    async fn revocations(&self) -> Result<Vec<RevokedLicense>>;
    /// The customer's standing as dunning last decided it (consistent); `None`: never
    /// suspended.
    async fn standing(&self, customer_id: &str) -> Result<Option<Standing>>;
    /// Records `standing` if it is newer (a higher `seq`) than the stored one. `false`: an
    /// equal or newer standing is already recorded (this one is stale or a duplicate).
    async fn set_standing(&self, customer_id: &str, standing: Standing) -> Result<bool>;
}

/// A customer's standing: suspended for non-payment or not, and the sequence number of the
/// dunning change that said so (newer wins, whatever the arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub suspended: bool,
    pub seq: u64,
}

// ------------------------------------------------------------------ keys

fn customer_pk(customer_id: &str) -> String {
    format!("CUSTOMER#{customer_id}")
}
fn license_sk(id: &LicenseId) -> String {
    format!("LICENSE#{id}")
}
fn sub_pk(subscription_id: &str) -> String {
    format!("SUB#{subscription_id}")
}
fn term_sk(period_start_ms: i64) -> String {
    format!("TERM#{period_start_ms:013}")
}
const REVOKED_PK: &str = "REVOKED";
/// The mark of an ended subscription (beside its period heads, under `SUB#{sub}`).
const ENDED_SK: &str = "ENDED";
/// The customer's standing item (beside their licenses, under `CUSTOMER#{cus}`).
const STANDING_SK: &str = "STANDING";

// ------------------------------------------------------------------ DynamoDB

/// The DynamoDB adapter.
#[derive(Debug, Clone)]
pub struct DynamoLicenseStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLicenseStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn query_all(
        &self,
        index: Option<&str>,
        key_expr: &str,
        values: &[(&str, String)],
        consistent: bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(key_expr);
        if let Some(ix) = index {
            q = q.index_name(ix);
        } else {
            q = q.consistent_read(consistent);
        }
        for (k, v) in values {
            q = q.expression_attribute_values(*k, AttributeValue::S(v.clone()));
        }
        crate::aws::dynamo::query_all(q).await
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<bool> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match cancelled_by_condition(&e) {
                // A condition of ours failed: someone else moved the head or the state.
                Some(true) => Ok(false),
                // A conflicting transaction or throttling: nothing was written, and it is not
                // "the condition failed" (taking it for that once skipped revocations).
                Some(false) => Err(transaction_not_applied()),
                None if has_code(&e, &["ConditionalCheckFailedException"]) => Ok(false),
                None => Err(Error::aws("dynamodb", e)),
            },
        }
    }
}

/// The conditions `activate` and `begin` put in their transactions, each a `ConditionCheck`
/// on one item (a transaction may touch an item once: none of these is otherwise written).
impl DynamoLicenseStore {
    fn check(
        &self,
        pk: String,
        sk: String,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<TransactWriteItem> {
        let mut check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression(condition);
        for (k, v) in names {
            check = check.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            check = check.expression_attribute_values(*k, v.clone());
        }
        Ok(TransactWriteItem::builder()
            .condition_check(build(check.build())?)
            .build())
    }

    /// The subscription has not ended.
    fn not_ended(&self, subscription_id: &str) -> Result<TransactWriteItem> {
        self.check(
            sub_pk(subscription_id),
            ENDED_SK.into(),
            "attribute_not_exists(pk)",
            &[],
            &[],
        )
    }

    /// `record` is still its period's head.
    fn still_head(&self, record: &LicenseRecord) -> Result<TransactWriteItem> {
        self.check(
            sub_pk(&record.subscription_id),
            term_sk(record.period_start_ms),
            "license_id = :id",
            &[],
            &[(":id", s(record.license_id.as_str()))],
        )
    }

    /// The customer is not suspended for non-payment.
    fn not_suspended(&self, customer_id: &str) -> Result<TransactWriteItem> {
        self.check(
            customer_pk(customer_id),
            STANDING_SK.into(),
            "attribute_not_exists(pk) OR suspended = :no",
            &[],
            &[(":no", AttributeValue::Bool(false))],
        )
    }

    /// The license `id` is revoked as suspended for non-payment (and for nothing else).
    fn revoked_as_suspended(&self, customer_id: &str, id: &LicenseId) -> Result<TransactWriteItem> {
        self.check(
            customer_pk(customer_id),
            license_sk(id),
            "#s = :revoked AND revoked_reason = :susp",
            &[("#s", "status")],
            &[
                (":revoked", s(LicenseStatus::Revoked.as_str())),
                (":susp", s(RevocationReason::Suspended.as_str())),
            ],
        )
    }
}

/// A transaction DynamoDB cancelled for a reason other than a condition (a conflicting
/// transaction, throttling, a capacity limit): nothing was written and the state is unknown,
/// so it is retried (the message is redelivered), never taken for "the condition failed".
fn transaction_not_applied() -> Error {
    Error::dependency(
        "dynamodb",
        true,
        "transaction cancelled by a conflict or throttling; retry",
    )
}

fn req_s(item: &HashMap<String, AttributeValue>, name: &str) -> Result<String> {
    get_s(item, name).ok_or_else(|| Error::Invalid(format!("license item without {name}")))
}
fn req_n(item: &HashMap<String, AttributeValue>, name: &str) -> Result<i64> {
    get_n::<i64>(item, name).ok_or_else(|| Error::Invalid(format!("license item without {name}")))
}

fn to_item(r: &LicenseRecord) -> HashMap<String, AttributeValue> {
    let mut m = HashMap::new();
    m.insert("pk".into(), s(customer_pk(&r.customer_id)));
    m.insert("sk".into(), s(license_sk(&r.license_id)));
    m.insert("gsi1pk".into(), s(sub_pk(&r.subscription_id)));
    m.insert(
        "gsi1sk".into(),
        s(format!(
            "PERIOD#{:013}#{:013}#{}",
            r.period_start_ms, r.issued_at, r.license_id
        )),
    );
    m.insert("gsi2pk".into(), s(format!("LICENSE#{}", r.license_id)));
    m.insert("gsi2sk".into(), s("LICENSE"));
    m.insert("license_id".into(), s(r.license_id.as_str()));
    m.insert("customer_id".into(), s(&r.customer_id));
    m.insert("subscription_id".into(), s(&r.subscription_id));
    m.insert("period_start".into(), n(r.period_start_ms));
    m.insert("period_end".into(), n(r.period_end_ms));
    m.insert("quantity".into(), n(r.quantity));
    m.insert("sku".into(), s(&r.sku));
    m.insert("status".into(), s(r.status.as_str()));
    if let Some(p) = &r.supersedes {
        m.insert("supersedes".into(), s(p.as_str()));
    }
    if let Some(p) = &r.superseded_by {
        m.insert("superseded_by".into(), s(p.as_str()));
    }
    if let Some(at) = r.revoked_at {
        m.insert("revoked_at".into(), n(at));
    }
    if let Some(reason) = r.revoked_reason {
        m.insert("revoked_reason".into(), s(reason.as_str()));
    }
    m.insert("issued_at".into(), n(r.issued_at));
    m.insert("starts_at".into(), n(r.starts_at));
    m.insert("expires_at".into(), n(r.expires_at));
    m.insert("is_trial".into(), AttributeValue::Bool(r.is_trial));
    m.insert("kid".into(), s(&r.kid));
    m.insert("file_key".into(), s(&r.file_key));
    m.insert("file".into(), s(&r.file));
    m
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<LicenseRecord> {
    let id = |name: &str| -> Result<Option<LicenseId>> {
        get_s(item, name).map(|v| v.parse()).transpose()
    };
    Ok(LicenseRecord {
        license_id: req_s(item, "license_id")?.parse()?,
        customer_id: req_s(item, "customer_id")?,
        subscription_id: req_s(item, "subscription_id")?,
        period_start_ms: req_n(item, "period_start")?,
        period_end_ms: req_n(item, "period_end")?,
        quantity: u32::try_from(req_n(item, "quantity")?)
            .map_err(|_| Error::Invalid("quantity".into()))?,
        sku: req_s(item, "sku")?,
        status: LicenseStatus::parse(&req_s(item, "status")?)
            .ok_or_else(|| Error::Invalid("license item with unknown status".into()))?,
        supersedes: id("supersedes")?,
        superseded_by: id("superseded_by")?,
        revoked_at: get_n(item, "revoked_at"),
        revoked_reason: get_s(item, "revoked_reason").and_then(|r| RevocationReason::parse(&r)),
        issued_at: req_n(item, "issued_at")?,
        starts_at: req_n(item, "starts_at")?,
        expires_at: req_n(item, "expires_at")?,
        is_trial: item
            .get("is_trial")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        kid: req_s(item, "kid")?,
        file_key: req_s(item, "file_key")?,
        file: req_s(item, "file")?,
    })
}

fn head_from_item(item: &HashMap<String, AttributeValue>) -> Result<TermHead> {
    Ok(TermHead {
        subscription_id: req_s(item, "subscription_id")?,
        period_start_ms: req_n(item, "period_start")?,
        customer_id: req_s(item, "customer_id")?,
        license_id: req_s(item, "license_id")?.parse()?,
    })
}

fn revoked_from_item(item: &HashMap<String, AttributeValue>) -> Result<RevokedLicense> {
    Ok(RevokedLicense {
        id: req_s(item, "license_id")?.parse()?,
        customer_id: req_s(item, "customer_id")?,
        subscription_id: req_s(item, "subscription_id")?,
        revoked_at: req_n(item, "revoked_at")?,
        reason: RevocationReason::parse(&req_s(item, "reason")?)
            .ok_or_else(|| Error::Invalid("revocation with unknown reason".into()))?,
    })
}

fn build<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Invalid(format!("dynamodb request: {e}")))
}

#[async_trait]
impl LicenseStore for DynamoLicenseStore {
    async fn head(&self, subscription_id: &str, period_start_ms: i64) -> Result<Option<TermHead>> {
        let sk = term_sk(period_start_ms);
        get_item(
            &self.client,
            &self.table,
            sub_pk(subscription_id),
            Some(&sk),
        )
        .await?
        .as_ref()
        .map(head_from_item)
        .transpose()
    }

    async fn heads(&self, subscription_id: &str) -> Result<Vec<TermHead>> {
        self.query_all(
            None,
            "pk = :pk AND begins_with(sk, :p)",
            &[(":pk", sub_pk(subscription_id)), (":p", "TERM#".into())],
            true,
        )
        .await?
        .iter()
        .map(head_from_item)
        .collect()
    }

    async fn get(
        &self,
        customer_id: &str,
        license_id: &LicenseId,
    ) -> Result<Option<LicenseRecord>> {
        let sk = license_sk(license_id);
        get_item(
            &self.client,
            &self.table,
            customer_pk(customer_id),
            Some(&sk),
        )
        .await?
        .as_ref()
        .map(from_item)
        .transpose()
    }

    async fn find(&self, license_id: &LicenseId) -> Result<Option<LicenseRecord>> {
        let items = self
            .query_all(
                Some("gsi2"),
                "gsi2pk = :pk",
                &[(":pk", format!("LICENSE#{license_id}"))],
                false,
            )
            .await?;
        match items.first() {
            // The index is eventually consistent: read the item itself.
            Some(item) => self.get(&req_s(item, "customer_id")?, license_id).await,
            None => Ok(None),
        }
    }

    async fn forget_file(&self, customer_id: &str, license_id: &LicenseId) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(customer_pk(customer_id)))
            .key("sk", s(license_sk(license_id)))
            .update_expression("SET #f = :empty")
            .condition_expression("attribute_exists(pk) AND #f <> :empty")
            .expression_attribute_names("#f", "file")
            .expression_attribute_values(":empty", s(""))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if crate::aws::dynamo::is_conditional_check_failed(&e) => Ok(false),
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    async fn by_customer(&self, customer_id: &str) -> Result<Vec<LicenseRecord>> {
        self.query_all(
            None,
            "pk = :pk AND begins_with(sk, :p)",
            &[(":pk", customer_pk(customer_id)), (":p", "LICENSE#".into())],
            true,
        )
        .await?
        .iter()
        .map(from_item)
        .collect()
    }

    async fn by_subscription(&self, subscription_id: &str) -> Result<Vec<LicenseRecord>> {
        self.query_all(
            Some("gsi1"),
            "gsi1pk = :pk",
            &[(":pk", sub_pk(subscription_id))],
            false,
        )
        .await?
        .iter()
        .map(from_item)
        .collect()
    }

    async fn begin(&self, record: &LicenseRecord, previous: Option<&LicenseId>) -> Result<bool> {
        let put_license = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_item(record)))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )?;
        let mut head = Put::builder()
            .table_name(&self.table)
            .item("pk", s(sub_pk(&record.subscription_id)))
            .item("sk", s(term_sk(record.period_start_ms)))
            .item("subscription_id", s(&record.subscription_id))
            .item("period_start", n(record.period_start_ms))
            .item("customer_id", s(&record.customer_id))
            .item("license_id", s(record.license_id.as_str()));
        head = match previous {
            None => head.condition_expression("attribute_not_exists(pk)"),
            Some(prev) => head
                .condition_expression("license_id = :prev")
                .expression_attribute_values(":prev", s(prev.as_str())),
        };
        self.transact(vec![
            TransactWriteItem::builder().put(put_license).build(),
            TransactWriteItem::builder()
                .put(build(head.build())?)
                .build(),
            self.not_ended(&record.subscription_id)?,
        ])
        .await
    }

    async fn activate(
        &self,
        record: &LicenseRecord,
        supersede: Option<&LicenseRecord>,
        revoked_at_ms: i64,
    ) -> Result<bool> {
        let mut items = vec![
            TransactWriteItem::builder()
                .update(build(
                    Update::builder()
                        .table_name(&self.table)
                        .key("pk", s(customer_pk(&record.customer_id)))
                        .key("sk", s(license_sk(&record.license_id)))
                        .update_expression("SET #s = :active")
                        .condition_expression("#s = :issuing")
                        .expression_attribute_names("#s", "status")
                        .expression_attribute_values(":active", s(LicenseStatus::Active.as_str()))
                        .expression_attribute_values(":issuing", s(LicenseStatus::Issuing.as_str()))
                        .build(),
                )?)
                .build(),
        ];
        if let Some(old) = supersede {
            items.push(
                TransactWriteItem::builder()
                    .update(build(
                        Update::builder()
                            .table_name(&self.table)
                            .key("pk", s(customer_pk(&old.customer_id)))
                            .key("sk", s(license_sk(&old.license_id)))
                            .update_expression("SET #s = :sup, superseded_by = :by")
                            .condition_expression("#s = :active")
                            .expression_attribute_names("#s", "status")
                            .expression_attribute_values(
                                ":sup",
                                s(LicenseStatus::Superseded.as_str()),
                            )
                            .expression_attribute_values(
                                ":active",
                                s(LicenseStatus::Active.as_str()),
                            )
                            .expression_attribute_values(":by", s(record.license_id.as_str()))
                            .build(),
                    )?)
                    .build(),
            );
            items.push(
                TransactWriteItem::builder()
                    .put(revocation_entry(
                        &self.table,
                        old,
                        RevocationReason::Superseded,
                        revoked_at_ms,
                    )?)
                    .build(),
            );
        } else if let Some(prev) = &record.supersedes {
            // Not superseded here: it left ACTIVE. Only a reinstatement replaces a license
            // that is not active (one suspended for non-payment); one revoked for good
            // (cancellation, refund, operator) keeps its period revoked.
            items.push(self.revoked_as_suspended(&record.customer_id, prev)?);
        }
        items.push(self.not_ended(&record.subscription_id)?);
        items.push(self.still_head(record)?);
        items.push(self.not_suspended(&record.customer_id)?);
        self.transact(items).await
    }

    async fn end_subscription(&self, subscription_id: &str, at_ms: i64) -> Result<()> {
        crate::aws::dynamo::put_once(
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(sub_pk(subscription_id)))
                .item("sk", s(ENDED_SK))
                .item("subscription_id", s(subscription_id))
                .item("ended_at", n(at_ms))
                .condition_expression("attribute_not_exists(pk)"),
        )
        .await
    }

    async fn ended(&self, subscription_id: &str) -> Result<bool> {
        Ok(get_item(
            &self.client,
            &self.table,
            sub_pk(subscription_id),
            Some(ENDED_SK),
        )
        .await?
        .is_some())
    }

    async fn revoke(
        &self,
        record: &LicenseRecord,
        reason: RevocationReason,
        at_ms: i64,
    ) -> Result<bool> {
        let update = build(
            Update::builder()
                .table_name(&self.table)
                .key("pk", s(customer_pk(&record.customer_id)))
                .key("sk", s(license_sk(&record.license_id)))
                .update_expression("SET #s = :revoked, revoked_at = :at, revoked_reason = :why")
                // A suspension is not final: a revocation for good (cancellation, refund)
                // replaces it.
                .condition_expression(
                    "#s = :active OR #s = :sup OR #s = :issuing OR (#s = :revoked AND revoked_reason = :susp AND :why <> :susp)",
                )
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":issuing", s(LicenseStatus::Issuing.as_str()))
                .expression_attribute_values(":revoked", s(LicenseStatus::Revoked.as_str()))
                .expression_attribute_values(":active", s(LicenseStatus::Active.as_str()))
                .expression_attribute_values(":sup", s(LicenseStatus::Superseded.as_str()))
                .expression_attribute_values(":susp", s(RevocationReason::Suspended.as_str()))
                .expression_attribute_values(":at", n(at_ms))
                .expression_attribute_values(":why", s(reason.as_str()))
                .build(),
        )?;
        let entry = revocation_entry(&self.table, record, reason, at_ms)?;
        self.transact(vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder().put(entry).build(),
        ])
        .await
    }

    async fn revocations(&self) -> Result<Vec<RevokedLicense>> {
        self.query_all(None, "pk = :pk", &[(":pk", REVOKED_PK.into())], true)
            .await?
            .iter()
            .map(revoked_from_item)
            .collect()
    }

    async fn standing(&self, customer_id: &str) -> Result<Option<Standing>> {
        let item = get_item(
            &self.client,
            &self.table,
            customer_pk(customer_id),
            Some(STANDING_SK),
        )
        .await?;
        Ok(item.map(|i| Standing {
            suspended: matches!(i.get("suspended"), Some(AttributeValue::Bool(true))),
            seq: get_n(&i, "seq").unwrap_or(0),
        }))
    }

    async fn set_standing(&self, customer_id: &str, standing: Standing) -> Result<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(customer_pk(customer_id)))
            .item("sk", s(STANDING_SK))
            .item("suspended", AttributeValue::Bool(standing.suspended))
            .item("seq", n(standing.seq))
            .condition_expression("attribute_not_exists(pk) OR seq < :seq")
            .expression_attribute_values(":seq", n(standing.seq))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if has_code(&e, &["ConditionalCheckFailedException"]) => Ok(false),
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }
}

/// The revocation entry of `record` (it replaces an earlier one: a superseded license
/// revoked later is revoked from then on).
fn revocation_entry(
    table: &str,
    record: &LicenseRecord,
    reason: RevocationReason,
    at_ms: i64,
) -> Result<Put> {
    build(
        Put::builder()
            .table_name(table)
            .item("pk", s(REVOKED_PK))
            .item("sk", s(license_sk(&record.license_id)))
            .item("license_id", s(record.license_id.as_str()))
            .item("customer_id", s(&record.customer_id))
            .item("subscription_id", s(&record.subscription_id))
            .item("revoked_at", n(at_ms))
            .item("reason", s(reason.as_str()))
            .build(),
    )
}

// ------------------------------------------------------------------ in memory

#[derive(Debug, Default)]
struct Tables {
    licenses: BTreeMap<(String, LicenseId), LicenseRecord>,
    heads: BTreeMap<(String, i64), TermHead>,
    revoked: BTreeMap<LicenseId, RevokedLicense>,
    standing: BTreeMap<String, Standing>,
    /// Ended subscriptions and when.
    ended: BTreeMap<String, i64>,
    /// A standing recorded as the next suspension is written (a payment racing it).
    standing_during_suspension: Option<(String, Standing)>,
}

impl Tables {
    /// The conditions `activate` checks besides the records it writes (see the trait): the
    /// subscription has not ended, `record` is its period's head, the customer is not
    /// suspended, and a predecessor not superseded here is one suspended for non-payment.
    fn may_activate(&self, record: &LicenseRecord, superseding: bool) -> bool {
        let head = self
            .heads
            .get(&(record.subscription_id.clone(), record.period_start_ms));
        let predecessor_ok = superseding
            || record.supersedes.as_ref().is_none_or(|prev| {
                self.licenses
                    .get(&(record.customer_id.clone(), prev.clone()))
                    .is_some_and(|p| {
                        p.status == LicenseStatus::Revoked
                            && p.revoked_reason == Some(RevocationReason::Suspended)
                    })
            });
        !self.ended.contains_key(&record.subscription_id)
            && head.is_some_and(|h| h.license_id == record.license_id)
            && !self
                .standing
                .get(&record.customer_id)
                .is_some_and(|s| s.suspended)
            && predecessor_ok
    }
}

/// The in-memory fake with the same conditions, for unit tests.
#[derive(Debug, Default)]
pub struct MemoryLicenseStore {
    tables: Mutex<Tables>,
    failing: std::sync::atomic::AtomicBool,
    /// How many of the next transactional writes are cancelled by a conflict.
    conflicts: std::sync::atomic::AtomicUsize,
}

impl MemoryLicenseStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Makes every following write fail with a retryable error (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
    fn check(&self) -> Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::dependency(
                "dynamodb",
                true,
                "table unavailable (simulated)",
            ));
        }
        Ok(())
    }
    /// Cancels the next `n` transactional writes (`begin`, `activate`, `revoke`) as DynamoDB
    /// cancels a transaction on a `TransactionConflict` or throttling: nothing written, and
    /// the retryable error the DynamoDB adapter answers.
    pub fn conflict_next(&self, n: usize) {
        self.conflicts.store(n, std::sync::atomic::Ordering::SeqCst);
    }
    fn transaction(&self) -> Result<()> {
        self.check()?;
        let cancelled = self
            .conflicts
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if cancelled {
            return Err(transaction_not_applied());
        }
        Ok(())
    }
    /// Records `standing` for `customer` at the moment the next license is suspended, as a
    /// payment processed concurrently would.
    pub fn record_standing_during_next_suspension(&self, customer: &str, standing: Standing) {
        self.lock().standing_during_suspension = Some((customer.to_owned(), standing));
    }
    /// Every license stored.
    pub fn all(&self) -> Vec<LicenseRecord> {
        self.lock().licenses.values().cloned().collect()
    }
}

#[async_trait]
impl LicenseStore for MemoryLicenseStore {
    async fn head(&self, subscription_id: &str, period_start_ms: i64) -> Result<Option<TermHead>> {
        Ok(self
            .lock()
            .heads
            .get(&(subscription_id.to_owned(), period_start_ms))
            .cloned())
    }
    async fn heads(&self, subscription_id: &str) -> Result<Vec<TermHead>> {
        Ok(self
            .lock()
            .heads
            .values()
            .filter(|h| h.subscription_id == subscription_id)
            .cloned()
            .collect())
    }
    async fn get(
        &self,
        customer_id: &str,
        license_id: &LicenseId,
    ) -> Result<Option<LicenseRecord>> {
        Ok(self
            .lock()
            .licenses
            .get(&(customer_id.to_owned(), license_id.clone()))
            .cloned())
    }
    async fn find(&self, license_id: &LicenseId) -> Result<Option<LicenseRecord>> {
        Ok(self
            .lock()
            .licenses
            .values()
            .find(|r| &r.license_id == license_id)
            .cloned())
    }
    async fn forget_file(&self, customer_id: &str, license_id: &LicenseId) -> Result<bool> {
        self.check()?;
        Ok(self
            .lock()
            .licenses
            .values_mut()
            .find(|r| r.customer_id == customer_id && &r.license_id == license_id)
            .is_some_and(|r| !std::mem::take(&mut r.file).is_empty()))
    }
    async fn by_customer(&self, customer_id: &str) -> Result<Vec<LicenseRecord>> {
        Ok(self
            .lock()
            .licenses
            .values()
            .filter(|r| r.customer_id == customer_id)
            .cloned()
            .collect())
    }
    async fn by_subscription(&self, subscription_id: &str) -> Result<Vec<LicenseRecord>> {
        let mut v: Vec<_> = self
            .lock()
            .licenses
            .values()
            .filter(|r| r.subscription_id == subscription_id)
            .cloned()
            .collect();
        v.sort_by_key(|r| (r.period_start_ms, r.issued_at));
        Ok(v)
    }
    async fn begin(&self, record: &LicenseRecord, previous: Option<&LicenseId>) -> Result<bool> {
        self.transaction()?;
        let mut t = self.lock();
        let lkey = (record.customer_id.clone(), record.license_id.clone());
        let hkey = (record.subscription_id.clone(), record.period_start_ms);
        let head_ok = match (t.heads.get(&hkey), previous) {
            (None, None) => true,
            (Some(h), Some(prev)) => &h.license_id == prev,
            _ => false,
        };
        if !head_ok
            || t.licenses.contains_key(&lkey)
            || t.ended.contains_key(&record.subscription_id)
        {
            return Ok(false);
        }
        t.licenses.insert(lkey, record.clone());
        t.heads.insert(
            hkey,
            TermHead {
                subscription_id: record.subscription_id.clone(),
                period_start_ms: record.period_start_ms,
                customer_id: record.customer_id.clone(),
                license_id: record.license_id.clone(),
            },
        );
        Ok(true)
    }
    async fn activate(
        &self,
        record: &LicenseRecord,
        supersede: Option<&LicenseRecord>,
        revoked_at_ms: i64,
    ) -> Result<bool> {
        self.transaction()?;
        let mut t = self.lock();
        let new_key = (record.customer_id.clone(), record.license_id.clone());
        if t.licenses.get(&new_key).map(|r| r.status) != Some(LicenseStatus::Issuing)
            || !t.may_activate(record, supersede.is_some())
        {
            return Ok(false);
        }
        if let Some(old) = supersede {
            let old_key = (old.customer_id.clone(), old.license_id.clone());
            match t.licenses.get_mut(&old_key) {
                Some(o) if o.status == LicenseStatus::Active => {
                    o.status = LicenseStatus::Superseded;
                    o.superseded_by = Some(record.license_id.clone());
                }
                _ => return Ok(false),
            }
            t.revoked.insert(
                old.license_id.clone(),
                RevokedLicense {
                    id: old.license_id.clone(),
                    customer_id: old.customer_id.clone(),
                    subscription_id: old.subscription_id.clone(),
                    revoked_at: revoked_at_ms,
                    reason: RevocationReason::Superseded,
                },
            );
        }
        if let Some(r) = t.licenses.get_mut(&new_key) {
            r.status = LicenseStatus::Active;
        }
        Ok(true)
    }
    async fn end_subscription(&self, subscription_id: &str, at_ms: i64) -> Result<()> {
        self.check()?;
        self.lock()
            .ended
            .entry(subscription_id.to_owned())
            .or_insert(at_ms);
        Ok(())
    }
    async fn ended(&self, subscription_id: &str) -> Result<bool> {
        Ok(self.lock().ended.contains_key(subscription_id))
    }
    async fn revoke(
        &self,
        record: &LicenseRecord,
        reason: RevocationReason,
        at_ms: i64,
    ) -> Result<bool> {
        self.transaction()?;
        let mut t = self.lock();
        if reason == RevocationReason::Suspended
            && let Some((customer, standing)) = t.standing_during_suspension.take()
        {
            t.standing.insert(customer, standing);
        }
        let key = (record.customer_id.clone(), record.license_id.clone());
        match t.licenses.get_mut(&key) {
            Some(r)
                if matches!(
                    r.status,
                    LicenseStatus::Issuing | LicenseStatus::Active | LicenseStatus::Superseded
                ) || (r.revoked_reason == Some(RevocationReason::Suspended)
                    && reason != RevocationReason::Suspended) =>
            {
                r.status = LicenseStatus::Revoked;
                r.revoked_at = Some(at_ms);
                r.revoked_reason = Some(reason);
            }
            _ => return Ok(false),
        }
        t.revoked.insert(
            record.license_id.clone(),
            RevokedLicense {
                id: record.license_id.clone(),
                customer_id: record.customer_id.clone(),
                subscription_id: record.subscription_id.clone(),
                revoked_at: at_ms,
                reason,
            },
        );
        Ok(true)
    }
    async fn revocations(&self) -> Result<Vec<RevokedLicense>> {
        Ok(self.lock().revoked.values().cloned().collect())
    }
    async fn standing(&self, customer_id: &str) -> Result<Option<Standing>> {
        Ok(self.lock().standing.get(customer_id).copied())
    }
    async fn set_standing(&self, customer_id: &str, standing: Standing) -> Result<bool> {
        self.check()?;
        let mut t = self.lock();
        if t.standing
            .get(customer_id)
            .is_some_and(|s| s.seq >= standing.seq)
        {
            return Ok(false);
        }
        t.standing.insert(customer_id.to_owned(), standing);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    //! The DynamoDB adapter's reading of a cancelled transaction, against DynamoDB's own
    //! answers served by wiremock (a conflict cannot be provoked deterministically on moto).
    use super::*;
    use wiremock::matchers::{header, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn record() -> LicenseRecord {
        let license_id = super::super::format::LicenseKey {
            subscription_id: "sub_1".into(),
            period_start_ms: 0,
            quantity: 5,
            sku: "enterprise".into(),
            supersedes: None,
        }
        .license_id();
        LicenseRecord {
            file_key: super::super::format::file_key("cus_1", &license_id),
            license_id,
            customer_id: "cus_1".into(),
            subscription_id: "sub_1".into(),
            period_start_ms: 0,
            period_end_ms: 1,
            quantity: 5,
            sku: "enterprise".into(),
            status: LicenseStatus::Active,
            supersedes: None,
            superseded_by: None,
            revoked_at: None,
            revoked_reason: None,
            issued_at: 0,
            starts_at: 0,
            expires_at: 1,
            is_trial: false,
            kid: "k".into(),
            file: "f".into(),
        }
    }

    /// A store whose every `TransactWriteItems` is cancelled with `codes` (one per item).
    async fn cancelled_with(server: &MockServer, codes: &[&str]) -> DynamoLicenseStore {
        let reasons: Vec<_> = codes
            .iter()
            .map(|c| serde_json::json!({"Code": c}))
            .collect();
        Mock::given(method("POST"))
            .and(header("x-amz-target", "DynamoDB_20120810.TransactWriteItems"))
            .respond_with(
                ResponseTemplate::new(400)
                    .insert_header("content-type", "application/x-amz-json-1.0")
                    .set_body_json(serde_json::json!({
                        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                        "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
                        "CancellationReasons": reasons,
                    })),
            )
            .mount(server)
            .await;
        DynamoLicenseStore::new(crate::aws::dynamo::test_client(&server.uri()), "licenses")
    }

    #[tokio::test]
    async fn a_transaction_cancelled_by_a_conflict_or_throttling_is_a_retryable_error() {
        for codes in [
            &["None", "TransactionConflict"][..],
            &["ThrottlingError", "None"],
            &["ProvisionedThroughputExceeded", "None"],
            &["None", "RequestLimitExceeded"],
        ] {
            let server = MockServer::start().await;
            let store = cancelled_with(&server, codes).await;
            let rec = record();
            let revoke = store
                .revoke(&rec, RevocationReason::SubscriptionCanceled, 1)
                .await;
            assert!(
                matches!(&revoke, Err(e) if e.is_retryable()),
                "{codes:?}: a revoke must be retried, never skipped: {revoke:?}"
            );
            let mut issuing = rec.clone();
            issuing.status = LicenseStatus::Issuing;
            assert!(
                matches!(store.begin(&issuing, None).await, Err(e) if e.is_retryable()),
                "{codes:?}"
            );
            assert!(
                matches!(store.activate(&issuing, None, 1).await, Err(e) if e.is_retryable()),
                "{codes:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_transaction_cancelled_by_a_failed_condition_is_a_lost_race() {
        let server = MockServer::start().await;
        let store = cancelled_with(&server, &["None", "ConditionalCheckFailed", "None"]).await;
        let rec = record();
        assert!(
            !store
                .revoke(&rec, RevocationReason::SubscriptionCanceled, 1)
                .await
                .unwrap()
        );
        assert!(!store.activate(&rec, None, 1).await.unwrap());
    }
}
