//! The Stripe objects the project reads, parsed leniently: real Stripe and localstripe differ
//! (prices vs plans, periods on items since 2025 vs on the subscription), and fields we do
//! not read are ignored. Requests we send are typed too ([`NewInvoiceItem`], [`NewInvoice`]).

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Objects that have an id (paging follows the last id of a page).
pub trait HasId {
    fn id(&self) -> &str;
}

macro_rules! has_id {
    ($($t:ty),*) => {$(
        impl HasId for $t {
            fn id(&self) -> &str {
                &self.id
            }
        }
    )*};
}

/// An id or the expanded object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

impl<T: HasId> Expandable<T> {
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) => id,
            Expandable::Object(o) => o.id(),
        }
    }
}

/// A page of a Stripe list.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

/// Stripe metadata: string keys and values (`null` and absent read as empty; a non-string
/// value, which only a fake could send, reads as its JSON text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(pub BTreeMap<String, String>);

impl Metadata {
    /// The trimmed value of `key`, if present and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?;
        Ok(Metadata(
            raw.unwrap_or_default()
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
        ))
    }
}

/// A postal address (most readers need the country only; the invoice document prints it all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Address {
    #[serde(default)]
    pub line1: Option<String>,
    #[serde(default)]
    pub line2: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// ISO 3166-1 alpha-2, as Stripe sends it.
    #[serde(default)]
    pub country: Option<String>,
}

/// A Stripe customer (possibly deleted).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub deleted: bool,
}

impl Customer {
    /// `metadata.company`, else the customer's name.
    pub fn company(&self) -> String {
        self.metadata
            .get("company")
            .map(str::to_owned)
            .or_else(|| self.name.clone())
            .unwrap_or_default()
    }
}

/// A Stripe product.
#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// A Stripe price (or legacy plan: the fields we read are the same).
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub product: Option<Expandable<Product>>,
    #[serde(default)]
    pub metadata: Metadata,
    /// Minor units per unit (`amount` on localstripe's plans).
    #[serde(default, alias = "amount")]
    pub unit_amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// How often a recurring price bills (prices).
    #[serde(default)]
    pub recurring: Option<Recurring>,
    /// The same on a legacy plan (localstripe).
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub interval_count: Option<u32>,
}

/// A recurring price's billing interval.
#[derive(Debug, Clone, Deserialize)]
pub struct Recurring {
    pub interval: String,
    #[serde(default)]
    pub interval_count: Option<u32>,
}

impl Price {
    /// The billing interval (`day`, `week`, `month`, `year`) and its count (at least 1);
    /// `None` for a one-off price.
    pub fn interval_of(&self) -> Option<(&str, u32)> {
        let (interval, count) = match &self.recurring {
            Some(r) => (r.interval.as_str(), r.interval_count),
            None => (self.interval.as_deref()?, self.interval_count),
        };
        Some((interval, count.unwrap_or(1).max(1)))
    }

    /// Billing periods per year as a fraction `(numerator, denominator)`: monthly `12/1`,
    /// every 3 months `12/3`, yearly `1/1`, weekly `52/1`, daily `365/1`. `None` for a
    /// one-off price or an unknown interval.
    pub fn periods_per_year(&self) -> Option<(i64, i64)> {
        let (interval, count) = self.interval_of()?;
        let count = i64::from(count);
        let per_year = match interval {
            "day" => 365,
            "week" => 52,
            "month" => 12,
            "year" => 1,
            _ => return None,
        };
        Some((per_year, count))
    }
}

/// A subscription item.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    #[serde(default)]
    pub quantity: Option<u64>,
    #[serde(default)]
    pub price: Option<Price>,
    #[serde(default)]
    pub plan: Option<Price>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

impl SubscriptionItem {
    /// The price, or the legacy plan.
    pub fn price_or_plan(&self) -> Option<&Price> {
        self.price.as_ref().or(self.plan.as_ref())
    }
}

/// A Stripe subscription.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: Expandable<Customer>,
    pub status: String,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub canceled_at: Option<i64>,
    #[serde(default)]
    pub cancellation_details: Option<CancellationDetails>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    pub items: List<SubscriptionItem>,
    /// The discount applied to every invoice of the subscription (a coupon), if any.
    #[serde(default)]
    pub discount: Option<Discount>,
}

/// A coupon applied to a subscription (Stripe's `discount`).
#[derive(Debug, Clone, Deserialize)]
pub struct Discount {
    pub coupon: Coupon,
    /// When a `repeating` discount stops applying (seconds); `None` for `forever`.
    #[serde(default)]
    pub end: Option<i64>,
}

/// A coupon: a percentage or an amount off each invoice, `once`, `repeating` or `forever`.
#[derive(Debug, Clone, Deserialize)]
pub struct Coupon {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub percent_off: Option<f64>,
    /// Minor units off each invoice, in `currency`.
    #[serde(default)]
    pub amount_off: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// `once`, `repeating` or `forever`.
    #[serde(default)]
    pub duration: Option<String>,
}

/// Why a subscription was cancelled (Stripe's `cancellation_details`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CancellationDetails {
    /// `cancellation_requested`, `payment_failed`, `payment_disputed`.
    #[serde(default)]
    pub reason: Option<String>,
    /// The customer's answer (`too_expensive`, `switched_service`, ...).
    #[serde(default)]
    pub feedback: Option<String>,
}

/// A charge (refunds and disputes point at one).
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub invoice: Option<String>,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub amount_refunded: Option<i64>,
    #[serde(default)]
    pub refunded: bool,
    #[serde(default)]
    pub currency: Option<String>,
}

impl Subscription {
    /// The current period `(start, end)` in seconds: on the subscription (localstripe, API
    /// versions before 2025) or on its first item (since 2025).
    pub fn current_period(&self) -> (Option<i64>, Option<i64>) {
        let first = self.items.data.first();
        (
            self.current_period_start
                .or_else(|| first.and_then(|i| i.current_period_start)),
            self.current_period_end
                .or_else(|| first.and_then(|i| i.current_period_end)),
        )
    }

    /// The item that carries the product: the first whose price (or plan) names a `sku` in
    /// its metadata, else the first item.
    pub fn main_item(&self) -> Option<&SubscriptionItem> {
        self.items
            .data
            .iter()
            .find(|i| {
                i.price_or_plan()
                    .is_some_and(|p| p.metadata.get("sku").is_some())
            })
            .or(self.items.data.first())
    }
}

/// A Stripe invoice.
#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<String>,
    /// The subscription it bills (`parent.subscription_details.subscription` since 2025).
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    /// What the customer's document shows (Stripe Tax, the number, the customer snapshot).
    #[serde(flatten)]
    pub document: InvoiceDocument,
}

/// The parts of an invoice its document shows: amounts with and without tax, the tax per
/// line and per rate, Stripe's number and dates, the pay link and the customer as they were
/// when it was finalized. Every field is optional: localstripe sends few of them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvoiceDocument {
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub subtotal: Option<i64>,
    /// Total tax (API versions before 2025-03-31).
    #[serde(default)]
    pub tax: Option<i64>,
    #[serde(default)]
    pub total_excluding_tax: Option<i64>,
    #[serde(default)]
    pub amount_due: Option<i64>,
    /// Tax per rate (before 2025-03-31).
    #[serde(default)]
    pub total_tax_amounts: Vec<TaxAmount>,
    /// Tax per rate (since 2025-03-31).
    #[serde(default)]
    pub total_taxes: Vec<TaxAmount>,
    #[serde(default)]
    pub automatic_tax: Option<AutomaticTax>,
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub customer_address: Option<Address>,
    #[serde(default)]
    pub customer_tax_ids: Option<Vec<CustomerTaxId>>,
    /// `none`, `exempt`, `reverse`.
    #[serde(default)]
    pub customer_tax_exempt: Option<String>,
    #[serde(default)]
    pub status_transitions: Option<StatusTransitions>,
    #[serde(default)]
    pub due_date: Option<i64>,
    /// Stripe's page where the customer pays.
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    /// Stripe's own PDF of the invoice.
    #[serde(default)]
    pub invoice_pdf: Option<String>,
    /// The first page of lines (`has_more` says whether there are others).
    #[serde(default)]
    pub lines: Option<List<InvoiceLine>>,
}

/// Stripe Tax on an invoice: whether it is on and how its last calculation went.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AutomaticTax {
    #[serde(default)]
    pub enabled: bool,
    /// `complete`, `requires_location_inputs`, `failed`.
    #[serde(default)]
    pub status: Option<String>,
    /// Set when Stripe finalized without tax (`finalization_requires_location_inputs`).
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

/// When an invoice changed state (seconds).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusTransitions {
    #[serde(default)]
    pub finalized_at: Option<i64>,
    #[serde(default)]
    pub paid_at: Option<i64>,
}

/// A customer's tax id as the invoice recorded it (`eu_vat`, `DE123456789`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CustomerTaxId {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// One tax amount of a line or of the invoice. Stripe's shape before 2025-03-31
/// (`tax_amounts[]`, `total_tax_amounts[]`: `tax_rate` an id or the expanded rate) and after
/// (`taxes[]`, `total_taxes[]`: `tax_rate_details.tax_rate`, `tax_behavior`) both read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaxAmount {
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub inclusive: Option<bool>,
    /// `exclusive` or `inclusive` (since 2025-03-31).
    #[serde(default)]
    pub tax_behavior: Option<String>,
    #[serde(default)]
    pub tax_rate: Option<Expandable<TaxRate>>,
    #[serde(default)]
    pub tax_rate_details: Option<TaxRateDetails>,
    /// Why this amount is what it is: `standard_rated`, `customer_exempt`, `reverse_charge`,
    /// `not_collecting`, `zero_rated`, ...
    #[serde(default)]
    pub taxability_reason: Option<String>,
    #[serde(default)]
    pub taxable_amount: Option<i64>,
}

impl TaxAmount {
    /// Whether the amount is included in the line's amount (not added to it).
    pub fn is_inclusive(&self) -> bool {
        self.inclusive
            .unwrap_or(self.tax_behavior.as_deref() == Some("inclusive"))
    }

    /// The rate, whichever shape named it.
    pub fn rate(&self) -> Option<&Expandable<TaxRate>> {
        self.tax_rate.as_ref().or_else(|| {
            self.tax_rate_details
                .as_ref()
                .and_then(|d| d.tax_rate.as_ref())
        })
    }
}

/// `tax_rate_details` of a tax amount (since 2025-03-31).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaxRateDetails {
    #[serde(default)]
    pub tax_rate: Option<Expandable<TaxRate>>,
}

/// A tax rate: `VAT` 19 % in `DE`, `Sales Tax` 8.875 % in `New York`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaxRate {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub jurisdiction: Option<String>,
    /// A decimal number (`19.0`, `8.875`), kept as Stripe wrote it.
    #[serde(default)]
    pub percentage: Option<serde_json::Number>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub inclusive: Option<bool>,
}

/// A Stripe invoice item (pending until an invoice collects it).
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceItem {
    pub id: String,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub invoice: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// A Checkout Session.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    /// Where to send the buyer (an open session only).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub customer_details: Option<CustomerDetails>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// What the customer typed into Checkout.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CustomerDetails {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: Option<Address>,
}

/// A Stripe event envelope; `data.object` stays JSON (its shape depends on `type`).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub livemode: bool,
    pub data: EventData,
}

/// An event's payload.
#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

has_id!(
    TaxRate,
    Customer,
    Product,
    Price,
    Subscription,
    Invoice,
    InvoiceItem,
    CheckoutSession
);

/// The subscription an event is about: `data.object.id` for subscription events,
/// `data.object.subscription` for invoices (or `parent.subscription_details.subscription` in
/// API versions since 2025) and checkout sessions. `None`: the event concerns no subscription
/// (a one-off invoice, a payment-mode checkout).
pub fn subscription_of(event: &serde_json::Value) -> Option<String> {
    let object = &event["data"]["object"];
    let kind = object["object"].as_str().unwrap_or_default();
    let event_type = event["type"].as_str().unwrap_or_default();
    let id = if kind == "subscription" || event_type.starts_with("customer.subscription.") {
        object["id"].as_str()
    } else {
        object["subscription"]
            .as_str()
            .or_else(|| object["subscription"]["id"].as_str())
            .or_else(|| object["parent"]["subscription_details"]["subscription"].as_str())
    };
    id.filter(|s| s.starts_with("sub_")).map(str::to_owned)
}

/// An invoice item to create. `metadata` carries our key, so a resumed run finds it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvoiceItem {
    pub customer: String,
    /// The draft invoice it is a line of (`invoice`). `None` leaves it pending, to be swept
    /// into the customer's next invoice: billing never does that.
    pub invoice: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    /// `exclusive` (tax is added to the amount) when Stripe Tax computes the tax; `None` sends
    /// nothing (an API without Stripe Tax refuses the parameter).
    pub tax_behavior: Option<String>,
}

/// A one-off amount off one invoice (how a credit reaches an invoice that Stripe Tax
/// computes: negative items are refused there). The id is ours, so a rerun finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCoupon {
    pub id: String,
    /// Minor units.
    pub amount_off: i64,
    pub currency: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
}

/// A self-service purchase: a Checkout Session in `subscription` mode for one price and a seat
/// count, for an existing customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckoutSession {
    pub customer: String,
    pub price: String,
    pub quantity: u32,
    pub success_url: String,
    pub cancel_url: String,
    /// Stripe Tax computes the tax (the customer's address is collected and saved).
    pub automatic_tax: bool,
    /// Copied onto the session and onto the subscription it creates.
    pub metadata: BTreeMap<String, String>,
}

/// A change of a subscription's seat count (its main item's quantity), prorated from
/// `proration_date` (seconds): the preview and the change use the same date, so the amount
/// charged is the amount previewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatChange {
    pub customer: String,
    pub subscription: String,
    pub item: String,
    /// The item's price (or plan) id: unchanged by the change.
    pub price: String,
    pub quantity: u32,
    pub proration_date: i64,
}

/// One line of an invoice (or of a preview).
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLine {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub proration: bool,
    #[serde(default)]
    pub description: Option<String>,
    /// The invoice item it bills (before 2025-03-31; since, under `parent`).
    #[serde(default)]
    pub invoice_item: Option<String>,
    #[serde(default)]
    pub parent: Option<serde_json::Value>,
    #[serde(default)]
    pub metadata: Metadata,
    /// Tax of the line (before 2025-03-31).
    #[serde(default)]
    pub tax_amounts: Vec<TaxAmount>,
    /// Tax of the line (since 2025-03-31).
    #[serde(default)]
    pub taxes: Vec<TaxAmount>,
}

impl InvoiceLine {
    /// The invoice item the line bills, in either API shape.
    pub fn item_id(&self) -> Option<&str> {
        self.invoice_item.as_deref().or_else(|| {
            self.parent
                .as_ref()
                .and_then(|p| p.pointer("/invoice_item_details/invoice_item"))
                .and_then(serde_json::Value::as_str)
        })
    }

    /// The line's tax amounts, in either API shape.
    pub fn tax(&self) -> &[TaxAmount] {
        if self.tax_amounts.is_empty() {
            &self.taxes
        } else {
            &self.tax_amounts
        }
    }
}

/// Stripe's upcoming invoice for a proposed change (nothing is created).
#[derive(Debug, Clone, Deserialize)]
pub struct InvoicePreview {
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub total: Option<i64>,
    #[serde(default)]
    pub amount_due: Option<i64>,
    pub lines: List<InvoiceLine>,
}

impl InvoicePreview {
    /// The prorations of the change: what it adds to the next invoice (negative: a credit).
    pub fn proration(&self) -> i64 {
        self.lines
            .data
            .iter()
            .filter(|l| l.proration)
            .map(|l| l.amount)
            .fold(0, i64::saturating_add)
    }
}

/// A card as the portal shows it: never the number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Card {
    #[serde(default)]
    pub brand: String,
    #[serde(default)]
    pub last4: String,
    #[serde(default)]
    pub exp_month: u32,
    #[serde(default)]
    pub exp_year: u32,
}

/// An invoice to create: an empty draft (`pending_invoice_items_behavior=exclude`,
/// `auto_advance=false`) that its items are then attached to. The customer's other pending
/// items are never swept into it, and Stripe does not finalize it on its own while it is
/// being filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvoice {
    pub customer: String,
    /// Lower-case ISO 4217 (an empty invoice has no item to take it from).
    pub currency: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    /// Stripe Tax computes the tax (`automatic_tax[enabled]=true`); `false` sends nothing.
    pub automatic_tax: bool,
    /// Coupons applied to the invoice (`discounts[n][coupon]`).
    pub coupons: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subscription_id_from_each_event_kind() {
        let sub = json!({"type": "customer.subscription.created", "data": {"object": {"object": "subscription", "id": "sub_1"}}});
        let inv = json!({"type": "invoice.payment_succeeded", "data": {"object": {"object": "invoice", "id": "in_1", "subscription": "sub_2"}}});
        let inv_new = json!({"type": "invoice.paid", "data": {"object": {"object": "invoice", "id": "in_1", "parent": {"subscription_details": {"subscription": "sub_3"}}}}});
        let co = json!({"type": "checkout.session.completed", "data": {"object": {"object": "checkout.session", "id": "cs_1", "subscription": "sub_4"}}});
        let one_off = json!({"type": "invoice.paid", "data": {"object": {"object": "invoice", "id": "in_2", "subscription": null}}});
        assert_eq!(subscription_of(&sub).as_deref(), Some("sub_1"));
        assert_eq!(subscription_of(&inv).as_deref(), Some("sub_2"));
        assert_eq!(subscription_of(&inv_new).as_deref(), Some("sub_3"));
        assert_eq!(subscription_of(&co).as_deref(), Some("sub_4"));
        assert_eq!(subscription_of(&one_off), None);
        assert_eq!(subscription_of(&json!({})), None);
    }

    #[test]
    fn metadata_is_lenient_and_trimmed() {
        let c: Customer = serde_json::from_value(json!({"id": "cus_1", "metadata": null})).unwrap();
        assert_eq!(c.metadata, Metadata::default());
        let c: Customer = serde_json::from_value(
            json!({"id": "cus_1", "name": "Ada", "metadata": {"company": "  ", "seats": 3, "x": null}}),
        )
        .unwrap();
        assert_eq!(c.metadata.get("company"), None, "blank is absent");
        assert_eq!(c.metadata.get("seats"), Some("3"));
        assert_eq!(c.company(), "Ada", "falls back to the name");
    }

    #[test]
    fn objects_parse_from_stripe_and_localstripe_shapes() {
        let e: Event =
            serde_json::from_value(json!({"id": "evt_1", "type": "invoice.paid", "created": 5,
            "data": {"object": {"id": "in_1"}}}))
            .unwrap();
        assert_eq!(
            (e.event_type.as_str(), e.created),
            ("invoice.paid", Some(5))
        );
        let cs: CheckoutSession = serde_json::from_value(json!({"id": "cs_1", "customer": "cus_1",
            "customer_details": {"email": "a@b.example", "address": {"country": "DE"}}}))
        .unwrap();
        let country = cs
            .customer_details
            .and_then(|d| d.address)
            .and_then(|a| a.country);
        assert_eq!(country.as_deref(), Some("DE"));
        let p: Price =
            serde_json::from_value(json!({"id": "plan_1", "amount": 1500, "currency": "usd"}))
                .unwrap();
        assert_eq!(p.unit_amount, Some(1500));
    }
}
