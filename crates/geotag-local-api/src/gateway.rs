//! The HTTP API on 127.0.0.1, as API Gateway plays it in front of the API
//! function: CORS preflights answered without a token, every other request
//! refused with a 401 unless its bearer token verifies against the local
//! issuer, the rest turned into a payload v2 event carrying the verified
//! claims and handed to the function through the stack's [`Invoker`]
//! (in-process, or `cargo lambda watch`). API Gateway's own answers (401,
//! 404 for no route, 413, 500 for a failed invocation) have its bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use bytes::Bytes;
use geotag_api::payload::{Incoming, event};
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::provision::{EventSource, FunctionSpec, HttpRoute, Stack};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::issuer::LocalIssuer;

/// API Gateway's limit on a request's payload.
const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

/// What the local API serves.
pub struct Gateway {
    /// The routes of the template's HTTP API events, with their function.
    pub routes: Vec<(HttpRoute, FunctionSpec)>,
    pub invoker: Invoker,
    pub issuer: Arc<LocalIssuer>,
    /// CORS origins (`*` for any), as the template's `ApiAllowedOrigins`.
    pub allowed_origins: Vec<String>,
    /// Static files served under `/` (the live map), if any.
    pub site: Option<PathBuf>,
}

impl Gateway {
    /// The HTTP API routes of every function of `stack`.
    pub fn routes_of(stack: &Stack) -> Vec<(HttpRoute, FunctionSpec)> {
        stack
            .functions
            .values()
            .flat_map(|function| {
                function
                    .events
                    .iter()
                    .filter_map(move |source| match source {
                        EventSource::HttpApi(route) => Some((route.clone(), function.clone())),
                        _ => None,
                    })
            })
            .collect()
    }
}

/// A running local API.
pub struct LocalApi {
    pub address: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl LocalApi {
    /// Binds 127.0.0.1 on a port the kernel picks and serves until [`LocalApi::stop`].
    pub async fn start(gateway: Gateway) -> Result<LocalApi> {
        LocalApi::start_on(gateway, 0).await
    }

    pub async fn start_on(gateway: Gateway, port: u16) -> Result<LocalApi> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding the local API to 127.0.0.1:{port}"))?;
        let address = listener.local_addr()?;
        let (shutdown, mut stopping) = watch::channel(false);
        let gateway = Arc::new(gateway);
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stopping.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let gateway = Arc::clone(&gateway);
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |request| {
                                let gateway = Arc::clone(&gateway);
                                async move { Ok::<_, Infallible>(answer(&gateway, request).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
            connections.abort_all();
        });
        Ok(LocalApi {
            address,
            shutdown,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
    }
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::json!({ "message": message }).to_string(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn allowed_origin(gateway: &Gateway, request: &Request<Body>) -> Option<HeaderValue> {
    let origin = request.headers().get(header::ORIGIN)?;
    if gateway.allowed_origins.iter().any(|allowed| allowed == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    gateway
        .allowed_origins
        .iter()
        .any(|allowed| origin.as_bytes() == allowed.as_bytes())
        .then(|| origin.clone())
}

async fn answer(gateway: &Gateway, request: Request<Body>) -> Response<Full<Bytes>> {
    let origin = allowed_origin(gateway, &request);
    let mut response = if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        preflight(origin.is_some())
    } else if !request.uri().path().starts_with("/v1/") {
        crate::site::serve(gateway.site.as_deref(), request.uri().path()).await
    } else {
        invoke(gateway, request).await
    };
    // As the template's CorsConfiguration makes API Gateway do.
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("etag,link,location"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn preflight(allowed: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    if allowed {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,POST,PUT,DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization,content-type,if-none-match"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

async fn invoke(gateway: &Gateway, request: Request<Body>) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let Some((_, function)) = gateway
        .routes
        .iter()
        .find(|(route, _)| route.takes(&method, &path))
    else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    // The JWT authorizer: the bearer token (with or without its scheme word).
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .strip_prefix("Bearer ")
                .unwrap_or(value)
                .trim()
                .to_owned()
        });
    let claims = match token.as_deref().map(|token| gateway.issuer.verify(token)) {
        Some(Ok(claims)) => claims,
        refused => {
            let reason = match refused {
                Some(Err(refusal)) => refusal.0,
                _ => "no bearer token in the Authorization header".to_owned(),
            };
            let mut response = plain(StatusCode::UNAUTHORIZED, "Unauthorized");
            let challenge = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                reason.replace('"', "'")
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            return response;
        }
    };
    let raw_query = request.uri().query().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let incoming = Incoming {
        method: &method,
        path: &path,
        raw_query: &raw_query,
        headers,
        body: (!body.is_empty()).then_some(body.as_str()),
    };
    match gateway
        .invoker
        .invoke(function, event(&incoming, Some(&claims)))
        .await
    {
        Ok(answer) => from_response_event(&answer),
        Err(error) => {
            tracing::error!(function = %function.logical_id, "the API function failed: {error:#}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

/// The HTTP response API Gateway makes of the function's payload v2 answer.
fn from_response_event(answer: &Value) -> Response<Full<Bytes>> {
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|code| StatusCode::from_u16(u16::try_from(code).ok()?).ok());
    let Some(status) = status else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let text = answer["body"].as_str().unwrap_or("");
    let body = if answer["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Some(headers) = answer["headers"].as_object() {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().append(name, value);
            }
        }
    }
    response
}
