//! The geofence routes: a customer's own zones, created, changed and removed
//! by the customer; the global ones shown beside them, read-only.

use geotag::geofence::{GLOBAL_SCOPE, Geofence};
use geotag::read::{FleetReader, GeofenceWriteError, WriteMode};
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request};

use crate::Reply;
use crate::problem::Problem;
use crate::render;
use crate::routes::store;

/// A geofence document: a thousand vertices are about 40 KB of JSON.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The customer's geofences and the global ones, each marked with its scope.
async fn visible_geofences<F: FleetReader>(
    fleet: &F,
    customer: &str,
) -> Result<Vec<Geofence>, Problem> {
    let mut zones: Vec<Geofence> = fleet
        .geofences(customer)
        .await
        .map_err(store)?
        .into_iter()
        .filter(|zone| zone.customer_id.as_deref() == Some(customer))
        .collect();
    zones.extend(
        fleet
            .geofences(GLOBAL_SCOPE)
            .await
            .map_err(store)?
            .into_iter()
            .filter(|zone| zone.customer_id.is_none()),
    );
    Ok(zones)
}

pub async fn list<F: FleetReader>(fleet: &F, customer: &str) -> Result<Reply, Problem> {
    let zones = visible_geofences(fleet, customer).await?;
    Ok(Reply::json(serde_json::json!({
        "geofences": zones.iter().map(render::geofence).collect::<Vec<_>>(),
    })))
}

pub async fn get<F: FleetReader>(fleet: &F, customer: &str, id: &str) -> Result<Reply, Problem> {
    visible_geofences(fleet, customer)
        .await?
        .iter()
        .find(|zone| zone.id == id)
        .map(|zone| Reply::json(render::geofence(zone)))
        .ok_or_else(|| Problem::not_found("geofence"))
}

/// The geofence a request's body describes, for `customer`.
fn geofence_from_body(
    request: &Request,
    customer: &str,
    path_id: Option<&str>,
) -> Result<Geofence, Problem> {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_required",
            "send the geofence as Content-Type: application/json",
        ));
    }
    let bytes: &[u8] = match request.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a geofence document is at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    let document: render::GeofenceDocument =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
            .map_err(|error| {
                let field = error.path().to_string();
                Problem::invalid(
                    if field == "." || field == "?" {
                        "body"
                    } else {
                        &field
                    },
                    "invalid_geofence",
                    error.inner().to_string(),
                )
            })?;
    let id = match (path_id, document.id) {
        (None, None) => {
            return Err(Problem::invalid(
                "id",
                "invalid_geofence",
                "a new geofence needs an id",
            ));
        }
        (None, Some(id)) => id,
        (Some(path), Some(body)) if path != body => {
            return Err(Problem::invalid(
                "id",
                "invalid_geofence",
                "the body's id is not the path's",
            ));
        }
        (Some(path), _) => path.to_owned(),
    };
    let geofence = Geofence {
        id,
        name: document.name,
        customer_id: Some(customer.to_owned()),
        shape: document
            .shape
            .into_shape()
            .map_err(|(field, detail)| Problem::invalid(field, "invalid_geofence", detail))?,
    };
    match geofence.problem() {
        Some(problem) => Err(Problem::invalid("shape", "invalid_geofence", problem)),
        None => Ok(geofence),
    }
}

pub async fn write<F: FleetReader>(
    fleet: &F,
    customer: &str,
    path_id: Option<&str>,
    request: &Request,
) -> Result<Reply, Problem> {
    let geofence = geofence_from_body(request, customer, path_id)?;
    let mode = if path_id.is_some() {
        WriteMode::Replace
    } else {
        WriteMode::Create
    };
    match fleet.put_geofence(&geofence, mode).await {
        Ok(()) => {
            let mut reply = Reply::json(render::geofence(&geofence));
            if mode == WriteMode::Create {
                reply.status = StatusCode::CREATED;
                reply.location = Some(format!("/v1/geofences/{}", geofence.id));
            }
            Ok(reply)
        }
        Err(GeofenceWriteError::Exists) => Err(Problem::new(
            StatusCode::CONFLICT,
            "geofence_exists",
            format!(
                "you have a geofence {:?}; PUT /v1/geofences/{{id}} changes it",
                geofence.id
            ),
        )),
        Err(GeofenceWriteError::Missing) => Err(Problem::not_found("geofence")),
        Err(GeofenceWriteError::Store(error)) => Err(store(error)),
    }
}

pub async fn delete<F: FleetReader>(fleet: &F, customer: &str, id: &str) -> Result<Reply, Problem> {
    if fleet.delete_geofence(customer, id).await.map_err(store)? {
        Ok(Reply {
            status: StatusCode::NO_CONTENT,
            ..Reply::of("application/json", String::new())
        })
    } else {
        Err(Problem::not_found("geofence"))
    }
}
