//! Which stack the operator works on, and the names of its resources: from
//! `.local/stack.json` (what `make up` provisioned into the local emulator) or from a deployed
//! CloudFormation stack (`--stack NAME`). `template.yaml` says what each resource is for
//! (which queue is whose dead-letter queue, which queue each event type is routed to).

use anyhow::{Context, Result, anyhow, bail};
use blapi_infra::template::Template;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A queue of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The template's logical id (`LicenseRequestsQueue`).
    pub logical: String,
    pub url: String,
    /// For a dead-letter queue: the queues that send to it (their logical ids).
    pub sources: Vec<String>,
}

/// The resolved stack.
#[derive(Debug, Clone)]
pub struct Stack {
    /// How it was found (for the summary): `local` or the CloudFormation stack name.
    pub name: String,
    /// Logical id -> physical id (queue URL, bucket name, table name).
    pub resources: BTreeMap<String, String>,
    pub template: Template,
    /// `AWS_ENDPOINT_URL` for the local emulator; `None` for AWS.
    pub endpoint: Option<String>,
    /// Local only: each function's environment as the template resolves it.
    pub functions: BTreeMap<String, BTreeMap<String, String>>,
}

impl Stack {
    /// The stack `make up` provisioned (`.local/stack.json`), with `template.yaml`.
    pub fn local(repo: &Path) -> Result<Self> {
        let path = repo.join(".local/stack.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} missing: run `make up` first, or pass --stack NAME",
                path.display()
            )
        })?;
        let local: blapi_infra::LocalStack =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        Self::of_local(local, Template::load(&repo.join("template.yaml"))?)
    }

    /// A provisioned local stack (tests build one with `blapi_infra::testing`).
    pub fn of_local(local: blapi_infra::LocalStack, template: Template) -> Result<Self> {
        Ok(Self {
            name: format!("local ({})", local.prefix),
            resources: local
                .resources
                .into_iter()
                .map(|(k, v)| (k, v.reference))
                .collect(),
            template,
            endpoint: Some(local.endpoint),
            functions: local.functions,
        })
    }

    /// A deployed stack, by name (its resources listed by CloudFormation).
    pub async fn deployed(name: &str, repo: &Path, sdk: &aws_config::SdkConfig) -> Result<Self> {
        let cfn = aws_sdk_cloudformation::Client::new(sdk);
        let mut resources = BTreeMap::new();
        let mut pages = cfn
            .list_stack_resources()
            .stack_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| anyhow!("listing the resources of stack {name}: {e:?}"))?;
            for r in page.stack_resource_summaries() {
                if let (Some(l), Some(p)) = (r.logical_resource_id(), r.physical_resource_id()) {
                    resources.insert(l.to_owned(), p.to_owned());
                }
            }
        }
        if resources.is_empty() {
            bail!("stack {name} has no resources");
        }
        Ok(Self {
            name: name.to_owned(),
            resources,
            template: Template::load(&repo.join("template.yaml"))?,
            endpoint: None,
            functions: BTreeMap::new(),
        })
    }

    /// The physical id of a resource.
    pub fn physical(&self, logical: &str) -> Result<&str> {
        self.resources
            .get(logical)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("the stack has no resource {logical}"))
    }

    /// A function's environment (by binary name): the template's resolution on the local
    /// stack, the deployed function's configuration on AWS.
    pub async fn function_env(
        &self,
        sdk: &aws_config::SdkConfig,
        binary: &str,
    ) -> Result<BTreeMap<String, String>> {
        if self.endpoint.is_some() {
            return self
                .functions
                .get(binary)
                .cloned()
                .ok_or_else(|| anyhow!("the local stack has no function {binary}"));
        }
        let name = self.function_name(binary)?;
        let conf = aws_sdk_lambda::Client::new(sdk)
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .map_err(|e| anyhow!("reading the configuration of {name}: {e:?}"))?;
        Ok(conf
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    /// A deployed function's name (by binary name).
    pub fn function_name(&self, binary: &str) -> Result<&str> {
        let logical = self
            .template
            .resources()
            .into_iter()
            .map(|(id, _, _)| id)
            .find(|id| {
                self.template
                    .resource(id)
                    .and_then(|r| r.pointer("/Metadata/BuildProperties/Binary"))
                    .and_then(Value::as_str)
                    == Some(binary)
            })
            .ok_or_else(|| anyhow!("template.yaml has no function {binary}"))?;
        self.physical(&logical)
    }

    /// The artifacts bucket (raw archive, claim checks).
    pub fn bucket(&self) -> Result<&str> {
        self.physical("ArtifactsBucket")
    }

    /// Every SQS queue of the template, with its dead-letter sources.
    pub fn queues(&self) -> Result<Vec<Queue>> {
        let mut sources: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut out = Vec::new();
        for (id, kind, props) in self.template.resources() {
            if kind != "AWS::SQS::Queue" {
                continue;
            }
            if let Some(dlq) = props
                .pointer("/RedrivePolicy/deadLetterTargetArn/Fn::GetAtt/0")
                .and_then(Value::as_str)
            {
                sources.entry(dlq.to_owned()).or_default().push(id.clone());
            }
            out.push(id);
        }
        out.into_iter()
            .map(|id| {
                Ok(Queue {
                    url: self.physical(&id)?.to_owned(),
                    sources: sources.remove(&id).unwrap_or_default(),
                    logical: id,
                })
            })
            .collect()
    }

    /// The dead-letter queues (the queues some queue redrives to, or named `*DLQ`).
    pub fn dead_letter_queues(&self) -> Result<Vec<Queue>> {
        Ok(self
            .queues()?
            .into_iter()
            .filter(|q| !q.sources.is_empty() || q.logical.ends_with("DLQ"))
            .collect())
    }

    /// A queue by logical id or short name (`LicenseRequestsDLQ`, `license-requests-dlq`).
    pub fn queue(&self, name: &str) -> Result<Queue> {
        let wanted = normalise(name);
        let queues = self.queues()?;
        let known: Vec<String> = queues.iter().map(|q| q.logical.clone()).collect();
        queues
            .into_iter()
            .find(|q| normalise(&q.logical) == wanted)
            .ok_or_else(|| anyhow!("no queue {name} (known: {})", known.join(", ")))
    }

    /// The URL of the queue webhook-intake's archiver sends `env_var`'s events to (as the
    /// template wires it: `LICENSE_REQUESTS_QUEUE_URL: !Ref LicenseRequestsQueue`, on whichever
    /// function of the `webhook-intake` binary sets it).
    pub fn intake_queue(&self, env_var: &str) -> Result<String> {
        let logical = self
            .template
            .resources()
            .into_iter()
            .filter(|(id, _, _)| {
                self.template
                    .resource(id)
                    .and_then(|r| r.pointer("/Metadata/BuildProperties/Binary"))
                    .and_then(Value::as_str)
                    == Some("webhook-intake")
            })
            .find_map(|(_, _, props)| {
                props
                    .pointer(&format!("/Environment/Variables/{env_var}/Ref"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| anyhow!("no webhook-intake function has {env_var} = !Ref <Queue>"))?;
        Ok(self.physical(&logical)?.to_owned())
    }

    /// The environment of the function with this logical id (a binary serving several
    /// functions runs them all in one process locally: its union environment).
    pub async fn function_env_of(
        &self,
        sdk: &aws_config::SdkConfig,
        logical: &str,
    ) -> Result<BTreeMap<String, String>> {
        let binary = self
            .template
            .resource(logical)
            .and_then(|r| r.pointer("/Metadata/BuildProperties/Binary"))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("template.yaml has no function {logical}"))?;
        if self.endpoint.is_some() {
            return self.function_env(sdk, binary).await;
        }
        let name = self.physical(logical)?;
        let conf = aws_sdk_lambda::Client::new(sdk)
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .map_err(|e| anyhow!("reading the configuration of {name}: {e:?}"))?;
        Ok(conf
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
}

/// `LicenseRequestsDLQ`, `license-requests-dlq` and `licenserequestsdlq` name the same queue.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}
