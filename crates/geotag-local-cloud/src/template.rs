//! Reading template.yaml: the one list of resources, for the cloud and for
//! the local stack alike.
//!
//! CloudFormation YAML has short-form tags (`!Ref X`, `!GetAtt A.B`,
//! `!Sub "..."`) that plain YAML readers reject or drop. The template is read
//! with `serde_norway` (the maintained fork of the deprecated `serde_yaml`),
//! and every tag is rewritten to its long JSON form (`{"Ref": "X"}`,
//! `{"Fn::GetAtt": ["A", "B"]}`), so that the rest of the code handles one
//! shape, and JSON templates work too. [`Resolver`] then evaluates the
//! intrinsic functions the local stack needs against the physical names of
//! the resources it created.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Map, Value};

/// A parsed template, tags rewritten to long form.
#[derive(Debug, Clone)]
pub struct Template {
    pub parameters: Map<String, Value>,
    pub conditions: Map<String, Value>,
    /// `Globals.Function` of a SAM template (merged under each function's properties).
    pub function_globals: Map<String, Value>,
    pub resources: BTreeMap<String, Resource>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub properties: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub condition: Option<String>,
}

impl Template {
    pub fn load(path: &Path) -> Result<Template> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Template::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Template> {
        let yaml: serde_norway::Value = serde_norway::from_str(text)?;
        let root = long_form(yaml)?;
        let section = |name: &str| -> Map<String, Value> {
            root.get(name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let mut resources = BTreeMap::new();
        for (logical_id, body) in section("Resources") {
            let kind = body
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("resource {logical_id} has no Type"))?
                .to_owned();
            let object = |name: &str| {
                body.get(name)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            resources.insert(
                logical_id.clone(),
                Resource {
                    logical_id,
                    kind,
                    properties: object("Properties"),
                    metadata: object("Metadata"),
                    condition: body
                        .get("Condition")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                },
            );
        }
        let function_globals = section("Globals")
            .get("Function")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(Template {
            parameters: section("Parameters"),
            conditions: section("Conditions"),
            function_globals,
            resources,
        })
    }

    /// Resources of one type, in logical-id order.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.values().filter(move |r| r.kind == kind)
    }

    /// A function's properties with `Globals.Function` underneath (SAM's merge:
    /// maps merge key by key, anything else is replaced).
    pub fn function_properties(&self, function: &Resource) -> Map<String, Value> {
        let mut merged = self.function_globals.clone();
        for (key, value) in &function.properties {
            match (merged.get_mut(key), value) {
                (Some(Value::Object(global)), Value::Object(own)) => {
                    merge_objects(global, own);
                }
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        merged
    }
}

fn merge_objects(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(own)) => merge_objects(inner, own),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Rewrites YAML (with CloudFormation short-form tags) to JSON in long form.
fn long_form(yaml: serde_norway::Value) -> Result<Value> {
    use serde_norway::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(long_form).collect::<Result<_>>()?)
        }
        Y::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => bail!("unsupported mapping key {other:?}"),
                };
                object.insert(key, long_form(value)?);
            }
            Value::Object(object)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = long_form(tagged.value)?;
            match name {
                "Ref" | "Condition" => single(name, value),
                "GetAtt" => match value {
                    Value::String(dotted) => {
                        let (resource, attribute) = dotted.split_once('.').ok_or_else(|| {
                            anyhow!("!GetAtt {dotted}: expected Resource.Attribute")
                        })?;
                        single("Fn::GetAtt", Value::from(vec![resource, attribute]))
                    }
                    other => single("Fn::GetAtt", other),
                },
                other => single(&format!("Fn::{other}"), value),
            }
        }
    })
}

fn single(key: &str, value: Value) -> Value {
    let mut object = Map::new();
    object.insert(key.to_owned(), value);
    Value::Object(object)
}

/// What a created resource answers to `Ref` and `Fn::GetAtt`.
#[derive(Debug, Clone, Default)]
pub struct Physical {
    pub reference: String,
    pub attributes: HashMap<String, String>,
}

/// Evaluates intrinsic functions for the local stack.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub stack_name: String,
    pub region: String,
    pub account_id: String,
    pub parameters: HashMap<String, Value>,
    pub physical: HashMap<String, Physical>,
    conditions: Map<String, Value>,
}

impl Resolver {
    /// Parameters take their template defaults unless `overrides` names them.
    pub fn new(
        template: &Template,
        stack_name: &str,
        region: &str,
        account_id: &str,
        overrides: &HashMap<String, String>,
    ) -> Result<Resolver> {
        let mut parameters = HashMap::new();
        for (name, declaration) in &template.parameters {
            let value = match overrides.get(name) {
                Some(value) => Value::String(value.clone()),
                None => declaration.get("Default").cloned().ok_or_else(|| {
                    anyhow!("parameter {name} has no Default; pass it as an override")
                })?,
            };
            parameters.insert(name.clone(), value);
        }
        if let Some(unknown) = overrides
            .keys()
            .find(|name| !template.parameters.contains_key(*name))
        {
            bail!("the template has no parameter {unknown}");
        }
        Ok(Resolver {
            stack_name: stack_name.to_owned(),
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            parameters,
            physical: HashMap::new(),
            conditions: template.conditions.clone(),
        })
    }

    pub fn condition(&self, name: &str) -> Result<bool> {
        let body = self
            .conditions
            .get(name)
            .ok_or_else(|| anyhow!("no condition {name}"))?;
        self.truth(body)
    }

    fn truth(&self, value: &Value) -> Result<bool> {
        let Some((function, argument)) = intrinsic(value) else {
            return match value {
                Value::Bool(b) => Ok(*b),
                Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
                other => bail!("not a condition: {other}"),
            };
        };
        let items = || argument.as_array().cloned().unwrap_or_default();
        match function {
            "Fn::Equals" => {
                let items = items();
                let [left, right] = items.as_slice() else {
                    bail!("Fn::Equals takes two values");
                };
                Ok(scalar(&self.resolve(left)?) == scalar(&self.resolve(right)?))
            }
            "Fn::Not" => Ok(!self.truth(
                items()
                    .first()
                    .ok_or_else(|| anyhow!("Fn::Not takes one"))?,
            )?),
            "Fn::And" => items()
                .iter()
                .try_fold(true, |all, c| Ok(all && self.truth(c)?)),
            "Fn::Or" => items()
                .iter()
                .try_fold(false, |any, c| Ok(any || self.truth(c)?)),
            "Condition" => self.condition(argument.as_str().unwrap_or_default()),
            other => bail!("{other} is not a condition function"),
        }
    }

    /// Resolves every intrinsic function inside `value`.
    pub fn resolve(&self, value: &Value) -> Result<Value> {
        if let Some((function, argument)) = intrinsic(value) {
            return self.call(function, argument);
        }
        Ok(match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.resolve(item))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .filter(|item| !is_no_value(item))
                    .collect(),
            ),
            Value::Object(object) => {
                let mut resolved = Map::new();
                for (key, value) in object {
                    let value = self.resolve(value)?;
                    if !is_no_value(&value) {
                        resolved.insert(key.clone(), value);
                    }
                }
                Value::Object(resolved)
            }
            other => other.clone(),
        })
    }

    /// Resolves to a string (numbers and booleans as CloudFormation prints them).
    pub fn resolve_string(&self, value: &Value) -> Result<String> {
        scalar(&self.resolve(value)?).ok_or_else(|| anyhow!("expected a string, got {value}"))
    }

    fn call(&self, function: &str, argument: &Value) -> Result<Value> {
        match function {
            "Ref" => {
                let name = argument
                    .as_str()
                    .ok_or_else(|| anyhow!("Ref takes a name"))?;
                self.reference(name).map(Value::String)
            }
            "Fn::GetAtt" => {
                let parts: Vec<String> = match argument {
                    Value::Array(items) => items
                        .iter()
                        .map(|item| self.resolve_string(item))
                        .collect::<Result<_>>()?,
                    Value::String(dotted) => dotted.splitn(2, '.').map(str::to_owned).collect(),
                    other => bail!("Fn::GetAtt takes [Resource, Attribute], got {other}"),
                };
                let [resource, attribute] = parts.as_slice() else {
                    bail!("Fn::GetAtt takes [Resource, Attribute]");
                };
                self.attribute(resource, attribute).map(Value::String)
            }
            "Fn::Sub" => {
                let (text, variables) = match argument {
                    Value::String(text) => (text.clone(), Map::new()),
                    Value::Array(items) => match items.as_slice() {
                        [Value::String(text), Value::Object(variables)] => {
                            (text.clone(), variables.clone())
                        }
                        _ => bail!("Fn::Sub takes a string or [string, {{variables}}]"),
                    },
                    other => bail!("Fn::Sub takes a string, got {other}"),
                };
                self.substitute(&text, &variables).map(Value::String)
            }
            "Fn::Join" => {
                let items = argument.as_array().cloned().unwrap_or_default();
                let [Value::String(separator), list] = items.as_slice() else {
                    bail!("Fn::Join takes [separator, [values]]");
                };
                let list = self.resolve(list)?;
                let parts: Vec<String> = list
                    .as_array()
                    .ok_or_else(|| anyhow!("Fn::Join needs a list"))?
                    .iter()
                    .map(|v| scalar(v).ok_or_else(|| anyhow!("Fn::Join of a non-string {v}")))
                    .collect::<Result<_>>()?;
                Ok(Value::String(parts.join(separator)))
            }
            "Fn::Select" => {
                let items = argument.as_array().cloned().unwrap_or_default();
                let [index, list] = items.as_slice() else {
                    bail!("Fn::Select takes [index, list]");
                };
                let index: usize = self.resolve_string(index)?.parse()?;
                let list = self.resolve(list)?;
                list.get(index)
                    .cloned()
                    .ok_or_else(|| anyhow!("Fn::Select index {index} out of range"))
            }
            "Fn::If" => {
                let items = argument.as_array().cloned().unwrap_or_default();
                let [Value::String(condition), then, otherwise] = items.as_slice() else {
                    bail!("Fn::If takes [condition, then, else]");
                };
                if self.condition(condition)? {
                    self.resolve(then)
                } else {
                    self.resolve(otherwise)
                }
            }
            other => bail!("intrinsic function {other} is not supported by the local stack"),
        }
    }

    fn reference(&self, name: &str) -> Result<String> {
        match name {
            "AWS::StackName" => return Ok(self.stack_name.clone()),
            "AWS::Region" => return Ok(self.region.clone()),
            "AWS::AccountId" => return Ok(self.account_id.clone()),
            "AWS::Partition" => return Ok("aws".into()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".into()),
            "AWS::NoValue" => return Ok(NO_VALUE.into()),
            _ => {}
        }
        if let Some(value) = self.parameters.get(name) {
            return scalar(value).ok_or_else(|| anyhow!("parameter {name} is not a scalar"));
        }
        self.physical
            .get(name)
            .map(|p| p.reference.clone())
            .ok_or_else(|| anyhow!("Ref {name}: not a parameter or a resource created so far"))
    }

    fn attribute(&self, resource: &str, attribute: &str) -> Result<String> {
        let physical = self.physical.get(resource).ok_or_else(|| {
            anyhow!("GetAtt {resource}.{attribute}: {resource} not created so far")
        })?;
        physical
            .attributes
            .get(attribute)
            .cloned()
            .ok_or_else(|| anyhow!("GetAtt {resource}.{attribute}: no such attribute locally"))
    }

    fn substitute(&self, text: &str, variables: &Map<String, Value>) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            // `${!Literal}` is written as `${Literal}`.
            if let Some(literal) = after.strip_prefix('!') {
                out.push_str("${");
                rest = literal;
                continue;
            }
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in Fn::Sub {text:?}"))?;
            let name = &after[..end];
            let value = match variables.get(name) {
                Some(value) => self.resolve_string(value)?,
                None => match name.split_once('.') {
                    Some((resource, attribute)) if !name.starts_with("AWS::") => {
                        self.attribute(resource, attribute)?
                    }
                    _ => self.reference(name)?,
                },
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

const NO_VALUE: &str = "\u{0}AWS::NoValue";

fn is_no_value(value: &Value) -> bool {
    value.as_str() == Some(NO_VALUE)
}

/// `{"Ref": x}` or `{"Fn::...": x}` as (function, argument).
fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let (key, argument) = object.iter().next()?;
    (key == "Ref" || key == "Condition" || key.starts_with("Fn::"))
        .then_some((key.as_str(), argument))
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Size: {Type: Number, Default: 10}
  Email: {Type: String, Default: ""}
Conditions:
  HasEmail: !Not [!Equals [!Ref Email, ""]]
Globals:
  Function:
    Timeout: 30
    Environment:
      Variables: {SHARED: "1"}
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub ${AWS::StackName}-q
      Redrive: !GetAtt Dlq.Arn
      Size: !Ref Size
      Joined: !Join ["/", [a, !Ref Size]]
      Mail: !If [HasEmail, !Ref Email, !Ref AWS::NoValue]
      Literal: !Sub "${!NotAVariable}-${Dlq.Arn}"
      Vars: !Sub ["${Name}.x", {Name: !Ref Size}]
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Timeout: 5
      Environment:
        Variables: {OWN: !Ref Queue}
"#;

    fn resolver(template: &Template, overrides: &[(&str, &str)]) -> Resolver {
        let overrides = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut resolver =
            Resolver::new(template, "stack", "us-east-1", "123456789012", &overrides).unwrap();
        resolver.physical.insert(
            "Dlq".into(),
            Physical {
                reference: "http://q/dlq".into(),
                attributes: [("Arn".to_string(), "arn:dlq".to_string())].into(),
            },
        );
        resolver
    }

    #[test]
    fn short_form_tags_resolve() {
        let template = Template::parse(TEMPLATE).unwrap();
        let resolver = resolver(&template, &[]);
        let queue = &template.resources["Queue"];
        let resolved = resolver
            .resolve(&Value::Object(queue.properties.clone()))
            .unwrap();
        assert_eq!(
            resolved,
            serde_json::json!({
                "QueueName": "stack-q", "Redrive": "arn:dlq", "Size": "10", "Joined": "a/10",
                "Literal": "${NotAVariable}-arn:dlq", "Vars": "10.x"
            })
        );
        let resolver = self::resolver(&template, &[("Email", "ops@example.com"), ("Size", "3")]);
        let resolved = resolver
            .resolve(&Value::Object(queue.properties.clone()))
            .unwrap();
        assert_eq!(resolved["Mail"], "ops@example.com");
        assert_eq!(resolved["Size"], "3");
    }

    #[test]
    fn globals_merge_under_function_properties() {
        let template = Template::parse(TEMPLATE).unwrap();
        let merged = template.function_properties(&template.resources["Fn"]);
        assert_eq!(merged["Timeout"], 5);
        assert_eq!(
            merged["Environment"]["Variables"],
            serde_json::json!({"SHARED": "1", "OWN": {"Ref": "Queue"}})
        );
    }

    #[test]
    fn unknown_references_and_parameters_are_errors() {
        let template = Template::parse(TEMPLATE).unwrap();
        let resolver = resolver(&template, &[]);
        assert!(
            resolver
                .resolve(&serde_json::json!({"Ref": "Nothing"}))
                .is_err()
        );
        let overrides = [("Nope".to_string(), "1".to_string())].into();
        assert!(Resolver::new(&template, "s", "r", "a", &overrides).is_err());
    }

    #[test]
    fn the_project_template_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let template = Template::load(&path).unwrap();
        assert!(template.of_kind("AWS::Serverless::Function").count() >= 1);
    }

    /// A deploy with a threshold the function would refuse at cold start
    /// must be refused by CloudFormation first, with the same bounds.
    #[test]
    fn the_threshold_parameters_declare_the_functions_ranges() {
        use geotag::alerts::ThresholdField;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let template = Template::load(&path).unwrap();
        for (parameter, field) in [
            ("BatteryLowPercent", ThresholdField::BatteryLowPct),
            ("SpeedLimitKmh", ThresholdField::SpeedLimitKmh),
            ("SpeedGraceSeconds", ThresholdField::SpeedGraceSeconds),
            ("SilenceMinutes", ThresholdField::SilenceMinutes),
        ] {
            let declared = &template.parameters[parameter];
            let bound = |name: &str| declared.get(name).and_then(Value::as_f64);
            assert_eq!(
                (bound("MinValue"), bound("MaxValue")),
                (Some(field.range().0), Some(field.range().1)),
                "{parameter}"
            );
        }
    }
}
