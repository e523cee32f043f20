//! DynamoDB adapters of the billing ports, on the billing table (`BILLING_TABLE`: string
//! `pk`/`sk`, index `gsi1` on `gsi1pk`/`gsi1sk`, TTL attribute `expires_at`).
//!
//! # Item layout
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | usage dedupe | `USAGEID#{record id}` | `USAGEID` | `customer`, `expires_at` (+400 days) |
//! | daily aggregate | `USAGE#{customer}#{subscription}` | `D#{YYYY-MM}#{metric}#{DD}` | `cnt`, `sm` (millionths), `mx` (millionths), `uq` (string set of installations), `expires_at` |
//! | point (latest, weighted sum) | `USAGE#{customer}#{subscription}` | `P#{metric}#{epoch ms, 13 digits}#{record id}` | `v` (millionths), `expires_at` |
//! | refused record | `REJECTED#{YYYY-MM-DD}` | `{list}#{reason}#{record id}` | `customer`, `reason`, `record` (JSON), `expires_at` |
//! | period closed | `PERIOD#{YYYY-MM}` | `CLOSED` | `closed_at` |
//! | subscription view | `CUST#{customer}` | `SUB#{subscription}` | `doc` (JSON), `updated_at`; `gsi1pk = SUBS#{shard}`, `gsi1sk = {customer}#{subscription}` |
//! | invoice record | `CUST#{customer}` | `INVOICE#{YYYY-MM}` | `doc` (JSON), `state`, `version`, `stripe_invoice`; `gsi1pk = INVOICES#{YYYY-MM}`, `gsi1sk = {customer}` |
//! | credit balance | `CUST#{customer}` | `CREDIT` | `balance` (minor units), `currency`, `applied` (string set of `grant:{id}` / `debit:{invoice key}`) |
//! | dunning | `CUST#{customer}` | `DUNNING` | `doc` (JSON), `status`, `version`; while an action is scheduled `gsi1pk = DUNNING_DUE`, `gsi1sk = {next_at:011}#{customer}` (the sweep's sparse index) |
//! | price book override | `PRICEBOOK` | `CURRENT` | `doc` (JSON), `version` |
//!
//! # Pre-aggregation trade-off
//! A record is written with one `TransactWriteItems`: the conditional put of its id (dedupe)
//! and the `ADD` into its daily item (count, sum, unique set) — atomically, so a crash can
//! neither count a record twice nor mark it seen without counting it. `max` is a separate,
//! idempotent guarded `SET` (`mx < :v`), re-applied on duplicates. Billing then reads at
//! most 31 small items per metric. `latest` and `weighted_sum` cannot be folded by DynamoDB
//! expressions, so their records are stored as points (one item each): `latest` reads one item
//! (`Limit 1`, descending), `weighted_sum` reads the period's points plus the last one before
//! it — reads grow with the number of points, so those metrics suit gauges sampled at a
//! modest rate. Cost: 2 write units per record for the transaction (4 WCU-equivalents).

use super::aggregate::{Aggregation, MetricUsage, Partial, Point};
use super::dunning::Dunning;
use super::money::{Currency, Money, Quantity};
use super::period::Period;
use super::ports::{
    Credits, DailyUsage, Debit, DunningStore, InvoiceRecord, InvoiceStore, SubscriptionView,
    UsageHistory, UsageStore, shard_of,
};
use super::pricebook::PriceBook;
use super::subscription::Subscription;
use super::usage::{Rejection, Usage};
use crate::aws::dynamo::{
    Item, cancelled_by_condition, get_json, get_n, get_s, get_ss,
    is_conditional_check_failed as is_conditional, json_attr as to_doc, n, query_all, s,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::Datelike;
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

fn point_sk(metric: &str, ts_ms: i64) -> String {
    format!("P#{metric}#{:013}", ts_ms.max(0))
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

    async fn points(
        &self,
        pk: &str,
        metric: &str,
        from: &str,
        to: &str,
        forward: bool,
        limit: Option<i32>,
    ) -> Result<Vec<Point>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":a", s(from))
            .expression_attribute_values(":b", s(to))
            .scan_index_forward(forward);
        // With a limit, the first page is the answer (the first or last points of a range).
        let items = match limit {
            Some(l) => query
                .limit(l)
                .send()
                .await
                .map_err(ddb)?
                .items
                .unwrap_or_default(),
            None => query_all(query).await?,
        };
        let prefix = format!("P#{metric}#");
        Ok(items
            .iter()
            .map(|item| Point {
                ts_ms: get_s(item, "sk")
                    .and_then(|sk| {
                        sk.strip_prefix(&prefix)
                            .and_then(|r| r.split('#').next())
                            .and_then(|t| t.parse().ok())
                    })
                    .unwrap_or(0),
                value: Quantity::from_micros(get_n(item, "v").unwrap_or(0)),
            })
            .collect())
    }
}

#[async_trait]
impl UsageHistory for DynamoBilling {
    /// One query per month touched (`D#{YYYY-MM}#`), filtered to the days asked for.
    async fn daily(
        &self,
        customer: &str,
        subscription: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DailyUsage>> {
        let pk = usage_pk(customer, subscription);
        let mut out = Vec::new();
        let mut month = Period::of(from.and_time(chrono::NaiveTime::MIN).and_utc());
        while month.first_day() <= to {
            let prefix = format!("D#{month}#");
            for item in self.query_prefix(&pk, &prefix).await? {
                let sk = get_s(&item, "sk").unwrap_or_default();
                let Some((metric, day)) = sk.strip_prefix(&prefix).and_then(|r| r.rsplit_once('#'))
                else {
                    continue;
                };
                let Some(date) = day.parse().ok().and_then(|d| month.first_day().with_day(d))
                else {
                    continue;
                };
                if date < from || date > to {
                    continue;
                }
                out.push(DailyUsage {
                    date,
                    metric: metric.to_owned(),
                    count: get_n(&item, "cnt").unwrap_or(0),
                    sum: get_n(&item, "sm").unwrap_or(0),
                    max: get_n(&item, "mx"),
                });
            }
            month = month.next();
        }
        Ok(out)
    }
}

#[async_trait]
impl UsageStore for DynamoBilling {
    async fn record(&self, u: &Usage, aggregation: Aggregation) -> Result<bool> {
        let expires = (u.timestamp.timestamp() + USAGE_TTL_DAYS * 86_400).to_string();
        let pk = usage_pk(&u.customer, &u.subscription);
        let dedupe = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("USAGEID#{}", u.id)))
            .item("sk", s("USAGEID"))
            .item("customer", s(&u.customer))
            .item("expires_at", n(&expires))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let write = if aggregation.needs_points() {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(&pk))
                .item(
                    "sk",
                    s(format!(
                        "{}#{}",
                        point_sk(&u.metric, u.timestamp.timestamp_millis()),
                        u.id
                    )),
                )
                .item("v", n(u.value.micros()))
                .item("expires_at", n(&expires))
                .build()
                .map_err(|e| Error::Invalid(e.to_string()))?;
            TransactWriteItem::builder().put(put).build()
        } else {
            let day = u.timestamp.format("%d").to_string();
            let mut up = Update::builder()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key("sk", s(format!("D#{}#{}#{day}", u.period(), u.metric)))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":v", n(u.value.micros()))
                .expression_attribute_values(":exp", n(&expires));
            let mut expr = "ADD cnt :one, sm :v".to_owned();
            if aggregation == Aggregation::UniqueCount
                && let Some(inst) = &u.installation
            {
                expr.push_str(", uq :u");
                up = up.expression_attribute_values(":u", AttributeValue::Ss(vec![inst.clone()]));
            }
            expr.push_str(" SET expires_at = :exp");
            let up = up
                .update_expression(expr)
                .build()
                .map_err(|e| Error::Invalid(e.to_string()))?;
            TransactWriteItem::builder().update(up).build()
        };
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(dedupe).build())
            .transact_items(write)
            .send()
            .await;
        let new = match res {
            Ok(_) => true,
            Err(e) if cancelled_by_condition(&e) == Some(true) => false,
            Err(e) => return Err(ddb(e)),
        };
        if aggregation == Aggregation::Max {
            // Idempotent, so re-applied on duplicates too (a crash after the transaction).
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key(
                    "sk",
                    s(format!(
                        "D#{}#{}#{}",
                        u.period(),
                        u.metric,
                        u.timestamp.format("%d")
                    )),
                )
                .update_expression("SET mx = :v")
                .condition_expression("attribute_not_exists(mx) OR mx < :v")
                .expression_attribute_values(":v", n(u.value.micros()))
                .send()
                .await;
            match r {
                Ok(_) => {}
                Err(e) if is_conditional(&e) => {}
                Err(e) => return Err(ddb(e)),
            }
        }
        Ok(new)
    }

    async fn reject(&self, r: &Rejection) -> Result<()> {
        let now = chrono::Utc::now();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("REJECTED#{}", now.format("%Y-%m-%d"))))
            .item(
                "sk",
                s(format!(
                    "{}#{:?}#{}",
                    r.reason.list(),
                    r.reason,
                    r.record_id
                )),
            )
            .item("customer", s(&r.customer))
            .item("reason", s(r.reason.to_string()))
            .item("record", s(r.record.to_string()))
            .item("expires_at", n(now.timestamp() + USAGE_TTL_DAYS * 86_400))
            .send()
            .await
            .map_err(ddb)?;
        Ok(())
    }

    async fn usage(
        &self,
        customer: &str,
        subscription: &str,
        metrics: &[(String, Aggregation)],
        period: Period,
    ) -> Result<BTreeMap<String, MetricUsage>> {
        let pk = usage_pk(customer, subscription);
        let mut out: BTreeMap<String, MetricUsage> = metrics
            .iter()
            .map(|(m, _)| (m.clone(), MetricUsage::default()))
            .collect();
        if metrics.iter().any(|(_, a)| !a.needs_points()) {
            let prefix = format!("D#{period}#");
            for item in self.query_prefix(&pk, &prefix).await? {
                let sk = get_s(&item, "sk").unwrap_or_default();
                let Some(metric) = sk
                    .strip_prefix(&prefix)
                    .and_then(|r| r.rsplit_once('#'))
                    .map(|(m, _)| m)
                else {
                    continue;
                };
                if let Some(u) = out.get_mut(metric) {
                    u.partial.merge(Partial {
                        count: get_n(&item, "cnt").unwrap_or(0),
                        sum: get_n(&item, "sm").unwrap_or(0),
                        max: get_n(&item, "mx"),
                        unique: get_ss(&item, "uq").into_iter().collect(),
                    });
                }
            }
        }
        let start = period.start().timestamp_millis();
        let end = period.end().timestamp_millis();
        for (metric, agg) in metrics {
            let (from, to) = (point_sk(metric, start), point_sk(metric, end));
            let Some(u) = out.get_mut(metric) else {
                continue;
            };
            match agg {
                // The latest point of the period is the only one `latest` needs.
                Aggregation::Latest => {
                    u.points = self.points(&pk, metric, &from, &to, false, Some(1)).await?;
                }
                Aggregation::WeightedSum => {
                    u.points = self.points(&pk, metric, &from, &to, true, None).await?;
                    u.carry_in = self
                        .points(&pk, metric, &format!("P#{metric}#"), &from, false, Some(1))
                        .await?
                        .first()
                        .map(|p| p.value);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn is_closed(&self, period: Period) -> Result<bool> {
        Ok(self
            .get(&format!("PERIOD#{period}"), "CLOSED")
            .await?
            .is_some())
    }

    async fn close(&self, period: Period) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("PERIOD#{period}")))
            .item("sk", s("CLOSED"))
            .item("closed_at", s(chrono::Utc::now().to_rfc3339()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if is_conditional(&e) {
                    Ok(())
                } else {
                    Err(ddb(e))
                }
            })
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
            // Later wins; within one second a cancellation wins (see `Subscription::precedence`).
            .condition_expression(
                "attribute_not_exists(pk) OR updated_at < :u OR (updated_at = :u AND \
                 (attribute_not_exists(precedence) OR precedence <= :p))",
            )
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
