//! Company enrichment by e-mail domain.
//!
//! - [`EnrichmentProvider`] is the port to the provider (Clearbit-style Company API: `GET
//!   {base}/v2/companies/find?domain=..` with a bearer key). Adapters: [`HttpProvider`] (timeout,
//!   retries on 429/5xx honouring `Retry-After`), [`FixtureProvider`] (a bundled or given JSON
//!   file, for the demo and local runs without any provider), [`MemoryProvider`] (tests, bench).
//! - [`EnrichmentCache`] keeps each domain's answer (found *or* unknown) with a TTL, so a domain
//!   costs at most one lookup per TTL however many leads share it. The DynamoDB adapter lives in
//!   [`super::store`]; [`MemoryCache`] is for tests.
//! - [`Enricher`] puts them together and never fails a lead: free-mail and disposable domains
//!   are skipped, a provider failure yields [`Enrichment::Unavailable`] (the lead is routed with
//!   what is known and flagged `needs_enrichment`).

use crate::config::Secret;
use crate::error::{Error, Result};
use crate::retry::{Attempt, RetryPolicy};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::domains::DomainClass;
use super::normalize::Country;

/// Company size bands used by the scoring and territory rules files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum EmployeeBand {
    #[serde(rename = "1-10")]
    Micro,
    #[serde(rename = "11-50")]
    Small,
    #[serde(rename = "51-200")]
    Medium,
    #[serde(rename = "201-1000")]
    Large,
    #[serde(rename = "1001-5000")]
    Enterprise,
    #[serde(rename = "5001+")]
    Global,
}

impl EmployeeBand {
    /// The band of a head count.
    pub fn of(employees: u64) -> Self {
        match employees {
            0..=10 => Self::Micro,
            11..=50 => Self::Small,
            51..=200 => Self::Medium,
            201..=1000 => Self::Large,
            1001..=5000 => Self::Enterprise,
            _ => Self::Global,
        }
    }

    /// The band of a provider range such as `51-250`, `1K-5K` or `100K+` (its lower bound).
    pub fn of_range(range: &str) -> Option<Self> {
        let low = range
            .trim()
            .split(['-', '+'])
            .next()?
            .trim()
            .to_ascii_lowercase();
        let (num, mult) = match low.strip_suffix('k') {
            Some(n) => (n, 1000),
            None => (low.as_str(), 1),
        };
        // An absurd range (overflowing u64, or past `MAX_EMPLOYEES`) is no range: the lead
        // is banded "unknown".
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .and_then(plausible)
            .map(Self::of)
    }

    /// The name used in rules files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Micro => "1-10",
            Self::Small => "11-50",
            Self::Medium => "51-200",
            Self::Large => "201-1000",
            Self::Enterprise => "1001-5000",
            Self::Global => "5001+",
        }
    }
}

/// The largest head count taken as real. The largest employers have about two million people;
/// a provider saying more is wrong (a unit mix-up, a placeholder like `u64::MAX`), so the count
/// is dropped and the lead banded from the range or "unknown". It also keeps what reaches the
/// CRM valid (Salesforce's `NumberOfEmployees` holds eight digits).
pub const MAX_EMPLOYEES: u64 = 10_000_000;

/// `Some(n)` when `n` is a believable head count ([`MAX_EMPLOYEES`]).
fn plausible(n: u64) -> Option<u64> {
    (n <= MAX_EMPLOYEES).then_some(n)
}

/// What the provider knows of a company.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub domain: String,
    pub name: Option<String>,
    pub sector: Option<String>,
    pub industry: Option<String>,
    pub employees: Option<u64>,
    pub employees_range: Option<String>,
    pub country: Option<Country>,
    /// Estimated annual revenue in whole US dollars (an estimate, not money we bill).
    pub annual_revenue_usd: Option<u64>,
}

impl Company {
    /// The size band, from the head count or else the range.
    pub fn band(&self) -> Option<EmployeeBand> {
        self.employees
            .and_then(plausible)
            .map(EmployeeBand::of)
            .or_else(|| {
                self.employees_range
                    .as_deref()
                    .and_then(EmployeeBand::of_range)
            })
    }
}

/// The provider's JSON (Clearbit Company API shape; Apollo's maps onto it).
#[derive(Debug, Deserialize)]
struct ProviderCompany {
    domain: Option<String>,
    name: Option<String>,
    #[serde(default)]
    category: ProviderCategory,
    #[serde(default)]
    metrics: ProviderMetrics,
    #[serde(default)]
    geo: ProviderGeo,
}

#[derive(Debug, Default, Deserialize)]
struct ProviderCategory {
    sector: Option<String>,
    industry: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderMetrics {
    #[serde(default, deserialize_with = "count")]
    employees: Option<u64>,
    employees_range: Option<String>,
    #[serde(default, deserialize_with = "count")]
    annual_revenue: Option<u64>,
}

/// A provider's count: a non-negative whole number (as a JSON number, a whole float such as
/// `250.0`, or numeric text); anything else (negative, fractional, too large for `u64`, not a
/// number) is no value rather than a failed lookup, so one bad field does not lose the rest of
/// the company.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    // Whole floats are exact up to 2^53.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f <= EXACT)
                .map(|f| f as u64)
        }),
        Some(serde_json::Value::String(t)) => t.trim().parse::<u64>().ok(),
        _ => None,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderGeo {
    country_code: Option<String>,
    country: Option<String>,
}

impl ProviderCompany {
    fn into_company(self, looked_up: &str) -> Company {
        Company {
            domain: self
                .domain
                .unwrap_or_else(|| looked_up.to_owned())
                .to_lowercase(),
            name: self.name,
            sector: self.category.sector,
            industry: self.category.industry,
            employees: self.metrics.employees.and_then(|n| {
                let kept = plausible(n);
                if kept.is_none() {
                    tracing::warn!(
                        employees = n,
                        max = MAX_EMPLOYEES,
                        "provider head count not believable; dropped"
                    );
                }
                kept
            }),
            employees_range: self.metrics.employees_range,
            country: self
                .geo
                .country_code
                .as_deref()
                .and_then(Country::parse)
                .or_else(|| self.geo.country.as_deref().and_then(Country::parse)),
            annual_revenue_usd: self.metrics.annual_revenue,
        }
    }
}

/// Why the provider gave no answer (the lead then goes on without enrichment).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider throttled us (HTTP 429) and retries ran out")]
    Throttled,
    #[error("provider failed with HTTP {0}")]
    Server(u16),
    #[error("provider unreachable or too slow: {0}")]
    Transport(String),
    #[error("provider is still researching the domain (HTTP 202)")]
    Pending,
    #[error("provider refused our request with HTTP {0} (check the API key)")]
    Refused(u16),
    #[error("provider answered something unexpected: {0}")]
    Unexpected(String),
}

/// The enrichment provider port: `Ok(None)` = the provider does not know the domain.
#[async_trait]
pub trait EnrichmentProvider: Send + Sync {
    async fn lookup(&self, domain: &str) -> std::result::Result<Option<Company>, ProviderError>;
    /// Lookups sent so far, retries included (benchmarks count provider cost).
    fn calls(&self) -> u64;
}

/// The largest provider answer read: one company is a few KiB; anything near this is not a
/// company (the lookup fails as [`ProviderError::Transport`], not retried, and the lead goes on
/// unenriched).
pub const PROVIDER_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The HTTP adapter.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    api: crate::http::ApiClient,
}

impl HttpProvider {
    /// `base_url` without trailing slash; `timeout` bounds each attempt.
    pub fn new(
        base_url: impl Into<String>,
        api_key: Secret<String>,
        timeout: Duration,
    ) -> Result<Self> {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        };
        Ok(Self {
            api: crate::http::ApiClient::new(base_url, api_key, timeout, policy)?
                .with_max_response_bytes(PROVIDER_MAX_RESPONSE_BYTES),
        })
    }

    /// Overrides the retry policy (tests use [`RetryPolicy::immediate`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.api = self.api.with_retry(policy);
        self
    }
}

#[async_trait]
impl EnrichmentProvider for HttpProvider {
    async fn lookup(&self, domain: &str) -> std::result::Result<Option<Company>, ProviderError> {
        let url = self.api.url("v2/companies/find");
        self.api
            .send(
                || {
                    self.api
                        .request(reqwest::Method::GET, &url)
                        .query(&[("domain", domain)])
                },
                |_, message| ProviderError::Transport(message),
                |reply| match reply.status.as_u16() {
                    200 => match reply.json::<ProviderCompany>() {
                        Ok(c) => Attempt::Done(Some(c.into_company(domain))),
                        Err(e) => Attempt::Fail(ProviderError::Unexpected(e.to_string())),
                    },
                    // Unknown company, or a domain the provider will not look up.
                    404 | 422 => Attempt::Done(None),
                    202 => Attempt::Fail(ProviderError::Pending),
                    429 => Attempt::Retry(ProviderError::Throttled, reply.retry_after),
                    s if reply.status.is_server_error() => {
                        Attempt::Retry(ProviderError::Server(s), reply.retry_after)
                    }
                    s => Attempt::Fail(ProviderError::Refused(s)),
                },
            )
            .await
    }

    fn calls(&self) -> u64 {
        self.api.calls()
    }
}

/// Answers from a JSON array of provider-shaped company objects (keyed by their `domain`).
/// Selected with `ENRICHMENT_API_BASE=fixture:` (the bundled `shared/data/enrichment-fixture.json`)
/// or `fixture:<path>` (a file of the same shape); no network, no API key.
#[derive(Debug)]
pub struct FixtureProvider {
    companies: HashMap<String, Company>,
    calls: AtomicU64,
}

/// The bundled demo fixture (fictional companies on the reserved `.example` TLD).
pub const BUNDLED_FIXTURE: &str = include_str!("../../data/enrichment-fixture.json");

impl FixtureProvider {
    /// Parses a fixture file's text.
    pub fn parse(json: &str) -> Result<Self> {
        let list: Vec<ProviderCompany> = serde_json::from_str(json)
            .map_err(|e| Error::Invalid(format!("enrichment fixture: {e}")))?;
        let companies = list
            .into_iter()
            .filter_map(|c| {
                let d = c.domain.clone()?.to_lowercase();
                Some((d.clone(), c.into_company(&d)))
            })
            .collect();
        Ok(Self {
            companies,
            calls: AtomicU64::new(0),
        })
    }

    /// The bundled fixture.
    pub fn bundled() -> Result<Self> {
        Self::parse(BUNDLED_FIXTURE)
    }

    /// A fixture read from a file.
    pub fn from_file(path: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!("enrichment fixture {path} cannot be read: {e}"))
        })?;
        Self::parse(&text)
    }

    /// Domains the fixture knows.
    pub fn domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self.companies.keys().cloned().collect();
        d.sort();
        d
    }
}

#[async_trait]
impl EnrichmentProvider for FixtureProvider {
    async fn lookup(&self, domain: &str) -> std::result::Result<Option<Company>, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.companies.get(domain).cloned())
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// In-memory provider for tests and benchmarks: answers from a map, or fails when told to.
#[derive(Debug, Default)]
pub struct MemoryProvider {
    companies: Mutex<HashMap<String, Company>>,
    down: std::sync::atomic::AtomicBool,
    calls: AtomicU64,
}

impl MemoryProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a company the provider knows.
    pub fn insert(&self, company: Company) {
        self.companies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(company.domain.clone(), company);
    }

    /// Makes every lookup fail (or succeed again).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl EnrichmentProvider for MemoryProvider {
    async fn lookup(&self, domain: &str) -> std::result::Result<Option<Company>, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderError::Server(503));
        }
        Ok(self
            .companies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .cloned())
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// A cached provider answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CachedLookup {
    Found { company: Company },
    Unknown,
}

/// The per-domain cache port. Entries past their TTL are misses.
#[async_trait]
pub trait EnrichmentCache: Send + Sync {
    async fn get(&self, domain: &str) -> Result<Option<CachedLookup>>;
    async fn put(&self, domain: &str, entry: &CachedLookup, ttl: Duration) -> Result<()>;
}

/// In-memory cache (tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, (CachedLookup, std::time::Instant)>>,
}

impl MemoryCache {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EnrichmentCache for MemoryCache {
    async fn get(&self, domain: &str) -> Result<Option<CachedLookup>> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .get(domain)
            .filter(|(_, until)| *until > std::time::Instant::now())
            .map(|(e, _)| e.clone()))
    }

    async fn put(&self, domain: &str, entry: &CachedLookup, ttl: Duration) -> Result<()> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                domain.to_owned(),
                (entry.clone(), std::time::Instant::now() + ttl),
            );
        Ok(())
    }
}

/// What enrichment found out about a lead's domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Enrichment {
    /// The provider knows the company (`cached`: no lookup was needed).
    Found { company: Company, cached: bool },
    /// The provider does not know the domain.
    Unknown { cached: bool },
    /// Not looked up: free-mail or disposable domain.
    Skipped { class: DomainClass },
    /// The provider could not answer now: route with what is known, enrich later.
    Unavailable { reason: String },
}

impl Enrichment {
    pub fn company(&self) -> Option<&Company> {
        match self {
            Enrichment::Found { company, .. } => Some(company),
            _ => None,
        }
    }

    /// Whether the lead must be enriched again later.
    pub fn needs_enrichment(&self) -> bool {
        matches!(self, Enrichment::Unavailable { .. })
    }
}

/// How long cached answers live.
#[derive(Debug, Clone, Copy)]
pub struct CacheTtl {
    pub found: Duration,
    pub unknown: Duration,
}

impl Default for CacheTtl {
    fn default() -> Self {
        Self {
            found: Duration::from_secs(30 * 24 * 3600),
            unknown: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Provider + cache.
#[derive(Clone)]
pub struct Enricher {
    provider: Arc<dyn EnrichmentProvider>,
    cache: Arc<dyn EnrichmentCache>,
    ttl: CacheTtl,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher").field("ttl", &self.ttl).finish()
    }
}

impl Enricher {
    pub fn new(
        provider: Arc<dyn EnrichmentProvider>,
        cache: Arc<dyn EnrichmentCache>,
        ttl: CacheTtl,
    ) -> Self {
        Self {
            provider,
            cache,
            ttl,
        }
    }

    /// Provider lookups so far.
    pub fn provider_calls(&self) -> u64 {
        self.provider.calls()
    }

    /// Enriches a domain of the given class. Never fails: cache trouble costs a lookup,
    /// provider trouble yields [`Enrichment::Unavailable`].
    pub async fn enrich(&self, domain: &str, class: DomainClass) -> Enrichment {
        if !class.is_corporate() {
            return Enrichment::Skipped { class };
        }
        match self.cache.get(domain).await {
            Ok(Some(CachedLookup::Found { company })) => {
                return Enrichment::Found {
                    company,
                    cached: true,
                };
            }
            Ok(Some(CachedLookup::Unknown)) => return Enrichment::Unknown { cached: true },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e.chain(), "enrichment cache unreadable; looking up"),
        }
        let (entry, ttl, result) = match self.provider.lookup(domain).await {
            Ok(Some(company)) => (
                CachedLookup::Found {
                    company: company.clone(),
                },
                self.ttl.found,
                Enrichment::Found {
                    company,
                    cached: false,
                },
            ),
            Ok(None) => (
                CachedLookup::Unknown,
                self.ttl.unknown,
                Enrichment::Unknown { cached: false },
            ),
            Err(e) => {
                tracing::warn!(error = %e, "enrichment provider unavailable; lead flagged needs_enrichment");
                return Enrichment::Unavailable {
                    reason: e.to_string(),
                };
            }
        };
        if let Err(e) = self.cache.put(domain, &entry, ttl).await {
            tracing::warn!(error = %e.chain(), "enrichment cache not written");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflowing_range_is_no_range() {
        assert_eq!(
            EmployeeBand::of_range("18446744073709552K-20000000000000000K"),
            None
        );
        assert!(EmployeeBand::of_range("1K-5K").is_some());
    }

    #[test]
    fn extreme_ranges_and_counts_band_as_unknown_never_wrap() {
        let max = u64::MAX.to_string();
        for range in [
            max.as_str(),
            "18446744073709551616",
            "18446744073709551615K",
            "18446744073709552K-20000000000000000K",
            "18446744073709551K+",
            "10000001",
            "10001K",
            "-5",
            "-5K-10K",
            "1.5K",
            "",
            "K",
        ] {
            assert_eq!(EmployeeBand::of_range(range), None, "{range:?}");
        }
        assert_eq!(EmployeeBand::of_range("0"), Some(EmployeeBand::Micro));
        assert_eq!(EmployeeBand::of_range("0-10"), Some(EmployeeBand::Micro));
        assert_eq!(EmployeeBand::of_range("10000K"), Some(EmployeeBand::Global));
        assert_eq!(EmployeeBand::of(u64::MAX), EmployeeBand::Global, "total");
        // An unbelievable count falls back to the range, then to unknown.
        let c = |employees: u64, range: Option<&str>| Company {
            employees: Some(employees),
            employees_range: range.map(str::to_owned),
            ..Company::default()
        };
        assert_eq!(
            c(u64::MAX, Some("51-250")).band(),
            Some(EmployeeBand::Medium)
        );
        assert_eq!(c(MAX_EMPLOYEES + 1, None).band(), None);
        assert_eq!(c(MAX_EMPLOYEES, None).band(), Some(EmployeeBand::Global));
        assert_eq!(c(0, None).band(), Some(EmployeeBand::Micro));
    }

    #[test]
    fn bad_provider_counts_are_dropped_not_the_company() {
        let doc = |employees: &str| {
            format!(
                r#"[{{"domain":"acme.example","name":"Acme","metrics":{{"employees":{employees},
                "employeesRange":"51-250","annualRevenue":{employees}}}}}]"#
            )
        };
        let cases = [
            ("-5", None),
            ("18446744073709551615", None),
            ("18446744073709551616", None),
            ("1e30", None),
            ("2.5", None),
            ("\"many\"", None),
            ("null", None),
            ("{}", None),
            ("250.0", Some(250)),
            ("\" 40 \"", Some(40)),
            ("0", Some(0)),
            ("10000000", Some(MAX_EMPLOYEES)),
            ("10000001", None),
        ];
        for (value, want) in cases {
            let f = FixtureProvider::parse(&doc(value)).unwrap();
            let c = f.companies.get("acme.example").unwrap();
            assert_eq!(c.name.as_deref(), Some("Acme"), "{value}");
            assert_eq!(c.employees, want, "{value}");
            let band = want.map_or(EmployeeBand::Medium, EmployeeBand::of);
            assert_eq!(c.band(), Some(band), "{value}");
        }
        // The revenue is a count too: u64::MAX is a value, a negative one is none.
        let f = FixtureProvider::parse(&doc("18446744073709551615")).unwrap();
        assert_eq!(
            f.companies["acme.example"].annual_revenue_usd,
            Some(u64::MAX)
        );
        let f = FixtureProvider::parse(&doc("-1")).unwrap();
        assert_eq!(f.companies["acme.example"].annual_revenue_usd, None);
    }

    #[tokio::test]
    async fn the_http_provider_drops_bad_counts_and_refuses_an_oversized_answer() {
        use wiremock::matchers::{method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v2/companies/find"))
            .and(query_param("domain", "acme.example"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "domain": "acme.example", "name": "Acme",
                "metrics": {"employees": -3, "employeesRange": "18446744073709551615K+"}
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/companies/find"))
            .and(query_param("domain", "huge.example"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![
                b' ';
                PROVIDER_MAX_RESPONSE_BYTES
                    + 1
            ]))
            .mount(&server)
            .await;
        let p = HttpProvider::new(
            server.uri(),
            Secret::new("k".to_owned()),
            Duration::from_secs(5),
        )
        .unwrap()
        .with_retry(RetryPolicy::immediate(3));
        let acme = p.lookup("acme.example").await.unwrap().unwrap();
        assert_eq!((acme.name.as_deref(), acme.employees), (Some("Acme"), None));
        assert_eq!(acme.band(), None);
        let e = p.lookup("huge.example").await.unwrap_err();
        assert!(
            matches!(&e, ProviderError::Transport(m) if m.contains("larger than")),
            "{e:?}"
        );
        assert_eq!(p.calls(), 2, "an oversized answer is not retried");
    }

    #[test]
    fn bands_from_counts_and_ranges() {
        assert_eq!(EmployeeBand::of(0), EmployeeBand::Micro);
        assert_eq!(EmployeeBand::of(50), EmployeeBand::Small);
        assert_eq!(EmployeeBand::of(201), EmployeeBand::Large);
        assert_eq!(EmployeeBand::of(5001), EmployeeBand::Global);
        assert_eq!(EmployeeBand::of_range("51-250"), Some(EmployeeBand::Medium));
        assert_eq!(EmployeeBand::of_range("1K-5K"), Some(EmployeeBand::Large));
        assert_eq!(EmployeeBand::of_range("100K+"), Some(EmployeeBand::Global));
        assert_eq!(EmployeeBand::of_range("lots"), None);
        let c = Company {
            employees_range: Some("11-50".into()),
            ..Company::default()
        };
        assert_eq!(c.band(), Some(EmployeeBand::Small));
    }

    #[tokio::test]
    async fn bundled_fixture_parses() {
        let f = FixtureProvider::bundled().unwrap();
        assert!(f.domains().len() >= 10);
        let acme = f.lookup("acme.example").await.unwrap().unwrap();
        assert!(acme.name.is_some() && acme.band().is_some() && acme.country.is_some());
        assert_eq!(f.lookup("nobody.example").await.unwrap(), None);
        assert_eq!(f.calls(), 2);
    }

    #[tokio::test]
    async fn cache_spares_lookups_and_failures_do_not_fail_the_lead() {
        let p = Arc::new(MemoryProvider::new());
        p.insert(Company {
            domain: "acme.example".into(),
            employees: Some(300),
            ..Company::default()
        });
        let e = Enricher::new(p.clone(), Arc::new(MemoryCache::new()), CacheTtl::default());
        assert!(matches!(
            e.enrich("acme.example", DomainClass::Corporate).await,
            Enrichment::Found { cached: false, .. }
        ));
        assert!(matches!(
            e.enrich("acme.example", DomainClass::Corporate).await,
            Enrichment::Found { cached: true, .. }
        ));
        assert!(matches!(
            e.enrich("ghost.example", DomainClass::Corporate).await,
            Enrichment::Unknown { cached: false }
        ));
        assert!(matches!(
            e.enrich("ghost.example", DomainClass::Corporate).await,
            Enrichment::Unknown { cached: true }
        ));
        assert!(matches!(
            e.enrich("gmail.com", DomainClass::FreeMail).await,
            Enrichment::Skipped { .. }
        ));
        assert_eq!(p.calls(), 2, "one lookup per domain, none for free-mail");
        p.set_down(true);
        let r = e.enrich("new.example", DomainClass::Corporate).await;
        assert!(r.needs_enrichment(), "{r:?}");
        p.set_down(false);
        assert!(
            matches!(
                e.enrich("new.example", DomainClass::Corporate).await,
                Enrichment::Unknown { cached: false }
            ),
            "failures are not cached"
        );
    }
}
