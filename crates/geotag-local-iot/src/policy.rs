//! IoT Core policies, evaluated locally as IoT Core evaluates them for a
//! connection: an explicit `Deny` wins, then any `Allow`, else the request is
//! denied.
//!
//! Played: `Effect`, `Action` and `Resource` (a string or a list, `*` and `?`
//! wildcards), `NotAction`/`NotResource` are refused, policy variables
//! `${iot:ClientId}`, `${iot:Connection.Thing.ThingName}` and
//! `${iot:Connection.Thing.IsAttached}` (a statement whose variable has no
//! value applies to nothing, as in AWS), and the condition operators `Bool`,
//! `StringEquals` and `StringLike` on those keys. A policy using anything else
//! is refused when it is read, naming what is not played.

use serde_json::Value;

/// One request of a connection: `iot:Connect` on `...:client/ID`, `iot:Publish`
/// on `...:topic/TOPIC`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub action: &'a str,
    pub resource: &'a str,
}

/// What the connection is, as policy variables see it.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub client_id: String,
    /// The thing whose name is the client id, when it is attached to the
    /// connection's certificate.
    pub thing_name: Option<String>,
}

impl Connection {
    fn variable(&self, name: &str) -> Option<String> {
        match name {
            "iot:ClientId" => Some(self.client_id.clone()),
            "iot:Connection.Thing.ThingName" => self.thing_name.clone(),
            "iot:Connection.Thing.IsAttached" => Some(self.thing_name.is_some().to_string()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IoT policy {policy}: {problem} (not played by the local broker)")]
pub struct NotPlayed {
    pub policy: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    operator: Operator,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Operator {
    Bool,
    StringEquals,
    StringLike,
}

/// A policy document, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    statements: Vec<Statement>,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No statement allows it.
    ImplicitlyDenied,
    ExplicitlyDenied,
}

impl Policy {
    pub fn parse(name: &str, document: &Value) -> Result<Policy, NotPlayed> {
        let refuse = |problem: String| NotPlayed {
            policy: name.to_owned(),
            problem,
        };
        let statements = match document.get("Statement") {
            Some(Value::Array(statements)) => statements.clone(),
            Some(statement @ Value::Object(_)) => vec![statement.clone()],
            _ => return Err(refuse("no Statement".into())),
        };
        let statements = statements
            .iter()
            .map(|statement| parse_statement(statement).map_err(refuse))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            name: name.to_owned(),
            statements,
        })
    }

    pub fn decide(&self, request: Request<'_>, connection: &Connection) -> Decision {
        decide(std::slice::from_ref(self), request, connection)
    }
}

/// The decision of several policies (those attached to one certificate) together.
pub fn decide(policies: &[Policy], request: Request<'_>, connection: &Connection) -> Decision {
    let mut allowed = false;
    for statement in policies.iter().flat_map(|policy| &policy.statements) {
        if !statement.applies(request, connection) {
            continue;
        }
        if !statement.allow {
            return Decision::ExplicitlyDenied;
        }
        allowed = true;
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::ImplicitlyDenied
    }
}

impl Statement {
    fn applies(&self, request: Request<'_>, connection: &Connection) -> bool {
        let matches_any = |patterns: &[String], value: &str| {
            patterns.iter().any(|pattern| {
                substitute(pattern, connection)
                    .is_some_and(|pattern| wildcard_match(&pattern, value))
            })
        };
        matches_any(&self.actions, request.action)
            && matches_any(&self.resources, request.resource)
            && self.conditions.iter().all(|condition| {
                let Some(actual) = connection.variable(&condition.key) else {
                    return false;
                };
                condition
                    .values
                    .iter()
                    .any(|expected| match condition.operator {
                        Operator::Bool => expected.eq_ignore_ascii_case(&actual),
                        Operator::StringEquals => {
                            substitute(expected, connection).as_deref() == Some(&actual)
                        }
                        Operator::StringLike => substitute(expected, connection)
                            .is_some_and(|pattern| wildcard_match(&pattern, &actual)),
                    })
            })
    }
}

fn parse_statement(statement: &Value) -> Result<Statement, String> {
    for unplayed in ["NotAction", "NotResource", "NotPrincipal", "Principal"] {
        if statement.get(unplayed).is_some() {
            return Err(unplayed.to_owned());
        }
    }
    let allow = match statement.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        other => return Err(format!("Effect {other:?}")),
    };
    let strings = |field: &str| -> Result<Vec<String>, String> {
        match statement.get(field) {
            Some(Value::String(one)) => Ok(vec![one.clone()]),
            Some(Value::Array(many)) => many
                .iter()
                .map(|value| {
                    value
                        .as_str()
                        .map(str::to_owned)
                        .ok_or(format!("{field} holds {value}"))
                })
                .collect(),
            other => Err(format!("{field} is {other:?}")),
        }
    };
    let mut conditions = Vec::new();
    if let Some(block) = statement.get("Condition") {
        let block = block.as_object().ok_or("Condition is not an object")?;
        for (operator, keys) in block {
            let operator = match operator.as_str() {
                "Bool" => Operator::Bool,
                "StringEquals" => Operator::StringEquals,
                "StringLike" => Operator::StringLike,
                other => return Err(format!("condition operator {other}")),
            };
            for (key, values) in keys.as_object().ok_or("a condition is not an object")? {
                if Connection::default().variable(key).is_none() {
                    return Err(format!("condition key {key}"));
                }
                let values = match values {
                    Value::Array(many) => many.iter().map(scalar).collect::<Option<Vec<_>>>(),
                    one => scalar(one).map(|one| vec![one]),
                }
                .ok_or(format!("condition values of {key}"))?;
                conditions.push(Condition {
                    operator,
                    key: key.clone(),
                    values,
                });
            }
        }
    }
    Ok(Statement {
        allow,
        actions: strings("Action")?,
        resources: strings("Resource")?,
        conditions,
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// `pattern` with its policy variables filled in; `None` if one has no value.
fn substitute(pattern: &str, connection: &Connection) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        out.push_str(&connection.variable(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// IAM wildcards: `*` any run of characters, `?` any one.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    let (pattern, value): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), value.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, and
    // never recursive, whatever a policy's patterns hold.
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, v));
                p += 1;
            }
            Some(&c) if c == '?' || c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((star_p, star_v)) => {
                    p = star_p + 1;
                    v = star_v + 1;
                    star = Some((star_p, star_v + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

    /// template.yaml's DevicePolicy as the local stack resolves it.
    fn device_policy() -> Policy {
        Policy::parse(
            "geotag-device",
            &serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "ConnectAsItsOwnThing", "Effect": "Allow", "Action": "iot:Connect",
                     "Resource": format!("{ARN}:client/${{iot:Connection.Thing.ThingName}}"),
                     "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
                    {"Sid": "PublishOnItsOwnTopic", "Effect": "Allow", "Action": "iot:Publish",
                     "Resource": format!("{ARN}:topic/geotag/${{iot:Connection.Thing.ThingName}}/telemetry")},
                ]
            }),
        )
        .unwrap()
    }

    fn as_thing(name: &str) -> Connection {
        Connection {
            client_id: name.into(),
            thing_name: Some(name.into()),
        }
    }

    #[test]
    fn a_thing_connects_and_publishes_only_as_itself() {
        let policy = device_policy();
        let decide = |connection: &Connection, action: &str, resource: String| {
            policy.decide(
                Request {
                    action,
                    resource: &resource,
                },
                connection,
            )
        };
        let tag1 = as_thing("tag-1");
        assert_eq!(
            decide(&tag1, "iot:Connect", format!("{ARN}:client/tag-1")),
            Decision::Allowed
        );
        assert_eq!(
            decide(
                &tag1,
                "iot:Publish",
                format!("{ARN}:topic/geotag/tag-1/telemetry")
            ),
            Decision::Allowed
        );
        assert_eq!(
            decide(
                &tag1,
                "iot:Publish",
                format!("{ARN}:topic/geotag/tag-2/telemetry")
            ),
            Decision::ImplicitlyDenied
        );
        assert_eq!(
            decide(&tag1, "iot:Subscribe", format!("{ARN}:topicfilter/#")),
            Decision::ImplicitlyDenied
        );
        // A client id that is no thing attached to the certificate: the
        // variable has no value, so nothing applies.
        let stranger = Connection {
            client_id: "tag-2".into(),
            thing_name: None,
        };
        assert_eq!(
            decide(&stranger, "iot:Connect", format!("{ARN}:client/tag-2")),
            Decision::ImplicitlyDenied
        );
    }

    #[test]
    fn an_explicit_deny_wins() {
        let deny = Policy::parse(
            "deny",
            &serde_json::json!({"Statement": {"Effect": "Deny", "Action": "iot:*", "Resource": "*"}}),
        )
        .unwrap();
        let request = Request {
            action: "iot:Connect",
            resource: &format!("{ARN}:client/tag-1"),
        };
        assert_eq!(
            decide(&[device_policy(), deny], request, &as_thing("tag-1")),
            Decision::ExplicitlyDenied
        );
    }

    #[test]
    fn what_is_not_played_is_refused_by_name() {
        for (statement, problem) in [
            (
                serde_json::json!({"Effect": "Allow", "NotAction": "iot:Connect", "Resource": "*"}),
                "NotAction",
            ),
            (
                serde_json::json!({"Effect": "Allow", "Action": "iot:Connect", "Resource": "*",
                                   "Condition": {"IpAddress": {"aws:SourceIp": "1.2.3.4"}}}),
                "condition operator IpAddress",
            ),
            (
                serde_json::json!({"Effect": "Allow", "Action": "iot:Connect", "Resource": "*",
                                   "Condition": {"StringEquals": {"iot:Certificate.Subject.CommonName": "x"}}}),
                "condition key",
            ),
            (
                serde_json::json!({"Effect": "Maybe", "Action": "iot:Connect", "Resource": "*"}),
                "Effect",
            ),
        ] {
            let err =
                Policy::parse("p", &serde_json::json!({"Statement": [statement]})).unwrap_err();
            assert!(err.problem.contains(problem), "{}", err.problem);
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("iot:*", "iot:Publish"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(wildcard_match("*/telemetry", "geotag/x/telemetry"));
        assert!(!wildcard_match("geotag/*/telemetry", "geotag/x/status"));
        assert!(wildcard_match("**", ""));
        assert!(!wildcard_match("", "a"));
    }

    proptest! {
        #[test]
        fn wildcard_matching_never_panics_and_star_matches_all(pattern in "[a*?]{0,12}", value in "[ab]{0,12}") {
            let _ = wildcard_match(&pattern, &value);
            prop_assert!(wildcard_match("*", &value));
            prop_assert!(wildcard_match(&value, &value));
        }
    }
}
