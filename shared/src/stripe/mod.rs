//! Stripe, the one way in: the HTTP client, the typed objects the project reads, paging, and
//! one in-memory fake that every domain's tests share. It knows no domain.
//!
//! # Layout
//! - [`client`]: [`StripeClient`] (injected base URL, key from Secrets Manager, retries,
//!   `Idempotency-Key` on every POST), list paging ([`StripeClient::list_all`]).
//! - [`objects`]: [`Customer`], [`Subscription`], [`Invoice`], [`InvoiceItem`],
//!   [`CheckoutSession`], [`Event`], ... and the requests we send.
//! - [`memory`]: [`MemoryStripe`], the fake (objects as JSON, failure injection, call count).
//!
//! # Ports
//! Three capability traits, each implemented by [`StripeClient`] and [`MemoryStripe`]:
//! [`StripeReads`] (GET an object by id: licensing re-fetches subscriptions, customer sync
//! re-fetches customers), [`StripeInvoices`] (invoice items and invoices: billing) and
//! [`StripeSelfService`] (Checkout, seat changes, the card on file: the portal). A domain
//! asks for the one it needs; domain-shaped rules on top (billing's "find the item carrying
//! this key") live in the domain, written once against these traits.

pub mod client;
pub mod memory;
pub mod objects;

pub use client::{MAX_IDEMPOTENCY_KEY, StripeClient, form_pairs};
pub use memory::{MemoryStripe, StripeOp};
pub use objects::{
    Address, CancellationDetails, Card, Charge, CheckoutSession, Customer, Event, Expandable,
    HasId, Invoice, InvoiceItem, InvoiceLine, InvoicePreview, List, Metadata, NewCheckoutSession,
    NewInvoice, NewInvoiceItem, Price, Product, Recurring, SeatChange, Subscription,
    SubscriptionItem, subscription_of,
};
pub use objects::{
    AutomaticTax, CustomerTaxId, InvoiceDocument, NewCoupon, StatusTransitions, TaxAmount, TaxRate,
    TaxRateDetails,
};

use crate::config::Env;
use crate::error::Result;
use async_trait::async_trait;
use std::time::Duration;

/// Where Stripe is and how to authenticate: `STRIPE_API_BASE` (`https://api.stripe.com`, or
/// localstripe), `STRIPE_API_KEY_SECRET_ID` (a secret `{"api_key": "sk_..."}`), and the
/// optional per-request timeout `STRIPE_TIMEOUT_MS` (default 20 000: invoice creation can be
/// slow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeConfig {
    pub api_base: String,
    pub secret_id: String,
    pub timeout: Duration,
}

impl StripeConfig {
    pub fn from_env(env: &Env) -> Result<Self> {
        Ok(Self {
            api_base: env.url("STRIPE_API_BASE")?,
            secret_id: env.required("STRIPE_API_KEY_SECRET_ID")?,
            timeout: Duration::from_millis(env.parsed_or("STRIPE_TIMEOUT_MS", 20_000u64)?),
        })
    }
}

/// Objects read by id. Stripe delivers events unordered and duplicated, so the domains act
/// on a fresh read of the object, never on the event's copy.
#[async_trait]
pub trait StripeReads: Send + Sync {
    async fn subscription(&self, id: &str) -> Result<Subscription>;
    async fn customer(&self, id: &str) -> Result<Customer>;
    async fn product(&self, id: &str) -> Result<Product>;
    async fn charge(&self, id: &str) -> Result<Charge>;
    /// The subscription an invoice bills (`None`: a one-off invoice).
    async fn invoice_subscription(&self, invoice: &str) -> Result<Option<String>>;
}

/// Invoice items and invoices. Every create carries an `Idempotency-Key`.
#[async_trait]
pub trait StripeInvoices: Send + Sync {
    async fn invoice(&self, id: &str) -> Result<Invoice>;
    async fn create_invoice_item(
        &self,
        item: &NewInvoiceItem,
        idempotency_key: &str,
    ) -> Result<InvoiceItem>;
    /// The customer's invoice items (pending and invoiced), every page.
    async fn invoice_items(&self, customer: &str) -> Result<Vec<InvoiceItem>>;
    /// Creates an invoice that collects the customer's pending items.
    async fn create_invoice(&self, invoice: &NewInvoice, idempotency_key: &str) -> Result<Invoice>;
    /// The customer's invoices, every page.
    async fn invoices(&self, customer: &str) -> Result<Vec<Invoice>>;
    /// Draft -> open. Stripe refuses an invoice that is not a draft (400); an API without the
    /// endpoint answers 404 ([`crate::Error::NotFound`]). The answer is the invoice as
    /// [`StripeInvoices::invoice_document`] reads it (tax rates expanded).
    async fn finalize_invoice(&self, id: &str, idempotency_key: &str) -> Result<Invoice>;
    /// The invoice with everything its document shows: every line, the tax rates of its tax
    /// amounts expanded (jurisdiction, name, percentage).
    async fn invoice_document(&self, id: &str) -> Result<Invoice>;
    /// Whether the coupon `id` exists (a resumed run looks before creating).
    async fn coupon_exists(&self, id: &str) -> Result<bool>;
    /// Creates a coupon (its id is ours).
    async fn create_coupon(&self, coupon: &NewCoupon, idempotency_key: &str) -> Result<()>;
}

/// Whether a Stripe refusal says the customer's address is not enough for Stripe Tax
/// (`customer_tax_location_invalid`): the error's text carries Stripe's code.
pub fn is_tax_location_error(e: &crate::Error) -> bool {
    !e.is_retryable() && e.chain().contains("customer_tax_location_invalid")
}

/// What collections does in Stripe: the last step of the dunning ladder.
#[async_trait]
pub trait StripeCollections: Send + Sync {
    /// Cancels a subscription now (`DELETE /v1/subscriptions/{id}`). Cancelling one that is
    /// already cancelled succeeds (the current state is read back).
    async fn cancel_subscription(&self, id: &str) -> Result<Subscription>;
}

/// What the customer portal does in Stripe: start a purchase, preview and apply a seat change,
/// read the card on file.
#[async_trait]
pub trait StripeSelfService: Send + Sync {
    /// A Checkout Session (subscription mode) for one price and seat count.
    async fn create_checkout_session(
        &self,
        session: &NewCheckoutSession,
        idempotency_key: &str,
    ) -> Result<CheckoutSession>;
    /// The upcoming invoice as it would be after `change` (nothing changes).
    async fn preview_seat_change(&self, change: &SeatChange) -> Result<InvoicePreview>;
    /// Applies `change`, prorated from its date.
    async fn apply_seat_change(
        &self,
        change: &SeatChange,
        idempotency_key: &str,
    ) -> Result<Subscription>;
    /// The customer's default card: `invoice_settings.default_payment_method`, else the
    /// legacy `default_source`; `None` when there is neither (or it is not a card).
    async fn default_card(&self, customer: &str) -> Result<Option<Card>>;
}
