//! What a Stripe subscription means for licensing: [`SubscriptionState`] reads the raw
//! subscription (re-fetched for every event, because Stripe delivers events unordered and
//! duplicated) into what the minting rules need, or says clearly why it cannot. The objects
//! and the reads themselves are [`crate::stripe`]'s ([`crate::stripe::StripeReads`]).

use crate::error::{Error, Result};
use crate::stripe::{Expandable, Subscription};

/// What a subscription's status means for its license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Paid (or trialing): the current period must have a license.
    Licensed { trial: bool },
    /// Ended: its licenses are revoked.
    Ended,
    /// Not yet paid or in arrears: nothing to do now; a later event settles it.
    Pending,
}

/// A billing period, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The licensed item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicensedItem {
    pub quantity: u32,
    /// `sku` from the price's (or plan's) metadata.
    pub sku: Option<String>,
    /// The product, to read its metadata when the price has no `sku`.
    pub product_id: Option<String>,
    /// The product's `sku` when the product came expanded.
    pub product_sku: Option<String>,
}

/// A subscription parsed for the minting rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub standing: Standing,
    /// The current period; `None` only when the subscription is not licensed.
    pub period: Option<Period>,
    pub item: Option<LicensedItem>,
}

impl SubscriptionState {
    /// Reads what matters from a raw subscription. A licensed subscription without a period
    /// or item is malformed ([`Error::Invalid`]).
    pub fn from_subscription(sub: &Subscription) -> Result<Self> {
        let standing = match sub.status.as_str() {
            "active" => Standing::Licensed { trial: false },
            "trialing" => Standing::Licensed { trial: true },
            "canceled" | "incomplete_expired" => Standing::Ended,
            _ => Standing::Pending, // incomplete, past_due, unpaid, paused
        };
        let (start, end) = sub.current_period();
        let period = match (start, end) {
            (Some(s), Some(e)) if e > s => Some(Period {
                start_ms: s.saturating_mul(1000),
                end_ms: e.saturating_mul(1000),
            }),
            _ => None,
        };
        let pick = sub.main_item();
        let item = pick.map(|i| {
            let price = i.price_or_plan();
            LicensedItem {
                quantity: u32::try_from(i.quantity.unwrap_or(1)).unwrap_or(u32::MAX),
                sku: price.and_then(|p| p.metadata.get("sku")).map(str::to_owned),
                product_id: price
                    .and_then(|p| p.product.as_ref())
                    .map(|p| p.id().to_owned()),
                product_sku: price.and_then(|p| match &p.product {
                    Some(Expandable::Object(prod)) => prod.metadata.get("sku").map(str::to_owned),
                    _ => None,
                }),
            }
        });
        if let Standing::Licensed { .. } = standing {
            if period.is_none() {
                return Err(Error::Invalid(format!(
                    "subscription {} has no current period",
                    sub.id
                )));
            }
            if item.is_none() {
                return Err(Error::Invalid(format!(
                    "subscription {} has no items",
                    sub.id
                )));
            }
        }
        Ok(Self {
            id: sub.id.clone(),
            customer_id: sub.customer.id().to_owned(),
            status: sub.status.clone(),
            standing,
            period,
            item,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::StripeReads;
    use serde_json::json;

    #[test]
    fn parses_localstripe_plans_and_stripe_prices() {
        // localstripe: plan, periods on the subscription.
        let local: Subscription = serde_json::from_value(json!({
            "id": "sub_1", "customer": "cus_1", "status": "active",
            "current_period_start": 1_780_000_000, "current_period_end": 1_782_592_000,
            "items": {"object": "list", "data": [{"id": "si_1", "quantity": 7,
                "plan": {"id": "plan_1", "product": "prod_1", "metadata": {"sku": "enterprise"}}, "metadata": null}]}
        }))
        .unwrap();
        let s = SubscriptionState::from_subscription(&local).unwrap();
        assert_eq!(s.standing, Standing::Licensed { trial: false });
        assert_eq!(
            s.period,
            Some(Period {
                start_ms: 1_780_000_000_000,
                end_ms: 1_782_592_000_000
            })
        );
        let item = s.item.unwrap();
        assert_eq!(
            (item.quantity, item.sku.as_deref()),
            (7, Some("enterprise"))
        );

        // Stripe (2025+): price with expanded product, periods on the item.
        let real: Subscription = serde_json::from_value(json!({
            "id": "sub_2", "customer": {"id": "cus_2", "object": "customer"}, "status": "trialing",
            "items": {"data": [{"id": "si_2", "quantity": 3, "current_period_start": 10, "current_period_end": 20,
                "price": {"id": "price_1", "metadata": {}, "product": {"id": "prod_2", "metadata": {"sku": "professional"}}}}]}
        }))
        .unwrap();
        let s = SubscriptionState::from_subscription(&real).unwrap();
        assert_eq!(s.customer_id, "cus_2");
        assert_eq!(s.standing, Standing::Licensed { trial: true });
        let item = s.item.unwrap();
        assert_eq!(item.sku, None);
        assert_eq!(item.product_sku.as_deref(), Some("professional"));
        assert_eq!(item.product_id.as_deref(), Some("prod_2"));
    }

    #[test]
    fn statuses_map_to_standing_and_licensed_needs_a_period() {
        let mk = |status: &str, period: bool| {
            let mut v = json!({"id": "sub_1", "customer": "cus_1", "status": status,
                "items": {"data": [{"id": "si_1", "quantity": 1, "plan": {"id": "p", "metadata": {"sku": "professional"}}}]}});
            if period {
                v["current_period_start"] = json!(1);
                v["current_period_end"] = json!(2);
            }
            SubscriptionState::from_subscription(&serde_json::from_value(v).unwrap())
        };
        assert_eq!(mk("canceled", false).unwrap().standing, Standing::Ended);
        assert_eq!(
            mk("incomplete_expired", true).unwrap().standing,
            Standing::Ended
        );
        assert_eq!(mk("past_due", true).unwrap().standing, Standing::Pending);
        assert_eq!(mk("incomplete", true).unwrap().standing, Standing::Pending);
        assert!(matches!(mk("active", false), Err(Error::Invalid(_))));
    }

    #[tokio::test]
    async fn http_adapter_classifies_stripe_answers() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions/sub_ok"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "sub_ok", "object": "subscription", "customer": "cus_1", "status": "active",
                "items": {"object": "list", "data": [{"id": "si_1", "quantity": 2, "current_period_start": 1, "current_period_end": 2,
                    "price": {"id": "price_1", "product": "prod_1", "metadata": {"sku": "advanced"}}}]}})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions/sub_gone"))
            .respond_with(ResponseTemplate::new(404).set_body_json(
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}}),
            ))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/customers/cus_busy"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        let api = crate::stripe::StripeClient::new(
            server.uri(),
            crate::config::Secret::new("sk_test_x".into()),
            std::time::Duration::from_secs(2),
        )
        .unwrap()
        .with_retry(crate::retry::RetryPolicy::immediate(2));
        let sub = api.subscription("sub_ok").await.unwrap();
        let state = SubscriptionState::from_subscription(&sub).unwrap();
        assert_eq!(state.item.unwrap().sku.as_deref(), Some("advanced"));
        let e = api.subscription("sub_gone").await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)) && !e.is_retryable());
        assert!(api.customer("cus_busy").await.unwrap_err().is_retryable());
        // Ids are checked before they go into a URL.
        assert!(matches!(
            api.subscription("../customers/x").await,
            Err(Error::Invalid(_))
        ));
        assert_eq!(api.calls(), 1 + 1 + 2);
    }
}
