//! The SKU table: what each sold SKU licenses.
//!
//! A Stripe price (or, on localstripe and legacy accounts, a plan) names its SKU in metadata
//! `sku` (`professional`, `enterprise`, `advanced`: Mattermost's short names); the product's
//! metadata `sku` is the fallback. This table, kept as data here and reviewed like code, gives
//! each short name its display name and feature flags. An unknown SKU is a permanent error:
//! nobody should get a license whose content we cannot state.
//!
//! | short name     | sku_name                        | seat count enforced | future features |
//! |----------------|---------------------------------|---------------------|-----------------|
//! | `professional` | Mattermost Professional         | no                  | no              |
//! | `enterprise`   | Mattermost Enterprise           | no                  | no              |
//! | `advanced`     | Mattermost Enterprise Advanced  | no                  | yes             |

use super::format::Features;
use crate::error::{Error, Result};

/// One row of the SKU table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sku {
    pub short_name: &'static str,
    pub name: &'static str,
    pub seat_count_enforced: bool,
    tier: Tier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Professional,
    Enterprise,
    Advanced,
}

/// Every SKU we sell.
pub const SKUS: &[Sku] = &[
    Sku {
        short_name: "professional",
        name: "Mattermost Professional",
        seat_count_enforced: false,
        tier: Tier::Professional,
    },
    Sku {
        short_name: "enterprise",
        name: "Mattermost Enterprise",
        seat_count_enforced: false,
        tier: Tier::Enterprise,
    },
    Sku {
        short_name: "advanced",
        name: "Mattermost Enterprise Advanced",
        seat_count_enforced: false,
        tier: Tier::Advanced,
    },
];

impl Sku {
    /// Looks a short name up (case-insensitive, trimmed). Unknown: [`Error::Invalid`].
    pub fn lookup(short_name: &str) -> Result<Sku> {
        let wanted = short_name.trim().to_ascii_lowercase();
        SKUS.iter()
            .find(|s| s.short_name == wanted)
            .copied()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown SKU {short_name:?}: add it to the SKU table (licensing::sku) or fix the price metadata"
                ))
            })
    }

    /// The feature flags of this SKU for `users` seats.
    pub fn features(&self, users: u32) -> Features {
        let pro = self.tier >= Tier::Professional;
        let ent = self.tier >= Tier::Enterprise;
        let adv = self.tier >= Tier::Advanced;
        Features {
            users,
            // Professional: SSO, directory sync, guests, permissions.
            ldap: pro,
            ldap_groups: pro,
            mfa: pro,
            google_oauth: pro,
            office365_oauth: pro,
            openid: pro,
            saml: pro,
            guest_accounts: pro,
            guest_accounts_permissions: pro,
            custom_permissions_schemes: pro,
            announcement: pro,
            theme_management: pro,
            mhpns: pro,
            // Enterprise: scale, compliance, retention.
            compliance: ent,
            cluster: ent,
            metrics: ent,
            elastic_search: ent,
            email_notification_contents: ent,
            data_retention: ent,
            message_export: ent,
            custom_terms_of_service: ent,
            id_loaded: ent,
            lock_teammate_name_display: ent,
            shared_channels: ent,
            remote_cluster_service: ent,
            // Advanced: everything, including what ships later.
            future_features: adv,
            cloud: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_skus_map_to_names_and_features() {
        let pro = Sku::lookup("professional").unwrap();
        assert_eq!(pro.name, "Mattermost Professional");
        let f = pro.features(25);
        assert_eq!(f.users, 25);
        assert!(f.saml && f.ldap && f.guest_accounts);
        assert!(!f.cluster && !f.compliance && !f.future_features);

        let ent = Sku::lookup(" Enterprise ").unwrap();
        assert_eq!(ent.short_name, "enterprise");
        let f = ent.features(100);
        assert!(f.saml && f.cluster && f.compliance && f.data_retention);
        assert!(!f.future_features);

        let adv = Sku::lookup("advanced").unwrap().features(1);
        assert!(adv.future_features && adv.cluster);
        assert!(!adv.cloud, "self-hosted licenses never flag cloud");
    }

    #[test]
    fn unknown_sku_is_a_clear_permanent_error() {
        let e = Sku::lookup("platinum").unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("unknown SKU \"platinum\""), "{e}");
    }
}
