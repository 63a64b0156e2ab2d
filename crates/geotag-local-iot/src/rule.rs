//! The part of IoT SQL that template.yaml's topic rule uses, played locally.
//!
//! IoT Core runs a rule's `SELECT ... FROM 'filter'` on each message whose
//! topic matches the filter. The local broker plays exactly this subset:
//!
//! | in the SELECT list         | gives                                             |
//! |----------------------------|---------------------------------------------------|
//! | `*`                        | the payload's fields (the payload must be a JSON object) |
//! | `encode(*, 'base64') AS n` | the payload's bytes, base64                      |
//! | `topic() AS n`, `topic(i) AS n` | the topic, or its i-th level (from 1)       |
//! | `timestamp() AS n`         | the broker's receive time, epoch milliseconds     |
//! | `clientid() AS n`          | the publishing connection's client id             |
//!
//! and a `FROM` topic filter with `+` and `#`. Anything else (a `WHERE`
//! clause, other functions, payload fields, literals, `SET`) is refused when
//! the rule is read, naming what is not played, so that a template that
//! needs more fails loudly here rather than behaving differently from AWS.

use std::fmt;

use base64::Engine as _;
use serde_json::{Map, Value};

/// A topic rule's SQL, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSql {
    pub items: Vec<Item>,
    /// The `FROM` topic filter.
    pub filter: String,
}

/// One entry of the SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `*`: the payload's own fields.
    Payload,
    /// `encode(*, 'base64') AS name`.
    PayloadBase64 { name: String },
    /// `topic() AS name` (`level: None`) or `topic(level) AS name`.
    Topic { level: Option<usize>, name: String },
    /// `timestamp() AS name`.
    Timestamp { name: String },
    /// `clientid() AS name`.
    ClientId { name: String },
}

/// Why a rule's SQL is not played locally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "IoT SQL {sql:?}: {problem} (the local broker plays SELECT of *, encode(*, 'base64'), topic(), timestamp() and clientid() FROM a topic filter; nothing else)"
)]
pub struct NotPlayed {
    pub sql: String,
    pub problem: String,
}

/// Why one message gave no output (IoT Core sends such a message to the
/// rule's error action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("SELECT * needs a JSON object payload: {0}")]
    PayloadNotAnObject(String),
}

/// What the rule engine knows about one message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub client_id: &'a str,
    pub payload: &'a [u8],
    /// Epoch milliseconds.
    pub received_at_ms: i64,
}

impl RuleSql {
    pub fn parse(sql: &str) -> Result<RuleSql, NotPlayed> {
        let refuse = |problem: String| NotPlayed {
            sql: sql.to_owned(),
            problem,
        };
        let tokens = tokenize(sql).map_err(refuse)?;
        let mut parser = Parser { tokens, at: 0 };
        parser.keyword("SELECT").map_err(refuse)?;
        let mut items = vec![parser.item().map_err(refuse)?];
        while parser.peek() == Some(&Token::Comma) {
            parser.at += 1;
            items.push(parser.item().map_err(refuse)?);
        }
        parser.keyword("FROM").map_err(refuse)?;
        let filter = match parser.next() {
            Some(Token::Text(filter)) => filter,
            other => {
                return Err(refuse(format!(
                    "FROM takes a quoted topic filter, not {other:?}"
                )));
            }
        };
        if let Some(rest) = parser.next() {
            return Err(refuse(format!("{rest} after the FROM clause")));
        }
        if !valid_filter(&filter) {
            return Err(refuse(format!("{filter:?} is not an MQTT topic filter")));
        }
        Ok(RuleSql { items, filter })
    }

    /// Whether a message on `topic` triggers the rule.
    pub fn matches(&self, topic: &str) -> bool {
        topic_matches(&self.filter, topic)
    }

    /// The rule's output for `message`: a JSON object, as the SNS action publishes it.
    pub fn apply(&self, message: Message<'_>) -> Result<String, RuleError> {
        let mut out = Map::new();
        for item in &self.items {
            match item {
                Item::Payload => match serde_json::from_slice::<Value>(message.payload) {
                    Ok(Value::Object(fields)) => out.extend(fields),
                    Ok(other) => return Err(RuleError::PayloadNotAnObject(kind_of(&other).into())),
                    Err(err) => return Err(RuleError::PayloadNotAnObject(err.to_string())),
                },
                Item::PayloadBase64 { name } => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(message.payload);
                    out.insert(name.clone(), Value::String(encoded));
                }
                Item::Topic { level, name } => {
                    let value = match level {
                        None => Some(message.topic),
                        Some(level) => message.topic.split('/').nth(level - 1),
                    };
                    // IoT SQL leaves out a field whose value is undefined.
                    if let Some(value) = value {
                        out.insert(name.clone(), Value::String(value.to_owned()));
                    }
                }
                Item::Timestamp { name } => {
                    out.insert(name.clone(), Value::from(message.received_at_ms));
                }
                Item::ClientId { name } => {
                    out.insert(name.clone(), Value::String(message.client_id.to_owned()));
                }
            }
        }
        Ok(Value::Object(out).to_string())
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// MQTT topic filter matching: `+` is one level, `#` (last) the rest.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (level, Some(actual)) if level == actual => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels
            .iter()
            .enumerate()
            .all(|(index, level)| match *level {
                "#" => index + 1 == levels.len(),
                "+" => true,
                level => !level.contains(['+', '#']),
            })
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(usize),
    Star,
    Comma,
    Open,
    Close,
    /// Any other character: no part of the played subset uses one.
    Other(char),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(word) => write!(f, "`{word}`"),
            Token::Text(text) => write!(f, "'{text}'"),
            Token::Number(number) => write!(f, "{number}"),
            Token::Star => f.write_str("`*`"),
            Token::Comma => f.write_str("`,`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
            Token::Other(c) => write!(f, "`{c}`"),
        }
    }
}

fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = sql.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '*' => tokens.push(Token::Star),
            ',' => tokens.push(Token::Comma),
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => text.push(c),
                        None => return Err(format!("a quote opened at {start} is not closed")),
                    }
                }
                tokens.push(Token::Text(text));
            }
            c if c.is_ascii_digit() => {
                let mut end = start + c.len_utf8();
                while let Some(&(at, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    end = at + d.len_utf8();
                    chars.next();
                }
                let number = sql[start..end]
                    .parse()
                    .map_err(|_| format!("{} is too large", &sql[start..end]))?;
                tokens.push(Token::Number(number));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = start + c.len_utf8();
                while let Some(&(at, d)) = chars
                    .peek()
                    .filter(|(_, d)| d.is_ascii_alphanumeric() || *d == '_')
                {
                    end = at + d.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(sql[start..end].to_owned()));
            }
            other => tokens.push(Token::Other(other)),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword) => Ok(()),
            other => Err(format!(
                "expected {keyword}, found {}",
                other.map_or("the end".to_owned(), |t| t.to_string())
            )),
        }
    }

    fn expect(&mut self, token: Token) -> Result<(), String> {
        match self.next() {
            Some(found) if found == token => Ok(()),
            other => Err(format!(
                "expected {token}, found {}",
                other.map_or("the end".to_owned(), |t| t.to_string())
            )),
        }
    }

    fn alias(&mut self, what: &str) -> Result<String, String> {
        self.keyword("AS")
            .map_err(|_| format!("{what} needs a name: `{what} AS name`"))?;
        match self.next() {
            Some(Token::Word(name)) => Ok(name),
            other => Err(format!("`AS` takes a name, not {other:?}")),
        }
    }

    fn item(&mut self) -> Result<Item, String> {
        match self.next() {
            Some(Token::Star) => Ok(Item::Payload),
            Some(Token::Word(function)) => {
                self.expect(Token::Open).map_err(|_| {
                    format!("payload field `{function}` (only functions and * are played)")
                })?;
                let item = match function.to_ascii_lowercase().as_str() {
                    "encode" => {
                        self.expect(Token::Star)?;
                        self.expect(Token::Comma)?;
                        match self.next() {
                            Some(Token::Text(scheme)) if scheme == "base64" => {}
                            other => {
                                return Err(format!(
                                    "encode(*, {other:?}): only 'base64' is played"
                                ));
                            }
                        }
                        self.expect(Token::Close)?;
                        Item::PayloadBase64 {
                            name: self.alias("encode(*, 'base64')")?,
                        }
                    }
                    "topic" => {
                        let level = match self.next() {
                            Some(Token::Close) => None,
                            Some(Token::Number(level)) if level >= 1 => {
                                self.expect(Token::Close)?;
                                Some(level)
                            }
                            other => {
                                return Err(format!("topic() takes a level from 1, not {other:?}"));
                            }
                        };
                        Item::Topic {
                            level,
                            name: self.alias("topic()")?,
                        }
                    }
                    "timestamp" => {
                        self.expect(Token::Close)?;
                        Item::Timestamp {
                            name: self.alias("timestamp()")?,
                        }
                    }
                    "clientid" => {
                        self.expect(Token::Close)?;
                        Item::ClientId {
                            name: self.alias("clientid()")?,
                        }
                    }
                    other => return Err(format!("function {other}() is not played")),
                };
                Ok(item)
            }
            other => Err(format!(
                "a SELECT item cannot start with {}",
                other.map_or("the end".to_owned(), |t| t.to_string())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEMPLATE_SQL: &str = "SELECT encode(*, 'base64') AS payload, topic(2) AS thing_name, timestamp() AS received_at FROM 'geotag/+/telemetry'";

    fn message<'a>(topic: &'a str, payload: &'a [u8]) -> Message<'a> {
        Message {
            topic,
            client_id: "tag-1",
            payload,
            received_at_ms: 1_795_161_600_000,
        }
    }

    #[test]
    fn the_templates_rule_names_the_thing_from_its_topic() {
        let rule = RuleSql::parse(TEMPLATE_SQL).unwrap();
        assert!(rule.matches("geotag/tag-1/telemetry"));
        assert!(!rule.matches("geotag/tag-1/telemetry/extra"));
        assert!(!rule.matches("geotag/telemetry"));
        let out: Value = serde_json::from_str(
            &rule
                .apply(message("geotag/tag-1/telemetry", b"\xffnot json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"payload": "/25vdCBqc29u", "thing_name": "tag-1", "received_at": 1_795_161_600_000i64})
        );
    }

    #[test]
    fn star_merges_the_payloads_fields_and_needs_an_object() {
        let rule = RuleSql::parse("select *, clientid() as who, topic() as t from 'a/#'").unwrap();
        let out = rule.apply(message("a/b/c", br#"{"x":1}"#)).unwrap();
        assert_eq!(out, r#"{"t":"a/b/c","who":"tag-1","x":1}"#);
        assert!(matches!(
            rule.apply(message("a/b", b"[1]")),
            Err(RuleError::PayloadNotAnObject(_))
        ));
    }

    #[test]
    fn what_is_not_played_is_refused_by_name() {
        for (sql, problem) in [
            (
                "SELECT * FROM 'a' WHERE x > 1",
                "`WHERE` after the FROM clause",
            ),
            ("SELECT lat FROM 'a'", "payload field `lat`"),
            (
                "SELECT upper(x) AS y FROM 'a'",
                "function upper() is not played",
            ),
            ("SELECT topic(2) FROM 'a'", "needs a name"),
            ("SELECT encode(*, 'hex') AS p FROM 'a'", "only 'base64'"),
            ("SELECT * FROM 'a/#/b'", "not an MQTT topic filter"),
            ("SELECT * FROM a", "quoted topic filter"),
            ("SELECT * FROM 'a", "not closed"),
        ] {
            let err = RuleSql::parse(sql).expect_err(sql);
            assert!(err.problem.contains(problem), "{sql}: {}", err.problem);
        }
    }

    #[test]
    fn topic_filters() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches("#", "anything/at/all"));
    }

    proptest! {
        #[test]
        fn any_sql_parses_or_is_refused_without_panic(sql in ".{0,120}") {
            let _ = RuleSql::parse(&sql);
        }

        #[test]
        fn any_payload_and_topic_give_an_object_or_an_error(
            payload in prop::collection::vec(any::<u8>(), 0..64),
            topic in "[a-z+#/]{0,20}",
        ) {
            for sql in [TEMPLATE_SQL, "SELECT *, topic(9) AS t FROM '#'"] {
                let rule = RuleSql::parse(sql).unwrap();
                if let Ok(out) = rule.apply(message(&topic, &payload)) {
                    prop_assert!(serde_json::from_str::<Map<String, Value>>(&out).is_ok());
                }
            }
        }
    }
}
