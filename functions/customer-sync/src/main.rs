//! customer-sync: triggered by SQS `customer-events` (Stripe purchase, customer, subscription,
//! invoice, refund and dispute events from webhook-intake; license and invoice events from
//! license-minting and usage-billing). Writes the customer's Account, Contact and
//! Opportunities to Salesforce or the built-in CRM sink, the customer state to the
//! CustomersTable and the account directory to the LeadsTable. Reports partial batch failures.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::customers::Config;
use customer_sync::{App, Ports};
use lambda_runtime::{run, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?)?;
    run(service_fn(|event| app.handle(event))).await
}
