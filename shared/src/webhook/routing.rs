//! The routing table: which queue(s) an accepted event goes to, by source and event type.
//!
//! One event may go to several queues (a subscription change is both a license request and a
//! billing event). An event matching no rule is archived and acknowledged but not enqueued
//! (counted as unrouted). The table is data, so the rules read like the contract:
//!
//! | source      | event type                                   | queue            |
//! |-------------|----------------------------------------------|------------------|
//! | `stripe`    | `checkout.session.completed`                 | license-requests, customer-events |
//! | `stripe`    | `customer.subscription.*`                    | license-requests, billing-events, customer-events |
//! | `stripe`    | `invoice.paid`, `invoice.payment_succeeded`  | license-requests, billing-events, customer-events |
//! | `stripe`    | `invoice.payment_failed`                     | billing-events, customer-events |
//! | `stripe`    | `invoice.*`                                  | billing-events   |
//! | `stripe`    | `customer.created`                           | lead-events, billing-events, customer-events |
//! | `stripe`    | `customer.updated`                           | billing-events, customer-events |
//! | `stripe`    | `payment_method.attached`, `.detached`, `.updated`, `setup_intent.succeeded`, `customer.source.expiring` | billing-events |
//! | `stripe`    | `charge.refunded`, `charge.dispute.closed`   | license-requests, customer-events |
//! | `stripe`    | `charge.dispute.created`                     | customer-events  |
//! | `portal`    | `lead.signup`, `lead.contact_us`             | lead-events      |
//! | `portal`    | `privacy.request`                            | privacy-requests |
//! | `telemetry` | `usage.reported`                             | usage-events     |
//!
//! (`invoice.payment_succeeded` reaches customer sync too: localstripe sends it instead of
//! `invoice.paid`; where Stripe sends both, the second changes nothing and writes nothing.)

/// A destination queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    LicenseRequests,
    BillingEvents,
    UsageEvents,
    LeadEvents,
    CustomerEvents,
    PrivacyRequests,
}

impl Route {
    /// Every route, in a fixed order.
    pub const ALL: [Route; 6] = [
        Route::LicenseRequests,
        Route::BillingEvents,
        Route::UsageEvents,
        Route::LeadEvents,
        Route::CustomerEvents,
        Route::PrivacyRequests,
    ];

    /// The queue's short name (logs, metrics).
    pub fn name(self) -> &'static str {
        match self {
            Route::LicenseRequests => "license-requests",
            Route::BillingEvents => "billing-events",
            Route::UsageEvents => "usage-events",
            Route::LeadEvents => "lead-events",
            Route::CustomerEvents => "customer-events",
            Route::PrivacyRequests => "privacy-requests",
        }
    }

    /// The route of a queue's short name ([`Route::name`]).
    pub fn from_name(name: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The environment variable (set by template.yaml) holding the queue URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Route::LicenseRequests => "LICENSE_REQUESTS_QUEUE_URL",
            Route::BillingEvents => "BILLING_EVENTS_QUEUE_URL",
            Route::UsageEvents => "USAGE_EVENTS_QUEUE_URL",
            Route::LeadEvents => "LEAD_EVENTS_QUEUE_URL",
            Route::CustomerEvents => "CUSTOMER_EVENTS_QUEUE_URL",
            Route::PrivacyRequests => "PRIVACY_REQUESTS_QUEUE_URL",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of routes (no allocation; iterates in [`Route::ALL`] order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routes(u8);

impl Routes {
    /// No route: the event is archived only.
    pub const NONE: Routes = Routes(0);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, route: Route) -> bool {
        self.0 & route.bit() != 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = Route> {
        Route::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    fn with(self, route: Route) -> Self {
        Routes(self.0 | route.bit())
    }
}

impl FromIterator<Route> for Routes {
    fn from_iter<I: IntoIterator<Item = Route>>(iter: I) -> Self {
        iter.into_iter().fold(Routes::NONE, Routes::with)
    }
}

/// An event-type pattern: exact, or `prefix.*` (one or more further segments).
#[derive(Debug, Clone, Copy)]
struct Rule {
    source: &'static str,
    pattern: &'static str,
    route: Route,
}

const fn rule(source: &'static str, pattern: &'static str, route: Route) -> Rule {
    Rule {
        source,
        pattern,
        route,
    }
}

/// The table. Order does not matter: every matching rule adds its queue.
const TABLE: &[Rule] = &[
    rule(
        "stripe",
        "checkout.session.completed",
        Route::LicenseRequests,
    ),
    rule("stripe", "customer.subscription.*", Route::LicenseRequests),
    rule("stripe", "invoice.paid", Route::LicenseRequests),
    rule(
        "stripe",
        "invoice.payment_succeeded",
        Route::LicenseRequests,
    ),
    rule("stripe", "invoice.*", Route::BillingEvents),
    rule("stripe", "customer.subscription.*", Route::BillingEvents),
    rule("stripe", "customer.created", Route::LeadEvents),
    rule(
        "stripe",
        "checkout.session.completed",
        Route::CustomerEvents,
    ),
    rule("stripe", "customer.created", Route::CustomerEvents),
    rule("stripe", "customer.updated", Route::CustomerEvents),
    rule("stripe", "customer.subscription.*", Route::CustomerEvents),
    rule("stripe", "invoice.paid", Route::CustomerEvents),
    rule("stripe", "invoice.payment_succeeded", Route::CustomerEvents),
    rule("stripe", "invoice.payment_failed", Route::CustomerEvents),
    rule("stripe", "charge.refunded", Route::CustomerEvents),
    rule("stripe", "charge.dispute.created", Route::CustomerEvents),
    // A full refund or a lost dispute revokes the license.
    rule("stripe", "charge.refunded", Route::LicenseRequests),
    rule("stripe", "charge.dispute.closed", Route::LicenseRequests),
    rule("stripe", "charge.dispute.closed", Route::CustomerEvents),
    // The card on file (dunning starts at once without one; expiry notices).
    rule("stripe", "customer.created", Route::BillingEvents),
    rule("stripe", "customer.updated", Route::BillingEvents),
    rule("stripe", "payment_method.attached", Route::BillingEvents),
    rule("stripe", "payment_method.detached", Route::BillingEvents),
    rule("stripe", "payment_method.updated", Route::BillingEvents),
    rule("stripe", "setup_intent.succeeded", Route::BillingEvents),
    rule("stripe", "customer.source.expiring", Route::BillingEvents),
    rule("portal", "lead.signup", Route::LeadEvents),
    rule("portal", "lead.contact_us", Route::LeadEvents),
    rule("portal", "privacy.request", Route::PrivacyRequests),
    rule("telemetry", "usage.reported", Route::UsageEvents),
];

fn matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        // "invoice.*" matches "invoice.paid" but not "invoice." nor "invoiceX.paid".
        Some(prefix) => event_type.len() > prefix.len() && event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// The queues an event of `event_type` from `source` goes to.
pub fn routes(source: &str, event_type: &str) -> Routes {
    TABLE
        .iter()
        .filter(|r| r.source == source && matches(r.pattern, event_type))
        .map(|r| r.route)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Route::*;

    fn of(source: &str, t: &str) -> Vec<Route> {
        routes(source, t).iter().collect()
    }

    #[test]
    fn stripe_table() {
        assert_eq!(
            of("stripe", "checkout.session.completed"),
            vec![LicenseRequests, CustomerEvents]
        );
        for t in [
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "invoice.paid",
            "invoice.payment_succeeded",
        ] {
            assert_eq!(
                of("stripe", t),
                vec![LicenseRequests, BillingEvents, CustomerEvents],
                "{t}"
            );
        }
        assert_eq!(
            of("stripe", "invoice.payment_failed"),
            vec![BillingEvents, CustomerEvents]
        );
        assert_eq!(of("stripe", "invoice.created"), vec![BillingEvents]);
        assert_eq!(
            of("stripe", "customer.created"),
            vec![BillingEvents, LeadEvents, CustomerEvents]
        );
        assert_eq!(
            of("stripe", "charge.refunded"),
            vec![LicenseRequests, CustomerEvents]
        );
        assert_eq!(
            of("stripe", "charge.dispute.closed"),
            vec![LicenseRequests, CustomerEvents]
        );
        for t in [
            "payment_method.attached",
            "payment_method.detached",
            "payment_method.updated",
            "setup_intent.succeeded",
            "customer.source.expiring",
        ] {
            assert_eq!(of("stripe", t), vec![BillingEvents], "{t}");
        }
        assert_eq!(
            of("stripe", "customer.updated"),
            vec![BillingEvents, CustomerEvents]
        );
        assert_eq!(of("stripe", "charge.dispute.created"), vec![CustomerEvents]);
        for unrouted in [
            "customer.deleted",
            "charge.succeeded",
            "checkout.session.expired",
            "plan.created",
            "payment_intent.succeeded",
            "invoice",
            "invoice.",
            "invoiceitem.created",
            "customer.subscription",
            "",
        ] {
            assert!(routes("stripe", unrouted).is_empty(), "{unrouted}");
        }
    }

    #[test]
    fn first_party_tables() {
        assert_eq!(of("portal", "lead.signup"), vec![LeadEvents]);
        assert_eq!(of("portal", "lead.contact_us"), vec![LeadEvents]);
        assert_eq!(of("telemetry", "usage.reported"), vec![UsageEvents]);
        assert!(routes("portal", "usage.reported").is_empty());
        assert!(routes("telemetry", "lead.signup").is_empty());
        assert!(routes("portal", "lead.deleted").is_empty());
        // Types are per source: a first-party source cannot forge a Stripe route.
        assert!(routes("portal", "invoice.paid").is_empty());
        assert!(routes("other", "lead.signup").is_empty());
    }

    #[test]
    fn route_set() {
        let set: Routes = [LeadEvents, LicenseRequests, LeadEvents]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![LicenseRequests, LeadEvents]
        );
        assert!(Routes::NONE.is_empty());
        assert_eq!(LicenseRequests.env_var(), "LICENSE_REQUESTS_QUEUE_URL");
        assert_eq!(UsageEvents.name(), "usage-events");
        for r in Route::ALL {
            assert_eq!(Route::from_name(r.name()), Some(r));
        }
        assert_eq!(Route::from_name("usage_events"), None);
    }
}
