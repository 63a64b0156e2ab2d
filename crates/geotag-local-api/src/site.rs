//! The live map's files, served beside the API as a static host (S3 behind
//! CloudFront, in a deployment) would serve them: from one directory, by
//! path, nothing outside it.

use std::path::{Component, Path};

/// The map's files, under the project root.
pub const SITE_DIR: &str = "web/map";

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("geojson") => "application/geo+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"{\"message\":\"Not Found\"}",
    )));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub async fn serve(site: Option<&Path>, path: &str) -> Response<Full<Bytes>> {
    let Some(site) = site else {
        return not_found();
    };
    let relative = Path::new(path.trim_start_matches('/'));
    // Only plain names: no `..`, no absolute paths, no prefixes.
    if !relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        return not_found();
    }
    let mut file = site.join(relative);
    if path.ends_with('/') || relative.as_os_str().is_empty() {
        file = file.join("index.html");
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(_) => not_found(),
    }
}
