//! API Gateway's side of the HTTP API's payload v2, for whoever plays it:
//! `geotag up`'s local API and the tests build the very event a deployed
//! HTTP API sends after its JWT authorizer verified a token, and hand it to
//! `lambda_http`'s own conversion, so the handler sees what it sees in AWS.

use lambda_http::Request;
use lambda_http::request::LambdaRequest;
use serde_json::{Map, Value, json};

/// A request as it reaches API Gateway.
#[derive(Debug, Clone, Default)]
pub struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Without the `?`, as the client sent it (still percent-encoded).
    pub raw_query: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Option<&'a str>,
}

/// Claims as the JWT authorizer passes them: every value a string, arrays
/// as `[a b]` (what HTTP APIs do with Cognito's `cognito:groups`).
pub fn authorizer_claims(claims: &Map<String, Value>) -> Map<String, Value> {
    claims
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Array(items) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|item| item
                            .as_str()
                            .map_or_else(|| item.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => other.to_string(),
            };
            (name.clone(), Value::String(text))
        })
        .collect()
}

/// The payload v2 event; `claims` `None` for a route without authorizer
/// (none of this API's), else the verified token's claims.
pub fn event(incoming: &Incoming, claims: Option<&Map<String, Value>>) -> Value {
    let headers: Map<String, Value> = incoming
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), Value::String(value.clone())))
        .collect();
    let mut context = json!({
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": "127.0.0.1",
        "domainPrefix": "local",
        "http": {
            "method": incoming.method,
            "path": incoming.path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": headers.get("user-agent").cloned().unwrap_or(Value::Null),
        },
        "requestId": "local",
        "routeKey": "ANY /v1/{proxy+}",
        "stage": "$default",
        "time": "",
        "timeEpoch": 0,
    });
    if let Some(claims) = claims {
        let scopes: Vec<Value> = claims
            .get("scope")
            .and_then(Value::as_str)
            .map(|scope| {
                scope
                    .split(' ')
                    .map(|s| Value::String(s.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        context["authorizer"] = json!({
            "jwt": {
                "claims": authorizer_claims(claims),
                "scopes": if scopes.is_empty() { Value::Null } else { Value::Array(scopes) },
            }
        });
    }
    json!({
        "version": "2.0",
        "routeKey": "ANY /v1/{proxy+}",
        "rawPath": incoming.path,
        "rawQueryString": incoming.raw_query,
        "headers": headers,
        "requestContext": context,
        "body": incoming.body,
        "isBase64Encoded": false,
    })
}

/// The request `lambda_http` makes of an event, exactly as in Lambda.
pub fn request(event: Value) -> Result<Request, serde_json::Error> {
    let lambda: LambdaRequest = serde_json::from_value(event)?;
    Ok(lambda.into())
}

/// What Lambda returns to API Gateway for a response (payload v2): the
/// status, the headers, and the body as text.
pub fn response_event(response: lambda_http::Response<lambda_http::Body>) -> Value {
    let (parts, body) = response.into_parts();
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_owned(),
                Value::String(value.to_str().ok()?.to_owned()),
            ))
        })
        .collect();
    let (body, base64) = match body {
        lambda_http::Body::Empty => (String::new(), false),
        lambda_http::Body::Text(text) => (text, false),
        lambda_http::Body::Binary(bytes) => {
            use base64::Engine as _;
            (
                base64::engine::general_purpose::STANDARD.encode(bytes),
                true,
            )
        }
        _ => (String::new(), false),
    };
    json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
        "cookies": [],
    })
}

/// [`crate::serve`] on a payload v2 event, answered as Lambda answers it:
/// what the local stack invokes in-process.
pub async fn answer_event<F: geotag::read::FleetReader>(
    api: &crate::Api<F>,
    event: Value,
    now_ms: i64,
) -> Result<Value, serde_json::Error> {
    let request = request(event)?;
    Ok(response_event(crate::serve(api, &request, now_ms).await))
}
