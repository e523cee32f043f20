//! Creates every table, queue (with redrive), bucket, key, alias and secret that
//! `template.yaml` declares, in the emulator behind `endpoint`, under a name prefix.
//!
//! Re-running with the same prefix is safe: existing resources are reused. Resource types
//! with no local meaning (alarms, bucket policies, functions, schedules) are skipped; the
//! functions are run by cargo-lambda with the environment resolved here. The SES sender of
//! each function that mails (`MAIL_FROM`) is verified in the emulator ([`crate::ses`]).

use crate::template::{Physical, Resolver, Template};
use anyhow::{Context, Result, anyhow};
use aws_sdk_dynamodb::types as ddb;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// moto's account id and the region used locally.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// What to provision and where.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// Prefix of every physical name; also the local `AWS::StackName`.
    pub prefix: String,
    /// The emulator endpoint (moto server).
    pub endpoint: String,
    /// The repository root (where `template.yaml` and `infra/` are).
    pub root: PathBuf,
    /// Parameter values overriding the template defaults and `infra/local-params.json`.
    pub params: BTreeMap<String, String>,
}

impl ProvisionOptions {
    pub fn new(prefix: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            endpoint: endpoint.into(),
            root: repo_root(),
            params: BTreeMap::new(),
        }
    }
}

/// The repository root, found from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The emulator endpoint from the environment (`BLAPI_MOTO_URL`, then `AWS_ENDPOINT_URL`),
/// else the Makefile's default port.
pub fn default_endpoint() -> String {
    std::env::var("BLAPI_MOTO_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|_| "http://127.0.0.1:4599".to_owned())
}

/// An SDK configuration pointed at the emulator with dummy credentials.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "blapi-local",
        ))
        .load()
        .await
}

/// The provisioned stack: physical names of every resource and each function's environment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LocalStack {
    pub prefix: String,
    pub endpoint: String,
    /// Logical id -> physical name/URL and attributes.
    pub resources: BTreeMap<String, Physical>,
    /// Function binary name -> environment variables exactly as the template resolves them.
    /// A binary serving several functions of the template (webhook-intake: the intake and the
    /// archiver) runs as one local process with the union of their environments (a variable
    /// both set must agree).
    pub functions: BTreeMap<String, BTreeMap<String, String>>,
    /// Function binary name -> logical id in the template (the first function using it).
    pub function_ids: BTreeMap<String, String>,
}

impl LocalStack {
    /// The environment of a function (by binary name), as the template declares it.
    ///
    /// # Panics
    /// When the template has no such function (a test bug).
    pub fn env(&self, function: &str) -> BTreeMap<String, String> {
        self.functions
            .get(function)
            .cloned()
            .unwrap_or_else(|| panic!("template.yaml has no function with binary {function}"))
    }

    /// The environment plus what a local process needs to reach the emulator.
    pub fn process_env(&self, function: &str) -> BTreeMap<String, String> {
        let mut env = self.env(function);
        env.extend(self.aws_env());
        env
    }

    /// `AWS_ENDPOINT_URL`, region and dummy credentials for processes run against the emulator.
    pub fn aws_env(&self) -> BTreeMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The `Ref` value (table name, queue URL, bucket, alias) of a logical id.
    ///
    /// # Panics
    /// When the logical id was not provisioned (a test bug).
    pub fn physical(&self, logical_id: &str) -> &str {
        &self
            .resources
            .get(logical_id)
            .unwrap_or_else(|| panic!("{logical_id} is not a provisioned resource"))
            .reference
    }

    /// An attribute (`Arn`, `QueueName`, ...) of a logical id.
    pub fn attr(&self, logical_id: &str, attr: &str) -> Option<&str> {
        self.resources
            .get(logical_id)?
            .attrs
            .get(attr)
            .map(String::as_str)
    }

    /// An SDK configuration pointed at this stack's emulator.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }
}

fn physical_name(prefix: &str, logical: &str) -> String {
    format!("{prefix}-{logical}")
}

/// Creates bucket `name` unless it exists already (provisioning is re-run safely).
pub async fn ensure_bucket(s3: &aws_sdk_s3::Client, name: &str) -> Result<()> {
    match s3.create_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error().is_some_and(|se| {
                se.is_bucket_already_owned_by_you() || se.is_bucket_already_exists()
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(anyhow!(
            "creating bucket {name}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )),
    }
}

pub fn bucket_name(prefix: &str, logical: &str) -> String {
    let mut name: String = format!("{prefix}-{logical}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

fn arn(service: &str, resource: &str) -> String {
    format!("arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}")
}

/// Provisions the template into the emulator and returns the resolved stack.
pub async fn provision(opts: &ProvisionOptions) -> Result<LocalStack> {
    let template = Template::load(&opts.root.join("template.yaml"))?;
    let sdk = sdk_config(&opts.endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let kms = aws_sdk_kms::Client::new(&sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);

    // Fail fast and clearly when the emulator is not there.
    sqs.list_queues().send().await.map_err(|e| {
        anyhow!(
            "the local AWS emulator at {} does not answer ({}); start it with `make up`",
            opts.endpoint,
            aws_sdk_sqs::error::DisplayErrorContext(e)
        )
    })?;

    let params = local_params(&template, opts)?;
    let pseudo: BTreeMap<String, String> = [
        ("AWS::Region", REGION.to_owned()),
        ("AWS::AccountId", ACCOUNT.to_owned()),
        ("AWS::Partition", "aws".to_owned()),
        ("AWS::StackName", opts.prefix.clone()),
        ("AWS::URLSuffix", "amazonaws.com".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut resolver = Resolver {
        template: &template,
        params,
        pseudo,
        resources: BTreeMap::new(),
    };
    let resources = template.resources();
    let mut function_ids = BTreeMap::new();
    // Every function of each binary, in template order.
    let mut functions_of: BTreeMap<String, Vec<String>> = BTreeMap::new();

    // Pass 1: things that depend on nothing else.
    for (id, kind, props) in &resources {
        match kind.as_str() {
            "AWS::S3::Bucket" => {
                let name = bucket_name(&opts.prefix, id);
                ensure_bucket(&s3, &name).await?;
                // Versioned as the template says: erasure must reach every version.
                if props
                    .get("VersioningConfiguration")
                    .and_then(|v| v.get("Status"))
                    .and_then(|s| s.as_str())
                    == Some("Enabled")
                {
                    s3.put_bucket_versioning()
                        .bucket(&name)
                        .versioning_configuration(
                            aws_sdk_s3::types::VersioningConfiguration::builder()
                                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| {
                            anyhow!(
                                "versioning bucket {name}: {}",
                                aws_sdk_s3::error::DisplayErrorContext(e)
                            )
                        })?;
                }
                resolver.resources.insert(
                    id.clone(),
                    Physical {
                        reference: name.clone(),
                        attrs: [
                            ("Arn".to_owned(), format!("arn:aws:s3:::{name}")),
                            ("DomainName".to_owned(), format!("{name}.s3.amazonaws.com")),
                        ]
                        .into(),
                    },
                );
            }
            "AWS::DynamoDB::Table" => {
                let name = physical_name(&opts.prefix, id);
                create_table(&dynamodb, &name, props)
                    .await
                    .with_context(|| format!("creating table {id}"))?;
                resolver.resources.insert(
                    id.clone(),
                    Physical {
                        reference: name.clone(),
                        attrs: [("Arn".to_owned(), arn("dynamodb", &format!("table/{name}")))]
                            .into(),
                    },
                );
            }
            "AWS::KMS::Key" => {
                resolver.resources.insert(id.clone(), Physical::default());
            }
            "AWS::SQS::Queue" => {
                let name = physical_name(&opts.prefix, id);
                let mut req = sqs.create_queue().queue_name(&name);
                for (attr, key) in [
                    (
                        aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                        "VisibilityTimeout",
                    ),
                    (
                        aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod,
                        "MessageRetentionPeriod",
                    ),
                ] {
                    if let Some(v) = props.get(key) {
                        req = req.attributes(attr, resolver.string(v)?);
                    }
                }
                let url = req
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "creating queue {name}: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        )
                    })?
                    .queue_url
                    .ok_or_else(|| anyhow!("queue {name} has no URL"))?;
                resolver.resources.insert(
                    id.clone(),
                    Physical {
                        reference: url,
                        attrs: [
                            ("Arn".to_owned(), arn("sqs", &name)),
                            ("QueueName".to_owned(), name.clone()),
                        ]
                        .into(),
                    },
                );
            }
            "AWS::Serverless::Function" => {
                let name = physical_name(&opts.prefix, id);
                let binary = template
                    .resource(id)
                    .and_then(|r| r.pointer("/Metadata/BuildProperties/Binary"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        anyhow!("function {id} has no Metadata.BuildProperties.Binary")
                    })?;
                functions_of
                    .entry(binary.clone())
                    .or_default()
                    .push(id.clone());
                function_ids.entry(binary).or_insert_with(|| id.clone());
                resolver.resources.insert(
                    id.clone(),
                    Physical {
                        reference: name.clone(),
                        attrs: [("Arn".to_owned(), arn("lambda", &format!("function:{name}")))]
                            .into(),
                    },
                );
                // The Function URL SAM derives from FunctionUrlConfig (cargo lambda watch's path).
                let has_url = template
                    .resource(id)
                    .and_then(|r| r.pointer("/Properties/FunctionUrlConfig"))
                    .is_some();
                if has_url {
                    resolver.resources.insert(
                        format!("{id}Url"),
                        Physical {
                            reference: name.clone(),
                            attrs: [(
                                "FunctionUrl".to_owned(),
                                format!("http://127.0.0.1/lambda-url/{name}/"),
                            )]
                            .into(),
                        },
                    );
                }
            }
            _ => {}
        }
    }

    // Pass 2: keys (reusing the one an alias already points at), aliases, redrive policies.
    for (id, kind, props) in &resources {
        if kind != "AWS::KMS::Alias" {
            continue;
        }
        let alias = resolver.string(
            props
                .get("AliasName")
                .ok_or_else(|| anyhow!("{id} has no AliasName"))?,
        )?;
        let key_logical = props
            .get("TargetKeyId")
            .and_then(|t| t.get("Ref"))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{id}: TargetKeyId must be !Ref of a key"))?
            .to_owned();
        let key_props = template
            .resource(&key_logical)
            .and_then(|r| r.get("Properties"))
            .cloned()
            .unwrap_or(Value::Null);
        let key_id = match kms.describe_key().key_id(&alias).send().await {
            Ok(out) => out
                .key_metadata
                .map(|m| m.key_id)
                .ok_or_else(|| anyhow!("alias {alias} has no key"))?,
            Err(_) => {
                let spec = key_props
                    .get("KeySpec")
                    .and_then(Value::as_str)
                    .unwrap_or("SYMMETRIC_DEFAULT");
                let usage = key_props
                    .get("KeyUsage")
                    .and_then(Value::as_str)
                    .unwrap_or("ENCRYPT_DECRYPT");
                let out = kms
                    .create_key()
                    .key_spec(spec.into())
                    .key_usage(usage.into())
                    .description(format!("{} ({})", key_logical, opts.prefix))
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "creating key {key_logical}: {}",
                            aws_sdk_kms::error::DisplayErrorContext(e)
                        )
                    })?;
                let key_id = out
                    .key_metadata
                    .map(|m| m.key_id)
                    .ok_or_else(|| anyhow!("new key has no id"))?;
                kms.create_alias()
                    .alias_name(&alias)
                    .target_key_id(&key_id)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "creating alias {alias}: {}",
                            aws_sdk_kms::error::DisplayErrorContext(e)
                        )
                    })?;
                key_id
            }
        };
        resolver.resources.insert(
            key_logical.clone(),
            Physical {
                reference: key_id.clone(),
                attrs: [
                    ("Arn".to_owned(), arn("kms", &format!("key/{key_id}"))),
                    ("KeyId".to_owned(), key_id.clone()),
                ]
                .into(),
            },
        );
        resolver.resources.insert(
            id.clone(),
            Physical {
                reference: alias.clone(),
                attrs: BTreeMap::new(),
            },
        );
    }
    for (id, kind, props) in &resources {
        if kind != "AWS::SQS::Queue" {
            continue;
        }
        if let Some(policy) = props.get("RedrivePolicy") {
            let resolved = resolver.value(policy)?;
            let url = resolver.resources[id].reference.clone();
            sqs.set_queue_attributes()
                .queue_url(&url)
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                    resolved.to_string(),
                )
                .send()
                .await
                .map_err(|e| {
                    anyhow!(
                        "redrive of {id}: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    )
                })?;
        }
    }

    // Secrets: the template names them by parameter; local test values come from the repo.
    let local_secrets: Value = serde_json::from_str(
        &std::fs::read_to_string(opts.root.join("infra/local-secrets.json"))
            .context("reading infra/local-secrets.json")?,
    )?;
    for (param, value) in local_secrets.as_object().into_iter().flatten() {
        if param.starts_with('_') {
            continue;
        }
        let name = resolver.params.get(param).cloned().ok_or_else(|| {
            anyhow!("infra/local-secrets.json names {param}, which template.yaml does not declare")
        })?;
        let body = value.to_string();
        match secrets
            .create_secret()
            .name(&name)
            .secret_string(&body)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_exists_exception()) =>
            {
                secrets
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(&body)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "updating secret {name}: {}",
                            aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                        )
                    })?;
            }
            Err(e) => {
                return Err(anyhow!(
                    "creating secret {name}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                ));
            }
        }
    }

    // The portal's identity provider, standing in locally (its key and JWKS).
    crate::idp::ensure(&secrets, &s3, &opts.prefix).await?;

    // Each function's environment, exactly as the template resolves it; the functions of one
    // binary together (one local process serves them all).
    let globals = template.global_env();
    let mut functions = BTreeMap::new();
    for (binary, ids) in &functions_of {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for id in ids {
            let mut vars = globals.clone();
            if let Some(own) = template
                .resource(id)
                .and_then(|r| r.pointer("/Properties/Environment/Variables"))
                .and_then(Value::as_object)
            {
                vars.extend(own.clone());
            }
            for (k, v) in vars {
                let value = resolver
                    .string(&v)
                    .with_context(|| format!("{id}: environment variable {k}"))?;
                match env.get(&k) {
                    Some(other) if *other != value => {
                        return Err(anyhow!(
                            "{binary}: {k} is {other:?} in one function and {value:?} in {id}; \
                             one local process runs them all, so they must agree"
                        ));
                    }
                    _ => {
                        env.insert(k, value);
                    }
                }
            }
        }
        functions.insert(binary.clone(), env);
    }

    // The SES identities the functions send from (in AWS verified out of band, like the
    // secrets' values): moto refuses an unverified sender.
    crate::ses::verify_senders(
        &sdk,
        functions
            .values()
            .filter_map(|env| env.get(crate::ses::SENDER_VARIABLE)),
    )
    .await?;

    Ok(LocalStack {
        prefix: opts.prefix.clone(),
        endpoint: opts.endpoint.clone(),
        resources: resolver.resources.clone(),
        functions,
        function_ids,
    })
}

/// Template defaults, then `infra/local-params.json` (with `${VAR}` from the environment),
/// then the caller's overrides; secret names are prefixed so stacks don't share secrets.
fn local_params(template: &Template, opts: &ProvisionOptions) -> Result<BTreeMap<String, String>> {
    let mut params = template.parameter_defaults();
    let path = opts.root.join("infra/local-params.json");
    if path.exists() {
        let local: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        for (k, v) in local.as_object().into_iter().flatten() {
            if k.starts_with('_') {
                continue;
            }
            let raw = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            let raw = raw.replace(
                "${LOCAL_IDP_JWKS_URL}",
                &crate::idp::jwks_url(&opts.endpoint, &opts.prefix),
            );
            params.insert(k.clone(), expand_env(&raw));
        }
    }
    for (k, v) in params.iter_mut() {
        if k.ends_with("SecretName") && !v.is_empty() {
            let leaf = v.rsplit('/').next().unwrap_or(v).to_owned();
            *v = format!("{}/{leaf}", opts.prefix);
        }
    }
    params.extend(opts.params.clone());
    Ok(params)
}

/// Defaults for the variables `infra/local-params.json` may use.
fn expand_env(raw: &str) -> String {
    let defaults = [
        ("LOCALSTRIPE_URL", "http://127.0.0.1:8420"),
        ("ENRICHMENT_URL", "http://127.0.0.1:8421"),
    ];
    let mut out = raw.to_owned();
    for (name, default) in defaults {
        let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
        out = out.replace(&format!("${{{name}}}"), &value);
    }
    out
}

async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str, props: &Value) -> Result<()> {
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(ddb::BillingMode::PayPerRequest);
    for a in props
        .get("AttributeDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        req = req.attribute_definitions(
            ddb::AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(a["AttributeType"].as_str().unwrap_or("S").into())
                .build()?,
        );
    }
    for k in key_schema(props.get("KeySchema"))? {
        req = req.key_schema(k);
    }
    for g in props
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut gsi = ddb::GlobalSecondaryIndex::builder()
            .index_name(g["IndexName"].as_str().unwrap_or_default())
            .projection(
                ddb::Projection::builder()
                    .projection_type(
                        g.pointer("/Projection/ProjectionType")
                            .and_then(Value::as_str)
                            .unwrap_or("ALL")
                            .into(),
                    )
                    .build(),
            );
        for k in key_schema(g.get("KeySchema"))? {
            gsi = gsi.key_schema(k);
        }
        req = req.global_secondary_indexes(gsi.build()?);
    }
    match req.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => {
            return Err(anyhow!(
                "{}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            ));
        }
    }
    if let Some(ttl) = props.get("TimeToLiveSpecification")
        && ttl.get("Enabled").and_then(Value::as_bool).unwrap_or(false)
    {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                ddb::TimeToLiveSpecification::builder()
                    .attribute_name(ttl["AttributeName"].as_str().unwrap_or("expires_at"))
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "TTL on {name}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
    }
    Ok(())
}

fn key_schema(v: Option<&Value>) -> Result<Vec<ddb::KeySchemaElement>> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|k| {
            Ok(ddb::KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().unwrap_or_default())
                .key_type(k["KeyType"].as_str().unwrap_or("HASH").into())
                .build()?)
        })
        .collect()
}
