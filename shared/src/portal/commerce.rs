//! What a customer does in the portal beyond reading: usage to date (priced by billing's own
//! [`compose_invoice`]), a self-service purchase (a Stripe Checkout Session), a seat change
//! (a proration preview, then the change — or, above the self-service limit, a sales-assisted
//! Opportunity instead), and a privacy request for the signed-in person (handed to
//! privacy-requests).
//!
//! Bodies are JSON with no unknown fields; a wrong one is a 400 naming the field, never
//! quoting the value. Every Stripe write carries a key derived from the request's
//! `Idempotency-Key`, so a retried request never does anything twice.

use super::api::{Caller, PortalApi, problem_of};
use super::http::{Request, Response, Route};
use super::problem::Problem;
use crate::billing::period::Period;
use crate::billing::service::compose_invoice;
use crate::crm::{CrmOpportunity, CrmRecord, OpportunityStage};
use crate::customers::service::annual_value;
use crate::error::Error;
use crate::privacy::deadline::due_date;
use crate::privacy::input::RequestFields;
use crate::queue::EventMessage;
use crate::stripe::{NewCheckoutSession, SeatChange, Subscription};
use crate::values::Money;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

type Answer = std::result::Result<Response, Problem>;

/// The body as `T`, or a 400 naming the field at fault (never quoting a value).
pub(super) fn body<T: DeserializeOwned>(req: &Request) -> std::result::Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(&req.body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let text = e.inner().to_string();
        let named = ["unknown field `", "missing field `", "duplicate field `"]
            .iter()
            .find_map(|p| text.strip_prefix(p))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = named
            .unwrap_or_else(|| e.path().to_string())
            .chars()
            .take(64)
            .collect::<String>();
        let field = if !field.is_empty()
            && field != "."
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            field
        } else {
            "body".to_owned()
        };
        Problem::invalid(field, crate::error::json_error(e.inner()))
    })
}

/// A whole number, however JSON spells it: `5` and `5.0` are the same integer (JSON Schema's
/// `integer`), `5.5` is refused.
fn whole<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error as _;
    let n = serde_json::Number::deserialize(d)?;
    let i = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        // Exactly representable and whole (|f| < 2^53 keeps the cast exact).
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Some(f as i64),
        _ => None,
    };
    i.and_then(|i| T::try_from(i).ok())
        .ok_or_else(|| D::Error::custom("out of range or not a whole number"))
}

fn whole_opt<'de, D>(d: D) -> std::result::Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "whole")] i64);
    Ok(Option::<W>::deserialize(d)?.map(|W(i)| i))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseBody {
    sku: String,
    #[serde(deserialize_with = "whole")]
    seats: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeatBody {
    #[serde(deserialize_with = "whole")]
    seats: u32,
    /// The preview's `proration.date`: the change is prorated exactly as previewed.
    #[serde(default, deserialize_with = "whole_opt")]
    proration_date: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivacyBody {
    kind: String,
    jurisdiction: String,
    #[serde(default)]
    opted_out: Option<bool>,
}

/// A seat change, checked and valued.
struct SeatPlan {
    change: SeatChange,
    sku: String,
    current_seats: u32,
    current_value: Option<Money>,
    proposed_value: Option<Money>,
    /// Over the self-service limit (or not valued): sales-assisted.
    needs_sales: bool,
}

impl PortalApi {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.ports.clock)()
    }

    /// `GET /v1/usage[?period=YYYY-MM]`: the period's usage and what it costs so far, from the
    /// same composition a bill run invoices.
    pub(super) async fn usage(&self, caller: &Caller, req: &Request) -> Answer {
        let fail = |e| problem_of(e, &Route::Usage);
        let open = Period::of(self.now());
        let period = match req.query.get("period") {
            None => open,
            Some(p) => p
                .parse::<Period>()
                .ok()
                .filter(|p| *p <= open)
                .ok_or_else(|| {
                    Problem::invalid("period", "a past or the current month, YYYY-MM")
                })?,
        };
        let p = &self.ports;
        let invoice = compose_invoice(
            p.usage.as_ref(),
            p.subscriptions.as_ref(),
            p.credits.as_ref(),
            &p.book,
            &caller.customer,
            period,
        )
        .await
        .map_err(fail)?;
        let Some(inv) = invoice else {
            return Ok(Response::json(
                200,
                &json!({"period": period.to_string(), "open": period == open, "lines": [], "total": null}),
            ));
        };
        let money = |a: i64| inv.money(a);
        Ok(Response::json(
            200,
            &json!({
                "period": period.to_string(),
                "open": period == open,
                "as_of": self.now().timestamp(),
                "currency": inv.currency,
                "price_book": inv.price_book_version,
                "lines": inv.lines,
                "subtotal": money(inv.subtotal),
                "credit_applied": money(inv.credit_applied),
                "total": money(inv.total),
            }),
        ))
    }

    /// `POST /v1/checkout-sessions` `{"sku", "seats"}`: a Checkout Session for the caller's
    /// customer; the purchase then arrives through Stripe's webhooks like any other.
    pub(super) async fn checkout(&self, caller: &Caller, req: &Request) -> Answer {
        let fail = |e| problem_of(e, &Route::Checkout);
        let b: PurchaseBody = body(req)?;
        let offer = self
            .settings
            .catalog
            .get(&b.sku)
            .ok_or_else(|| Problem::invalid("sku", "not a SKU sold self-service"))?;
        check_seats(b.seats, offer.max_seats)?;
        let mut metadata = BTreeMap::from([
            ("sku".to_owned(), b.sku.clone()),
            ("source".to_owned(), "portal".to_owned()),
        ]);
        if let Some(plan) = &offer.plan {
            metadata.insert("blapi_plan".into(), plan.clone());
        }
        let back = |outcome: &str| {
            let sep = if self.settings.return_url.contains('?') {
                '&'
            } else {
                '?'
            };
            format!("{}{sep}checkout={outcome}", self.settings.return_url)
        };
        let session = NewCheckoutSession {
            customer: caller.customer.clone(),
            price: offer.price.clone(),
            quantity: b.seats,
            success_url: back("success"),
            cancel_url: back("cancelled"),
            automatic_tax: self.settings.automatic_tax,
            metadata,
        };
        let s = self
            .ports
            .stripe
            .create_checkout_session(&session, &stripe_key(caller, "checkout"))
            .await
            .map_err(fail)?;
        let url = s.url.clone().ok_or_else(|| {
            fail(Error::dependency(
                "stripe",
                false,
                "the Checkout Session has no url",
            ))
        })?;
        Ok(Response::json(
            201,
            &json!({
                "id": s.id,
                "url": url,
                "expires_at": s.expires_at,
                "sku": b.sku,
                "seats": b.seats,
                "automatic_tax": self.settings.automatic_tax,
            }),
        ))
    }

    /// `GET /v1/subscriptions/{id}/seats?seats=N`: what the change would cost now (Stripe's
    /// proration) and a year (the contract value), and whether it can be done self-service.
    pub(super) async fn seat_preview(&self, caller: &Caller, sub: &str, req: &Request) -> Answer {
        let route = Route::SeatPreview(sub.to_owned());
        let seats = req
            .query
            .get("seats")
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| Problem::invalid("seats", "the new seat count: ?seats=N"))?;
        let plan = self
            .seat_plan(caller, sub, seats, self.now().timestamp(), &route)
            .await?;
        let preview = self
            .ports
            .stripe
            .preview_seat_change(&plan.change)
            .await
            .map_err(|e| problem_of(e, &route))?;
        Ok(Response::json(
            200,
            &json!({
                "subscription": plan.change.subscription,
                "sku": plan.sku,
                "current_seats": plan.current_seats,
                "seats": plan.change.quantity,
                "currency": preview.currency,
                "proration": {
                    "amount": preview.proration(),
                    "date": plan.change.proration_date,
                },
                "next_invoice_total": preview.total,
                "annual_value": {"current": plan.current_value, "proposed": plan.proposed_value},
                "self_service_limit": self.settings.self_service_limit,
                "action": if plan.needs_sales { "sales_assisted" } else { "apply" },
            }),
        ))
    }

    /// `POST /v1/subscriptions/{id}/seats` `{"seats", "proration_date"?}`: the change, prorated
    /// from the previewed date; above the self-service limit an Opportunity for the account's
    /// owner instead (202).
    pub(super) async fn seat_change(&self, caller: &Caller, sub: &str, req: &Request) -> Answer {
        let route = Route::SeatChange(sub.to_owned());
        let fail = |e| problem_of(e, &route);
        let b: SeatBody = body(req)?;
        let now = self.now().timestamp();
        let date = match b.proration_date {
            None => now,
            // A preview's date: not in the future, at most a day old.
            Some(d) if d <= now + 60 && d >= now - 24 * 3600 => d,
            Some(_) => {
                return Err(Problem::invalid(
                    "proration_date",
                    "the preview's proration date, within the last 24 hours",
                ));
            }
        };
        let plan = self.seat_plan(caller, sub, b.seats, date, &route).await?;
        if plan.needs_sales {
            let opportunity = self.sales_assisted(caller, &plan).await.map_err(fail)?;
            return Ok(Response::json(
                202,
                &json!({
                    "status": "sales_assisted",
                    "subscription": plan.change.subscription,
                    "seats": plan.change.quantity,
                    "annual_value": plan.proposed_value,
                    "self_service_limit": self.settings.self_service_limit,
                    "opportunity": opportunity,
                    "message": "This change exceeds the self-service limit: it was not applied. Your account team will contact you to complete it.",
                }),
            ));
        }
        let updated = self
            .ports
            .stripe
            .apply_seat_change(&plan.change, &stripe_key(caller, "seats"))
            .await
            .map_err(fail)?;
        let seats = updated
            .items
            .data
            .iter()
            .find(|i| i.id == plan.change.item)
            .and_then(|i| i.quantity);
        Ok(Response::json(
            200,
            &json!({
                "status": "applied",
                "subscription": updated.id,
                "seats": seats,
                "previous_seats": plan.current_seats,
                "proration_date": plan.change.proration_date,
                "annual_value": plan.proposed_value,
            }),
        ))
    }

    /// The subscription (the caller's, live), its main item, the seat count checked against
    /// the SKU's offer, and the annual values before and after.
    async fn seat_plan(
        &self,
        caller: &Caller,
        sub_id: &str,
        seats: u32,
        proration_date: i64,
        route: &Route,
    ) -> std::result::Result<SeatPlan, Problem> {
        let fail = |e| problem_of(e, route);
        let sub = match self.ports.stripe.subscription(sub_id).await {
            Ok(s) => s,
            // Unknown, or not an id Stripe could have issued: missing either way.
            Err(Error::NotFound(_) | Error::Invalid(_)) => {
                return Err(Problem::not_found("subscription"));
            }
            Err(e) => return Err(fail(e)),
        };
        // Another customer's subscription is missing, exactly like an unknown one.
        if sub.customer.id() != caller.customer {
            return Err(Problem::not_found("subscription"));
        }
        if !matches!(sub.status.as_str(), "active" | "trialing") {
            return Err(Problem::new(
                409,
                "subscription-not-active",
                "Subscription not active",
                "only an active subscription's seats can be changed",
            ));
        }
        let item = sub
            .main_item()
            .ok_or_else(|| Problem::not_found("subscription"))?;
        let price = item
            .price_or_plan()
            .ok_or_else(|| Problem::not_found("subscription"))?;
        let sku = match price.metadata.get("sku") {
            Some(s) => s.to_owned(),
            None => match &price.product {
                Some(p) => self
                    .ports
                    .stripe
                    .product(p.id())
                    .await
                    .map_err(fail)?
                    .metadata
                    .get("sku")
                    .unwrap_or_default()
                    .to_owned(),
                None => String::new(),
            },
        };
        let offer = self.settings.catalog.get(&sku).ok_or_else(|| {
            Problem::new(
                409,
                "not-self-service",
                "Not self-service",
                "this subscription's seats are changed through your account team",
            )
        })?;
        check_seats(seats, offer.max_seats)?;
        let current_seats = u32::try_from(item.quantity.unwrap_or(1)).unwrap_or(u32::MAX);
        if seats == current_seats {
            return Err(Problem::invalid(
                "seats",
                "the subscription already has this many seats",
            ));
        }
        let current_value = self.contract_value(&sub, current_seats);
        let proposed_value = self.contract_value(&sub, seats);
        let limit = &self.settings.self_service_limit;
        let needs_sales = match &proposed_value {
            Some(v) if v.currency == limit.currency => v.amount > limit.amount,
            // Another currency or no value: a person decides.
            _ => true,
        };
        Ok(SeatPlan {
            change: SeatChange {
                customer: caller.customer.clone(),
                subscription: sub.id.clone(),
                item: item.id.clone(),
                price: price.id.clone(),
                quantity: seats,
                proration_date,
            },
            sku,
            current_seats,
            current_value,
            proposed_value,
            needs_sales,
        })
    }

    /// The subscription's annual value at `seats`: its Stripe prices (as customer sync values
    /// them) plus the fixed charges of its price-book plan (as billing prices them), a year of
    /// monthly periods. `None` when neither knows a price.
    fn contract_value(&self, sub: &Subscription, seats: u32) -> Option<Money> {
        let mut at = sub.clone();
        let main = at.main_item().map(|i| i.id.clone());
        for i in &mut at.items.data {
            if Some(&i.id) == main.as_ref() {
                i.quantity = Some(u64::from(seats));
            }
        }
        let stripe = annual_value(&at).filter(|m| m.amount > 0);
        let plan_id = sub
            .metadata
            .get("blapi_plan")
            .map(str::to_owned)
            .or_else(|| {
                at.main_item()
                    .and_then(|i| i.price_or_plan())
                    .map(|p| p.id.clone())
            });
        let book = plan_id
            .and_then(|id| self.ports.book.plan(&id).map(|(_, p)| p))
            .map(|p| p.fixed_monthly(i64::from(seats)))
            .map(|m| Money::new(m.amount.saturating_mul(12), m.currency));
        match (stripe, book) {
            (Some(a), Some(b)) if a.currency == b.currency => {
                Some(Money::new(a.amount.saturating_add(b.amount), a.currency))
            }
            (Some(_), Some(_)) => None,
            (a, b) => a.or(b),
        }
    }

    /// An open Opportunity for the account's owner: the change, its value, why it is here.
    async fn sales_assisted(
        &self,
        caller: &Caller,
        plan: &SeatPlan,
    ) -> crate::error::Result<Value> {
        let state = self.ports.customers.load(&caller.customer).await?;
        let owner = state
            .and_then(|s| s.owner_id)
            .unwrap_or_else(|| self.settings.sales_owner.clone());
        let day = self.now().format("%Y-%m-%d").to_string();
        let external_id = format!(
            "seats:{}:{}:{day}",
            plan.change.subscription, plan.change.quantity
        );
        let opp = CrmOpportunity {
            external_id: external_id.clone(),
            account_external_id: caller.customer.clone(),
            name: format!(
                "Seat change · {} · {} seats",
                plan.sku, plan.change.quantity
            ),
            stage: OpportunityStage::Open,
            amount: plan.proposed_value.clone(),
            seats: Some(plan.change.quantity),
            sku: Some(plan.sku.clone()),
            close_date: (self.now() + chrono::Duration::days(30))
                .format("%Y-%m-%d")
                .to_string(),
            subscription_id: plan.change.subscription.clone(),
            license_id: None,
            loss_reason: None,
            flags: vec!["sales-assisted".into(), "seat-change".into()],
            owner_id: owner.clone(),
        };
        self.ports
            .crm
            .upsert(&CrmRecord::Opportunity(opp))
            .await
            .map_err(Error::from)?;
        tracing::info!(
            customer_id = %caller.customer,
            subscription = %plan.change.subscription,
            seats = plan.change.quantity,
            "seat change above the self-service limit: opportunity created"
        );
        Ok(json!({"external_id": external_id, "owner": owner, "stage": "Open"}))
    }

    /// `POST /v1/privacy-requests` `{"kind", "jurisdiction", "opted_out"?}`: the signed-in
    /// person's request, checked here and handed to privacy-requests (its queue); answered
    /// with its id and the legal deadline. Only the person's own token may ask: an operator
    /// files requests with privacy-requests directly.
    pub(super) async fn privacy_request(&self, caller: &Caller, req: &Request) -> Answer {
        let b: PrivacyBody = body(req)?;
        let email = caller.email.clone().ok_or_else(|| {
            Problem::new(
                403,
                "no-verified-email",
                "Forbidden",
                "a privacy request is made by the signed-in person: the token carries no verified email",
            )
        })?;
        let now = self.now();
        let fields = RequestFields {
            email,
            kind: b.kind.clone(),
            jurisdiction: b.jurisdiction.clone(),
            opted_out: b.opted_out,
        };
        let id = format!(
            "portal-api-{}",
            caller.idempotency.as_deref().unwrap_or_default()
        );
        let submission = fields.clone().submission(id.clone(), now).map_err(|e| {
            // The checks name their field first ("kind ...", "jurisdiction ...").
            let text = match &e {
                Error::Invalid(m) => m.as_str(),
                _ => "",
            };
            let field = ["kind", "jurisdiction", "opted_out", "email"]
                .into_iter()
                .find(|f| text.starts_with(f))
                .unwrap_or("body");
            Problem::invalid(field, privacy_detail(field))
        })?;
        let message = EventMessage {
            id: id.clone(),
            source: "portal".into(),
            event_type: "privacy.request".into(),
            received_at: now,
            // Not archived: the request's own record (with its audit trail) is the trace.
            raw_key: String::new(),
            event: json!({"type": "privacy.request", "data": {
                "email": fields.email,
                "kind": fields.kind,
                "jurisdiction": fields.jurisdiction,
                "opted_out": fields.opted_out,
            }}),
        };
        let body = serde_json::to_string(&message)
            .map_err(|e| problem_of(Error::Invalid(e.to_string()), &Route::PrivacyRequest))?;
        self.ports
            .queue
            .send(&self.settings.privacy_queue_url, body)
            .await
            .map_err(|e| problem_of(e, &Route::PrivacyRequest))?;
        let request_id = crate::privacy::input::request_id_for_event("portal", &id);
        tracing::info!(customer_id = %caller.customer, request_id = %request_id, kind = %b.kind, "privacy request handed over");
        Ok(Response::json(
            202,
            &json!({
                "request_id": request_id,
                "kind": b.kind,
                "jurisdiction": b.jurisdiction,
                "received": submission.received.to_string(),
                "due": due_date(submission.jurisdiction, submission.received, false).to_string(),
                "status": "received",
            }),
        ))
    }
}

fn privacy_detail(field: &str) -> &'static str {
    match field {
        "kind" => "one of access, erasure, opt_out",
        "jurisdiction" => "one of gdpr, ccpa",
        "opted_out" => "belongs to an opt_out request only",
        "email" => "the token's email is not a usable address",
        _ => "the request is not valid",
    }
}

/// 1 to the offer's maximum.
fn check_seats(seats: u32, max: u32) -> std::result::Result<(), Problem> {
    if seats == 0 || seats > max {
        return Err(Problem::invalid(
            "seats",
            format!("between 1 and {max} seats self-service; more through your account team"),
        ));
    }
    Ok(())
}

/// Stripe's `Idempotency-Key` for `op` of this request: derived from the caller's own key, so
/// a retried request sends the same one.
fn stripe_key(caller: &Caller, op: &str) -> String {
    format!(
        "portal-{op}-{}",
        caller.idempotency.as_deref().unwrap_or_default()
    )
}
