//! Who is asking: the claims API Gateway's JWT authorizer verified and put
//! in the request context (payload v2), read into a customer or the operator.
//!
//! The handler never sees a token: API Gateway (or `geotag up` in its place)
//! checked its signature, issuer, audience and expiry before the request got
//! here, and passes the claims as strings. A request with no verified claims
//! is refused, never treated as anyone.
//!
//! A token names its customer by a claim (`customer_id`, or Cognito's
//! `custom:customer_id` in ID tokens) or by a Cognito group
//! `customer:<id>` (access tokens carry groups, not custom attributes). The
//! operator is the group [`OPERATOR_GROUP`] or the scope [`OPERATOR_SCOPE`].

use geotag::tenancy::is_valid_customer_id;
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;

use crate::problem::Problem;

pub const CUSTOMER_CLAIMS: [&str; 2] = ["customer_id", "custom:customer_id"];
pub const GROUPS_CLAIM: &str = "cognito:groups";
pub const CUSTOMER_GROUP_PREFIX: &str = "customer:";
pub const OPERATOR_GROUP: &str = "geotag-operators";
pub const OPERATOR_SCOPE: &str = "geotag/operator";

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Sees its own customer's data only.
    Customer(String),
    /// Sees any one customer's data, named by `?customer=` on every request.
    Operator,
}

/// The groups of a `cognito:groups` claim as API Gateway passes it: a JSON
/// array in some integrations, `[a b]` in HTTP APIs, or a single name.
fn groups(claim: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(claim) {
        return list;
    }
    claim
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split([' ', ','])
        .filter(|group| !group.is_empty())
        .map(str::to_owned)
        .collect()
}

fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "token_names_no_customer", detail)
}

/// The caller the request context names.
pub fn caller(context: Option<&RequestContext>) -> Result<Caller, Problem> {
    let unauthenticated = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no verified token: send `Authorization: Bearer <token>`",
        )
    };
    let jwt = match context {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref())
            .ok_or_else(unauthenticated)?,
        _ => return Err(unauthenticated()),
    };
    let groups = jwt
        .claims
        .get(GROUPS_CLAIM)
        .map(|claim| groups(claim))
        .unwrap_or_default();
    let scopes: Vec<&str> = jwt
        .scopes
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(
            jwt.claims
                .get("scope")
                .into_iter()
                .flat_map(|s| s.split(' ')),
        )
        .collect();
    if groups.iter().any(|group| group == OPERATOR_GROUP) || scopes.contains(&OPERATOR_SCOPE) {
        return Ok(Caller::Operator);
    }
    let mut named: Vec<&str> = CUSTOMER_CLAIMS
        .iter()
        .filter_map(|claim| jwt.claims.get(*claim).map(String::as_str))
        .chain(
            groups
                .iter()
                .filter_map(|group| group.strip_prefix(CUSTOMER_GROUP_PREFIX)),
        )
        .collect();
    named.sort_unstable();
    named.dedup();
    match named.as_slice() {
        [] => Err(forbidden(
            "the token names no customer (a customer_id claim or a customer:<id> group)",
        )),
        [customer] if is_valid_customer_id(customer) => {
            Ok(Caller::Customer((*customer).to_owned()))
        }
        [customer] => Err(forbidden(format!(
            "the token's customer {customer:?} is not a customer id"
        ))),
        _ => Err(forbidden("the token names more than one customer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription,
        ApiGatewayV2httpRequestContext,
    };

    fn context(claims: &[(&str, &str)], scopes: &[&str]) -> RequestContext {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        jwt.scopes = (!scopes.is_empty()).then(|| scopes.iter().map(|s| (*s).to_owned()).collect());
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.authorizer = Some(authorizer);
        RequestContext::ApiGatewayV2(context)
    }

    fn of(claims: &[(&str, &str)], scopes: &[&str]) -> Result<Caller, &'static str> {
        caller(Some(&context(claims, scopes))).map_err(|problem| problem.code)
    }

    #[test]
    fn a_claim_or_a_group_names_the_customer() {
        let acme = Ok(Caller::Customer("acme".into()));
        assert_eq!(of(&[("customer_id", "acme")], &[]), acme);
        assert_eq!(of(&[("custom:customer_id", "acme")], &[]), acme);
        assert_eq!(
            of(&[("cognito:groups", "[customer:acme readers]")], &[]),
            acme
        );
        assert_eq!(of(&[("cognito:groups", r#"["customer:acme"]"#)], &[]), acme);
        assert_eq!(
            of(
                &[
                    ("customer_id", "acme"),
                    ("cognito:groups", "[customer:acme]")
                ],
                &[]
            ),
            acme
        );
    }

    #[test]
    fn the_operator_is_a_group_or_a_scope() {
        assert_eq!(
            of(&[("cognito:groups", "[geotag-operators]")], &[]),
            Ok(Caller::Operator)
        );
        assert_eq!(of(&[], &["geotag/operator"]), Ok(Caller::Operator));
        assert_eq!(
            of(&[("scope", "openid geotag/operator")], &[]),
            Ok(Caller::Operator)
        );
    }

    #[test]
    fn no_customer_two_customers_or_a_reserved_one_is_refused() {
        assert_eq!(of(&[("sub", "x")], &[]), Err("token_names_no_customer"));
        assert_eq!(
            of(
                &[
                    ("customer_id", "acme"),
                    ("cognito:groups", "[customer:globex]")
                ],
                &[]
            ),
            Err("token_names_no_customer")
        );
        for reserved in ["*", "unassigned", "", "a#b"] {
            assert_eq!(
                of(&[("customer_id", reserved)], &[]),
                Err("token_names_no_customer")
            );
        }
    }

    #[test]
    fn no_verified_claims_is_unauthenticated() {
        assert_eq!(caller(None).map_err(|p| p.code), Err("unauthenticated"));
        let bare = RequestContext::ApiGatewayV2(ApiGatewayV2httpRequestContext::default());
        assert_eq!(
            caller(Some(&bare)).map_err(|p| p.code),
            Err("unauthenticated")
        );
    }
}
