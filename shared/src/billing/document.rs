//! The invoice a customer receives: seller and buyer, Stripe's number, issue and due dates, the
//! service period, every line in the currency's units (quantity, unit price, tier and proration
//! explained), credits, tax per line and per rate with the jurisdiction Stripe reports, the
//! amount due and the link to pay. Rendered as JSON (with the composition of record), HTML (a
//! printable, self-contained page) and PDF ([`super::pdf`]).
//!
//! What Stripe says of a finalized invoice ([`Issued`]: amounts with and without tax, the tax
//! of each line, the number, the customer as they were at finalization) is kept in the invoice
//! record when it is finalized, so the documents are the same bytes on every rerun.
//!
//! Without Stripe's word (a zero invoice never sent to Stripe, an API without Stripe Tax or
//! without finalization) the document degrades: our invoice key is the number, the period's
//! end is the issue date, there is no tax and no pay link.

use super::invoice::{Invoice, InvoiceLine, LineKind, Proration, StripeRefs, invoice_key};
use super::money::{Currency, Quantity, Rate, SCALE};
use crate::stripe;
use crate::values::{Country, html_escape as esc};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Who sends the invoice (from configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seller {
    pub name: String,
    /// Postal address, one line each.
    pub address: Vec<String>,
    pub tax_id: Option<String>,
    pub email: Option<String>,
}

impl Default for Seller {
    fn default() -> Self {
        Self {
            name: "blapi".into(),
            address: Vec::new(),
            tax_id: None,
            email: None,
        }
    }
}

/// How usage invoices are issued: Stripe Tax or not, and who the seller is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issuing {
    /// Stripe Tax computes each invoice's tax (`automatic_tax[enabled]=true`); off, nothing
    /// about tax is sent to Stripe.
    pub automatic_tax: bool,
    pub seller: Seller,
}

impl Issuing {
    /// From usage-billing's environment: `STRIPE_AUTOMATIC_TAX` (`true`/`false`, default
    /// `false`), `SELLER_NAME` (default `blapi`), `SELLER_ADDRESS` (lines separated by `;` or
    /// new lines), `SELLER_TAX_ID`, `SELLER_EMAIL` (blank: not printed).
    pub fn from_env(env: &crate::config::Env) -> crate::error::Result<Self> {
        let text = |name: &str| env.optional(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            automatic_tax: env.parsed_or("STRIPE_AUTOMATIC_TAX", false)?,
            seller: Seller {
                name: text("SELLER_NAME").unwrap_or_else(|| Seller::default().name),
                address: text("SELLER_ADDRESS")
                    .map(|a| {
                        a.split([';', '\n'])
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                tax_id: text("SELLER_TAX_ID"),
                email: text("SELLER_EMAIL"),
            },
        })
    }
}

/// A postal address as the invoice recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostalAddress {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
}

impl PostalAddress {
    /// The address as printed: street lines, `postal code city`, state, country name.
    pub fn lines(&self) -> Vec<String> {
        let join = |parts: &[&Option<String>]| {
            parts
                .iter()
                .filter_map(|p| p.as_deref().map(str::trim).filter(|s| !s.is_empty()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let country = self
            .country
            .as_deref()
            .map(|c| Country::parse(c).map_or_else(|| c.to_owned(), |k| k.name().to_owned()));
        [
            join(&[&self.line1]),
            join(&[&self.line2]),
            join(&[&self.postal_code, &self.city]),
            join(&[&self.state]),
            join(&[&country]),
        ]
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect()
    }
}

/// The customer as the finalized invoice recorded them. No e-mail address: the invoice is
/// kept for years under a legal obligation, and it needs the buyer's name, address and tax
/// ids, not how to reach them (a privacy erasure leaves nothing else of the person on it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buyer {
    pub name: Option<String>,
    pub address: Option<PostalAddress>,
    /// `(type, value)`: `("eu_vat", "DE123456789")`.
    pub tax_ids: Vec<(String, String)>,
    /// `none`, `exempt`, `reverse`.
    pub tax_exempt: Option<String>,
}

/// A tax rate as Stripe reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRateInfo {
    pub id: String,
    pub display_name: Option<String>,
    pub jurisdiction: Option<String>,
    /// A decimal (`19`, `8.875`).
    pub percentage: Option<String>,
    pub country: Option<String>,
    pub state: Option<String>,
}

/// One tax amount (of a line, or of the invoice per rate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tax {
    /// Minor units.
    pub amount: i64,
    /// Included in the amount it taxes rather than added to it.
    pub inclusive: bool,
    pub rate: Option<TaxRateInfo>,
    /// `standard_rated`, `customer_exempt`, `reverse_charge`, `not_collecting`, ...
    pub taxability_reason: Option<String>,
    pub taxable_amount: Option<i64>,
}

impl Tax {
    /// `VAT 19% (DE)`, `Reverse charge`, `Tax exempt`, `Tax`.
    pub fn label(&self) -> String {
        let reason = match self.taxability_reason.as_deref() {
            Some("reverse_charge") => Some("Reverse charge"),
            Some("customer_exempt" | "product_exempt" | "product_exempt_holiday") => {
                Some("Tax exempt")
            }
            Some("not_collecting" | "not_subject_to_tax" | "not_supported") => Some("No tax"),
            Some("zero_rated") => Some("Zero-rated"),
            _ => None,
        };
        if self.amount == 0
            && let Some(r) = reason
        {
            return r.to_owned();
        }
        let Some(rate) = &self.rate else {
            return "Tax".to_owned();
        };
        let mut s = rate.display_name.clone().unwrap_or_else(|| "Tax".into());
        if let Some(p) = &rate.percentage {
            let _ = write!(s, " {p}%");
        }
        let place = rate
            .jurisdiction
            .as_ref()
            .or(rate.state.as_ref())
            .or(rate.country.as_ref());
        if let Some(j) = place {
            let _ = write!(s, " ({j})");
        }
        if self.inclusive {
            s.push_str(", included");
        }
        s
    }
}

/// What Stripe says of a finalized invoice: kept in the record at finalization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub number: Option<String>,
    pub status: Option<String>,
    /// Seconds.
    pub finalized_at: Option<i64>,
    /// Seconds; `None` for an invoice charged automatically.
    pub due_date: Option<i64>,
    /// Stripe's page where the customer pays.
    pub hosted_invoice_url: Option<String>,
    /// Stripe's own PDF.
    pub invoice_pdf: Option<String>,
    pub subtotal: Option<i64>,
    /// Total tax (added to the amount; inclusive tax is part of the lines already).
    pub tax: Option<i64>,
    pub total: Option<i64>,
    pub total_excluding_tax: Option<i64>,
    pub amount_due: Option<i64>,
    /// Stripe Tax was on for the invoice.
    pub automatic_tax: bool,
    /// `complete`, `requires_location_inputs`, `failed`.
    pub automatic_tax_status: Option<String>,
    pub customer: Buyer,
    /// The tax of each line, by the Stripe invoice item it bills.
    pub line_taxes: BTreeMap<String, Vec<Tax>>,
    /// The invoice's tax per rate.
    pub taxes: Vec<Tax>,
}

impl Issued {
    /// From the invoice as Stripe answers it (finalize, or a read with the tax rates expanded).
    pub fn from_stripe(inv: &stripe::Invoice) -> Self {
        let d = &inv.document;
        let tax_of = |t: &stripe::TaxAmount| Tax {
            amount: t.amount,
            inclusive: t.is_inclusive(),
            rate: t.rate().map(|r| match r {
                stripe::Expandable::Id(id) => TaxRateInfo {
                    id: id.clone(),
                    ..TaxRateInfo::default()
                },
                stripe::Expandable::Object(r) => TaxRateInfo {
                    id: r.id.clone(),
                    display_name: r.display_name.clone(),
                    jurisdiction: r.jurisdiction.clone(),
                    percentage: r.percentage.as_ref().map(|p| {
                        let p = p.to_string();
                        match p.strip_suffix(".0") {
                            Some(whole) => whole.to_owned(),
                            None => p,
                        }
                    }),
                    country: r.country.clone(),
                    state: r.state.clone(),
                },
            }),
            taxability_reason: t.taxability_reason.clone(),
            taxable_amount: t.taxable_amount,
        };
        let mut line_taxes = BTreeMap::new();
        for line in d.lines.iter().flat_map(|l| &l.data) {
            if let Some(item) = line.item_id() {
                line_taxes.insert(item.to_owned(), line.tax().iter().map(tax_of).collect());
            }
        }
        let per_rate = if d.total_tax_amounts.is_empty() {
            &d.total_taxes
        } else {
            &d.total_tax_amounts
        };
        let taxes: Vec<Tax> = per_rate.iter().map(tax_of).collect();
        let added = |ts: &[Tax]| ts.iter().filter(|t| !t.inclusive).map(|t| t.amount).sum();
        let tax = d.tax.or_else(|| (!taxes.is_empty()).then(|| added(&taxes)));
        let address = d.customer_address.as_ref().map(|a| PostalAddress {
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            postal_code: a.postal_code.clone(),
            city: a.city.clone(),
            state: a.state.clone(),
            country: a.country.clone(),
        });
        let tax_ids = d
            .customer_tax_ids
            .iter()
            .flatten()
            .filter_map(|t| Some((t.kind.clone().unwrap_or_default(), t.value.clone()?)))
            .collect();
        Self {
            number: d.number.clone(),
            status: inv.status.clone(),
            finalized_at: d.status_transitions.as_ref().and_then(|s| s.finalized_at),
            due_date: d.due_date,
            hosted_invoice_url: d.hosted_invoice_url.clone(),
            invoice_pdf: d.invoice_pdf.clone(),
            subtotal: d.subtotal,
            tax,
            total: inv.total,
            total_excluding_tax: d.total_excluding_tax,
            amount_due: d.amount_due,
            automatic_tax: d.automatic_tax.as_ref().is_some_and(|t| t.enabled),
            automatic_tax_status: d.automatic_tax.as_ref().and_then(|t| t.status.clone()),
            customer: Buyer {
                name: d.customer_name.clone(),
                address,
                tax_ids,
                tax_exempt: d.customer_tax_exempt.clone(),
            },
            line_taxes,
            taxes,
        }
    }
}

/// One line of the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocumentLine {
    /// The composition's line id (`l0`, ...).
    pub id: String,
    pub kind: LineKind,
    pub description: String,
    /// How the amount came about: the tier, the package, the proration.
    pub details: Vec<String>,
    pub quantity: Quantity,
    /// In the currency's units (`0.005`), when the line has a unit price.
    pub unit_price: Option<String>,
    /// Minor units, before tax (negative for a credit).
    pub amount: i64,
    /// Minor units; `None` when no tax was computed for the line.
    pub tax: Option<i64>,
    /// What the tax is (`VAT 19% (DE)`), one per rate.
    pub tax_labels: Vec<String>,
}

impl DocumentLine {
    /// The quantity as printed (none for a credit: it is an amount).
    pub fn printed_quantity(&self) -> String {
        if self.kind == LineKind::Credit {
            String::new()
        } else {
            quantity(self.quantity)
        }
    }
}

/// The customer as the document names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillTo {
    /// The Stripe customer id.
    pub customer: String,
    pub name: Option<String>,
    pub address: Vec<String>,
    /// `EU VAT DE123456789`.
    pub tax_ids: Vec<String>,
}

/// One total tax line (per rate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaxTotal {
    pub label: String,
    /// Minor units.
    pub amount: i64,
    pub inclusive: bool,
}

/// The invoice a customer receives (amounts in minor units of `currency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    /// Stripe's invoice number, else our invoice key.
    pub number: String,
    /// `draft`, `open`, `paid`, ...
    pub status: String,
    /// `YYYY-MM-DD`: when Stripe finalized it, else the day after the period.
    pub issue_date: String,
    pub due_date: Option<String>,
    /// The service period, both days included.
    pub period_start: String,
    pub period_end: String,
    pub currency: Currency,
    pub seller: Seller,
    pub bill_to: BillTo,
    pub lines: Vec<DocumentLine>,
    /// Before credits and tax.
    pub subtotal: i64,
    pub credit_applied: i64,
    /// After credits, before tax: what revenue counts.
    pub total_excluding_tax: i64,
    pub taxes: Vec<TaxTotal>,
    /// Tax added to the total.
    pub tax: i64,
    pub total: i64,
    pub amount_due: i64,
    /// `Tax exempt`, `Reverse charge: ...`.
    pub tax_note: Option<String>,
    /// Stripe's page where the customer pays.
    pub pay_url: Option<String>,
    pub stripe_invoice: Option<String>,
    pub price_book_version: String,
}

/// What a reverse-charge invoice says.
pub const REVERSE_CHARGE: &str = "Reverse charge: VAT to be accounted for by the recipient.";
/// What an exempt customer's invoice says.
pub const TAX_EXEMPT: &str = "Tax exempt: no tax is charged on this invoice.";

fn day(secs: i64) -> Option<String> {
    DateTime::from_timestamp(secs, 0).map(|t| t.format("%Y-%m-%d").to_string())
}

impl Document {
    /// The document of a composed invoice, with what Stripe said of it (if anything).
    pub fn new(inv: &Invoice, refs: &StripeRefs, seller: &Seller) -> Self {
        let issued = refs.issued.as_ref();
        let no_issued = Issued::default();
        let st = issued.unwrap_or(&no_issued);
        let lines: Vec<DocumentLine> = inv
            .lines
            .iter()
            .map(|l| {
                let taxes = refs.items.get(&l.id).and_then(|ii| st.line_taxes.get(ii));
                document_line(l, &inv.currency, taxes)
            })
            .collect();
        let mut taxes: Vec<TaxTotal> = Vec::new();
        let per_rate: Vec<&Tax> = if st.taxes.is_empty() {
            st.line_taxes.values().flatten().collect()
        } else {
            st.taxes.iter().collect()
        };
        for t in per_rate {
            let label = t.label();
            match taxes.iter_mut().find(|x| x.label == label) {
                Some(x) => x.amount += t.amount,
                None => taxes.push(TaxTotal {
                    label,
                    amount: t.amount,
                    inclusive: t.inclusive,
                }),
            }
        }
        let tax = st.tax.unwrap_or_else(|| {
            taxes
                .iter()
                .filter(|t| !t.inclusive)
                .map(|t| t.amount)
                .sum()
        });
        let total = inv.total + tax;
        let buyer = &st.customer;
        let reverse = buyer.tax_exempt.as_deref() == Some("reverse")
            || st
                .line_taxes
                .values()
                .chain([&st.taxes])
                .flatten()
                .any(|t| t.taxability_reason.as_deref() == Some("reverse_charge"));
        let tax_note = if reverse {
            Some(REVERSE_CHARGE.to_owned())
        } else if buyer.tax_exempt.as_deref() == Some("exempt") {
            Some(TAX_EXEMPT.to_owned())
        } else {
            None
        };
        let status = st
            .status
            .clone()
            .unwrap_or_else(|| if refs.finalized { "open" } else { "draft" }.to_owned());
        let last_day = inv.period.next().first_day().pred_opt().unwrap_or_default();
        Document {
            number: st
                .number
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| invoice_key(&inv.customer, inv.period)),
            status,
            issue_date: st
                .finalized_at
                .and_then(day)
                .unwrap_or_else(|| inv.period.next().first_day().to_string()),
            due_date: st.due_date.and_then(day),
            period_start: inv.period.first_day().to_string(),
            period_end: last_day.to_string(),
            currency: inv.currency.clone(),
            seller: seller.clone(),
            bill_to: BillTo {
                customer: inv.customer.clone(),
                name: buyer.name.clone().filter(|n| !n.trim().is_empty()),
                address: buyer
                    .address
                    .as_ref()
                    .map(PostalAddress::lines)
                    .unwrap_or_default(),
                tax_ids: buyer
                    .tax_ids
                    .iter()
                    .map(|(kind, value)| {
                        format!("{} {value}", kind.replace('_', " ").to_ascii_uppercase())
                            .trim()
                            .to_owned()
                    })
                    .collect(),
            },
            lines,
            subtotal: inv.subtotal,
            credit_applied: inv.credit_applied,
            total_excluding_tax: inv.total,
            taxes,
            tax,
            total,
            amount_due: st.amount_due.unwrap_or(total),
            tax_note,
            pay_url: st
                .hosted_invoice_url
                .clone()
                .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            stripe_invoice: refs.invoice.clone(),
            price_book_version: inv.price_book_version.clone(),
        }
    }

    /// An amount of the document in the currency's units, without the code: `1,234.50`.
    pub fn money(&self, minor: i64) -> String {
        units(minor, &self.currency)
    }

    /// The currency code as printed: `USD`.
    pub fn code(&self) -> String {
        self.currency.as_str().to_ascii_uppercase()
    }

    /// The totals block, in order: (label, minor units, emphasised).
    pub fn totals(&self) -> Vec<(String, i64, bool)> {
        let mut out = vec![("Subtotal".to_owned(), self.subtotal, false)];
        if self.credit_applied != 0 {
            out.push(("Credit applied".into(), -self.credit_applied, false));
        }
        let taxed = !self.taxes.is_empty() || self.tax != 0;
        if taxed {
            out.push((
                "Total excluding tax".into(),
                self.total_excluding_tax,
                false,
            ));
            for t in &self.taxes {
                out.push((t.label.clone(), t.amount, false));
            }
        }
        out.push((format!("Total ({})", self.code()), self.total, false));
        out.push((
            format!("Amount due ({})", self.code()),
            self.amount_due,
            true,
        ));
        out
    }
}

/// The document line of a composed line, with its Stripe tax amounts (if any).
fn document_line(l: &InvoiceLine, currency: &Currency, taxes: Option<&Vec<Tax>>) -> DocumentLine {
    let mut details = Vec::new();
    if let Some(t) = &l.tier {
        details.push(explain_tier(t, currency));
    }
    if let Some(p) = l.proration {
        details.push(explain_proration(p, currency));
    }
    let mut tax_labels: Vec<String> = Vec::new();
    for t in taxes.into_iter().flatten() {
        let label = t.label();
        if !tax_labels.contains(&label) {
            tax_labels.push(label);
        }
    }
    DocumentLine {
        id: l.id.clone(),
        kind: l.kind,
        description: l.description.clone(),
        details,
        quantity: l.quantity,
        unit_price: l.unit_price.map(|r| unit_price(r, currency)),
        amount: l.amount,
        tax: taxes.map(|ts| ts.iter().filter(|t| !t.inclusive).map(|t| t.amount).sum()),
        tax_labels,
    }
}

/// The price book's tier label in words a customer reads; a package's price (minor units in
/// the label) in the currency's units.
fn explain_tier(tier: &str, currency: &Currency) -> String {
    if let Some((head, price)) = tier.rsplit_once(" at ")
        && head.contains("package")
        && let Ok(minor) = price.trim().parse::<i64>()
    {
        return format!("{head} at {} each", units(minor, currency));
    }
    match tier {
        "flat fee" => "Flat fee".to_owned(),
        _ => {
            let mut c = tier.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    }
}

fn explain_proration(p: Proration, currency: &Currency) -> String {
    format!(
        "Prorated: {} of {} days of {} {}",
        p.active_days,
        p.period_days,
        units(p.full_amount, currency),
        currency.as_str().to_ascii_uppercase()
    )
}

/// Groups the integer part of a decimal string by thousands: `1234567.5` -> `1,234,567.5`.
fn grouped(int_part: &str) -> String {
    let digits: Vec<char> = int_part.chars().collect();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.iter().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(*c);
    }
    out
}

/// Minor units in the currency's units: `123456, usd` -> `1,234.56`; `-5, usd` -> `-0.05`;
/// `500, jpy` -> `500`. Never `-0.00` (an integer zero has no sign).
pub fn units(minor: i64, currency: &Currency) -> String {
    let exp = currency.exponent();
    let sign = if minor < 0 { "-" } else { "" };
    let a = minor.unsigned_abs();
    let div = 10u64.pow(exp);
    let int = grouped(&(a / div).to_string());
    if exp == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{:0w$}", a % div, w = exp as usize)
    }
}

/// A unit price (minor units with six decimals) in the currency's units, with at least the
/// currency's decimals and no trailing zeros beyond: `1500 usd` -> `15.00`, `0.5 usd` ->
/// `0.005`, `3 jpy` -> `3`.
pub fn unit_price(rate: Rate, currency: &Currency) -> String {
    let exp = currency.exponent();
    let scale = u128::from(SCALE.unsigned_abs()) * 10u128.pow(exp);
    let decimals = 6 + exp as usize;
    let m = rate.micros();
    let sign = if m < 0 { "-" } else { "" };
    let a = u128::from(m.unsigned_abs());
    let frac = format!("{:0w$}", a % scale, w = decimals);
    let keep = frac.trim_end_matches('0').len().max(exp as usize);
    let int = grouped(&(a / scale).to_string());
    if keep == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{}", &frac[..keep])
    }
}

/// A quantity as printed: `25,000`, `2.5`.
pub fn quantity(q: Quantity) -> String {
    let s = q.to_string();
    let (sign, s) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest.to_owned()),
        None => ("", s),
    };
    match s.split_once('.') {
        Some((i, f)) => format!("{sign}{}.{f}", grouped(i)),
        None => format!("{sign}{}", grouped(&s)),
    }
}

/// The JSON artifact (`invoices/{customer}/{period}.json`): the composition of record
/// (`invoice`), what Stripe holds (`stripe`) and the document as the customer reads it
/// (`document`).
pub fn render_json(inv: &Invoice, refs: &StripeRefs, doc: &Document) -> Vec<u8> {
    let value = serde_json::json!({ "invoice": inv, "stripe": refs, "document": doc });
    serde_json::to_vec_pretty(&value).unwrap_or_default()
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1d1d1f;margin:0;background:#f4f4f5}\
main{max-width:820px;margin:24px auto;background:#fff;padding:40px 48px;border:1px solid #e4e4e7}\
header{display:flex;justify-content:space-between;gap:24px;align-items:flex-start}\
h1{font-size:28px;margin:0 0 8px;letter-spacing:.04em}\
h2{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:#52525b;margin:0 0 6px}\
.seller strong{font-size:18px}\
.meta{border-collapse:collapse}.meta th{text-align:left;font-weight:600;padding:1px 12px 1px 0;color:#52525b}.meta td{text-align:right}\
.parties{display:flex;gap:48px;margin:28px 0}\
.parties p{margin:0}\
table.lines{width:100%;border-collapse:collapse;margin-top:8px}\
.lines th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#52525b;text-align:left;border-bottom:2px solid #d4d4d8;padding:6px 8px}\
.lines td{border-bottom:1px solid #e4e4e7;padding:8px;vertical-align:top}\
.lines .n{text-align:right;white-space:nowrap}\
.details{color:#52525b;font-size:12px}\
.totals{margin-left:auto;border-collapse:collapse;margin-top:16px;min-width:320px}\
.totals td{padding:3px 8px}.totals .n{text-align:right;white-space:nowrap}\
.totals .strong td{font-weight:700;border-top:2px solid #1d1d1f;font-size:16px}\
.note{margin-top:20px;padding:10px 14px;background:#f4f4f5;border-left:4px solid #52525b}\
.pay{display:inline-block;margin-top:20px;padding:10px 18px;background:#1d4ed8;color:#fff;text-decoration:none;border-radius:4px;font-weight:600}\
footer{margin-top:32px;color:#71717a;font-size:12px}\
@media print{body{background:#fff}main{margin:0;border:0;padding:0;max-width:none}.pay{background:none;color:#1d1d1f;padding:0;border-radius:0}}";

/// The HTML artifact (`invoices/{customer}/{period}.html`): a self-contained page that prints
/// as the invoice. Every value is escaped.
pub fn render_html(doc: &Document) -> Vec<u8> {
    let m = |a: i64| esc(&doc.money(a));
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>Invoice {num} · {seller}</title>\n<style>{STYLE}</style></head>\n<body><main>\n<header>\n\
<div class=\"seller\"><strong>{seller}</strong>",
        num = esc(&doc.number),
        seller = esc(&doc.seller.name),
    );
    for l in &doc.seller.address {
        let _ = write!(h, "<br>{}", esc(l));
    }
    if let Some(e) = &doc.seller.email {
        let _ = write!(h, "<br>{}", esc(e));
    }
    if let Some(t) = &doc.seller.tax_id {
        let _ = write!(h, "<br>Tax id: {}", esc(t));
    }
    let _ = write!(
        h,
        "</div>\n<div><h1>INVOICE</h1><table class=\"meta\">\
<tr><th>Invoice number</th><td>{num}</td></tr>\
<tr><th>Issue date</th><td>{issued}</td></tr>\
<tr><th>Due date</th><td>{due}</td></tr>\
<tr><th>Service period</th><td>{from} – {to}</td></tr>",
        num = esc(&doc.number),
        issued = esc(&doc.issue_date),
        due = esc(doc.due_date.as_deref().unwrap_or("Due on receipt")),
        from = esc(&doc.period_start),
        to = esc(&doc.period_end),
    );
    if doc.status != "open" {
        let _ = write!(h, "<tr><th>Status</th><td>{}</td></tr>", esc(&doc.status));
    }
    let b = &doc.bill_to;
    let _ = write!(
        h,
        "</table></div>\n</header>\n<section class=\"parties\"><div><h2>Bill to</h2><p><strong>{}</strong>",
        esc(b.name.as_deref().unwrap_or(&b.customer))
    );
    for l in b.address.iter().chain(&b.tax_ids) {
        let _ = write!(h, "<br>{}", esc(l));
    }
    if b.name.is_some() {
        let _ = write!(h, "<br>Customer {}", esc(&b.customer));
    }
    let _ = write!(
        h,
        "</p></div></section>\n<table class=\"lines\"><thead><tr><th>Description</th>\
<th class=\"n\">Quantity</th><th class=\"n\">Unit price</th><th class=\"n\">Tax</th>\
<th class=\"n\">Amount ({code})</th></tr></thead>\n<tbody>\n",
        code = esc(&doc.code()),
    );
    for l in &doc.lines {
        let _ = write!(h, "<tr><td>{}", esc(&l.description));
        for d in &l.details {
            let _ = write!(h, "<div class=\"details\">{}</div>", esc(d));
        }
        let tax = match l.tax {
            Some(t) => {
                let labels = l.tax_labels.join(", ");
                if labels.is_empty() {
                    m(t)
                } else {
                    format!("{}<div class=\"details\">{}</div>", m(t), esc(&labels))
                }
            }
            None => "–".to_owned(),
        };
        let _ = writeln!(
            h,
            "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{tax}</td><td class=\"n\">{}</td></tr>",
            esc(&l.printed_quantity()),
            esc(l.unit_price.as_deref().unwrap_or("")),
            m(l.amount),
        );
    }
    h.push_str("</tbody></table>\n<table class=\"totals\">\n");
    for (label, amount, strong) in doc.totals() {
        let _ = writeln!(
            h,
            "<tr{}><td>{}</td><td class=\"n\">{}</td></tr>",
            if strong { " class=\"strong\"" } else { "" },
            esc(&label),
            m(amount),
        );
    }
    h.push_str("</table>\n");
    if let Some(n) = &doc.tax_note {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }
    if let Some(u) = &doc.pay_url {
        let _ = writeln!(
            h,
            "<p><a class=\"pay\" href=\"{u}\">Pay online</a><br><span class=\"details\">{u}</span></p>",
            u = esc(u)
        );
    }
    let _ = write!(
        h,
        "<footer>Amounts in {code}, unit prices rounded to the line, half to even. Price book {book}.",
        code = esc(&doc.code()),
        book = esc(&doc.price_book_version),
    );
    if let Some(id) = &doc.stripe_invoice {
        let _ = write!(h, " Stripe invoice {}.", esc(id));
    }
    h.push_str("</footer>\n</main></body></html>\n");
    h.into_bytes()
}

#[cfg(test)]
mod tests;
