//! `blapi-ops`: the operator's command line. `blapi-ops --help` lists the commands.
//!
//! The stack is the local one (`.local/stack.json`, from `make up`) unless `--stack NAME`
//! names a deployed CloudFormation stack (credentials and region from the environment, as
//! for the AWS CLI).

use anyhow::{Context, Result};
use blapi::queue::SqsSender;
use blapi::storage::{ObjectStore, S3Store};
use blapi_ops::stack::Stack;
use blapi_ops::{admin, dlq, replay};
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::sync::Arc;

fn cli() -> Command {
    let dry = Arg::new("dry-run")
        .long("dry-run")
        .action(ArgAction::SetTrue)
        .help("say what would be done, change nothing");
    Command::new("blapi-ops")
        .about("Operate blapi: dead-letter queues, redrive, the event archive (seal, replay), license and billing admin.")
        .arg(
            Arg::new("stack")
                .long("stack")
                .global(true)
                .help("a deployed CloudFormation stack (default: the local stack of `make up`)"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("print the summary as JSON"),
        )
        .subcommand_required(true)
        .subcommand(
            Command::new("dlq")
                .about("dead-letter queues")
                .subcommand_required(true)
                .subcommand(Command::new("list").about(
                    "every dead-letter queue: depth, age of the oldest message, a redacted sample",
                ))
                .subcommand(
                    Command::new("redrive")
                        .about(
                            "move a dead-letter queue's messages back to the queue they came from",
                        )
                        .arg(
                            Arg::new("queue")
                                .required(true)
                                .help("e.g. LicenseRequestsDLQ"),
                        )
                        .arg(
                            Arg::new("max")
                                .long("max")
                                .value_parser(clap::value_parser!(u64))
                                .help("move at most N messages"),
                        )
                        .arg(
                            Arg::new("to").long("to").help(
                                "the destination queue, when the DLQ serves several (or none)",
                            ),
                        )
                        .arg(dry.clone()),
                ),
        )
        .subcommand(
            Command::new("license")
                .about("license admin (license-minting's direct invocations)")
                .subcommand_required(true)
                .subcommand(
                    Command::new("mint")
                        .about("license a subscription's current period now")
                        .arg(Arg::new("subscription").long("subscription").required(true))
                        .arg(dry.clone()),
                )
                .subcommand(
                    Command::new("revoke")
                        .about("revoke one license and republish the signed revocation list")
                        .arg(Arg::new("license").required(true))
                        .arg(
                            Arg::new("reason")
                                .long("reason")
                                .default_value("operator")
                                .help("subscription_canceled, refunded, fraud, operator"),
                        )
                        .arg(dry.clone()),
                )
                .subcommand(
                    Command::new("rotate-key")
                        .about("create the next signing key, publish it in the key set, sign new licenses and revocation lists with it (old licenses keep verifying)")
                        .arg(dry.clone()),
                )
                .subcommand(
                    Command::new("list")
                        .about("a customer's or a subscription's licenses")
                        .arg(Arg::new("customer").long("customer"))
                        .arg(Arg::new("subscription").long("subscription")),
                ),
        )
        .subcommand(
            Command::new("billing")
                .about("billing admin (usage-billing's direct invocations)")
                .subcommand_required(true)
                .subcommand(
                    Command::new("rerun")
                        .about("plan a period again (idempotent per customer), or bill one customer")
                        .arg(Arg::new("period").long("period").required(true).help("YYYY-MM"))
                        .arg(Arg::new("customer").long("customer"))
                        .arg(dry.clone()),
                ),
        )
        .subcommand(
            Command::new("stripe")
                .about("Stripe")
                .subcommand_required(true)
                .subcommand(
                    Command::new("recover")
                        .about("feed the Stripe events that were not delivered (30 days back at most) through the intake's path")
                        .arg(Arg::new("since").long("since").required(true).help("YYYY-MM-DD or RFC 3339"))
                        .arg(dry.clone()),
                ),
        )
        .subcommand(
            Command::new("archive")
                .about("the event archive")
                .subcommand_required(true)
                .subcommand(
                    Command::new("seal")
                        .about("merge each hour's batch objects into one object (each event once) with its manifest; what the hourly schedule does")
                        .arg(
                            Arg::new("hour")
                                .long("hour")
                                .help("just this hour, YYYY-MM-DDTHH (UTC)"),
                        )
                        .arg(
                            Arg::new("all")
                                .long("all")
                                .action(ArgAction::SetTrue)
                                .help("the current hour too (otherwise left for the next run)"),
                        ),
                ),
        )
        .subcommand(
            Command::new("replay")
                .about("re-feed archived events through the routing table into the queues")
                .arg(Arg::new("source").long("source").default_value("stripe"))
                .arg(
                    Arg::new("from")
                        .long("from")
                        .required(true)
                        .help("YYYY-MM-DD or RFC 3339"),
                )
                .arg(
                    Arg::new("to")
                        .long("to")
                        .required(true)
                        .help("YYYY-MM-DD (inclusive) or RFC 3339"),
                )
                .arg(
                    Arg::new("type")
                        .long("type")
                        .help("event type, or a prefix pattern like customer.subscription.*"),
                )
                .arg(dry),
        )
}

fn arg<'a>(m: &'a ArgMatches, name: &str) -> Option<&'a String> {
    m.get_one::<String>(name)
}

fn print<T: serde::Serialize + std::fmt::Debug>(json: bool, value: &T) -> Result<()> {
    let text = if json {
        serde_json::to_string_pretty(value)?
    } else {
        format!("{value:#?}")
    };
    println!("{text}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let m = cli().get_matches();
    let repo = blapi_infra::repo_root();
    let json = m.get_flag("json");
    let (stack, sdk) = match arg(&m, "stack") {
        Some(name) => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            (Stack::deployed(name, &repo, &sdk).await?, sdk)
        }
        None => {
            let stack = Stack::local(&repo)?;
            let endpoint = stack
                .endpoint
                .clone()
                .context("the local stack has no endpoint")?;
            (stack, blapi_infra::sdk_config(&endpoint).await)
        }
    };
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let progress = |line: &str| eprintln!("{line}");
    eprintln!("stack: {}", stack.name);
    match m.subcommand() {
        Some(("dlq", d)) => match d.subcommand() {
            Some(("list", _)) => {
                let now = chrono::Utc::now().timestamp_millis();
                let states = dlq::list(&stack, &sqs, now).await?;
                if json {
                    return print(true, &states);
                }
                for s in &states {
                    println!(
                        "{:<28} {:>6} message(s){}{}",
                        s.queue,
                        s.depth,
                        s.oldest_age_s
                            .map(|a| format!(", oldest {a} s"))
                            .unwrap_or_default(),
                        s.sample
                            .as_ref()
                            .map(|x| format!(", e.g. {x}"))
                            .unwrap_or_default()
                    );
                }
                let total: u64 = states.iter().map(|s| s.depth).sum();
                println!(
                    "{} dead-letter queues, {total} message(s) parked",
                    states.len()
                );
                Ok(())
            }
            Some(("redrive", r)) => {
                let queue = arg(r, "queue").context("QUEUE")?;
                let out = dlq::redrive(
                    &stack,
                    &sqs,
                    queue,
                    arg(r, "to").map(String::as_str),
                    r.get_one::<u64>("max").copied(),
                    r.get_flag("dry-run"),
                    &progress,
                )
                .await?;
                print(json, &out)
            }
            _ => unreachable!("clap requires a subcommand"),
        },
        Some(("license", l)) => {
            if let Some(("rotate-key", a)) = l.subcommand() {
                let out = rotate_key(&stack, &sdk, a.get_flag("dry-run"), &progress).await?;
                return print(json, &out);
            }
            let (payload, dry) = match l.subcommand() {
                Some(("mint", a)) => (
                    admin::mint(arg(a, "subscription").context("--subscription")?),
                    a.get_flag("dry-run"),
                ),
                Some(("revoke", a)) => (
                    admin::revoke(
                        arg(a, "license").context("LICENSE")?,
                        arg(a, "reason").map_or("operator", String::as_str),
                    ),
                    a.get_flag("dry-run"),
                ),
                Some(("list", a)) => (
                    admin::list(
                        arg(a, "customer").map(String::as_str),
                        arg(a, "subscription").map(String::as_str),
                    )?,
                    false,
                ),
                _ => unreachable!("clap requires a subcommand"),
            };
            run_admin(&stack, &sdk, admin::LICENSE_MINTING, payload, dry, json).await
        }
        Some(("billing", b)) => match b.subcommand() {
            Some(("rerun", a)) => {
                let payload = admin::rerun(
                    arg(a, "period").context("--period")?,
                    arg(a, "customer").map(String::as_str),
                )?;
                run_admin(
                    &stack,
                    &sdk,
                    admin::USAGE_BILLING,
                    payload,
                    a.get_flag("dry-run"),
                    json,
                )
                .await
            }
            _ => unreachable!("clap requires a subcommand"),
        },
        Some(("stripe", st)) => match st.subcommand() {
            Some(("recover", a)) => {
                let since = replay::parse_time(arg(a, "since").context("--since")?, false)?;
                let out = admin::recover_stripe(&stack, &sdk, since, a.get_flag("dry-run")).await?;
                print(json, &out)
            }
            _ => unreachable!("clap requires a subcommand"),
        },
        Some(("replay", r)) => {
            let req = replay::ReplayRequest {
                source: arg(r, "source").cloned().unwrap_or_else(|| "stripe".into()),
                from: replay::parse_time(arg(r, "from").context("--from")?, false)?,
                to: replay::parse_time(arg(r, "to").context("--to")?, true)?,
                event_type: arg(r, "type").cloned(),
                dry_run: r.get_flag("dry-run"),
            };
            let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
                aws_sdk_s3::Client::new(&sdk),
                stack.bucket()?.to_owned(),
            ));
            let sender = SqsSender::new(sqs.clone(), store.clone());
            let out = replay::replay(&stack, store.as_ref(), &sender, &req, &progress).await?;
            print(json, &out)
        }
        Some(("archive", a)) => match a.subcommand() {
            Some(("seal", s)) => {
                let out = admin::seal(
                    &stack,
                    &sdk,
                    arg(s, "hour").map(String::as_str),
                    s.get_flag("all"),
                )
                .await?;
                print(json, &out)
            }
            _ => unreachable!("clap requires a subcommand"),
        },
        _ => unreachable!("clap requires a subcommand"),
    }
}

/// Runs an admin action, or with `--dry-run` says which function would get which request.
async fn run_admin(
    stack: &Stack,
    sdk: &aws_config::SdkConfig,
    function: &str,
    payload: serde_json::Value,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    if dry_run {
        let would = serde_json::json!({"dry_run": true, "function": function, "request": payload});
        return print(true, &would);
    }
    let answer = admin::invoke(stack, sdk, function, payload).await?;
    if json {
        return print(true, &answer);
    }
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// `license rotate-key`: see [`blapi_ops::rotate`].
async fn rotate_key(
    stack: &Stack,
    sdk: &aws_config::SdkConfig,
    dry_run: bool,
    progress: &dyn Fn(&str),
) -> Result<blapi_ops::rotate::RotationReport> {
    let env = stack.function_env(sdk, admin::LICENSE_MINTING).await?;
    let alias = env
        .get("LICENSE_KEY_ID")
        .context("license-minting has no LICENSE_KEY_ID")?
        .clone();
    let kms = aws_sdk_kms::Client::new(sdk);
    let files = S3Store::new(aws_sdk_s3::Client::new(sdk), stack.bucket()?.to_owned());
    blapi_ops::rotate::rotate(
        &blapi_ops::rotate::Kms {
            client: &kms,
            alias,
        },
        &files,
        || admin::invoke(stack, sdk, admin::LICENSE_MINTING, admin::publish()),
        chrono::Utc::now().timestamp_millis(),
        dry_run,
        None,
        progress,
    )
    .await
}
