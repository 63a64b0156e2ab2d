//! Whose alerts an AlertsTopic subscription receives, read from its filter
//! policy. Every alert carries its tag's customer in the `customer_id`
//! message attribute (`unassigned` for a tag nobody owns), and SNS alone
//! decides who receives what: a subscription whose filter is missing, was
//! cleared, or admits more than one value receives other customers' alerts.
//! `geotag customer add` writes [`customer_filter`]; `geotag customer audit`
//! judges every subscription with [`scope_of`].

use serde_json::{Value, json};

/// The message attribute alerts are filtered on.
pub const CUSTOMER_ATTRIBUTE: &str = "customer_id";

/// The filter of a subscription meant to receive every customer's alerts
/// (the operator's `AlertEmail`): written out, so that an audit can tell a
/// deliberate choice from a filter that is missing or was cleared.
pub const EVERY_CUSTOMER_FILTER: &str = r#"{"customer_id":[{"exists":true}]}"#;

/// The filter policy that admits one customer's alerts and no one else's.
pub fn customer_filter(customer_id: &str) -> String {
    json!({ CUSTOMER_ATTRIBUTE: [customer_id] }).to_string()
}

/// Whose alerts a subscription's filter admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// This customer's alerts only.
    Customer(String),
    /// Every customer's, through [`EVERY_CUSTOMER_FILTER`].
    EveryCustomer,
    /// More than one customer's, or nobody can tell whose: why.
    Unscoped(String),
}

/// An AlertsTopic subscription, with the attributes that say whose alerts it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `PendingConfirmation` until an address confirms.
    pub arn: String,
    pub protocol: String,
    pub endpoint: String,
    pub filter_policy: Option<String>,
    pub filter_policy_scope: Option<String>,
}

impl Subscription {
    /// A pending email subscription has no ARN to read attributes by (and
    /// SNS delivers nothing to it).
    pub fn confirmed(&self) -> bool {
        self.arn.starts_with("arn:")
    }

    /// Whose alerts it receives; `None` while that cannot be read.
    pub fn scope(&self) -> Option<Scope> {
        self.confirmed().then(|| {
            scope_of(
                self.filter_policy.as_deref(),
                self.filter_policy_scope.as_deref(),
            )
        })
    }
}

/// Subscriptions counted by whose alerts they receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeCounts {
    pub one_customer: usize,
    pub every_customer: usize,
    pub unscoped: usize,
    pub pending: usize,
}

impl ScopeCounts {
    pub fn of<'a>(subscriptions: impl IntoIterator<Item = &'a Subscription>) -> ScopeCounts {
        let mut counts = ScopeCounts::default();
        for subscription in subscriptions {
            match subscription.scope() {
                None => counts.pending += 1,
                Some(Scope::Customer(_)) => counts.one_customer += 1,
                Some(Scope::EveryCustomer) => counts.every_customer += 1,
                Some(Scope::Unscoped(_)) => counts.unscoped += 1,
            }
        }
        counts
    }
}

/// Judges a subscription from its `FilterPolicy` and `FilterPolicyScope`
/// attributes (absent: no filter; the scope defaults to MessageAttributes).
/// Anything but a plain list of one customer id, or the explicit
/// every-customer filter, is unscoped: operators such as `prefix` or
/// `anything-but`, several ids, `$or` alternatives, a filter on the body.
pub fn scope_of(filter_policy: Option<&str>, filter_policy_scope: Option<&str>) -> Scope {
    let unscoped = |why: String| Scope::Unscoped(why);
    let Some(policy) = filter_policy.filter(|p| !p.trim().is_empty()) else {
        return unscoped("no filter policy: it receives every customer's alerts".into());
    };
    match filter_policy_scope {
        None | Some("MessageAttributes") => {}
        Some(other) => {
            return unscoped(format!(
                "the filter applies to the {other}, not to the {CUSTOMER_ATTRIBUTE} message attribute"
            ));
        }
    }
    let Ok(Value::Object(policy)) = serde_json::from_str::<Value>(policy) else {
        return unscoped("the filter policy is not a JSON object".into());
    };
    if policy.contains_key("$or") {
        return unscoped("the filter has $or alternatives".into());
    }
    let Some(values) = policy.get(CUSTOMER_ATTRIBUTE) else {
        return unscoped(format!(
            "the filter does not name {CUSTOMER_ATTRIBUTE}: it receives every customer's alerts"
        ));
    };
    match values.as_array().map(Vec::as_slice) {
        Some([Value::String(customer)]) => Scope::Customer(customer.clone()),
        Some([only]) if *only == json!({"exists": true}) => Scope::EveryCustomer,
        Some(many) if many.len() > 1 && many.iter().all(Value::is_string) => unscoped(format!(
            "the filter names {} customers: {}",
            many.len(),
            many.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => unscoped(format!(
            "the filter matches {CUSTOMER_ATTRIBUTE} by {values}, not by one id"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_customer_filter_admits_that_customer_alone() {
        assert_eq!(customer_filter("acme"), r#"{"customer_id":["acme"]}"#);
        assert_eq!(
            scope_of(Some(&customer_filter("acme")), Some("MessageAttributes")),
            Scope::Customer("acme".into())
        );
        assert_eq!(
            scope_of(Some(&customer_filter("acme")), None),
            Scope::Customer("acme".into())
        );
        // Narrowing further (by alert type) is still one customer.
        assert_eq!(
            scope_of(Some(r#"{"customer_id":["acme"],"type":["silence"]}"#), None),
            Scope::Customer("acme".into())
        );
        assert_eq!(
            scope_of(Some(EVERY_CUSTOMER_FILTER), None),
            Scope::EveryCustomer
        );
    }

    #[test]
    fn every_other_filter_is_unscoped_with_its_reason() {
        for (policy, scope, reason) in [
            (None, None, "no filter policy"),
            (Some(""), None, "no filter policy"),
            (Some(r#"{"type":["silence"]}"#), None, "does not name"),
            (
                Some(r#"{"customer_id":["acme","globex"]}"#),
                None,
                "names 2 customers: acme, globex",
            ),
            (
                Some(r#"{"customer_id":[{"prefix":"a"}]}"#),
                None,
                "by [{\"prefix\":\"a\"}]",
            ),
            (
                Some(r#"{"customer_id":[{"anything-but":["acme"]}]}"#),
                None,
                "anything-but",
            ),
            (
                Some(r#"{"customer_id":[{"exists":false}]}"#),
                None,
                "exists",
            ),
            (Some(r#"{"customer_id":[]}"#), None, "by []"),
            (Some(r#"{"customer_id":"acme"}"#), None, "not by one id"),
            (Some(r#"{"customer_id":[7]}"#), None, "by [7]"),
            (
                Some(
                    r#"{"customer_id":["acme"],"$or":[{"type":["a"]},{"customer_id":["globex"]}]}"#,
                ),
                None,
                "$or",
            ),
            (
                Some(&customer_filter("acme")),
                Some("MessageBody"),
                "MessageBody",
            ),
            (Some("[1]"), None, "not a JSON object"),
            (Some("{"), None, "not a JSON object"),
        ] {
            match scope_of(policy, scope) {
                Scope::Unscoped(why) => assert!(why.contains(reason), "{policy:?}: {why}"),
                other => panic!("{policy:?} judged {other:?}"),
            }
        }
    }

    proptest! {
        /// No text makes it panic, and only a filter naming exactly one id
        /// is judged as that customer's.
        #[test]
        fn any_policy_is_judged_without_panic(policy in ".{0,64}", id in "[a-z]{1,8}") {
            let _ = scope_of(Some(&policy), None);
            let wrapped = format!(r#"{{"customer_id":["{id}"],"x":{}}}"#, serde_json::to_string(&policy).unwrap());
            prop_assert_eq!(scope_of(Some(&wrapped), None), Scope::Customer(id));
        }
    }
}
