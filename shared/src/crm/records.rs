//! The customer objects of the CRM: [`CrmAccount`], [`CrmContact`], [`CrmOpportunity`], the
//! link of a converted lead ([`LeadConversion`]), an account's health ([`AccountHealth`]) and
//! follow-up tasks ([`CrmTask`]). Plain values: whoever builds them (customer sync, revenue
//! operations) decides what they say; the adapters decide how they are stored.

use crate::values::{Country, Money};
use serde::{Deserialize, Serialize};

/// Where a customer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Trial,
    Customer,
    PastDue,
    Churned,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Trial => "trial",
            AccountStatus::Customer => "customer",
            AccountStatus::PastDue => "past_due",
            AccountStatus::Churned => "churned",
        }
    }
}

/// A company account: one per Stripe customer, its external id the Stripe customer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmAccount {
    /// The Stripe customer id.
    pub external_id: String,
    /// The company, or the person for an individual buyer.
    pub name: String,
    /// Company domains (never a free-mail or disposable domain); empty for individuals.
    pub domains: Vec<String>,
    pub billing_country: Option<Country>,
    pub owner_id: String,
    pub status: AccountStatus,
    pub license_id: Option<String>,
    /// `YYYY-MM-DD`.
    pub license_expires: Option<String>,
    pub last_invoice_id: Option<String>,
    pub last_invoice_total: Option<Money>,
    /// `refund`, `dispute` when money came back or is contested.
    pub flags: Vec<String>,
}

/// A person at an account. The external id is a hash of the e-mail, so the key itself is no
/// personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmContact {
    pub external_id: String,
    pub account_external_id: String,
    /// Personal data: sent to Salesforce, never stored by the built-in sink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// The lead this person came in as, when there was one.
    pub lead_id: Option<String>,
}

impl CrmContact {
    /// The same contact without personal data (what the built-in sink stores).
    pub fn without_contact_data(&self) -> Self {
        Self {
            email: None,
            first_name: None,
            last_name: None,
            ..self.clone()
        }
    }
}

/// Opportunity stages blapi writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpportunityStage {
    #[serde(rename = "Open")]
    Open,
    #[serde(rename = "Closed Won")]
    ClosedWon,
    #[serde(rename = "Closed Lost")]
    ClosedLost,
}

impl OpportunityStage {
    /// The Salesforce `StageName`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpportunityStage::Open => "Open",
            OpportunityStage::ClosedWon => "Closed Won",
            OpportunityStage::ClosedLost => "Closed Lost",
        }
    }
}

/// One purchase, change or renewal of a subscription term. The external id is
/// `{subscription}:{term start, YYYY-MM-DD}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmOpportunity {
    pub external_id: String,
    pub account_external_id: String,
    pub name: String,
    pub stage: OpportunityStage,
    /// Annualised contract value (`None` when the price is unknown).
    pub amount: Option<Money>,
    pub seats: Option<u32>,
    pub sku: Option<String>,
    /// `YYYY-MM-DD`.
    pub close_date: String,
    pub subscription_id: String,
    pub license_id: Option<String>,
    /// Why a deal was lost (Stripe's cancellation reason).
    pub loss_reason: Option<String>,
    pub flags: Vec<String>,
    pub owner_id: String,
}

/// A lead that became a customer: its status and its account. (A converted lead cannot be
/// updated in Salesforce and `convertLead` is not REST: the lead is linked instead.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadConversion {
    pub lead_id: String,
    pub account_external_id: String,
}

/// A person's e-mail and sharing choice, written onto their Lead or Contact (only that field:
/// `HasOptedOutOfEmail` in Salesforce, `opted_out` in the sink). `false` withdraws an opt-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub object: super::CrmObject,
    pub external_id: String,
    pub opted_out: bool,
}

/// A customer's health and product telemetry, written onto its Account (only these fields:
/// the account itself is customer-sync's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountHealth {
    /// The account's external id (the Stripe customer id).
    pub account_external_id: String,
    /// 0..=100; `None` when there is no data to score.
    pub score: Option<u32>,
    /// `healthy`, `watch`, `at_risk` or `no_data`.
    pub band: String,
    /// The reasons, most important first, joined with "; ".
    pub reasons: String,
    /// `YYYY-MM-DD` of the scoring.
    pub scored_on: String,
    /// Active users reported by telemetry (latest), if any.
    pub active_users: Option<u64>,
    /// Seats of the customer's valid licenses.
    pub licensed_seats: Option<u32>,
    /// Metered usage this period, human-readable (`api_calls 12 345; storage_gb 12.5`).
    pub usage_summary: String,
}

/// A follow-up task for a person (an account owner), on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmTask {
    /// Our key for the task (idempotent upsert).
    pub external_id: String,
    pub account_external_id: String,
    pub owner_id: String,
    pub subject: String,
    pub description: String,
    /// `YYYY-MM-DD`.
    pub due_date: String,
    /// `High` or `Normal`.
    pub priority: String,
}

/// A money amount in major units for a CRM currency field (`1234 usd` -> `12.34`,
/// `1234 jpy` -> `1234`), exact: the decimal is written as text, never through `f64`.
pub fn major_units(money: &Money) -> serde_json::Value {
    let exp = money.currency.exponent();
    let sign = if money.amount < 0 { "-" } else { "" };
    let abs = money.amount.unsigned_abs();
    let text = if exp == 0 {
        format!("{sign}{abs}")
    } else {
        let div = 10u64.pow(exp);
        format!("{sign}{}.{:0w$}", abs / div, abs % div, w = exp as usize)
    };
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Currency;

    #[test]
    fn amounts_in_major_units() {
        let m = |a: i64, c: &str| major_units(&Money::new(a, c.parse::<Currency>().unwrap()));
        assert_eq!(m(123_456, "usd").to_string(), "1234.56");
        assert_eq!(m(5, "eur").to_string(), "0.05");
        assert_eq!(m(-250, "usd").to_string(), "-2.5");
        assert_eq!(m(1234, "jpy").to_string(), "1234");
    }

    #[test]
    fn stages_and_statuses_read_as_the_crm_writes_them() {
        assert_eq!(
            serde_json::to_string(&OpportunityStage::ClosedWon).unwrap(),
            "\"Closed Won\""
        );
        assert_eq!(AccountStatus::PastDue.as_str(), "past_due");
        let c = CrmContact {
            external_id: "k".into(),
            account_external_id: "cus_1".into(),
            email: Some("a@b.example".into()),
            first_name: Some("A".into()),
            last_name: None,
            lead_id: None,
        };
        let stored = serde_json::to_string(&c.without_contact_data()).unwrap();
        assert!(!stored.contains("a@b.example") && !stored.contains("\"A\""));
    }
}
