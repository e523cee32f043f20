//! The portal API: one [`PortalApi::handle`] per request — route, authenticate, scope to the
//! token's customer, answer. Every resource belongs to one customer; another customer's
//! resource answers 404 exactly as a missing one does (same status, type and detail), so ids
//! cannot be probed. Support staff (operator scope) name the customer with `?customer=` and
//! every such access is logged with the operator's id and the route — never personal data.

use super::auth::{Principal, TokenVerifier};
use super::http::{Request, Response, Route, route};
use super::problem::Problem;
use crate::billing::dunning::Dunning;
use crate::billing::ports::{DunningStore, InvoiceRecord, InvoiceStore};
use crate::billing::service::artifact_keys;
use crate::customers::state::{CustomerState, CustomerStore};
use crate::error::{Error, Result};
use crate::licensing::format::LicenseId;
use crate::licensing::store::{LicenseRecord, LicenseStatus, LicenseStore};
use crate::storage::ObjectStore;
use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The card on file, as the portal shows it (never the number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentMethodView {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
}

/// The customer's default payment method.
#[async_trait]
pub trait PaymentMethods: Send + Sync {
    async fn default_method(&self, customer: &str) -> Result<Option<PaymentMethodView>>;
}

/// What the API reads and writes through.
#[derive(Clone)]
pub struct Ports {
    pub customers: Arc<dyn CustomerStore>,
    pub licenses: Arc<dyn LicenseStore>,
    /// License files and invoice artifacts.
    pub files: Arc<dyn ObjectStore>,
    pub invoices: Arc<dyn InvoiceStore>,
    pub dunning: Arc<dyn DunningStore>,
    pub payment_methods: Arc<dyn PaymentMethods>,
}

/// Limits and links.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The largest request body read.
    pub max_body: usize,
    /// How long a pre-signed link (license file, invoice artifact) lasts.
    pub link_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024,
            link_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// The API.
pub struct PortalApi {
    verifier: TokenVerifier,
    ports: Ports,
    settings: Settings,
}

/// Whom a request acts for, after authentication and scoping.
struct Caller {
    customer: String,
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
        let caller = self.scope(&principal, req, &route)?;
        if req.body.len() > self.settings.max_body {
            return Err(Problem::too_large(self.settings.max_body));
        }
        self.endpoint(&route, &caller, req)
            .await
            .map_err(|e| problem_of(e, &route))
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
            Principal::Customer { customer_id, .. } => match named {
                Some(c) if c != customer_id => Err(Problem::not_found("customer")),
                _ => Ok(Caller {
                    customer: customer_id.clone(),
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
                })
            }
        }
    }

    async fn endpoint(&self, route: &Route, caller: &Caller, req: &Request) -> Result<Response> {
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
                let invoices = self.ports.invoices.for_customer(&caller.customer).await?;
                let mut views = Vec::new();
                for rec in invoices.iter().filter(|r| r.refs.finalized) {
                    views.push(self.invoice_view(rec, false).await?);
                }
                Ok(Response::json(200, &json!({ "invoices": views })))
            }
            Route::Invoice(id) => {
                let invoices = self.ports.invoices.for_customer(&caller.customer).await?;
                let rec = invoices
                    .iter()
                    .find(|r| r.refs.finalized && r.invoice.period.to_string() == *id)
                    .ok_or_else(|| Error::NotFound("invoice".into()))?;
                Ok(Response::json(200, &self.invoice_view(rec, true).await?))
            }
        }
    }

    async fn account(&self, customer: &str) -> Result<Response> {
        let (state, dunning, method) = tokio::try_join!(
            self.ports.customers.load(customer),
            self.ports.dunning.load(customer),
            self.ports.payment_methods.default_method(customer),
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

    async fn invoice_view(&self, rec: &InvoiceRecord, links: bool) -> Result<Value> {
        let inv = &rec.invoice;
        let money = |amount: i64| inv.money(amount);
        let mut v = json!({
            "id": inv.period.to_string(),
            "period": inv.period.to_string(),
            "currency": inv.currency,
            "subtotal": money(inv.subtotal),
            "credit_applied": money(inv.credit_applied),
            "total": money(inv.total),
            "amount_due": money(inv.total),
            "stripe_invoice": rec.refs.invoice,
        });
        if links {
            let (json_key, html_key) = artifact_keys(&inv.customer, inv.period);
            let ttl = self.settings.link_ttl;
            let (json_url, html_url) = tokio::try_join!(
                self.ports.files.presign_get(&json_key, ttl),
                self.ports.files.presign_get(&html_key, ttl),
            )?;
            v["lines"] = serde_json::to_value(&inv.lines).unwrap_or(Value::Null);
            v["links"] = json!({ "json": json_url, "html": html_url, "expires_in": ttl.as_secs() });
        }
        Ok(v)
    }
}

/// A domain error as the caller sees it: missing (or another customer's) is 404, bad input 400,
/// a dependency down 503 with `Retry-After`, anything else 500 (logged, not shown).
fn problem_of(e: Error, route: &Route) -> Problem {
    match &e {
        Error::NotFound(what) => Problem::not_found(what.split(' ').next().unwrap_or("resource")),
        Error::Invalid(_) => Problem::invalid("body", "the request is not valid"),
        Error::Conflict(_) => Problem::idempotency_conflict(),
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

fn account_view(
    state: &CustomerState,
    dunning: &Dunning,
    method: Option<&PaymentMethodView>,
) -> Value {
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
            "open_invoices": dunning.invoices.len(),
        },
    })
}
