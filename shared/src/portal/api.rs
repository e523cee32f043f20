//! The portal API: one [`PortalApi::handle`] per request — route, authenticate, scope to the
//! token's customer, answer. Every resource belongs to one customer; another customer's
//! resource answers 404 exactly as a missing one does (same status, type and detail), so ids
//! cannot be probed. Support staff (operator scope) name the customer with `?customer=` and
//! every such access is logged with the operator's id and the route — never personal data.

use super::auth::{Principal, TokenVerifier};
use super::http::{Request, Response, Route, route};
use super::problem::Problem;
use crate::billing::dunning::Dunning;
use crate::billing::ports::{
    BillState, Credits, DunningStore, InvoiceRecord, InvoiceStore, SubscriptionView, UsageStore,
};
use crate::billing::pricebook::PriceBook;
use crate::billing::service::artifact_keys;
use crate::crm::CrmPort;
use crate::customers::state::{CustomerState, CustomerStore};
use crate::error::{Error, Result};
use crate::ledger::{Claim, ClaimOptions, Ledger, payload_hash};
use crate::licensing::format::LicenseId;
use crate::licensing::store::{LicenseRecord, LicenseStatus, LicenseStore};
use crate::queue::QueueSender;
use crate::storage::ObjectStore;
use crate::stripe::{Card, StripeReads, StripeSelfService};
use crate::values::{Currency, Money};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Stripe as the portal uses it: objects by id, and the self-service calls.
pub trait PortalStripe: StripeReads + StripeSelfService {}
impl<T: StripeReads + StripeSelfService> PortalStripe for T {}

/// What the API reads and writes through.
#[derive(Clone)]
pub struct Ports {
    pub customers: Arc<dyn CustomerStore>,
    pub licenses: Arc<dyn LicenseStore>,
    /// License files and invoice artifacts.
    pub files: Arc<dyn ObjectStore>,
    pub invoices: Arc<dyn InvoiceStore>,
    pub dunning: Arc<dyn DunningStore>,
    /// Billing's own stores and price book: usage to date is priced by the code that bills.
    pub usage: Arc<dyn UsageStore>,
    pub subscriptions: Arc<dyn SubscriptionView>,
    pub credits: Arc<dyn Credits>,
    pub book: Arc<PriceBook>,
    pub stripe: Arc<dyn PortalStripe>,
    /// Sales-assisted opportunities.
    pub crm: Arc<dyn CrmPort>,
    /// `Idempotency-Key`s: one answer per key.
    pub ledger: Arc<dyn Ledger>,
    /// The privacy-requests queue.
    pub queue: Arc<dyn QueueSender>,
    /// The time (tests pin it).
    pub clock: Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>,
}

/// What the portal sells self-service, by SKU: the Stripe price and the most seats a
/// customer may buy or change to without sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The Stripe price (or plan) id.
    pub price: String,
    pub max_seats: u32,
    /// The price-book plan that bills the subscription (`blapi_plan` metadata), if any.
    #[serde(default)]
    pub plan: Option<String>,
}

/// Limits, links and the offer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The largest request body read.
    pub max_body: usize,
    /// How long a pre-signed link (license file, invoice artifact) lasts.
    pub link_ttl: Duration,
    /// SKU -> offer.
    pub catalog: BTreeMap<String, Offer>,
    /// A seat change whose annual value exceeds this goes to sales (default $5 000).
    pub self_service_limit: Money,
    /// Stripe Tax on self-service purchases.
    pub automatic_tax: bool,
    /// Where Checkout sends the buyer back (`?checkout=success|cancelled` is appended).
    pub return_url: String,
    pub privacy_queue_url: String,
    /// The owner of a sales-assisted opportunity when the account has none.
    pub sales_owner: String,
    /// How long an `Idempotency-Key`'s answer is kept (replayed).
    pub idempotency_retain: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024,
            link_ttl: Duration::from_secs(15 * 60),
            catalog: BTreeMap::new(),
            self_service_limit: Money::new(
                500_000,
                Currency::try_from("usd".to_owned()).unwrap_or_else(|_| unreachable!()),
            ),
            automatic_tax: false,
            return_url: "https://portal.example.com/billing".into(),
            privacy_queue_url: String::new(),
            sales_owner: "sales".into(),
            idempotency_retain: Duration::from_secs(24 * 3600),
        }
    }
}

/// The API.
pub struct PortalApi {
    pub(super) verifier: TokenVerifier,
    pub(super) ports: Ports,
    pub(super) settings: Settings,
}

/// Whom a request acts for, after authentication and scoping.
pub(super) struct Caller {
    pub customer: String,
    /// The signed-in person's address (a customer's own token only).
    pub email: Option<String>,
    /// The `Idempotency-Key` of a mutating request, hashed with the customer.
    pub idempotency: Option<String>,
}

/// A stored answer, replayed for the same `Idempotency-Key`.
#[derive(Serialize, Deserialize)]
struct Stored {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl PortalApi {
    pub fn new(verifier: TokenVerifier, ports: Ports, settings: Settings) -> Self {
        Self {
            verifier,
            ports,
            settings,
        }
    }

    /// Answers one request. Never fails: every outcome is an HTTP answer, errors as problem
    /// documents.
    pub async fn handle(&self, req: &Request) -> Response {
        match self.answer(req).await {
            Ok(r) => r,
            Err(p) => Response::problem(&p),
        }
    }

    async fn answer(&self, req: &Request) -> std::result::Result<Response, Problem> {
        let route = route(&req.method, &req.path)?;
        let principal = self
            .verifier
            .verify_header(req.header("authorization"))
            .await?;
        if route.mutates() {
            // Before scoping: a request without its key is malformed whoever it names.
            idempotency_key(req)?;
        }
        let mut caller = self.scope(&principal, req, &route)?;
        if req.body.len() > self.settings.max_body {
            return Err(Problem::too_large(self.settings.max_body));
        }
        if !route.mutates() {
            return self.endpoint(&route, &caller, req).await;
        }
        self.idempotent(&route, &mut caller, req).await
    }

    /// A mutating request, once per `Idempotency-Key`: the first answer is stored and replayed
    /// for the same key (header `Idempotent-Replayed: true`); the same key with another request
    /// is 409; a request still running under the key is 409 with `Retry-After`. A failure
    /// that may succeed later (5xx) is not stored: the retry runs again, and Stripe, which
    /// received the same derived keys, does nothing twice.
    async fn idempotent(
        &self,
        route: &Route,
        caller: &mut Caller,
        req: &Request,
    ) -> std::result::Result<Response, Problem> {
        let key = idempotency_key(req)?;
        let scoped = payload_hash(format!("{}\n{key}", caller.customer).as_bytes());
        let ledger_key = format!("portal#{scoped}");
        // The route, not the raw path: `/x` and `/x/` are one request.
        let mut fingerprint = format!("{} {route:?}\n", req.method).into_bytes();
        fingerprint.extend_from_slice(&req.body);
        let opts = ClaimOptions {
            lease: Duration::from_secs(60),
            retain: Some(self.settings.idempotency_retain),
        };
        let claim = self
            .ports
            .ledger
            .claim(&ledger_key, &payload_hash(&fingerprint), opts)
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => Problem::idempotency_conflict(),
                e => problem_of(e, route),
            })?;
        let lease = match claim {
            Claim::Acquired(lease) => lease,
            Claim::InProgress { .. } => {
                return Err(Problem::new(
                    409,
                    "idempotency-in-progress",
                    "Request in progress",
                    "a request with this Idempotency-Key is still running; retry shortly",
                )
                .with_retry_after(Duration::from_secs(1)));
            }
            Claim::Completed { result } => {
                return result
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<Stored>(r).ok())
                    .and_then(|s| {
                        let body = base64::engine::general_purpose::STANDARD
                            .decode(s.body)
                            .ok()?;
                        let mut r = Response {
                            status: s.status,
                            headers: s.headers,
                            body,
                        };
                        r.headers
                            .push(("Idempotent-Replayed".into(), "true".into()));
                        Some(r)
                    })
                    .ok_or_else(|| {
                        tracing::error!(
                            route = route.name(),
                            "unreadable stored idempotent answer"
                        );
                        Problem::internal()
                    });
            }
        };
        caller.idempotency = Some(scoped);
        let answer = match self.endpoint(route, caller, req).await {
            Ok(r) => r,
            Err(p) => Response::problem(&p),
        };
        if answer.status >= 500 {
            // Not stored: a retry runs again.
            if let Err(e) = self.ports.ledger.release(&lease).await {
                tracing::warn!(route = route.name(), error = %e.chain(), "idempotency release failed");
            }
            return Ok(answer);
        }
        let stored = serde_json::to_string(&Stored {
            status: answer.status,
            headers: answer.headers.clone(),
            body: base64::engine::general_purpose::STANDARD.encode(&answer.body),
        })
        .map_err(|_| Problem::internal())?;
        if let Err(e) = self
            .ports
            .ledger
            .complete(&lease, Some(&stored), opts)
            .await
        {
            // Done but not recorded: a retry with the key runs again (Stripe dedupes by
            // the derived keys; the CRM and the privacy queue by their own ids).
            tracing::warn!(route = route.name(), error = %e.chain(), "idempotency record failed");
        }
        Ok(answer)
    }

    /// The customer the request acts for: the token's own, or for an operator the one named by
    /// `?customer=` (required). A customer naming another customer gets the 404 of a missing
    /// resource.
    fn scope(
        &self,
        principal: &Principal,
        req: &Request,
        route: &Route,
    ) -> std::result::Result<Caller, Problem> {
        let named = req.query.get("customer").map(String::as_str);
        match principal {
            Principal::Customer {
                customer_id, email, ..
            } => match named {
                Some(c) if c != customer_id => Err(Problem::not_found("customer")),
                _ => Ok(Caller {
                    customer: customer_id.clone(),
                    email: email.clone(),
                    idempotency: None,
                }),
            },
            Principal::Operator { operator_id } => {
                let customer = named.filter(|c| super::http::valid_id(c)).ok_or_else(|| {
                    Problem::invalid(
                        "customer",
                        "an operator names the customer to act for: ?customer=cus_...",
                    )
                })?;
                tracing::info!(
                    operator_id = %operator_id,
                    customer_id = %customer,
                    route = route.name(),
                    "operator access"
                );
                Ok(Caller {
                    customer: customer.to_string(),
                    email: None,
                    idempotency: None,
                })
            }
        }
    }

    async fn endpoint(
        &self,
        route: &Route,
        caller: &Caller,
        req: &Request,
    ) -> std::result::Result<Response, Problem> {
        match route {
            Route::Usage => self.usage(caller, req).await,
            Route::Checkout => self.checkout(caller, req).await,
            Route::SeatPreview(sub) => self.seat_preview(caller, sub, req).await,
            Route::SeatChange(sub) => self.seat_change(caller, sub, req).await,
            Route::PrivacyRequest => self.privacy_request(caller, req).await,
            Route::LicenseFile(_) if req.query.get("format").is_some_and(|f| f != "link") => Err(
                Problem::invalid("format", "absent (the file itself) or `link`"),
            ),
            read => self
                .read(read, caller, req)
                .await
                .map_err(|e| problem_of(e, route)),
        }
    }

    async fn read(&self, route: &Route, caller: &Caller, req: &Request) -> Result<Response> {
        match route {
            Route::Account => self.account(&caller.customer).await,
            Route::Licenses => {
                let mut licenses = self.ports.licenses.by_customer(&caller.customer).await?;
                licenses.retain(|l| l.status != LicenseStatus::Issuing);
                licenses.sort_by_key(|l| std::cmp::Reverse(l.issued_at));
                let views: Vec<Value> = licenses.iter().map(license_view).collect();
                Ok(Response::json(200, &json!({ "licenses": views })))
            }
            Route::License(id) => {
                let l = self.license(&caller.customer, id).await?;
                Ok(Response::json(200, &license_view(&l)))
            }
            Route::LicenseFile(id) => {
                let l = self.license(&caller.customer, id).await?;
                if req.query.get("format").map(String::as_str) == Some("link") {
                    let url = self
                        .ports
                        .files
                        .presign_get(&l.file_key, self.settings.link_ttl)
                        .await?;
                    return Ok(Response::json(
                        200,
                        &json!({ "url": url, "expires_in": self.settings.link_ttl.as_secs() }),
                    ));
                }
                // The stored bytes are the record's own: exactly what was signed.
                Ok(Response::bytes(
                    "application/octet-stream",
                    l.file.clone().into_bytes(),
                ))
            }
            Route::Invoices => {
                let (invoices, dunning) = tokio::try_join!(
                    self.ports.invoices.for_customer(&caller.customer),
                    self.ports.dunning.load(&caller.customer),
                )?;
                let mut views = Vec::new();
                for rec in invoices.iter().filter(|r| issued(r)) {
                    views.push(self.invoice_view(rec, &dunning.0, false).await?);
                }
                Ok(Response::json(200, &json!({ "invoices": views })))
            }
            Route::Invoice(id) => {
                let (invoices, dunning) = tokio::try_join!(
                    self.ports.invoices.for_customer(&caller.customer),
                    self.ports.dunning.load(&caller.customer),
                )?;
                let rec = invoices
                    .iter()
                    .find(|r| issued(r) && r.invoice.period.to_string() == *id)
                    .ok_or_else(|| Error::NotFound("invoice".into()))?;
                Ok(Response::json(
                    200,
                    &self.invoice_view(rec, &dunning.0, true).await?,
                ))
            }
            _ => Err(Error::NotFound("resource".into())),
        }
    }

    async fn account(&self, customer: &str) -> Result<Response> {
        let (state, dunning, method) = tokio::try_join!(
            self.ports.customers.load(customer),
            self.ports.dunning.load(customer),
            async {
                // A customer id Stripe could not have issued has no card.
                match self.ports.stripe.default_card(customer).await {
                    Err(Error::Invalid(_)) => Ok(None),
                    other => other,
                }
            },
        )?;
        let state = state.ok_or_else(|| Error::NotFound("customer".into()))?;
        Ok(Response::json(
            200,
            &account_view(&state, &dunning.0, method.as_ref()),
        ))
    }

    async fn license(&self, customer: &str, id: &str) -> Result<LicenseRecord> {
        // Not an id we could have issued: missing, like any other.
        let id =
            LicenseId::try_from(id.to_string()).map_err(|_| Error::NotFound("license".into()))?;
        let found = self.ports.licenses.get(customer, &id).await?;
        // A license still being issued has no file yet: it does not exist for the portal.
        found
            .filter(|l| l.customer_id == customer && l.status != LicenseStatus::Issuing)
            .ok_or_else(|| Error::NotFound("license".into()))
    }

    async fn invoice_view(
        &self,
        rec: &InvoiceRecord,
        dunning: &Dunning,
        links: bool,
    ) -> Result<Value> {
        let inv = &rec.invoice;
        let money = |amount: i64| inv.money(amount);
        // Paid as Stripe told billing (invoice.paid / payment_succeeded): nothing is due.
        let paid = rec
            .refs
            .invoice
            .as_ref()
            .and_then(|id| dunning.invoices.get(id))
            .is_some_and(|f| f.paid_at.is_some());
        let status = match (paid, rec.refs.finalized) {
            (true, _) => "paid",
            // Finalized in Stripe (payable), or left a draft where the API has no finalize.
            (false, true) => "open",
            (false, false) => "draft",
        };
        // What Stripe said at finalization: its number, the tax it added, the amount due (with
        // tax, less any balance applied) and where to pay.
        let issued = rec.refs.issued.as_ref();
        let tax = issued.and_then(|i| i.tax).unwrap_or(0);
        let due = issued.and_then(|i| i.amount_due).unwrap_or(inv.total + tax);
        let mut v = json!({
            "id": inv.period.to_string(),
            "period": inv.period.to_string(),
            "number": issued.and_then(|i| i.number.clone()),
            "currency": inv.currency,
            "subtotal": money(inv.subtotal),
            "credit_applied": money(inv.credit_applied),
            "total": money(inv.total),
            "tax": money(tax),
            "amount_due": money(if paid { 0 } else { due }),
            "stripe_invoice": rec.refs.invoice,
            "status": status,
            "pay_url": issued
                .and_then(|i| i.hosted_invoice_url.clone())
                .filter(|u| !paid && u.starts_with("https://")),
        });
        if links {
            let keys = artifact_keys(&inv.customer, inv.period);
            let ttl = self.settings.link_ttl;
            let (json_url, html_url, pdf_url) = tokio::try_join!(
                self.ports.files.presign_get(&keys.json, ttl),
                self.ports.files.presign_get(&keys.html, ttl),
                self.ports.files.presign_get(&keys.pdf, ttl),
            )?;
            v["lines"] = serde_json::to_value(&inv.lines).unwrap_or(Value::Null);
            v["links"] = json!({ "json": json_url, "html": html_url, "pdf": pdf_url,
                "expires_in": ttl.as_secs() });
        }
        Ok(v)
    }
}

/// The request's `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &Request) -> std::result::Result<&str, Problem> {
    req.header("idempotency-key")
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            Problem::invalid(
                "Idempotency-Key",
                "a mutating request carries an Idempotency-Key header (1 to 255 visible ASCII characters)",
            )
        })
}

/// Whether the customer has the invoice: its bill run wrote the documents (an invoice still
/// being billed does not exist for the portal).
fn issued(rec: &InvoiceRecord) -> bool {
    matches!(rec.state, BillState::ArtifactsWritten | BillState::Done)
}

/// A domain error as the caller sees it: missing (or another customer's) is 404, bad input 400,
/// a dependency down 503 with `Retry-After`, anything else 500 (logged, not shown).
pub(super) fn problem_of(e: Error, route: &Route) -> Problem {
    match &e {
        // Stripe's own "no such ..." is a missing resource for the caller too.
        Error::NotFound(what) => Problem::not_found(
            what.strip_prefix("stripe: ")
                .map(|_| "resource")
                .unwrap_or_else(|| what.split(' ').next().unwrap_or("resource")),
        ),
        Error::Invalid(_) => Problem::invalid("body", "the request is not valid"),
        // A concurrent write won (optimistic concurrency): the same request may succeed now.
        Error::Conflict(_) => Problem::unavailable("this resource", Duration::from_secs(1)),
        Error::InProgress(_) => Problem::unavailable("this resource", Duration::from_secs(2)),
        Error::Dependency {
            service,
            retryable: true,
            ..
        } => Problem::unavailable(service, Duration::from_secs(5)),
        _ => {
            tracing::error!(route = route.name(), error = %e.chain(), "portal request failed");
            Problem::internal()
        }
    }
}

fn license_view(l: &LicenseRecord) -> Value {
    json!({
        "id": l.license_id.to_string(),
        "subscription": l.subscription_id,
        "sku": l.sku,
        "seats": l.quantity,
        "status": l.status.as_str().to_ascii_lowercase(),
        "trial": l.is_trial,
        "starts_at": l.starts_at / 1000,
        "expires_at": l.expires_at / 1000,
        "issued_at": l.issued_at / 1000,
        "supersedes": l.supersedes.as_ref().map(ToString::to_string),
        "superseded_by": l.superseded_by.as_ref().map(ToString::to_string),
        "revoked_at": l.revoked_at.map(|t| t / 1000),
    })
}

fn account_view(state: &CustomerState, dunning: &Dunning, method: Option<&Card>) -> Value {
    let status = match dunning.status.as_str() {
        "suspended" => "suspended",
        "past_due" => "past_due",
        _ => match state.status().map(|s| s.as_str()) {
            Some("trial") => "trial",
            Some("past_due") => "past_due",
            Some("churned") => "cancelled",
            Some(_) => "active",
            None => "none",
        },
    };
    let subscriptions: Vec<Value> = state
        .subscriptions
        .iter()
        .map(|(id, t)| {
            json!({
                "id": id,
                "status": t.status,
                "plan": t.plan,
                "sku": t.sku,
                "seats": t.seats,
                "current_period_start": t.start,
                "current_period_end": t.end,
                "cancel_at_period_end": t.cancel_at_period_end,
            })
        })
        .collect();
    json!({
        "customer": state.customer_id,
        "status": status,
        "subscriptions": subscriptions,
        "payment_method": method,
        "dunning": {
            "status": dunning.status.as_str(),
            // Invoices whose payment failed and that are still unpaid.
            "open_invoices": dunning
                .invoices
                .values()
                .filter(|f| f.paid_at.is_none() && f.first_failed_at.is_some())
                .count(),
        },
    })
}
