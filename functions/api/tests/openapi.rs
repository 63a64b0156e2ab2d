//! The OpenAPI document against the handler: the same routes, methods and
//! query parameters, and every problem code the handler answers with (driven
//! by malformed requests of every kind) named in the document.

use std::collections::BTreeSet;

use geotag::read::MemoryFleet;
use geotag_api::ROUTES;
use geotag_api::payload::{Incoming, event, request};
use proptest::prelude::*;
use serde_norway::Value;

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("functions/api/openapi.yaml");
    serde_norway::from_str(&text).expect("the OpenAPI document is YAML")
}

/// A parameter, its `$ref` followed.
fn resolve<'a>(document: &'a Value, parameter: &'a Value) -> &'a Value {
    match parameter.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/parameters/");
            &document["components"]["parameters"][name]
        }
        None => parameter,
    }
}

#[test]
fn the_document_describes_exactly_the_routes_served() {
    let document = document();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_mapping().expect("paths") {
        let path = path.as_str().unwrap();
        for (method, operation) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_ascii_uppercase();
            let mut query = BTreeSet::new();
            let mut in_path = BTreeSet::new();
            for parameter in operation["parameters"].as_sequence().into_iter().flatten() {
                let parameter = resolve(&document, parameter);
                let name = parameter["name"].as_str().unwrap().to_owned();
                match parameter["in"].as_str() {
                    Some("query") => query.insert(name),
                    Some("path") => in_path.insert(name),
                    other => panic!("{method} {path}: a parameter in {other:?}"),
                };
            }
            let braces: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_owned)
                .collect();
            assert_eq!(in_path, braces, "{method} {path}: path parameters");
            let route = ROUTES
                .iter()
                .find(|route| route.method == method && route.path == path)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not served"));
            let served: BTreeSet<String> =
                route.parameters.iter().map(|p| (*p).to_owned()).collect();
            assert_eq!(query, served, "{method} {path}: query parameters");
            documented.insert((method, path.to_owned()));
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (route.method.to_owned(), route.path.to_owned()))
        .collect();
    assert_eq!(documented, served);
}

fn documented_codes() -> BTreeSet<String> {
    document()["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_sequence()
        .expect("the Problem code enum")
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect()
}

struct Asked {
    status: u16,
    code: Option<String>,
    parameter: Option<String>,
}

fn ask(
    method: &str,
    path: &str,
    query: &str,
    body: Option<&str>,
    claims: Option<serde_json::Value>,
) -> Asked {
    let fleet = MemoryFleet::default();
    fleet.assign("tag-1", "acme");
    let incoming = Incoming {
        method,
        path,
        raw_query: query,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    };
    let claims = claims.map(|c| c.as_object().cloned().unwrap());
    let request = request(event(&incoming, claims.as_ref())).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = runtime.block_on(geotag_api::handle(&fleet, &request, 1_796_112_000_000));
    let body: serde_json::Value = match response.body() {
        lambda_http::Body::Text(text) => serde_json::from_str(text).unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    Asked {
        status: response.status().as_u16(),
        code: body["code"].as_str().map(str::to_owned),
        parameter: body["parameter"].as_str().map(str::to_owned),
    }
}

fn acme() -> Option<serde_json::Value> {
    Some(serde_json::json!({"customer_id": "acme"}))
}

/// (method, path, query, body, claims; status, code, parameter).
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<serde_json::Value>,
    u16,
    &'a str,
    Option<&'a str>,
);

#[test]
fn bad_requests_are_4xx_with_a_documented_code_and_the_parameter() {
    let codes = documented_codes();
    let circle = r#"{"id":"depot","name":"Depot","shape":{"type":"circle","center":{"lat":1,"lon":2},"radius_m":50}}"#;
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/v1/devices",
            "",
            None,
            None,
            401,
            "unauthenticated",
            None,
        ),
        (
            "GET",
            "/v1/devices",
            "",
            None,
            Some(serde_json::json!({"sub": "x"})),
            403,
            "token_names_no_customer",
            None,
        ),
        (
            "GET",
            "/v1/devices",
            "customer=globex",
            None,
            acme(),
            403,
            "customer_is_the_operators",
            Some("customer"),
        ),
        (
            "GET",
            "/v1/devices",
            "",
            None,
            Some(serde_json::json!({"scope": "geotag/operator"})),
            400,
            "customer_required",
            Some("customer"),
        ),
        (
            "GET",
            "/v1/devices",
            "customer=*",
            None,
            Some(serde_json::json!({"scope": "geotag/operator"})),
            400,
            "invalid_customer",
            Some("customer"),
        ),
        (
            "GET",
            "/v1/devices",
            "limt=5",
            None,
            acme(),
            400,
            "unknown_parameter",
            Some("limt"),
        ),
        (
            "GET",
            "/v1/devices",
            "limit=1&limit=2",
            None,
            acme(),
            400,
            "repeated_parameter",
            Some("limit"),
        ),
        (
            "GET",
            "/v1/devices",
            "limit=1000000",
            None,
            acme(),
            400,
            "limit_out_of_range",
            Some("limit"),
        ),
        (
            "GET",
            "/v1/devices",
            "limit=-1",
            None,
            acme(),
            400,
            "limit_out_of_range",
            Some("limit"),
        ),
        (
            "GET",
            "/v1/devices",
            "cursor=bm90IGEgY3Vyc29y",
            None,
            acme(),
            400,
            "invalid_cursor",
            Some("cursor"),
        ),
        (
            "GET",
            "/v1/devices",
            "cursor=%00%FF",
            None,
            acme(),
            400,
            "invalid_cursor",
            Some("cursor"),
        ),
        (
            "GET",
            "/v1/devices/tag-1/track",
            "from=yesterday",
            None,
            acme(),
            400,
            "invalid_time",
            Some("from"),
        ),
        (
            "GET",
            "/v1/devices/tag-1/track",
            "from=1999-01-01T00:00:00Z",
            None,
            acme(),
            400,
            "time_out_of_range",
            Some("from"),
        ),
        (
            "GET",
            "/v1/devices/tag-1/track",
            "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
            None,
            acme(),
            400,
            "empty_range",
            Some("from"),
        ),
        (
            "GET",
            "/v1/devices/tag-1/track",
            "from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            None,
            acme(),
            400,
            "range_too_long",
            Some("from"),
        ),
        (
            "GET",
            "/v1/devices/tag-1/track",
            "format=kml",
            None,
            acme(),
            400,
            "invalid_choice",
            Some("format"),
        ),
        (
            "GET",
            "/v1/devices/tag-1/stats",
            "period=week",
            None,
            acme(),
            400,
            "invalid_choice",
            Some("period"),
        ),
        (
            "GET",
            "/v1/alerts",
            "type=fire",
            None,
            acme(),
            400,
            "invalid_choice",
            Some("type"),
        ),
        (
            "GET",
            "/v1/devices/tag-2",
            "",
            None,
            acme(),
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            "/v1/devices/..%2F..",
            "",
            None,
            acme(),
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            "/v2/devices",
            "",
            None,
            acme(),
            404,
            "no_such_route",
            None,
        ),
        (
            "DELETE",
            "/v1/devices",
            "",
            None,
            acme(),
            405,
            "method_not_allowed",
            None,
        ),
        (
            "POST",
            "/v1/geofences",
            "",
            Some("{"),
            acme(),
            400,
            "invalid_geofence",
            Some("body"),
        ),
        (
            "POST",
            "/v1/geofences",
            "",
            Some(r#"{"id":"x","shape":{"type":"circle","center":{"lat":1},"radius_m":5}}"#),
            acme(),
            400,
            "invalid_geofence",
            Some("shape.center"),
        ),
        (
            "POST",
            "/v1/geofences",
            "",
            Some(
                r#"{"id":"x","shape":{"type":"circle","center":{"lat":91,"lon":0},"radius_m":5}}"#,
            ),
            acme(),
            400,
            "invalid_geofence",
            Some("shape"),
        ),
        (
            "POST",
            "/v1/geofences",
            "",
            Some(
                r#"{"id":"x","colour":"red","shape":{"type":"circle","center":{"lat":1,"lon":0},"radius_m":5}}"#,
            ),
            acme(),
            400,
            "invalid_geofence",
            Some("colour"),
        ),
        (
            "POST",
            "/v1/geofences",
            "",
            Some(
                r#"{"id":"a#b","shape":{"type":"circle","center":{"lat":1,"lon":0},"radius_m":5}}"#,
            ),
            acme(),
            400,
            "invalid_geofence",
            Some("shape"),
        ),
        (
            "PUT",
            "/v1/geofences/depot",
            "",
            Some(circle),
            acme(),
            404,
            "not_found",
            None,
        ),
        (
            "PUT",
            "/v1/geofences/other",
            "",
            Some(circle),
            acme(),
            400,
            "invalid_geofence",
            Some("id"),
        ),
        (
            "DELETE",
            "/v1/geofences/depot",
            "",
            None,
            acme(),
            404,
            "not_found",
            None,
        ),
    ];
    for (method, path, query, body, claims, status, code, parameter) in cases {
        let asked = ask(method, path, query, body, claims);
        assert_eq!(
            (
                asked.status,
                asked.code.as_deref(),
                asked.parameter.as_deref()
            ),
            (status, Some(code), parameter),
            "{method} {path}?{query}"
        );
        assert!(
            codes.contains(code),
            "{code} is not in the OpenAPI document's Problem codes"
        );
    }
}

#[test]
fn an_oversized_body_and_a_second_create_are_refused() {
    let big = format!(
        r#"{{"id":"x","name":"{}","shape":{{"type":"circle","center":{{"lat":1,"lon":0}},"radius_m":5}}}}"#,
        "n".repeat(70_000)
    );
    let asked = ask("POST", "/v1/geofences", "", Some(&big), acme());
    assert_eq!(
        (asked.status, asked.code.as_deref()),
        (413, Some("body_too_large"))
    );
    let codes = documented_codes();
    assert!(
        codes.contains("body_too_large")
            && codes.contains("geofence_exists")
            && codes.contains("unavailable")
    );
}

proptest! {
    /// Any path, query and body: an answer below 500, its code documented.
    /// Paths and queries are of the characters a URI may hold: API Gateway
    /// refuses others, and `lambda_http` panics on them.
    #[test]
    fn any_request_is_answered_below_500(
        path in "/v1/(devices|alerts|geofences)(/[a-zA-Z0-9._:%~-]{0,70}){0,2}",
        query in "([a-z]{1,8}=[A-Za-z0-9._~%!$'()*+,;:@/?-]{0,40}&?){0,4}",
        body in prop::option::of(".{0,200}"),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ) {
        let codes = documented_codes();
        let asked = ask(method, &path, &query, body.as_deref(), acme());
        prop_assert!(asked.status < 500, "{} {}?{} answered {}", method, path, query, asked.status);
        if let Some(code) = asked.code {
            prop_assert!(codes.contains(&code), "undocumented code {}", code);
        }
    }
}
