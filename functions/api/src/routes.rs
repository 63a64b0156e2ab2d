//! The routes: what each reads, for whom, and what it answers.

use geotag::alerts::AlertKind;
use geotag::clock::{DAY_MS, HOUR_MS};
use geotag::read::{FleetReader, Period, Position, shown_rollups};
use geotag::reading::is_valid_device_id;
use geotag::store::StoreError;
use geotag::tenancy::is_valid_customer_id;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Request, RequestExt};

use crate::Reply;
use crate::caller::Caller;
use crate::cursor::{self, Scope};
use crate::params::Query;
use crate::problem::Problem;
use crate::{geofences, render};

/// A route: its method, its path as the OpenAPI document names it, and
/// every query parameter it reads (any other is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub parameters: &'static [&'static str],
}

const fn route(
    method: &'static str,
    path: &'static str,
    parameters: &'static [&'static str],
) -> Route {
    Route {
        method,
        path,
        parameters,
    }
}

/// Every route the API serves, the one list the OpenAPI check reads.
pub const ROUTES: &[Route] = &[
    route("GET", "/v1/devices", &["customer", "limit", "cursor"]),
    route("GET", "/v1/devices/{device_id}", &["customer"]),
    route(
        "GET",
        "/v1/devices/{device_id}/track",
        &["customer", "from", "to", "format", "limit", "cursor"],
    ),
    route(
        "GET",
        "/v1/devices/{device_id}/stats",
        &["customer", "period", "from", "to"],
    ),
    route(
        "GET",
        "/v1/alerts",
        &["customer", "since", "until", "type", "limit", "cursor"],
    ),
    route("GET", "/v1/geofences", &["customer"]),
    route("POST", "/v1/geofences", &["customer"]),
    route("GET", "/v1/geofences/{geofence_id}", &["customer"]),
    route("PUT", "/v1/geofences/{geofence_id}", &["customer"]),
    route("DELETE", "/v1/geofences/{geofence_id}", &["customer"]),
];

/// The parameters a route reads.
fn parameters(method: &Method, path: &str) -> &'static [&'static str] {
    ROUTES
        .iter()
        .find(|route| route.method == method.as_str() && route.path == path)
        .map_or(&[], |route| route.parameters)
}

/// Page sizes: (default, most).
pub const DEVICES_LIMIT: (usize, usize) = (100, 1_000);
/// A day at one reading a minute fits in one default page.
pub const TRACK_LIMIT: (usize, usize) = (1_500, 5_000);
pub const ALERTS_LIMIT: (usize, usize) = (100, 1_000);
/// Time spans: (default, longest).
pub const TRACK_SPAN_MS: (i64, i64) = (DAY_MS, 7 * DAY_MS);
pub const HOURLY_SPAN_MS: (i64, i64) = (DAY_MS, 31 * DAY_MS);
pub const DAILY_SPAN_MS: (i64, i64) = (30 * DAY_MS, 400 * DAY_MS);
pub const ALERTS_SPAN_MS: (i64, i64) = (DAY_MS, 400 * DAY_MS);

enum Target<'a> {
    Devices,
    Device(&'a str),
    Track(&'a str),
    Stats(&'a str),
    Alerts,
    Geofences,
    Geofence(&'a str),
}

impl Target<'_> {
    /// The path as [`ROUTES`] names it.
    fn template(&self) -> &'static str {
        match self {
            Target::Devices => "/v1/devices",
            Target::Device(_) => "/v1/devices/{device_id}",
            Target::Track(_) => "/v1/devices/{device_id}/track",
            Target::Stats(_) => "/v1/devices/{device_id}/stats",
            Target::Alerts => "/v1/alerts",
            Target::Geofences => "/v1/geofences",
            Target::Geofence(_) => "/v1/geofences/{geofence_id}",
        }
    }

    /// The methods [`ROUTES`] serves on this path.
    fn methods(&self) -> Vec<&'static str> {
        ROUTES
            .iter()
            .filter(|route| route.path == self.template())
            .map(|route| route.method)
            .collect()
    }
}

fn target(path: &str) -> Option<Target<'_>> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["", "v1", "devices"] => Target::Devices,
        ["", "v1", "devices", id] => Target::Device(id),
        ["", "v1", "devices", id, "track"] => Target::Track(id),
        ["", "v1", "devices", id, "stats"] => Target::Stats(id),
        ["", "v1", "alerts"] => Target::Alerts,
        ["", "v1", "geofences"] => Target::Geofences,
        ["", "v1", "geofences", id] => Target::Geofence(id),
        _ => return None,
    })
}

pub(crate) fn store(error: StoreError) -> Problem {
    tracing::error!(%error, "a read of the tables failed");
    Problem::unavailable()
}

/// The query's parameters, as the request carries them.
fn query_pairs(request: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// The customer whose data this request reads: the caller's own, or for
/// the operator the one `?customer=` names.
fn customer_of(caller: &Caller, query: &Query) -> Result<String, Problem> {
    match (caller, query.text("customer")) {
        (Caller::Customer(own), None) => Ok(own.clone()),
        (Caller::Customer(own), Some(named)) if named == own => Ok(own.clone()),
        (Caller::Customer(_), Some(_)) => Err(Problem {
            parameter: Some("customer".into()),
            ..Problem::new(
                StatusCode::FORBIDDEN,
                "customer_is_the_operators",
                "only the operator names a customer; a customer's token reads its own data",
            )
        }),
        (Caller::Operator, None) => Err(Problem::invalid(
            "customer",
            "customer_required",
            "the operator names the customer whose data to read: ?customer=<id>",
        )),
        (Caller::Operator, Some(named)) if is_valid_customer_id(named) => Ok(named.to_owned()),
        (Caller::Operator, Some(named)) => Err(Problem::invalid(
            "customer",
            "invalid_customer",
            format!("{named:?} is not a customer id"),
        )),
    }
}

/// Whether the registry names `customer` as the tag's owner now; an
/// unknown tag, another customer's and a malformed id answer alike.
async fn check_device<F: FleetReader>(
    fleet: &F,
    customer: &str,
    device_id: &str,
) -> Result<(), Problem> {
    if !is_valid_device_id(device_id) {
        return Err(Problem::not_found("device"));
    }
    match fleet.owner(device_id).await.map_err(store)? {
        Some(owner) if owner == customer => Ok(()),
        _ => Err(Problem::not_found("device")),
    }
}

/// A listing's cursor scope, and where its page starts (the cursor's
/// position, if the request continues one issued for this scope).
fn page_start<'a>(
    route: &'static str,
    customer: &'a str,
    device: Option<&'a str>,
    query: &Query,
    continued: &'a [(&'a str, String)],
) -> Result<(Scope<'a>, Option<Position>), Problem> {
    let scope = Scope {
        route,
        customer,
        device,
        query: continued,
    };
    let after = query
        .text("cursor")
        .map(|cursor| cursor::decode(cursor, &scope))
        .transpose()?;
    Ok((scope, after))
}

pub async fn respond<F: FleetReader>(
    fleet: &F,
    caller: &Caller,
    request: &Request,
    now_ms: i64,
) -> Result<Reply, Problem> {
    let path = request.raw_http_path();
    let path = if path.is_empty() {
        request.uri().path()
    } else {
        path
    };
    let Some(target) = target(path) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no_such_route",
            format!("no route {path}; see the OpenAPI document"),
        ));
    };
    let method = request.method();
    let allowed = target.methods();
    if !allowed.contains(&method.as_str()) {
        return Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not served here; {} are", allowed.join(", ")),
        ));
    }
    let query = Query::new(query_pairs(request), parameters(method, target.template()))?;
    let customer = customer_of(caller, &query)?;
    let customer = customer.as_str();
    match (target, method.clone()) {
        (Target::Devices, _) => devices(fleet, customer, &query).await,
        (Target::Device(device_id), _) => device(fleet, customer, device_id).await,
        (Target::Track(device_id), _) => track(fleet, customer, device_id, &query, now_ms).await,
        (Target::Stats(device_id), _) => stats(fleet, customer, device_id, &query, now_ms).await,
        (Target::Alerts, _) => alerts(fleet, customer, &query, now_ms).await,
        (Target::Geofences, Method::GET) => geofences::list(fleet, customer).await,
        (Target::Geofences, _) => geofences::write(fleet, customer, None, request).await,
        (Target::Geofence(id), Method::GET) => geofences::get(fleet, customer, id).await,
        (Target::Geofence(id), Method::PUT) => {
            geofences::write(fleet, customer, Some(id), request).await
        }
        (Target::Geofence(id), _) => geofences::delete(fleet, customer, id).await,
    }
}

async fn devices<F: FleetReader>(
    fleet: &F,
    customer: &str,
    query: &Query,
) -> Result<Reply, Problem> {
    let limit = query.limit(DEVICES_LIMIT.0, DEVICES_LIMIT.1)?;
    let continued = query.continued();
    let (scope, after) = page_start("devices", customer, None, query, &continued)?;
    let page = fleet
        .fleet(customer, after.as_ref(), limit)
        .await
        .map_err(store)?;
    let features = page
        .items
        .iter()
        // The index is keyed by the stamp; checked again, because what
        // reaches a caller must carry its id whatever an index holds.
        .filter(|(_, state)| state.owner.as_deref() == Some(customer))
        .map(|(device_id, state)| render::device_feature(device_id, state))
        .collect();
    let next = page
        .next
        .as_ref()
        .map(|position| cursor::encode(&scope, position));
    let mut reply = Reply::geojson(render::feature_collection(features, next.as_deref()));
    reply.next_page = next.map(|cursor| query.next_page(&cursor));
    Ok(reply)
}

async fn device<F: FleetReader>(
    fleet: &F,
    customer: &str,
    device_id: &str,
) -> Result<Reply, Problem> {
    check_device(fleet, customer, device_id).await?;
    let feature = match fleet.latest(device_id).await.map_err(store)? {
        Some(state) if state.owner.as_deref() == Some(customer) => {
            render::device_feature(device_id, &state)
        }
        // Registered to the caller, but no position of the caller's yet
        // (new, or just passed on by its former owner): no geometry.
        _ => serde_json::json!({
            "type": "Feature",
            "id": device_id,
            "geometry": null,
            "properties": {"device_id": device_id},
        }),
    };
    Ok(Reply::geojson(feature))
}

async fn track<F: FleetReader>(
    fleet: &F,
    customer: &str,
    device_id: &str,
    query: &Query,
    now_ms: i64,
) -> Result<Reply, Problem> {
    let (from_ms, to_ms) = query.range("from", "to", TRACK_SPAN_MS.0, TRACK_SPAN_MS.1, now_ms)?;
    let gpx = query
        .choice("format", &[("geojson", false), ("gpx", true)])?
        .unwrap_or(false);
    let limit = query.limit(TRACK_LIMIT.0, TRACK_LIMIT.1)?;
    let continued = query.continued();
    let (scope, after) = page_start("track", customer, Some(device_id), query, &continued)?;
    check_device(fleet, customer, device_id).await?;
    let page = fleet
        .readings(device_id, customer, from_ms, to_ms, after.as_ref(), limit)
        .await
        .map_err(store)?;
    let readings: Vec<_> = page
        .items
        .into_iter()
        .filter(|reading| reading.owner.as_deref() == Some(customer))
        .collect();
    let next = page
        .next
        .as_ref()
        .map(|position| cursor::encode(&scope, position));
    let mut reply = if gpx {
        Reply::of(
            "application/gpx+xml",
            render::track_gpx(device_id, &readings),
        )
    } else {
        Reply::geojson(render::track_geojson(device_id, &readings, next.as_deref()))
    };
    reply.next_page = next.map(|cursor| query.next_page(&cursor));
    Ok(reply)
}

async fn stats<F: FleetReader>(
    fleet: &F,
    customer: &str,
    device_id: &str,
    query: &Query,
    now_ms: i64,
) -> Result<Reply, Problem> {
    let period = query
        .choice("period", &[("hour", Period::Hour), ("day", Period::Day)])?
        .unwrap_or(Period::Hour);
    let ((default_span, max_span), unit) = match period {
        Period::Hour => (HOURLY_SPAN_MS, HOUR_MS),
        Period::Day => (DAILY_SPAN_MS, DAY_MS),
    };
    let (from_ms, to_ms) = query.range("from", "to", default_span, max_span, now_ms)?;
    check_device(fleet, customer, device_id).await?;
    // Buckets that started before `from` still hold readings after it.
    let first_bucket = from_ms.div_euclid(unit) * unit;
    let rollups: Vec<_> = shown_rollups(fleet, device_id, period, first_bucket, to_ms)
        .await
        .map_err(store)?
        .into_iter()
        // A bucket that saw the tag change hands is nobody's (tenancy::Holder).
        .filter(|(_, rollup)| rollup.holder.customer() == Some(customer))
        .collect();
    let name = match period {
        Period::Hour => "hour",
        Period::Day => "day",
    };
    Ok(Reply::json(render::stats(device_id, name, &rollups)))
}

async fn alerts<F: FleetReader>(
    fleet: &F,
    customer: &str,
    query: &Query,
    now_ms: i64,
) -> Result<Reply, Problem> {
    let (since_ms, until_ms) =
        query.range("since", "until", ALERTS_SPAN_MS.0, ALERTS_SPAN_MS.1, now_ms)?;
    let kinds: Vec<(&str, AlertKind)> = AlertKind::ALL.iter().map(|k| (k.code(), *k)).collect();
    let kind = query.choice("type", &kinds)?;
    let limit = query.limit(ALERTS_LIMIT.0, ALERTS_LIMIT.1)?;
    let continued = query.continued();
    let (scope, after) = page_start("alerts", customer, None, query, &continued)?;
    let page = fleet
        .alerts(
            customer,
            since_ms,
            until_ms,
            kind.map(AlertKind::code),
            after.as_ref(),
            limit,
        )
        .await
        .map_err(store)?;
    let shown: Vec<_> = page
        .items
        .into_iter()
        .filter(|alert| alert.customer_id == customer && alert.published)
        .collect();
    let next = page
        .next
        .as_ref()
        .map(|position| cursor::encode(&scope, position));
    let mut reply = Reply::json(render::alerts(&shown, next.as_deref()));
    reply.next_page = next.map(|cursor| query.next_page(&cursor));
    Ok(reply)
}
