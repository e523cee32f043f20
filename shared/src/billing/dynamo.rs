//! DynamoDB adapters of the billing ports, on the billing table (`BILLING_TABLE`: string
//! `pk`/`sk`, index `gsi1` on `gsi1pk`/`gsi1sk`, TTL attribute `expires_at`).
//!
//! # Item layout
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | usage record | `USAGE#{customer}#{subscription}` | `U#{YYYY-MM}#{record id}` | `m` (metric), `t` (epoch ms), `v` (millionths), `i` (installation, if any), `expires_at` (+400 days) |
//! | refused record | `REJECTED#{YYYY-MM-DD}` | `{list}#{reason}#{record id}` | `customer`, `reason`, `record` (JSON), `expires_at` |
//! | period closed | `PERIOD#{YYYY-MM}` | `CLOSED` | `closed_at` (RFC 3339) |
//! | subscription view | `CUST#{customer}` | `SUB#{subscription}` | `doc` (JSON), `updated_at`; `gsi1pk = SUBS#{shard}`, `gsi1sk = {customer}#{subscription}` |
//! | invoice record | `CUST#{customer}` | `INVOICE#{YYYY-MM}` | `doc` (JSON), `state`, `version`, `stripe_invoice`; `gsi1pk = INVOICES#{YYYY-MM}`, `gsi1sk = {customer}` |
//! | credit balance | `CUST#{customer}` | `CREDIT` | `balance` (minor units), `currency`, `applied` (string set of `grant:{id}` / `debit:{invoice key}`) |
//! | dunning | `CUST#{customer}` | `DUNNING` | `doc` (JSON), `status`, `version`; while an action is scheduled `gsi1pk = DUNNING_DUE`, `gsi1sk = {next_at:011}#{customer}` (the sweep's sparse index) |
//! | price book override | `PRICEBOOK` | `CURRENT` | `doc` (JSON), `version` |
//!
//! # Usage: one plain write per record
//! A record is one item under its own key (the month of its timestamp and its id), written
//! with `BatchWriteItem` (25 per request): no condition and no transaction, so a record costs
//! one write unit (items stay well under 1 KB) and a duplicate overwrites itself — dedupe by
//! id is exact with no read. Billing reads the month's records of a subscription with one
//! strongly consistent query (about 6,000 records per 1 MB page) and folds them in the domain
//! ([`super::aggregate::usage_of`]). The period-close race is closed by time, not by a
//! transaction: see [`super::usage::IngestPolicy`].

use super::dunning::Dunning;
use super::money::{Currency, Money, Quantity};
use super::period::Period;
use super::ports::{
    Credits, Debit, DunningStore, InvoiceRecord, InvoiceStore, StoredUsage, SubscriptionView,
    UsageStore, shard_of,
};
use super::pricebook::PriceBook;
use super::subscription::Subscription;
use super::usage::{Rejection, Usage};
use crate::aws::dynamo::{
    Item, batch_get, batch_put, get_json, get_n, get_s, get_ss,
    is_conditional_check_failed as is_conditional, json_attr as to_doc, n, query_all, s,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};

const USAGE_TTL_DAYS: i64 = 400;

/// The billing table, implementing every billing storage port.
#[derive(Debug, Clone)]
pub struct DynamoBilling {
    client: Client,
    table: String,
}

fn ddb<E>(
    e: aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Error
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    Error::aws("dynamodb", e)
}

fn doc<T: serde::de::DeserializeOwned>(item: &Item, what: &str) -> Result<T> {
    get_json(item, "doc", what)
}

fn usage_pk(customer: &str, subscription: &str) -> String {
    format!("USAGE#{customer}#{subscription}")
}

impl DynamoBilling {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        crate::aws::dynamo::get_item(&self.client, &self.table, pk, Some(sk)).await
    }

    /// The price book stored in the table, if any (overrides the embedded file).
    pub async fn price_book(&self) -> Result<Option<PriceBook>> {
        match self.get("PRICEBOOK", "CURRENT").await? {
            Some(item) => {
                let text = get_s(&item, "doc")
                    .ok_or_else(|| Error::Invalid("price book item has no doc".into()))?;
                PriceBook::from_json(&text).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Stores a price book as the current one (admin tooling, tests).
    pub async fn put_price_book(&self, book: &PriceBook) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("PRICEBOOK"))
            .item("sk", s("CURRENT"))
            .item("version", s(&book.version))
            .item("doc", to_doc(book)?)
            .send()
            .await
            .map_err(ddb)?;
        Ok(())
    }

    /// Every item of a partition with a key prefix (paginated).
    async fn query_prefix(&self, pk: &str, prefix: &str) -> Result<Vec<Item>> {
        query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":p", s(prefix)),
        )
        .await
    }
}

fn usage_item(u: &Usage) -> Item {
    let mut item = HashMap::from([
        ("pk".to_owned(), s(usage_pk(&u.customer, &u.subscription))),
        ("sk".to_owned(), s(format!("U#{}#{}", u.period(), u.id))),
        ("m".to_owned(), s(&u.metric)),
        ("t".to_owned(), n(u.timestamp.timestamp_millis())),
        ("v".to_owned(), n(u.value.micros())),
        (
            "expires_at".to_owned(),
            n(u.timestamp.timestamp() + USAGE_TTL_DAYS * 86_400),
        ),
    ]);
    if let Some(i) = &u.installation {
        item.insert("i".to_owned(), s(i));
    }
    item
}

fn usage_key(item: &Item) -> Option<(String, String)> {
    Some((get_s(item, "pk")?, get_s(item, "sk")?))
}

fn rejection_item(r: &Rejection, now: chrono::DateTime<chrono::Utc>) -> Item {
    HashMap::from([
        (
            "pk".to_owned(),
            s(format!("REJECTED#{}", now.format("%Y-%m-%d"))),
        ),
        (
            "sk".to_owned(),
            s(format!(
                "{}#{:?}#{}",
                r.reason.list(),
                r.reason,
                r.record_id
            )),
        ),
        ("customer".to_owned(), s(&r.customer)),
        ("reason".to_owned(), s(r.reason.to_string())),
        ("record".to_owned(), s(r.record.to_string())),
        (
            "expires_at".to_owned(),
            n(now.timestamp() + USAGE_TTL_DAYS * 86_400),
        ),
    ])
}

#[async_trait]
impl UsageStore for DynamoBilling {
    async fn put_records(
        &self,
        records: &[Usage],
        not_after: Option<std::time::Instant>,
    ) -> Result<Vec<Usage>> {
        let items = records.iter().map(usage_item).collect();
        let unwritten: std::collections::HashSet<(String, String)> =
            batch_put(&self.client, &self.table, items, not_after)
                .await?
                .iter()
                .filter_map(usage_key)
                .collect();
        Ok(records
            .iter()
            .filter(|u| unwritten.contains(&usage_key(&usage_item(u)).unwrap_or_default()))
            .cloned()
            .collect())
    }

    async fn stored(&self, records: &[Usage]) -> Result<Vec<bool>> {
        let keys: Vec<Item> = records
            .iter()
            .map(|u| {
                HashMap::from([
                    ("pk".to_owned(), s(usage_pk(&u.customer, &u.subscription))),
                    ("sk".to_owned(), s(format!("U#{}#{}", u.period(), u.id))),
                ])
            })
            .collect();
        let found: std::collections::HashSet<(String, String)> =
            batch_get(&self.client, &self.table, keys)
                .await?
                .iter()
                .filter_map(usage_key)
                .collect();
        Ok(records
            .iter()
            .map(|u| found.contains(&usage_key(&usage_item(u)).unwrap_or_default()))
            .collect())
    }

    async fn reject(&self, rejections: &[Rejection]) -> Result<()> {
        let now = chrono::Utc::now();
        let items = rejections.iter().map(|r| rejection_item(r, now)).collect();
        batch_put(&self.client, &self.table, items, None).await?;
        Ok(())
    }

    async fn records(
        &self,
        customer: &str,
        subscription: &str,
        period: Period,
    ) -> Result<Vec<StoredUsage>> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(usage_pk(customer, subscription)))
                .expression_attribute_values(":p", s(format!("U#{period}#")))
                .consistent_read(true),
        )
        .await?;
        let prefix = format!("U#{period}#");
        Ok(items
            .iter()
            .filter_map(|item| {
                Some(StoredUsage {
                    id: get_s(item, "sk")?.strip_prefix(&prefix)?.to_owned(),
                    metric: get_s(item, "m")?,
                    ts_ms: get_n(item, "t")?,
                    value: Quantity::from_micros(get_n(item, "v")?),
                    installation: get_s(item, "i"),
                })
            })
            .collect())
    }

    async fn closed_at(&self, period: Period) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let Some(item) = self.get(&format!("PERIOD#{period}"), "CLOSED").await? else {
            return Ok(None);
        };
        get_s(&item, "closed_at")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .ok_or_else(|| Error::Invalid(format!("period {period}: unreadable closed_at")))
    }

    async fn close(
        &self,
        period: Period,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("PERIOD#{period}")))
            .item("sk", s("CLOSED"))
            .item("closed_at", s(at.to_rfc3339()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(at),
            Err(e) if is_conditional(&e) => self
                .closed_at(period)
                .await?
                .ok_or_else(|| Error::InProgress(format!("period {period}: close vanished"))),
            Err(e) => Err(ddb(e)),
        }
    }
}

/// The condition of a subscription view's write: the rule of
/// [`Subscription::order_key`] (a later phase wins whatever the time; within a phase the later
/// second, ties to the write) on the item's `precedence` (`:p`, the phase) and `updated_at`
/// (`:u`). An item written before `precedence` was stored counts as live (phase 1).
fn upsert_condition(phase: u8) -> &'static str {
    match phase {
        0 => {
            "attribute_not_exists(pk) OR precedence < :p OR \
             (precedence = :p AND updated_at <= :u)"
        }
        1 => {
            "attribute_not_exists(pk) OR precedence < :p OR \
             ((precedence = :p OR attribute_not_exists(precedence)) AND updated_at <= :u)"
        }
        _ => {
            "attribute_not_exists(pk) OR attribute_not_exists(precedence) OR precedence < :p \
             OR (precedence = :p AND updated_at <= :u)"
        }
    }
}

#[async_trait]
impl SubscriptionView for DynamoBilling {
    async fn upsert(&self, sub: &Subscription) -> Result<bool> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CUST#{}", sub.customer)))
            .item("sk", s(format!("SUB#{}", sub.subscription)))
            .item("gsi1pk", s(format!("SUBS#{}", shard_of(&sub.customer))))
            .item(
                "gsi1sk",
                s(format!("{}#{}", sub.customer, sub.subscription)),
            )
            .item("updated_at", n(sub.updated_at))
            .item("precedence", n(sub.precedence()))
            .item("doc", to_doc(sub)?)
            .condition_expression(upsert_condition(sub.precedence()))
            .expression_attribute_values(":u", n(sub.updated_at))
            .expression_attribute_values(":p", n(sub.precedence()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => Ok(false),
            Err(e) => Err(ddb(e)),
        }
    }

    async fn get(&self, customer: &str, subscription: &str) -> Result<Option<Subscription>> {
        match self
            .get(&format!("CUST#{customer}"), &format!("SUB#{subscription}"))
            .await?
        {
            Some(item) => doc(&item, "subscription").map(Some),
            None => Ok(None),
        }
    }

    async fn get_many(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), Subscription>> {
        let keys = keys
            .iter()
            .map(|(c, sub)| {
                HashMap::from([
                    ("pk".to_owned(), s(format!("CUST#{c}"))),
                    ("sk".to_owned(), s(format!("SUB#{sub}"))),
                ])
            })
            .collect();
        batch_get(&self.client, &self.table, keys)
            .await?
            .iter()
            .map(|item| {
                let sub: Subscription = doc(item, "subscription")?;
                Ok(((sub.customer.clone(), sub.subscription.clone()), sub))
            })
            .collect()
    }

    async fn for_customer(&self, customer: &str) -> Result<Vec<Subscription>> {
        self.query_prefix(&format!("CUST#{customer}"), "SUB#")
            .await?
            .iter()
            .map(|i| doc(i, "subscription"))
            .collect()
    }

    async fn page(
        &self,
        shard: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Subscription>, Option<String>)> {
        let start: Option<Item> = match cursor {
            Some(c) => {
                let m: BTreeMap<String, String> = serde_json::from_str(&c)
                    .map_err(|e| Error::Invalid(format!("bad cursor: {e}")))?;
                Some(m.into_iter().map(|(k, v)| (k, s(v))).collect())
            }
            None => None,
        };
        let resp = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :g")
            .expression_attribute_values(":g", s(format!("SUBS#{shard}")))
            .limit(500)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(ddb)?;
        let subs = resp
            .items
            .unwrap_or_default()
            .iter()
            .map(|i| doc(i, "subscription"))
            .collect::<Result<Vec<Subscription>>>()?;
        let next = match resp.last_evaluated_key {
            Some(k) if !k.is_empty() => {
                let m: BTreeMap<String, String> = k
                    .into_iter()
                    .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
                    .collect();
                Some(serde_json::to_string(&m).map_err(|e| Error::Invalid(e.to_string()))?)
            }
            _ => None,
        };
        Ok((subs, next))
    }
}

fn invoice_item(rec: &InvoiceRecord) -> Result<Item> {
    let c = &rec.invoice.customer;
    let p = rec.invoice.period;
    let mut item: Item = HashMap::new();
    item.insert("pk".into(), s(format!("CUST#{c}")));
    item.insert("sk".into(), s(format!("INVOICE#{p}")));
    item.insert("gsi1pk".into(), s(format!("INVOICES#{p}")));
    item.insert("gsi1sk".into(), s(c));
    item.insert("state".into(), to_doc(&rec.state)?);
    item.insert("version".into(), n(rec.version));
    // Subtotal, tax and total apart (the total is before tax: what revenue counts).
    item.insert("subtotal".into(), n(rec.invoice.subtotal));
    item.insert("total".into(), n(rec.invoice.total));
    if let Some(tax) = rec.refs.issued.as_ref().and_then(|i| i.tax) {
        item.insert("tax".into(), n(tax));
    }
    if let Some(id) = &rec.refs.invoice {
        item.insert("stripe_invoice".into(), s(id));
    }
    item.insert("doc".into(), to_doc(rec)?);
    Ok(item)
}

#[async_trait]
impl InvoiceStore for DynamoBilling {
    async fn load(&self, customer: &str, period: Period) -> Result<Option<InvoiceRecord>> {
        match self
            .get(&format!("CUST#{customer}"), &format!("INVOICE#{period}"))
            .await?
        {
            Some(item) => doc(&item, "invoice").map(Some),
            None => Ok(None),
        }
    }

    async fn create(&self, rec: &InvoiceRecord) -> Result<bool> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(invoice_item(rec)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => Ok(false),
            Err(e) => Err(ddb(e)),
        }
    }

    async fn for_customer(&self, customer: &str) -> Result<Vec<InvoiceRecord>> {
        let mut out = Vec::new();
        for item in self
            .query_prefix(&format!("CUST#{customer}"), "INVOICE#")
            .await?
        {
            out.push(doc::<InvoiceRecord>(&item, "invoice")?);
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.invoice.period));
        Ok(out)
    }

    async fn save(&self, rec: &InvoiceRecord) -> Result<()> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(invoice_item(rec)?))
            .condition_expression("version = :prev")
            .expression_attribute_values(":prev", n(rec.version.saturating_sub(1)))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Err(Error::Conflict(format!(
                "invoice record {}:{} changed meanwhile",
                rec.invoice.customer, rec.invoice.period
            ))),
            Err(e) => Err(ddb(e)),
        }
    }
}

#[async_trait]
impl Credits for DynamoBilling {
    async fn balance(&self, customer: &str) -> Result<Option<Money>> {
        let Some(item) = self.get(&format!("CUST#{customer}"), "CREDIT").await? else {
            return Ok(None);
        };
        let currency: Currency = get_s(&item, "currency")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Error::Invalid(format!("credit item of {customer} has no currency")))?;
        Ok(Some(Money::new(
            get_n(&item, "balance").unwrap_or(0),
            currency,
        )))
    }

    async fn debit(&self, customer: &str, invoice_key: &str, amount: &Money) -> Result<Debit> {
        let tag = format!("debit:{invoice_key}");
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("CUST#{customer}")))
            .key("sk", s("CREDIT"))
            .update_expression("SET balance = balance - :a ADD applied :t")
            .condition_expression("currency = :c AND balance >= :a AND NOT contains(applied, :tag)")
            .expression_attribute_values(":a", n(amount.amount))
            .expression_attribute_values(":t", AttributeValue::Ss(vec![tag.clone()]))
            .expression_attribute_values(":tag", s(&tag))
            .expression_attribute_values(":c", s(amount.currency.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Debit::Applied),
            Err(e) if is_conditional(&e) => {
                let applied = self
                    .get(&format!("CUST#{customer}"), "CREDIT")
                    .await?
                    .map(|i| get_ss(&i, "applied"))
                    .unwrap_or_default();
                Ok(if applied.contains(&tag) {
                    Debit::AlreadyApplied
                } else {
                    Debit::Insufficient
                })
            }
            Err(e) => Err(ddb(e)),
        }
    }

    async fn grant(&self, customer: &str, grant_id: &str, amount: &Money) -> Result<bool> {
        let tag = format!("grant:{grant_id}");
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("CUST#{customer}")))
            .key("sk", s("CREDIT"))
            .update_expression(
                "SET balance = if_not_exists(balance, :zero) + :a, currency = :c ADD applied :t",
            )
            .condition_expression(
                "(attribute_not_exists(currency) OR currency = :c) AND NOT contains(applied, :tag)",
            )
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":a", n(amount.amount))
            .expression_attribute_values(":c", s(amount.currency.as_str()))
            .expression_attribute_values(":t", AttributeValue::Ss(vec![tag.clone()]))
            .expression_attribute_values(":tag", s(&tag))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => match self.balance(customer).await? {
                Some(b) if b.currency != amount.currency => Err(Error::Invalid(format!(
                    "credit balance of {customer} is in {}",
                    b.currency
                ))),
                _ => Ok(false),
            },
            Err(e) => Err(ddb(e)),
        }
    }
}

#[async_trait]
impl DunningStore for DynamoBilling {
    async fn load(&self, customer: &str) -> Result<(Dunning, u64)> {
        match self.get(&format!("CUST#{customer}"), "DUNNING").await? {
            Some(item) => Ok((doc(&item, "dunning")?, get_n(&item, "version").unwrap_or(0))),
            None => Ok((Dunning::default(), 0)),
        }
    }

    async fn save(&self, customer: &str, state: &Dunning, version: u64) -> Result<()> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CUST#{customer}")))
            .item("sk", s("DUNNING"))
            .item("status", s(state.status.as_str()))
            .item("version", n(version + 1))
            .item("doc", to_doc(state)?);
        // Sparse index of the sweep's work: only customers with something scheduled.
        if let Some(at) = state.next_at {
            put = put
                .item("gsi1pk", s(DUNNING_DUE))
                .item("gsi1sk", s(due_key(at, customer)));
        }
        put = if version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", n(version))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Err(Error::Conflict(format!(
                "dunning state of {customer} changed meanwhile"
            ))),
            Err(e) => Err(ddb(e)),
        }
    }

    async fn due(&self, now: i64) -> Result<Vec<String>> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :p AND gsi1sk < :upto")
                .expression_attribute_values(":p", s(DUNNING_DUE))
                // Every key at `now` sorts before `{now + 1}#`.
                .expression_attribute_values(":upto", s(due_key(now.saturating_add(1), ""))),
        )
        .await?;
        Ok(items
            .iter()
            .filter_map(|i| get_s(i, "gsi1sk"))
            .filter_map(|k| k.split_once('#').map(|(_, c)| c.to_owned()))
            .collect())
    }
}

/// The sweep index's partition: dunning states with a scheduled action.
const DUNNING_DUE: &str = "DUNNING_DUE";

/// `{unix seconds, 11 digits}#{customer}`: sorts by time (negative times clamp to 0).
fn due_key(at: i64, customer: &str) -> String {
    format!("{:011}#{customer}", at.max(0))
}
