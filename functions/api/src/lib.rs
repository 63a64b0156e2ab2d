//! The HTTP API: each customer's tags, tracks, stats, alerts and geofences,
//! behind API Gateway's HTTP API (payload v2) and its JWT authorizer.
//!
//! Tenant isolation is the first property, and it is decided here, twice:
//! every request is scoped to the customer its token names ([`caller`]);
//! a device route answers only if the registry names that customer as the
//! tag's owner now; and every item shown must carry that customer's id, as
//! ingest and stats stamped it ([`geotag::tenancy`]). Another customer's
//! device answers exactly what an unknown one does. Listings read one
//! partition (of a table or an index), never a Scan.
//!
//! The handler is a function of a request and a [`FleetReader`], so that
//! tests drive it with the in-memory tables, `geotag up` serves it on
//! 127.0.0.1 in-process, and Lambda serves it through `lambda_http`.
//!
//! # Layout
//! - [`caller`]: the verified claims, read into a customer or the operator;
//! - [`params`]: query parameters, strictly parsed;
//! - [`cursor`]: opaque page cursors bound to their listing;
//! - [`render`]: GeoJSON, GPX and JSON documents;
//! - [`payload`]: API Gateway's side of payload v2, for the local API and tests;
//! - [`problem`]: errors as `application/problem+json`;
//! - [`routes`]: what each route reads and answers;
//! - [`geofences`]: the geofence routes, a customer's own zones.

pub mod caller;
pub mod cursor;
pub mod geofences;
pub mod params;
pub mod payload;
pub mod problem;
pub mod render;
pub mod routes;

use geotag::read::FleetReader;
use geotag_aws::clients::SdkConfig;
use geotag_aws::fleet_reads::DynamoFleet;
use geotag_runtime::config::{ConfigError, Environment, FromEnvironment};
use geotag_runtime::emf::{self, Emitter, Metrics};
use lambda_http::http::{HeaderValue, Method, Response, StatusCode, header};
use lambda_http::{Body, Request, RequestExt};
use sha2::{Digest, Sha256};

pub use routes::ROUTES;

use crate::caller::caller;
use crate::problem::Problem;

/// A successful answer, before the headers every answer gets.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
    /// The query string of the next page, for a `Link: rel="next"` header.
    pub next_page: Option<String>,
    pub location: Option<String>,
}

impl Reply {
    pub fn json(body: serde_json::Value) -> Reply {
        Reply::of("application/json", body.to_string())
    }

    pub fn geojson(body: serde_json::Value) -> Reply {
        Reply::of("application/geo+json", body.to_string())
    }

    pub fn of(content_type: &'static str, body: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type,
            body,
            next_page: None,
            location: None,
        }
    }

    fn into_response(self, request: &Request) -> Response<Body> {
        let mut response = Response::builder()
            .status(self.status)
            // Answers depend on who asks: no shared cache may keep one.
            .header(header::VARY, "Authorization");
        if let Some(query) = &self.next_page {
            let path = request.uri().path();
            response = response.header(header::LINK, format!("<{path}?{query}>; rel=\"next\""));
        }
        if let Some(location) = &self.location {
            response = response.header(header::LOCATION, location.as_str());
        }
        if request.method() != Method::GET || self.status != StatusCode::OK {
            return response
                .header(header::CACHE_CONTROL, "no-store")
                .header(header::CONTENT_TYPE, self.content_type)
                .body(Body::Text(self.body))
                .unwrap_or_default();
        }
        // Live data: a client may keep it, but asks again each time; the
        // ETag makes an unchanged answer a bodiless 304.
        let etag = format!(
            "\"{}\"",
            hex::encode(&Sha256::digest(self.body.as_bytes())[..12])
        );
        response = response
            .header(header::CACHE_CONTROL, "private, no-cache")
            .header(header::ETAG, etag.as_str());
        let matches = |value: &HeaderValue| {
            value.to_str().is_ok_and(|tags| {
                tags.split(',')
                    .map(|tag| tag.trim().trim_start_matches("W/"))
                    .any(|tag| tag == etag || tag == "*")
            })
        };
        if request
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(matches)
        {
            return response
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::Empty)
                .unwrap_or_default();
        }
        response
            .header(header::CONTENT_TYPE, self.content_type)
            .body(Body::Text(self.body))
            .unwrap_or_default()
    }
}

/// Answers one request. Never fails: every problem is an answer.
pub async fn handle<F: FleetReader>(fleet: &F, request: &Request, now_ms: i64) -> Response<Body> {
    answer_and_problem(fleet, request, now_ms).await.0
}

/// The answer, and the problem code it refused or failed with.
async fn answer_and_problem<F: FleetReader>(
    fleet: &F,
    request: &Request,
    now_ms: i64,
) -> (Response<Body>, Option<(&'static str, bool)>) {
    let outcome = match caller(request.request_context_ref()) {
        Ok(caller) => routes::respond(fleet, &caller, request, now_ms).await,
        Err(problem) => Err(problem),
    };
    match outcome {
        Ok(reply) => (reply.into_response(request), None),
        Err(problem) => {
            if problem.status.is_server_error() {
                tracing::error!(code = problem.code, detail = %problem.detail, "request failed");
            } else {
                tracing::info!(
                    code = problem.code,
                    status = problem.status.as_u16(),
                    "request refused"
                );
            }
            let code = (problem.code, problem.status.is_server_error());
            (problem.into_response(), Some(code))
        }
    }
}

/// The API as it is deployed: its tables, and where each request's metrics
/// go.
pub struct Api<F> {
    pub fleet: F,
    pub metrics: Emitter,
}

/// [`handle`], measured: each request writes `Requests`, `HandlerDuration`
/// and, when it was refused, `RequestsRefused` by `Code` (4xx: what callers
/// get wrong, e.g. `token_names_no_customer` after a sign-in change) or
/// `RequestsFailed` by `Code` (5xx), so that a wave of refusals of one kind
/// shows on the dashboard before a customer calls.
pub async fn serve<F: FleetReader>(api: &Api<F>, request: &Request, now_ms: i64) -> Response<Body> {
    let started = std::time::Instant::now();
    let (response, problem) = answer_and_problem(&api.fleet, request, now_ms).await;
    let request_id = request
        .lambda_context_ref()
        .map(|context| context.request_id.clone())
        .unwrap_or_default();
    let mut metrics = Metrics::for_request(&request_id);
    metrics.count("Requests", 1);
    if let Some((code, failed)) = problem {
        let metric = if failed {
            "RequestsFailed"
        } else {
            "RequestsRefused"
        };
        metrics.count_by("Code", code, metric, 1);
    }
    metrics.duration("HandlerDuration", started.elapsed());
    api.metrics.emit(&metrics);
    response
}

/// [`serve`] at the clock's time, as Lambda serves it.
pub async fn answer(api: &'static Api<DynamoFleet>, request: Request) -> Response<Body> {
    serve(api, &request, geotag::clock::now_ms()).await
}

/// The tables, named by the environment the template sets.
#[derive(Debug, Clone)]
pub struct Config {
    pub devices_table: String,
    pub device_stats_table: String,
    pub telemetry_table: String,
    pub alerts_table: String,
    pub geofences_table: String,
    pub metrics: emf::Settings,
}

impl FromEnvironment for Config {
    fn read(env: &Environment) -> Result<Config, ConfigError> {
        Ok(Config {
            devices_table: env.required("DEVICES_TABLE")?,
            device_stats_table: env.required("DEVICE_STATS_TABLE")?,
            telemetry_table: env.required("TELEMETRY_TABLE")?,
            alerts_table: env.required("ALERTS_TABLE")?,
            geofences_table: env.required("GEOFENCES_TABLE")?,
            metrics: env.metrics("api"),
        })
    }
}

pub fn on_aws(sdk: &SdkConfig, config: &Config) -> Api<DynamoFleet> {
    Api {
        fleet: DynamoFleet {
            client: aws_sdk_dynamodb::Client::new(sdk),
            devices_table: config.devices_table.clone(),
            device_stats_table: config.device_stats_table.clone(),
            telemetry_table: config.telemetry_table.clone(),
            alerts_table: config.alerts_table.clone(),
            geofences_table: config.geofences_table.clone(),
        },
        metrics: Emitter::new(config.metrics.clone()),
    }
}

/// The problem a bodiless failure of the store is, for callers outside
/// [`handle`] (the local server) that must answer in the same form.
pub fn unavailable() -> Response<Body> {
    Problem::unavailable().into_response()
}
