"""template.yaml as CloudFormation will deploy it, read offline.

SAM's own transform (samtranslator, in .venv-sam) expands the serverless
resources into what CloudFormation creates (the functions' roles, event
source mappings, permissions); then every intrinsic function is resolved
for one set of parameters, into the ARNs and names AWS would give, so that
the tests read policies as IAM and KMS will: plain strings, the conditions
applied. moto enforces neither IAM nor KMS, so this is where their mistakes
are caught.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"
STACK_NAME = "geotag-test"

# Resources CloudFormation names by these properties (else by logical id).
NAME_PROPERTIES = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::IoT::Policy": "PolicyName",
    "AWS::IoT::TopicRule": "RuleName",
    "AWS::Events::Rule": "Name",
}


class _ManagedPolicies:
    """SAM's bundled map of AWS managed policy names to ARNs (no IAM call)."""

    def load(self) -> dict[str, str]:
        import samtranslator

        path = Path(samtranslator.__file__).parent / "internal/data/aws_managed_policies.json"
        data = json.loads(path.read_text())
        return data.get("aws", data)


def environment_parameters(environment: str) -> dict[str, str]:
    """The parameter overrides samconfig.toml gives an environment's deploy."""
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = config[environment]["deploy"]["parameters"].get("parameter_overrides", "")
    return dict(pair.split("=", 1) for pair in overrides.split())


@dataclass
class Stack:
    """The deployed stack's resources, every value resolved."""

    parameters: dict[str, str]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The source template (before SAM's transform), for what SAM drops.
    source: dict[str, Any] = field(default_factory=dict)
    # Each resource's ARN, as its Arn attribute would give it, and what a
    # Ref to it gives (a queue's URL, a topic's ARN, a table's name).
    arns: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, parameters: dict[str, str] | None = None, template: Path | None = None) -> Stack:
        text = (template or ROOT / "template.yaml").read_text()
        source = yaml_parse(text)
        packaged = copy.deepcopy(source)
        # `sam deploy` uploads CodeUri; the transform wants what it leaves.
        for resource in packaged["Resources"].values():
            if resource["Type"] == "AWS::Serverless::Function":
                resource["Properties"]["CodeUri"] = "s3://geotag-artifacts/code.zip"
        transformed = transform(packaged, {}, _ManagedPolicies())
        values = {
            name: str(spec.get("Default", ""))
            for name, spec in transformed.get("Parameters", {}).items()
        }
        unknown = set(parameters or {}) - set(values)
        if unknown:
            raise ValueError(f"template.yaml has no parameters {sorted(unknown)}")
        values.update(parameters or {})
        return _Resolver(transformed, values).stack(source)

    def of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        return {id_: r for id_, r in self.resources.items() if r["Type"] == type_}

    def props(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id].get("Properties", {})


class _Resolver:
    def __init__(self, template: dict[str, Any], parameters: dict[str, str]):
        self.template = template
        self.parameters = parameters
        self.raw = template["Resources"]
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions", {}):
            self.condition(name)

    def stack(self, source: dict[str, Any]) -> Stack:
        stack = Stack(parameters=self.parameters, source=source)
        for logical_id, resource in self.raw.items():
            condition = resource.get("Condition")
            if condition and not self.conditions[condition]:
                continue
            resolved = {key: value for key, value in resource.items() if key != "Properties"}
            resolved["Properties"] = self.value(resource.get("Properties", {}))
            stack.resources[logical_id] = resolved
            stack.arns[logical_id] = self.arn(logical_id)
            stack.refs[logical_id] = self.ref(logical_id)
        return stack

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self.conditions[name]

    # --- names, refs and attributes, as CloudFormation gives them

    def name(self, logical_id: str) -> str:
        resource = self.raw[logical_id]
        prop = NAME_PROPERTIES.get(resource["Type"])
        given = resource.get("Properties", {}).get(prop) if prop else None
        return str(self.value(given)) if given is not None else f"{STACK_NAME}-{logical_id}"

    def arn(self, logical_id: str) -> str:
        type_, name = self.raw[logical_id]["Type"], self.name(logical_id)
        prefix = f"arn:{PARTITION}"
        return {
            "AWS::DynamoDB::Table": f"{prefix}:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::SQS::Queue": f"{prefix}:sqs:{REGION}:{ACCOUNT}:{name}",
            "AWS::SNS::Topic": f"{prefix}:sns:{REGION}:{ACCOUNT}:{name}",
            "AWS::Logs::LogGroup": f"{prefix}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::Lambda::Function": f"{prefix}:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::IAM::Role": f"{prefix}:iam::{ACCOUNT}:role/{name}",
            "AWS::KMS::Key": f"{prefix}:kms:{REGION}:{ACCOUNT}:key/{logical_id.lower()}-id",
            "AWS::IoT::TopicRule": f"{prefix}:iot:{REGION}:{ACCOUNT}:rule/{name}",
            "AWS::Events::Rule": f"{prefix}:events:{REGION}:{ACCOUNT}:rule/{name}",
            "AWS::CloudWatch::Alarm": f"{prefix}:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
        }.get(type_, f"{prefix}:unknown:{REGION}:{ACCOUNT}:{logical_id}")

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": PARTITION,
            "AWS::StackName": STACK_NAME,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK_NAME}/id",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            declared = self.template.get("Parameters", {}).get(name, {})
            if declared.get("Type") == "CommaDelimitedList":
                return [item.strip() for item in self.parameters[name].split(",") if item.strip()]
            return self.parameters[name]
        type_ = self.raw[name]["Type"]
        if type_ in ("AWS::SNS::Topic", "AWS::CloudWatch::Alarm"):
            return self.arn(name)
        if type_ == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.name(name)}"
        if type_ == "AWS::KMS::Key":
            return self.arn(name).rsplit("/", 1)[1]
        return self.name(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical_id)
        if attribute == "StreamArn":
            # AWS's stream labels are times with colons (…T21:21:33.291);
            # parliament splits ARNs at every colon and would read one as
            # another resource type, so the label here has none.
            return f"{self.arn(logical_id)}/stream/2026-01-01T00-00-00.000"
        if attribute in ("QueueName", "TopicName", "Name"):
            return self.name(logical_id)
        return f"{logical_id}.{attribute}"

    # --- intrinsic functions

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            resolved = (self.value(item) for item in node if not _is_no_value(item))
            return [item for item in resolved if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::If":
                name, yes, no = arg
                chosen = yes if self.condition(name) else no
                return _NO_VALUE if _is_no_value(chosen) else self.value(chosen)
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(str(item) for item in self.value(items))
            if key == "Fn::Select":
                index, items = arg
                return self.value(items)[int(self.value(index))]
            if key == "Fn::Equals":
                left, right = self.value(arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(arg))
            if key == "Fn::Or":
                return any(self.value(arg))
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::GetAZs":
                return [f"{REGION}a", f"{REGION}b"]
        resolved = {key: self.value(value) for key, value in node.items() if not _is_no_value(value)}
        return {key: value for key, value in resolved.items() if value is not _NO_VALUE}

    def sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        variables = {name: self.value(value) for name, value in variables.items()}

        def replace(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                logical_id, attribute = inner.split(".", 1)
                return self.get_att(logical_id, attribute)
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


# What AWS::NoValue (directly or chosen by Fn::If) leaves: nothing.
_NO_VALUE = object()


def _is_no_value(node: Any) -> bool:
    return isinstance(node, dict) and node == {"Ref": "AWS::NoValue"}


# --- policies


def statements(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not document:
        return []
    found = document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def role_statements(stack: Stack, role_id: str) -> list[dict[str, Any]]:
    """Every statement of a role's inline policies and of the stack's
    AWS::IAM::Policy resources attached to it."""
    props = stack.props(role_id)
    found = [s for policy in props.get("Policies", []) for s in statements(policy["PolicyDocument"])]
    role_name = stack.arns[role_id].rsplit("/", 1)[1]
    for policy in stack.of_type("AWS::IAM::Policy").values():
        if role_name in as_list(policy["Properties"].get("Roles")):
            found += statements(policy["Properties"]["PolicyDocument"])
    return found


def function_role(stack: Stack, function_id: str) -> str:
    """The logical id of the role a function runs as."""
    role_arn = stack.props(function_id)["Role"]
    for role_id in stack.of_type("AWS::IAM::Role"):
        if stack.arns[role_id] == role_arn:
            return role_id
    raise AssertionError(f"{function_id}'s role {role_arn} is not a role of the stack")


def key_of(stack: Stack, key_ref: str | None) -> str | None:
    """The logical id of the stack's key a KmsMasterKeyId/KmsKeyId names
    (by id or ARN); None for no key or AWS's own."""
    for key_id in stack.of_type("AWS::KMS::Key"):
        arn = stack.arns[key_id]
        if key_ref in (arn, arn.rsplit("/", 1)[1]):
            return key_id
    return None
