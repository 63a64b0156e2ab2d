//! IoT policies and topic rules, created in the emulator's IoT API as the
//! template declares them (moto stores both, and runs neither: the local
//! broker in `geotag-local-iot` enforces the policies and plays the rules,
//! reading them from here).

use anyhow::{Context as _, Result, anyhow, bail};
use aws_sdk_iot::types::{Action, SnsAction, SqsAction, TopicRulePayload};
use serde_json::{Map, Value};

use super::text;
use crate::template::{Physical, Resolver, Resource};

/// A topic rule as the stack created it, for the broker to play.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRuleSpec {
    pub name: String,
    pub sql: String,
    /// The SNS action's target (the one action kind the local stack plays).
    pub sns_target_arn: String,
    /// The SQS error action's queue URL.
    pub error_queue_url: Option<String>,
}

pub(super) async fn create_policy(
    iot: &aws_sdk_iot::Client,
    resolver: &Resolver,
    resource: &Resource,
    properties: &Map<String, Value>,
) -> Result<Physical> {
    let name = text(properties, "PolicyName")
        .unwrap_or_else(|| format!("{}-{}", resolver.stack_name, resource.logical_id));
    let document = properties
        .get("PolicyDocument")
        .ok_or_else(|| anyhow!("no PolicyDocument"))?;
    // A policy that exists already (a command against a running `geotag up`)
    // is used as it is, as tables are.
    let arn = match iot
        .create_policy()
        .policy_name(&name)
        .policy_document(document.to_string())
        .send()
        .await
    {
        Ok(output) => output.policy_arn,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) =>
        {
            iot.get_policy().policy_name(&name).send().await?.policy_arn
        }
        Err(error) => return Err(error.into()),
    };
    Ok(Physical {
        reference: name.clone(),
        attributes: [
            ("Arn".to_owned(), arn.unwrap_or_default()),
            ("Id".to_owned(), name),
        ]
        .into(),
    })
}

pub(super) async fn create_topic_rule(
    iot: &aws_sdk_iot::Client,
    resolver: &Resolver,
    resource: &Resource,
    properties: &Map<String, Value>,
) -> Result<(Physical, TopicRuleSpec)> {
    // Rule names allow only letters, digits and `_`; CloudFormation makes one
    // up when the template gives none.
    let name = text(properties, "RuleName").unwrap_or_else(|| {
        format!("{}_{}", resolver.stack_name, resource.logical_id)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    });
    let payload = properties
        .get("TopicRulePayload")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("no TopicRulePayload"))?;
    let sql = text(payload, "Sql").ok_or_else(|| anyhow!("no Sql"))?;
    let actions = payload
        .get("Actions")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("no Actions"))?;
    let [action] = actions.as_slice() else {
        bail!(
            "the local broker plays rules of exactly one action (an SNS action); this one has {}",
            actions.len()
        );
    };
    let sns = action
        .get("Sns")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("the local broker plays only SNS actions, not {action}"))?;
    let sns_target_arn =
        text(sns, "TargetArn").ok_or_else(|| anyhow!("an SNS action without TargetArn"))?;
    if text(sns, "MessageFormat").is_some_and(|format| format != "RAW") {
        bail!("the local broker plays SNS actions with MessageFormat RAW only");
    }
    let error_queue_url = match payload.get("ErrorAction") {
        None => None,
        Some(error_action) => Some(
            error_action
                .get("Sqs")
                .and_then(|sqs| text(sqs.as_object()?, "QueueUrl"))
                .ok_or_else(|| {
                    anyhow!("the local broker plays only SQS error actions, not {error_action}")
                })?,
        ),
    };
    let role = |action: &Map<String, Value>| text(action, "RoleArn").unwrap_or_default();
    let mut request = TopicRulePayload::builder()
        .sql(&sql)
        .set_aws_iot_sql_version(text(payload, "AwsIotSqlVersion"))
        .rule_disabled(text(payload, "RuleDisabled").as_deref() == Some("true"))
        .actions(
            Action::builder()
                .sns(
                    SnsAction::builder()
                        .target_arn(&sns_target_arn)
                        .role_arn(role(sns))
                        .message_format(aws_sdk_iot::types::MessageFormat::Raw)
                        .build()
                        .context("the SNS action")?,
                )
                .build(),
        );
    if let Some(queue_url) = &error_queue_url {
        let sqs = payload["ErrorAction"]["Sqs"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        request = request.error_action(
            Action::builder()
                .sqs(
                    SqsAction::builder()
                        .queue_url(queue_url)
                        .role_arn(role(&sqs))
                        .use_base64(text(&sqs, "UseBase64").as_deref() == Some("true"))
                        .build()
                        .context("the SQS error action")?,
                )
                .build(),
        );
    }
    match iot
        .create_topic_rule()
        .rule_name(&name)
        .topic_rule_payload(request.build().context("the topic rule")?)
        .send()
        .await
    {
        Ok(_) => {}
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
        Err(error) => return Err(error.into()),
    }
    let arn = format!(
        "arn:aws:iot:{}:{}:rule/{name}",
        resolver.region, resolver.account_id
    );
    Ok((
        Physical {
            reference: name.clone(),
            attributes: [("Arn".to_owned(), arn)].into(),
        },
        TopicRuleSpec {
            name,
            sql,
            sns_target_arn,
            error_queue_url,
        },
    ))
}
