//! DynamoDB capacity counted from the requests a client sends: an SDK interceptor that adds up
//! the write units each request consumes by DynamoDB's rules, for benchmarks that must report
//! "write units per record" from what was really sent (the emulator does not meter capacity).
//!
//! Rules (on-demand): a put or delete of an item costs one write unit per started KB of the
//! item; a transaction costs twice that per item; an `UpdateItem`'s cost depends on the stored
//! item's size, which the request does not carry, so it is counted as one unit per KB of the
//! attributes it sets (a floor; exact for the small items usage and ledgers write). Reads are
//! counted as requests and keys, not units (their size is only known from the answers).

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the counter was made (or [`Capacity::reset`]).
#[derive(Debug, Default)]
pub struct Capacity {
    write_units: AtomicU64,
    write_requests: AtomicU64,
    items_written: AtomicU64,
    read_requests: AtomicU64,
    keys_read: AtomicU64,
    transactions: AtomicU64,
}

/// A snapshot of [`Capacity`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityTotals {
    pub write_units: u64,
    pub write_requests: u64,
    pub items_written: u64,
    pub read_requests: u64,
    pub keys_read: u64,
    pub transactions: u64,
}

impl Capacity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn totals(&self) -> CapacityTotals {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CapacityTotals {
            write_units: g(&self.write_units),
            write_requests: g(&self.write_requests),
            items_written: g(&self.items_written),
            read_requests: g(&self.read_requests),
            keys_read: g(&self.keys_read),
            transactions: g(&self.transactions),
        }
    }

    pub fn reset(&self) {
        for a in [
            &self.write_units,
            &self.write_requests,
            &self.items_written,
            &self.read_requests,
            &self.keys_read,
            &self.transactions,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// A DynamoDB client like `config`'s that counts into `self`.
    pub fn client(self: &Arc<Self>, config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        let conf = aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(Counter(self.clone()))
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }

    fn write(&self, units: u64, items: u64) {
        self.write_units.fetch_add(units, Ordering::Relaxed);
        self.items_written.fetch_add(items, Ordering::Relaxed);
        self.write_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self, keys: u64) {
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        self.keys_read.fetch_add(keys, Ordering::Relaxed);
    }
}

/// The size DynamoDB bills an attribute value at (bytes).
fn value_size(v: &AttributeValue) -> u64 {
    match v {
        AttributeValue::S(s) => s.len() as u64,
        // Numbers: about one byte per two significant digits, plus one.
        AttributeValue::N(n) => (n.trim_start_matches('-').len() as u64).div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| (n.len() as u64).div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::M(m) => 3 + item_size(m),
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<u64>(),
        _ => 1,
    }
}

/// The size of an item: its attribute names and values.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> u64 {
    item.iter()
        .map(|(k, v)| k.len() as u64 + value_size(v))
        .sum()
}

/// Write units of one item of `bytes` (one per started KB, at least one).
fn units(bytes: u64) -> u64 {
    bytes.div_ceil(1024).max(1)
}

#[derive(Debug)]
struct Counter(Arc<Capacity>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "blapi-capacity-counter"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use aws_sdk_dynamodb::operation as op;
        let input = context.input();
        let c = &self.0;
        if let Some(i) = input.downcast_ref::<op::put_item::PutItemInput>() {
            c.write(units(i.item.as_ref().map_or(0, item_size)), 1);
        } else if let Some(i) = input.downcast_ref::<op::update_item::UpdateItemInput>() {
            let set: u64 = i
                .expression_attribute_values
                .as_ref()
                .map_or(0, |v| v.values().map(value_size).sum());
            let key: u64 = i.key.as_ref().map_or(0, item_size);
            c.write(units(key + set), 1);
        } else if input
            .downcast_ref::<op::delete_item::DeleteItemInput>()
            .is_some()
        {
            c.write(1, 1);
        } else if let Some(i) = input.downcast_ref::<op::batch_write_item::BatchWriteItemInput>() {
            let (mut u, mut n) = (0, 0);
            for reqs in i.request_items.iter().flat_map(|m| m.values()) {
                for r in reqs {
                    n += 1;
                    u += match &r.put_request {
                        Some(p) => units(item_size(&p.item)),
                        None => 1,
                    };
                }
            }
            c.write(u, n);
        } else if let Some(i) =
            input.downcast_ref::<op::transact_write_items::TransactWriteItemsInput>()
        {
            let (mut u, mut n) = (0, 0);
            for t in i.transact_items.iter().flatten() {
                n += 1;
                u += 2 * match (&t.put, &t.update) {
                    (Some(p), _) => units(item_size(&p.item)),
                    (_, Some(up)) => units(
                        item_size(&up.key)
                            + up.expression_attribute_values
                                .as_ref()
                                .map_or(0, |v| v.values().map(value_size).sum()),
                    ),
                    _ => 1,
                };
            }
            c.transactions.fetch_add(1, Ordering::Relaxed);
            c.write(u, n);
        } else if let Some(i) = input.downcast_ref::<op::batch_get_item::BatchGetItemInput>() {
            let keys = i
                .request_items
                .iter()
                .flat_map(|m| m.values())
                .map(|k| k.keys.len() as u64)
                .sum();
            c.read(keys);
        } else if input.downcast_ref::<op::get_item::GetItemInput>().is_some() {
            c.read(1);
        } else if input.downcast_ref::<op::query::QueryInput>().is_some()
            || input.downcast_ref::<op::scan::ScanInput>().is_some()
        {
            c.read(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        let item = HashMap::from([
            (
                "pk".to_owned(),
                AttributeValue::S("USAGE#cus_1#sub_1".into()),
            ),
            ("v".to_owned(), AttributeValue::N("1500000".into())),
        ]);
        // "pk" 2 + 17, "v" 1 + (7 digits -> 4) + 1
        assert_eq!(item_size(&item), 2 + 17 + 1 + 5);
        assert_eq!(units(0), 1);
        assert_eq!(units(1024), 1);
        assert_eq!(units(1025), 2);
    }
}
