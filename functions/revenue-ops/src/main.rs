//! revenue-ops: triggered daily by the schedule (plan yesterday: the metrics snapshot, its
//! files and report, one job per customer), by SQS `revenue-jobs` (one customer's renewals,
//! health and early warnings, written to the CRM), and by an operator's direct invocation
//! (`{"action": "run", "date": "YYYY-MM-DD"}`) to rerun or backfill a date. Reports partial
//! batch failures.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::revenue::Config;
use lambda_runtime::{run, service_fn};
use revenue_ops::{App, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?);
    run(service_fn(|event| app.handle(event))).await
}
