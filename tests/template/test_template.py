"""What IAM, KMS, SNS and CloudFormation will make of template.yaml, checked
offline: moto enforces none of it, and cfn-lint and checkov read resources
one at a time. Each test reads the stack as SAM's transform leaves it, with
the parameters of samconfig.toml's environments (dev and prod)."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import parliament
import pytest

from stack import (
    ACCOUNT,
    REGION,
    ROOT,
    STACK_NAME,
    Stack,
    as_list,
    environment_parameters,
    function_role,
    key_of,
    role_statements,
    statements,
)

# Whoever deploys names the admins (the parameter has no default).
ADMINS = {
    "AdminPrincipalArns": f"arn:aws:iam::{ACCOUNT}:role/geotag-deployer,"
    f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_GeotagAdmin_*"
}
ENVIRONMENTS = {
    "dev": environment_parameters("default") | ADMINS,
    # Alarms and alerts reach someone only where an address is given.
    "prod": environment_parameters("prod")
    | ADMINS
    | {"AlarmEmail": "oncall@example.com", "AlertEmail": "ops@example.com"},
}


@pytest.fixture(scope="module", params=sorted(ENVIRONMENTS))
def stack(request: pytest.FixtureRequest) -> Stack:
    return Stack.load(ENVIRONMENTS[request.param])


def _privileges() -> dict[str, list[dict[str, Any]]]:
    by_action = {}
    for service in parliament.iam_definition:
        for privilege in service["privileges"]:
            by_action[f"{service['prefix']}:{privilege['privilege']}".lower()] = privilege[
                "resource_types"
            ]
    return by_action


PRIVILEGES = _privileges()


def expand(actions: Any) -> list[str]:
    """IAM actions, wildcards expanded against IAM's own list (parliament's copy)."""
    found = []
    for action in as_list(actions):
        matches = [known for known in PRIVILEGES if fnmatch.fnmatchcase(known, action.lower())]
        assert matches, f"{action} is no IAM action"
        found += matches
    return found


def grants(statement: dict[str, Any], action: str) -> bool:
    return statement.get("Effect") == "Allow" and any(
        fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in as_list(statement.get("Action"))
    )


def all_roles(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    return {role_id: role_statements(stack, role_id) for role_id in stack.of_type("AWS::IAM::Role")}


# --- the functions' roles


def test_each_function_runs_as_a_role_the_template_writes_with_no_managed_policy(stack: Stack):
    """SAM's default role attaches AWSLambdaSQSQueueExecutionRole or
    AWSLambdaDynamoDBExecutionRole: every queue or stream of the account."""
    for function_id in stack.of_type("AWS::Lambda::Function"):
        role_id = function_role(stack, function_id)
        assert role_id in stack.source["Resources"], (
            f"{function_id} runs as {role_id}, a role SAM made (its managed policies reach "
            "every queue and stream of the account)"
        )
        assert not stack.props(role_id).get("ManagedPolicyArns"), (
            f"{role_id} attaches {stack.props(role_id)['ManagedPolicyArns']}"
        )


def test_the_local_endpoint_variable_is_declared_for_sam_local_and_absent_when_deployed(stack: Stack):
    # `sam local --env-vars` overrides only what the template declares, so
    # AWS_ENDPOINT_URL is declared, as AWS::NoValue: CloudFormation leaves it
    # out, and a deployed SDK can never be pointed anywhere but AWS.
    declared = stack.source["Globals"]["Function"]["Environment"]["Variables"]
    assert declared["AWS_ENDPOINT_URL"] == {"Ref": "AWS::NoValue"}
    functions = stack.of_type("AWS::Lambda::Function")
    assert functions
    for function_id in functions:
        variables = stack.props(function_id).get("Environment", {}).get("Variables", {})
        assert "AWS_ENDPOINT_URL" not in variables, function_id
        assert variables.get("METRICS_NAMESPACE") == "geotag", function_id


def test_no_role_may_touch_data_on_every_resource(stack: Stack):
    for role_id, role in all_roles(stack).items():
        for statement in role:
            if statement.get("Effect") != "Allow" or "*" not in as_list(statement.get("Resource")):
                continue
            scoped = [
                action
                for action in expand(statement["Action"])
                if any(kind["resource_type"] for kind in PRIVILEGES[action])
            ]
            assert not scoped, (
                f"{role_id} allows {scoped} on every resource, though IAM can scope them "
                f"(statement {statement.get('Sid')})"
            )


def test_roles_use_the_data_key_only_through_the_services_that_need_it(stack: Stack):
    for role_id, role in all_roles(stack).items():
        for statement in role:
            if not any(action.startswith("kms:") for action in expand(statement.get("Action"))):
                continue
            via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
            assert via, f"{role_id} may use the key directly, not only through a service ({statement})"


def test_each_function_logs_only_to_its_own_log_group(stack: Stack):
    for function_id, function in stack.of_type("AWS::Lambda::Function").items():
        role = role_statements(stack, function_role(stack, function_id))
        log_group = function["Properties"]["LoggingConfig"]["LogGroup"]
        (log_group_id,) = [
            id_
            for id_, group in stack.of_type("AWS::Logs::LogGroup").items()
            if group["Properties"]["LogGroupName"] == log_group
        ]
        own = stack.arns[log_group_id]
        for statement in role:
            for action in expand(statement.get("Action")):
                if not action.startswith("logs:"):
                    continue
                assert action in ("logs:createlogstream", "logs:putlogevents"), (
                    f"{function_id} may {action} (the template makes its log group)"
                )
                assert as_list(statement["Resource"]) == [own], (
                    f"{function_id} writes logs to {statement['Resource']}, not only {own}"
                )


def test_each_function_reads_only_its_own_event_source(stack: Stack):
    """Ingest parses untrusted bytes: it must not reach the failure queues,
    nor the stream functions each other's streams."""
    sources: dict[str, set[str]] = {}
    for mapping in stack.of_type("AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        function_id = next(
            id_
            for id_, function in stack.of_type("AWS::Lambda::Function").items()
            if function["Properties"]["FunctionName"] == props["FunctionName"]
            or id_ == props["FunctionName"]
        )
        sources.setdefault(function_id, set()).add(props["EventSourceArn"])
    consuming = (
        "sqs:receivemessage",
        "sqs:deletemessage",
        "sqs:changemessagevisibility",
        "dynamodb:getrecords",
        "dynamodb:getsharditerator",
    )
    for function_id in stack.of_type("AWS::Lambda::Function"):
        for statement in role_statements(stack, function_role(stack, function_id)):
            if statement.get("Effect") != "Allow":
                continue
            if not any(action in consuming for action in expand(statement.get("Action"))):
                continue
            extra = set(as_list(statement["Resource"])) - sources.get(function_id, set())
            assert not extra, f"{function_id} may consume {sorted(extra)}, not its event source"


def test_every_policy_passes_parliament(stack: Stack):
    """An IAM linter with IAM's own list of actions, resource types and
    condition keys: a resource an action cannot take, or an unknown
    condition key, is a grant that silently does nothing."""
    documents = {
        f"{role_id} (inline)": {"Version": "2012-10-17", "Statement": role}
        for role_id, role in all_roles(stack).items()
        if role
    }
    # A key policy's "*" is the key itself, and its statement delegating the
    # key to the account's IAM policies is AWS's default (without it nobody
    # could manage the key): parliament, made for identity policies, reads
    # both as findings.
    delegation = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    for key_id, key in stack.of_type("AWS::KMS::Key").items():
        policy = key["Properties"]["KeyPolicy"]
        documents[f"{key_id} (key policy)"] = policy | {
            "Statement": [s for s in statements(policy) if s.get("Principal") != delegation]
        }
    findings = []
    for name, document in documents.items():
        policy = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=True)
        findings += [
            f"{name}: {f.issue} {f.detail}"
            for f in policy.findings
            if not (name.endswith("(key policy)") and f.issue == "RESOURCE_STAR")
        ]
    assert not findings, "\n".join(findings)


# --- keys: every service that writes to an encrypted resource may use its key


def missing_key_grants(stack: Stack, key_id: str, service: str, actions: list[str]) -> list[str]:
    """The actions of `actions` the key's policy does not allow the service."""
    missing = []
    for action in actions:
        allowed = any(
            grants(statement, action) and service in as_list(statement.get("Principal", {}).get("Service"))
            for statement in statements(stack.props(key_id)["KeyPolicy"])
        )
        if not allowed:
            missing.append(action)
    return missing


def encrypted_with(stack: Stack, resource_ref: str) -> str | None:
    """The stack's key encrypting the topic or queue `resource_ref` (an ARN or URL)."""
    for id_, resource in stack.resources.items():
        if resource["Type"] in ("AWS::SNS::Topic", "AWS::SQS::Queue") and resource_ref in (
            stack.arns[id_],
            stack.refs[id_],
        ):
            return key_of(stack, resource["Properties"].get("KmsMasterKeyId"))
    return None


def test_cloudwatch_may_use_the_key_of_every_topic_an_alarm_notifies(stack: Stack):
    for alarm_id, alarm in stack.of_type("AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        for topic in props.get("AlarmActions", []) + props.get("OKActions", []):
            key_id = encrypted_with(stack, topic)
            if key_id is None:
                continue
            missing = missing_key_grants(
                stack, key_id, "cloudwatch.amazonaws.com", ["kms:Decrypt", "kms:GenerateDataKey"]
            )
            assert not missing, (
                f"{alarm_id} notifies {topic}, encrypted with {key_id}, whose policy does not "
                f"allow CloudWatch {missing}: the alarm fires and nobody hears it"
            )


def test_sns_may_use_the_key_of_every_queue_it_delivers_to(stack: Stack):
    for subscription_id, subscription in stack.of_type("AWS::SNS::Subscription").items():
        props = subscription["Properties"]
        targets = [props["Endpoint"]] if props["Protocol"] == "sqs" else []
        targets += [props.get("RedrivePolicy", {}).get("deadLetterTargetArn")] if props.get("RedrivePolicy") else []
        for queue in targets:
            key_id = encrypted_with(stack, queue)
            if key_id:
                missing = missing_key_grants(
                    stack, key_id, "sns.amazonaws.com", ["kms:Decrypt", "kms:GenerateDataKey"]
                )
                assert not missing, f"{subscription_id}: SNS may not {missing} with {key_id}"


def test_cloudwatch_logs_may_use_the_key_of_every_log_group(stack: Stack):
    for group_id, group in stack.of_type("AWS::Logs::LogGroup").items():
        key_id = key_of(stack, group["Properties"].get("KmsKeyId"))
        if key_id:
            missing = missing_key_grants(
                stack, key_id, f"logs.{REGION}.amazonaws.com", ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
            )
            assert not missing, f"{group_id}: CloudWatch Logs may not {missing} with {key_id}"


def test_roles_that_send_to_encrypted_topics_and_queues_may_use_their_keys(stack: Stack):
    for role_id, role in all_roles(stack).items():
        for statement in role:
            for action in ("sns:publish", "sqs:sendmessage"):
                if action not in expand(statement.get("Action")) or statement.get("Effect") != "Allow":
                    continue
                for target in as_list(statement["Resource"]):
                    key_id = encrypted_with(stack, target)
                    if key_id is None:
                        continue
                    key_arn = stack.arns[key_id]
                    assert any(
                        grants(other, "kms:GenerateDataKey") and key_arn in as_list(other["Resource"])
                        for other in role
                    ), f"{role_id} sends to {target} but may not use {key_id}"


def test_key_grants_to_services_name_the_resources_that_use_them(stack: Stack):
    """A grant conditioned on the account alone lets any topic, queue or log
    group of the account use the key."""
    for key_id, key in stack.of_type("AWS::KMS::Key").items():
        for statement in statements(key["Properties"]["KeyPolicy"]):
            if "Service" not in statement.get("Principal", {}):
                continue
            named = [
                value
                for operator, keys in statement.get("Condition", {}).items()
                if operator.startswith(("Arn", "StringEquals"))
                for name, value in keys.items()
                if name in ("aws:SourceArn", "kms:EncryptionContext:aws:logs:arn")
            ]
            arns = [arn for value in named for arn in as_list(value)]
            assert arns, f"{key_id}'s grant {statement.get('Sid')} names no resource (aws:SourceArn)"
            # A wildcard may only stand for what CloudFormation appends to
            # the names it gives the stack's own resources.
            loose = [
                arn
                for arn in arns
                if "*" in arn.split(":", 5)[-1] and not arn.endswith(f":{STACK_NAME}-*")
            ]
            assert not loose, f"{key_id}'s grant {statement.get('Sid')} names {loose}: beyond the stack"


# --- alarms reach someone


def test_every_alarm_notifies_a_topic_someone_is_subscribed_to():
    """With AlarmEmail given (prod, here), every alarm reaches it."""
    alarms_reach_someone(Stack.load(ENVIRONMENTS["prod"]))


def test_the_dashboard_shows_every_alarm_and_the_api_refusals(stack: Stack):
    """An alarm left off the dashboard's alarm widget is one nobody looks at."""
    body = json.loads(stack.props("Dashboard")["DashboardBody"])
    shown = {arn for widget in body["widgets"] if widget["type"] == "alarm" for arn in widget["properties"]["alarms"]}
    alarms = {stack.arns[alarm_id] for alarm_id in stack.of_type("AWS::CloudWatch::Alarm")}
    assert shown == alarms, f"missing {sorted(alarms - shown)}, unknown {sorted(shown - alarms)}"
    searches = json.dumps(body)
    for metric in ("RequestsRefused", "RequestsFailed"):
        assert f'MetricName=\\"{metric}\\"' in searches, metric


def alarms_reach_someone(stack: Stack):
    subscribed = {
        subscription["Properties"]["TopicArn"] for subscription in stack.of_type("AWS::SNS::Subscription").values()
    }
    for alarm_id, alarm in stack.of_type("AWS::CloudWatch::Alarm").items():
        actions = alarm["Properties"].get("AlarmActions", [])
        assert actions, f"{alarm_id} has no alarm action"
        for topic in actions:
            assert topic in subscribed, f"{alarm_id} notifies {topic}, which nobody subscribes to"


# --- data survives a mistake


def data_resources(stack: Stack) -> list[str]:
    """Tables, keys, and the queues that hold what failed (dead letters)."""
    found = list(stack.of_type("AWS::DynamoDB::Table")) + list(stack.of_type("AWS::KMS::Key"))
    text = json.dumps({id_: r["Properties"] for id_, r in stack.resources.items()})
    for queue_id in stack.of_type("AWS::SQS::Queue"):
        arn, url = stack.arns[queue_id], stack.refs[queue_id]
        holds_failures = any(
            f'"{field}": "{value}"' in text
            for field, value in (
                ("deadLetterTargetArn", arn),
                ("Destination", arn),
                ("QueueUrl", url),
            )
        )
        if holds_failures:
            found.append(queue_id)
    return found


def test_data_is_retained_when_the_stack_is_deleted_or_a_resource_replaced(stack: Stack):
    for id_ in data_resources(stack):
        resource = stack.resources[id_]
        assert resource.get("DeletionPolicy") == "Retain", f"{id_} is deleted with the stack"
        assert resource.get("UpdateReplacePolicy") == "Retain", f"{id_} is deleted when replaced"


def test_tables_are_protected_from_deletion_in_prod():
    prod = Stack.load(ENVIRONMENTS["prod"])
    for table_id, table in prod.of_type("AWS::DynamoDB::Table").items():
        assert table["Properties"].get("DeletionProtectionEnabled") is True or (
            table["Properties"].get("DeletionProtectionEnabled") == "true"
        ), f"{table_id} can be deleted in prod"


# --- SNS keeps what it cannot deliver


def test_every_subscription_redrives_to_a_queue_with_an_alarm(stack: Stack):
    alarmed = {
        dimension["Value"]
        for alarm in stack.of_type("AWS::CloudWatch::Alarm").values()
        for dimension in alarm["Properties"].get("Dimensions", [])
        if dimension["Name"] == "QueueName"
    }
    queue_names = {stack.arns[id_]: stack.props(id_).get("QueueName") for id_ in stack.of_type("AWS::SQS::Queue")}
    for subscription_id, subscription in stack.of_type("AWS::SNS::Subscription").items():
        redrive = subscription["Properties"].get("RedrivePolicy")
        assert redrive, f"{subscription_id} drops what SNS cannot deliver (no RedrivePolicy)"
        target = redrive.get("deadLetterTargetArn")
        assert target in queue_names, f"{subscription_id} redrives to {target}, not a queue of the stack"
        assert queue_names[target] in alarmed, f"{subscription_id}'s dead-letter queue has no alarm"


def test_refusals_and_failures_land_apart_each_with_its_own_alarm(stack: Stack):
    # Failures: SQS moves a message to IngestDLQ after maxReceiveCount, and
    # any message there is alarmed ("something broke").
    redrive = stack.props("IngestQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == stack.arns["IngestDLQ"]
    queue_alarms = {
        dimension["Value"]
        for alarm in stack.of_type("AWS::CloudWatch::Alarm").values()
        for dimension in alarm["Properties"].get("Dimensions", [])
        if dimension["Name"] == "QueueName"
    }
    assert stack.props("IngestDLQ")["QueueName"] in queue_alarms
    # Refusals: ingest sends them to IngestRejections, which devices fill a
    # little all the time: no alarm on its depth, one on the rate.
    variables = stack.props("IngestFunction")["Environment"]["Variables"]
    assert variables["INGEST_REJECTIONS_URL"] == stack.refs["IngestRejections"]
    assert stack.refs["IngestDLQ"] not in variables.values()
    assert stack.props("IngestRejections")["QueueName"] not in queue_alarms
    sends = {
        resource
        for statement in role_statements(stack, function_role(stack, "IngestFunction"))
        if "sqs:SendMessage" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }
    assert sends == {
        stack.arns["IngestRejections"],
        stack.arns["IngestQuarantine"],
    }, "ingest refuses and parks; only SQS fills IngestDLQ"
    rate = stack.props("IngestRejectionRateAlarm")
    metrics = {
        query["MetricStat"]["Metric"]["MetricName"]: query["MetricStat"]["Metric"]
        for query in rate["Metrics"]
        if "MetricStat" in query
    }
    assert set(metrics) == {"MessagesRejected", "RecordsReceived"}
    for metric in metrics.values():
        assert metric["Namespace"] == stack.props("IngestFunction")["Environment"]["Variables"].get(
            "METRICS_NAMESPACE", "geotag"
        )
        assert metric["Dimensions"] == [{"Name": "Function", "Value": stack.refs["IngestFunction"]}]
    assert rate["AlarmActions"], "the rate alarm notifies someone"



def test_a_tag_over_its_budget_is_parked_apart_and_alarmed(stack: Stack):
    # Parked, not refused: its own queue, kept 14 days (the longest SQS
    # keeps anything), which the redrive empties; an alarm on the first one.
    variables = stack.props("IngestFunction")["Environment"]["Variables"]
    assert variables["INGEST_QUARANTINE_URL"] == stack.refs["IngestQuarantine"]
    assert variables["INGEST_QUARANTINE_URL"] != variables["INGEST_REJECTIONS_URL"]
    assert stack.props("IngestQuarantine")["MessageRetentionPeriod"] == 1209600
    assert str(variables["DEVICE_READINGS_PER_MINUTE"]) == str(stack.parameters["DeviceReadingsPerMinute"])
    # The count: one table, keyed by tag and minute, expiring, that ingest
    # may only add to.
    assert variables["DEVICE_RATES_TABLE"] == stack.refs["DeviceRatesTable"]
    rates = stack.props("DeviceRatesTable")
    assert [key["AttributeName"] for key in rates["KeySchema"]] == ["device_id", "minute"]
    assert rates["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    on_rates = {
        action
        for statement in role_statements(stack, function_role(stack, "IngestFunction"))
        if stack.arns["DeviceRatesTable"] in as_list(statement["Resource"])
        for action in as_list(statement["Action"])
    }
    assert on_rates == {"dynamodb:UpdateItem"}
    alarm = stack.props("IngestQuarantineAlarm")
    assert alarm["MetricName"] == "MessagesQuarantined"
    assert alarm["Dimensions"] == [{"Name": "Function", "Value": stack.refs["IngestFunction"]}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["AlarmActions"], "the quarantine alarm notifies someone"


# --- who receives whose data


# The actions SNS accepts in a topic policy (its developer guide's "Valid
# Amazon SNS policy actions"); it refuses a policy naming another, such as
# sns:SetSubscriptionAttributes, and the deploy fails.
TOPIC_POLICY_ACTIONS = {
    "sns:AddPermission",
    "sns:DeleteTopic",
    "sns:GetDataProtectionPolicy",
    "sns:GetTopicAttributes",
    "sns:ListSubscriptionsByTopic",
    "sns:ListTagsForResource",
    "sns:Publish",
    "sns:PutDataProtectionPolicy",
    "sns:RemovePermission",
    "sns:SetTopicAttributes",
    "sns:Subscribe",
    "sns:TagResource",
    "sns:UntagResource",
}


def topic_policy_statements(stack: Stack, topic_id: str) -> list[dict[str, Any]]:
    topic_arn = stack.refs[topic_id]
    return [
        statement
        for policy in stack.of_type("AWS::SNS::TopicPolicy").values()
        if topic_arn in as_list(policy["Properties"]["Topics"])
        for statement in statements(policy["Properties"]["PolicyDocument"])
    ]


def test_topic_policies_name_only_actions_sns_accepts(stack: Stack):
    for policy_id, policy in stack.of_type("AWS::SNS::TopicPolicy").items():
        for statement in statements(policy["Properties"]["PolicyDocument"]):
            unknown = [a for a in as_list(statement["Action"]) if a not in TOPIC_POLICY_ACTIONS and a != "sns:*"]
            assert not unknown, f"{policy_id} {statement.get('Sid')}: SNS refuses {unknown} in a topic policy"


def test_only_the_admins_subscribe_to_the_telemetry_and_alerts_topics(stack: Stack):
    """A subscriber to TelemetryTopic reads every customer's readings; one to
    AlertsTopic decides by its own filter whose alerts it receives. Same-account
    identity policies (an engineer's sns:*) would allow Subscribe on their
    own: only a deny in the topic policy holds whatever else is allowed."""
    admins = [arn.strip() for arn in stack.parameters["AdminPrincipalArns"].split(",")]
    assert admins and all(arn.startswith("arn:") for arn in admins), admins
    for topic_id in ("TelemetryTopic", "AlertsTopic"):
        guards = [
            statement
            for statement in topic_policy_statements(stack, topic_id)
            if statement["Effect"] == "Deny"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and "sns:Subscribe" in as_list(statement["Action"])
            and statement.get("Condition") == {"ArnNotLike": {"aws:PrincipalArn": admins}}
        ]
        assert guards, f"{topic_id}: anyone the account's IAM allows may subscribe, not only {admins}"


def test_every_alerts_subscription_receives_one_customer_or_says_every_customer(stack: Stack):
    """The template's own AlertsTopic subscriptions, judged as `geotag
    customer audit` judges them (geotag::alert_filter)."""
    every_customer = {"customer_id": [{"exists": True}]}
    for subscription_id, subscription in stack.of_type("AWS::SNS::Subscription").items():
        props = subscription["Properties"]
        if props["TopicArn"] != stack.refs["AlertsTopic"]:
            continue
        assert props.get("FilterPolicyScope", "MessageAttributes") == "MessageAttributes", subscription_id
        policy = props.get("FilterPolicy")
        names_one = (
            isinstance(policy, dict)
            and isinstance(policy.get("customer_id"), list)
            and len(policy["customer_id"]) == 1
            and isinstance(policy["customer_id"][0], str)
            and "$or" not in policy
        )
        assert names_one or policy == every_customer, (
            f"{subscription_id} receives every customer's alerts without saying so (FilterPolicy {policy!r})"
        )


# --- the API: every request verified, reads without a Scan


def http_api_operations(stack: Stack):
    """(api id, path, method, operation) of every route of the stack's HTTP APIs."""
    for api_id, api in stack.of_type("AWS::ApiGatewayV2::Api").items():
        for path, methods in api["Properties"]["Body"]["paths"].items():
            for method, operation in methods.items():
                yield api_id, path, method, operation


def test_every_api_route_needs_a_token_the_jwt_authorizer_verified(stack: Stack):
    operations = list(http_api_operations(stack))
    assert operations, "the template serves no HTTP API"
    for api_id, path, method, operation in operations:
        schemes = stack.resources[api_id]["Properties"]["Body"]["components"]["securitySchemes"]
        required = [name for requirement in operation.get("security", []) for name in requirement]
        assert required, f"{method} {path} answers without a token"
        for name in required:
            authorizer = schemes[name]["x-amazon-apigateway-authorizer"]
            assert authorizer["type"] == "jwt", f"{method} {path}: authorizer {name} is not a JWT one"
            config = authorizer["jwtConfiguration"]
            assert config["issuer"].startswith("https://") and all(config["audience"]), config


def test_the_api_serves_every_documented_route_through_the_function(stack: Stack):
    """functions/api/openapi.yaml's paths all reach the API function (one
    proxy route), which the handler's own test holds to the document."""
    import yaml

    documented = yaml.safe_load((ROOT / "functions/api/openapi.yaml").read_text())["paths"]
    function_arn = stack.arns["ApiFunction"]
    proxies = [
        path.removesuffix("{proxy+}")
        for _, path, _, operation in http_api_operations(stack)
        if path.endswith("{proxy+}") and function_arn in operation["x-amazon-apigateway-integration"]["uri"]
    ]
    for path in documented:
        assert any(path.startswith(prefix) for prefix in proxies), f"{path} reaches no route of the API"


def test_the_api_reads_without_a_scan_and_writes_only_geofences(stack: Stack):
    writes = ("dynamodb:putitem", "dynamodb:deleteitem", "dynamodb:updateitem", "dynamodb:batchwriteitem")
    for statement in role_statements(stack, function_role(stack, "ApiFunction")):
        actions = expand(statement.get("Action"))
        assert "dynamodb:scan" not in actions, f"the API may Scan ({statement.get('Sid')})"
        if any(action in writes for action in actions):
            assert as_list(statement["Resource"]) == [stack.arns["GeofencesTable"]], (
                f"the API may write {statement['Resource']}"
            )


def test_another_issuer_replaces_the_stacks_user_pool():
    issuer = {"JwtIssuer": "https://login.example.com/", "JwtAudience": "geotag-map"}
    stack = Stack.load(ENVIRONMENTS["prod"] | issuer)
    assert not stack.of_type("AWS::Cognito::UserPool")
    for api_id, _, _, operation in http_api_operations(stack):
        schemes = stack.resources[api_id]["Properties"]["Body"]["components"]["securitySchemes"]
        for requirement in operation["security"]:
            for name in requirement:
                config = schemes[name]["x-amazon-apigateway-authorizer"]["jwtConfiguration"]
                assert config == {"issuer": issuer["JwtIssuer"], "audience": [issuer["JwtAudience"]]}


# --- the checks themselves: each catches the mistake it is for


MUTATIONS = [
    (
        "an API without its authorizer",
        "        DefaultAuthorizer: Tokens\n",
        "",
        test_every_api_route_needs_a_token_the_jwt_authorizer_verified,
    ),
    (
        "the API may scan the telemetry",
        "              - Sid: ReadTracks\n                Effect: Allow\n                Action: dynamodb:Query",
        "              - Sid: ReadTracks\n                Effect: Allow\n                Action: [dynamodb:Query, dynamodb:Scan]",
        test_the_api_reads_without_a_scan_and_writes_only_geofences,
    ),
    (
        "anyone may subscribe to the alerts",
        """            Action: sns:Subscribe
            Resource: !Ref AlertsTopic
            Condition:
              ArnNotLike:
                aws:PrincipalArn: !Ref AdminPrincipalArns""",
        """            Action: sns:Subscribe
            Resource: !Ref AlertsTopic
            Condition:
              ArnNotLike:
                aws:PrincipalArn: !Sub arn:${AWS::Partition}:iam::${AWS::AccountId}:*""",
        test_only_the_admins_subscribe_to_the_telemetry_and_alerts_topics,
    ),
    (
        "a topic policy SNS refuses",
        "            Action: sns:Subscribe\n            Resource: !Ref AlertsTopic",
        "            Action: [sns:Subscribe, sns:SetSubscriptionAttributes]\n            Resource: !Ref AlertsTopic",
        test_topic_policies_name_only_actions_sns_accepts,
    ),
    (
        "the operator's subscription without its filter",
        "      FilterPolicyScope: MessageAttributes\n      FilterPolicy:\n        customer_id: [{exists: true}]\n",
        "",
        test_every_alerts_subscription_receives_one_customer_or_says_every_customer,
    ),
    (
        "logs on every log group",
        "Resource: !GetAtt IngestLogGroup.Arn",
        'Resource: "*"',
        test_no_role_may_touch_data_on_every_resource,
    ),
    (
        "ingest consumes a failure queue",
        "Action: [sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes]\n"
        "                Resource: !GetAtt IngestQueue.Arn",
        "Action: [sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes]\n"
        "                Resource: [!GetAtt IngestQueue.Arn, !GetAtt StatsFailures.Arn]",
        test_each_function_reads_only_its_own_event_source,
    ),
    (
        "SNS cannot encrypt for the queues",
        "Service: sns.amazonaws.com\n            Action: [kms:GenerateDataKey*, kms:Decrypt]",
        "Service: sns.amazonaws.com\n            Action: [kms:Decrypt]",
        test_sns_may_use_the_key_of_every_queue_it_delivers_to,
    ),
    (
        "CloudWatch Logs cannot encrypt",
        "              - kms:Encrypt\n",
        "",
        test_cloudwatch_logs_may_use_the_key_of_every_log_group,
    ),
    (
        "the topic rule cannot encrypt for the topic",
        "Action: [kms:GenerateDataKey, kms:Decrypt]",
        "Action: [kms:Decrypt]",
        test_roles_that_send_to_encrypted_topics_and_queues_may_use_their_keys,
    ),
    (
        "nobody subscribes to the alarm topic",
        "TopicArn: !Ref AlarmTopic\n      Protocol: email",
        "TopicArn: !Ref AlertsTopic\n      Protocol: email",
        alarms_reach_someone,
    ),
    (
        "a wildcard action on the key",
        "kms:EncryptionContext:aws:logs:arn:",
        "kms:EncryptionContext:aws:logs:arn:\n                  - !Sub arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*",
        test_key_grants_to_services_name_the_resources_that_use_them,
    ),
]


@pytest.mark.parametrize("mistake, text, mistaken, check", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_check_catches_its_mistake(tmp_path, mistake, text, mistaken, check):
    """The checks that today's template passes for want of anything to find,
    shown failing on a template with the mistake they look for."""
    source = (ROOT / "template.yaml").read_text()
    assert source.count(text) == 1, f"template.yaml no longer says {text!r} once"
    template = tmp_path / "template.yaml"
    template.write_text(source.replace(text, mistaken))
    stack = Stack.load(ENVIRONMENTS["prod"], template=template)
    with pytest.raises(AssertionError):
        check(stack)
