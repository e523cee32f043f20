//! Routing: who owns a lead.
//!
//! 1. An existing account on the lead's company domain -> that account's owner
//!    ([`AccountDirectory`]; free-mail and disposable domains are never matched).
//! 2. Else the territory rules (`shared/data/territories.json`: region/country x employee band
//!    -> team; first match wins, else the default team).
//! 3. Within the team, weighted round-robin: an atomic counter per team ([`SlotCounter`], a
//!    DynamoDB `UpdateItem ADD` in production) hands out slot numbers; slot `n` maps to a member
//!    through a precomputed smooth weighted sequence (nginx's algorithm), so concurrent leads
//!    never share a slot and any window of `sum(weights)` consecutive slots gives each member
//!    exactly its weight.

use super::rules::{Conditions, Facts};
use super::scoring::RulesError;
use crate::error::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The bundled territory rules.
pub const BUNDLED_TERRITORIES: &str = include_str!("../../data/territories.json");

/// A team member who can own leads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// CRM user id (Salesforce `005...`).
    pub owner_id: String,
    #[serde(default)]
    pub name: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamFile {
    members: Vec<Member>,
}

/// A team and its weighted rotation.
#[derive(Debug, Clone)]
pub struct Team {
    pub name: String,
    pub members: Vec<Member>,
    /// Member index per slot, length = sum of weights.
    sequence: Vec<usize>,
}

impl Team {
    fn new(name: String, members: Vec<Member>) -> Result<Self, RulesError> {
        if members.is_empty() {
            return Err(RulesError::Inconsistent(format!(
                "team {name} has no members"
            )));
        }
        if let Some(m) = members.iter().find(|m| m.weight == 0 || m.weight > 1000) {
            return Err(RulesError::Inconsistent(format!(
                "team {name}: weight of {} must be 1..=1000",
                m.owner_id
            )));
        }
        // Smooth weighted round-robin: each step every member gains its weight, the richest
        // is picked and pays the total. Spreads a heavy member's turns instead of bunching them.
        let total: i64 = members.iter().map(|m| i64::from(m.weight)).sum();
        let mut current = vec![0i64; members.len()];
        let mut sequence = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, m) in current.iter_mut().zip(&members) {
                *c += i64::from(m.weight);
            }
            let mut best = 0;
            for i in 1..current.len() {
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            sequence.push(best);
        }
        Ok(Self {
            name,
            members,
            sequence,
        })
    }

    /// The member owning slot `n` (any integer; slots wrap around).
    pub fn pick(&self, slot: u64) -> &Member {
        let i = self.sequence[(slot % self.sequence.len() as u64) as usize];
        &self.members[i]
    }

    /// Sum of the members' weights (the rotation's length).
    pub fn total_weight(&self) -> u64 {
        self.sequence.len() as u64
    }
}

/// A territory rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerritoryRule {
    pub id: String,
    pub team: String,
    #[serde(default)]
    pub when: Conditions,
}

#[derive(Deserialize)]
struct TerritoriesFile {
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    default_team: String,
    rules: Vec<TerritoryRule>,
    teams: BTreeMap<String, TeamFile>,
}

/// The territory rules and teams.
#[derive(Debug, Clone)]
pub struct Territories {
    pub default_team: String,
    pub rules: Vec<TerritoryRule>,
    teams: HashMap<String, Team>,
}

impl Territories {
    /// Parses and checks a territories file: every team named exists and has members with
    /// positive weights.
    pub fn parse(json: &str) -> Result<Self, RulesError> {
        let file: TerritoriesFile = serde_json::from_str(json)?;
        let mut teams = HashMap::new();
        for (name, t) in file.teams {
            teams.insert(name.clone(), Team::new(name, t.members)?);
        }
        for team in file
            .rules
            .iter()
            .map(|r| &r.team)
            .chain([&file.default_team])
        {
            if !teams.contains_key(team) {
                return Err(RulesError::Inconsistent(format!(
                    "team {team} is not defined"
                )));
            }
        }
        Ok(Self {
            default_team: file.default_team,
            rules: file.rules,
            teams,
        })
    }

    /// The bundled territories.
    pub fn bundled() -> Result<Self, RulesError> {
        Self::parse(BUNDLED_TERRITORIES)
    }

    /// The team for the facts and the id of the rule that chose it (`default` when none).
    /// `None` only for a table built without its default team (`parse` refuses those).
    pub fn team_for(&self, facts: &Facts) -> Option<(&Team, &str)> {
        let (team, rule) = self
            .rules
            .iter()
            .find(|r| r.when.matches(facts))
            .map_or((self.default_team.as_str(), "default"), |r| {
                (r.team.as_str(), r.id.as_str())
            });
        let team = self
            .teams
            .get(team)
            .or_else(|| self.teams.get(&self.default_team))?;
        Some((team, rule))
    }

    /// A team by name.
    pub fn team(&self, name: &str) -> Option<&Team> {
        self.teams.get(name)
    }
}

/// An existing customer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub domain: String,
    pub account_id: String,
    pub name: String,
    pub owner_id: String,
}

/// Accounts by company domain.
#[async_trait]
pub trait AccountDirectory: Send + Sync {
    async fn account_for_domain(&self, domain: &str) -> Result<Option<Account>>;
    /// Records (or updates) the account of `account.domain` (customer sync writes it).
    async fn put_account(&self, account: &Account) -> Result<()>;
}

/// Atomic counters: each call returns a number no other call got (1, 2, 3, ...).
#[async_trait]
pub trait SlotCounter: Send + Sync {
    async fn next(&self, counter: &str) -> Result<u64>;
}

/// How the owner was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMethod {
    /// Owner of the existing account on the company domain.
    Account,
    /// Territory team + weighted round-robin.
    Territory,
    /// Kept from an earlier event of the same lead (owners are sticky).
    Existing,
}

/// The routing decision, stored with the lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub owner_id: String,
    pub owner_name: String,
    pub method: RouteMethod,
    pub team: Option<String>,
    pub rule: Option<String>,
    pub slot: Option<u64>,
    pub account_id: Option<String>,
    pub reason: String,
}

/// Routes a lead that has no owner yet. `company_domain` is `None` for free-mail/disposable.
pub async fn route(
    territories: &Territories,
    accounts: &dyn AccountDirectory,
    counter: &dyn SlotCounter,
    company_domain: Option<&str>,
    facts: &Facts,
) -> Result<Route> {
    if let Some(domain) = company_domain
        && let Some(acc) = accounts.account_for_domain(domain).await?
    {
        return Ok(Route {
            owner_id: acc.owner_id.clone(),
            owner_name: String::new(),
            method: RouteMethod::Account,
            team: None,
            rule: None,
            slot: None,
            reason: format!(
                "existing account {} ({}) on domain {domain}",
                acc.name, acc.account_id
            ),
            account_id: Some(acc.account_id),
        });
    }
    let (team, rule) = territories.team_for(facts).ok_or_else(|| {
        crate::Error::Invalid(format!(
            "territory team {} is not defined",
            territories.default_team
        ))
    })?;
    let n = counter.next(&team.name).await?;
    let slot = n.saturating_sub(1);
    let member = team.pick(slot);
    Ok(Route {
        owner_id: member.owner_id.clone(),
        owner_name: member.name.clone(),
        method: RouteMethod::Territory,
        team: Some(team.name.clone()),
        rule: Some(rule.to_owned()),
        slot: Some(slot),
        account_id: None,
        reason: format!(
            "territory rule {rule} -> team {}; round-robin slot {slot} of {}",
            team.name,
            team.total_weight()
        ),
    })
}

/// In-memory accounts (tests).
#[derive(Debug, Default)]
pub struct MemoryAccounts(Mutex<HashMap<String, Account>>);

impl MemoryAccounts {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&self, account: Account) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.domain.clone(), account);
    }
}

#[async_trait]
impl AccountDirectory for MemoryAccounts {
    async fn account_for_domain(&self, domain: &str) -> Result<Option<Account>> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .cloned())
    }

    async fn put_account(&self, account: &Account) -> Result<()> {
        self.insert(account.clone());
        Ok(())
    }
}

/// In-memory counters (tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryCounter(Mutex<HashMap<String, u64>>);

impl MemoryCounter {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SlotCounter for MemoryCounter {
    async fn next(&self, counter: &str) -> Result<u64> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(counter.to_owned()).or_insert(0);
        *n += 1;
        Ok(*n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(region: &str, country: &str, band: Option<&str>, class: &str) -> Facts {
        Facts {
            sources: vec!["portal.signup".into()],
            region: Some(region.into()),
            country: Some(country.into()),
            employee_band: band.map(str::to_owned),
            domain_class: class.into(),
            ..Facts::default()
        }
    }

    #[test]
    fn territory_rules_pick_teams() {
        let t = Territories::bundled().unwrap();
        let cases = [
            (
                facts("NA", "US", Some("5001+"), "corporate"),
                "na-enterprise",
                "na-enterprise",
            ),
            (
                facts("NA", "CA", Some("11-50"), "corporate"),
                "na-commercial",
                "na-commercial",
            ),
            (
                facts("NA", "US", None, "corporate"),
                "na-commercial",
                "na-commercial",
            ),
            (
                facts("EMEA", "DE", Some("1001-5000"), "corporate"),
                "dach-enterprise",
                "dach-enterprise",
            ),
            (
                facts("EMEA", "FR", Some("5001+"), "corporate"),
                "emea-enterprise",
                "emea-enterprise",
            ),
            (
                facts("EMEA", "FR", Some("51-200"), "corporate"),
                "emea-commercial",
                "emea-commercial",
            ),
            (
                facts("APAC", "JP", Some("51-200"), "corporate"),
                "apac",
                "apac",
            ),
            (facts("LATAM", "BR", None, "corporate"), "latam", "latam"),
            (
                facts("NA", "US", Some("5001+"), "free_mail"),
                "self-serve",
                "individuals",
            ),
        ];
        for (f, team, rule) in cases {
            let (t, r) = t.team_for(&f).unwrap();
            assert_eq!((t.name.as_str(), r), (team, rule), "{f:?}");
        }
        let unknown = Facts {
            domain_class: "corporate".into(),
            ..Facts::default()
        };
        let (team, rule) = t.team_for(&unknown).unwrap();
        assert_eq!((team.name.as_str(), rule), ("inbound", "default"));
    }

    #[test]
    fn weighted_round_robin_is_fair_within_one_percent_over_10000_picks() {
        let t = Territories::bundled().unwrap();
        for team in [
            "emea-commercial",
            "na-enterprise",
            "dach-enterprise",
            "self-serve",
        ] {
            let team = t.team(team).unwrap();
            let total: u64 = team.members.iter().map(|m| u64::from(m.weight)).sum();
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for slot in 0..10_000u64 {
                *counts.entry(team.pick(slot).owner_id.as_str()).or_default() += 1;
            }
            for m in &team.members {
                let expected = 10_000.0 * f64::from(m.weight) / total as f64;
                let got = counts.get(m.owner_id.as_str()).copied().unwrap_or(0) as f64;
                assert!(
                    (got - expected).abs() / 10_000.0 < 0.01,
                    "{} {}: {got} vs {expected}",
                    team.name,
                    m.owner_id
                );
            }
        }
    }

    #[test]
    fn rotation_is_smooth() {
        let team = Team::new(
            "t".into(),
            vec![
                Member {
                    owner_id: "a".into(),
                    name: String::new(),
                    weight: 5,
                },
                Member {
                    owner_id: "b".into(),
                    name: String::new(),
                    weight: 1,
                },
                Member {
                    owner_id: "c".into(),
                    name: String::new(),
                    weight: 1,
                },
            ],
        )
        .unwrap();
        let seq: String = (0..7).map(|s| team.pick(s).owner_id.clone()).collect();
        assert_eq!(
            seq, "aabacaa",
            "heavy member's turns are spread, not bunched"
        );
    }

    #[test]
    fn bad_territories_are_refused() {
        let missing = r#"{"default_team": "x", "rules": [], "teams": {}}"#;
        assert!(matches!(
            Territories::parse(missing),
            Err(RulesError::Inconsistent(_))
        ));
        let zero = r#"{"default_team": "x", "rules": [], "teams": {"x": {"members": [{"owner_id": "o", "weight": 0}]}}}"#;
        assert!(matches!(
            Territories::parse(zero),
            Err(RulesError::Inconsistent(_))
        ));
        let unknown_team = r#"{"default_team": "x", "rules": [{"id": "r", "team": "y"}], "teams": {"x": {"members": [{"owner_id": "o", "weight": 1}]}}}"#;
        assert!(matches!(
            Territories::parse(unknown_team),
            Err(RulesError::Inconsistent(_))
        ));
    }

    #[tokio::test]
    async fn accounts_win_over_territories() {
        let t = Territories::bundled().unwrap();
        let accounts = MemoryAccounts::new();
        accounts.insert(Account {
            domain: "acme.example".into(),
            account_id: "001A".into(),
            name: "Acme".into(),
            owner_id: "005OWNER".into(),
        });
        let counter = MemoryCounter::new();
        let f = facts("NA", "US", Some("5001+"), "corporate");
        let r = route(&t, &accounts, &counter, Some("acme.example"), &f)
            .await
            .unwrap();
        assert_eq!(
            (r.owner_id.as_str(), r.method),
            ("005OWNER", RouteMethod::Account)
        );
        let r = route(&t, &accounts, &counter, Some("other.example"), &f)
            .await
            .unwrap();
        assert_eq!(r.method, RouteMethod::Territory);
        assert_eq!(r.team.as_deref(), Some("na-enterprise"));
        assert_eq!(r.slot, Some(0));
        let r = route(&t, &accounts, &counter, None, &f).await.unwrap();
        assert_eq!(r.slot, Some(1), "the counter advanced");
    }
}
