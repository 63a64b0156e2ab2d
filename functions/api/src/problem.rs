//! Errors as `application/problem+json` (RFC 9457): a status, a stable
//! reason code a client can switch on, and the offending parameter if one is.

use lambda_http::Body;
use lambda_http::http::{Response, StatusCode, header};
use serde_json::json;

/// Why a request was not answered with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// A stable code: the `type` is `/problems/{code}`.
    pub code: &'static str,
    pub detail: String,
    /// The query parameter, path segment or body field at fault.
    pub parameter: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            parameter: None,
        }
    }

    /// A 400 naming the parameter.
    pub fn invalid(parameter: &str, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            parameter: Some(parameter.to_owned()),
            ..Problem::new(StatusCode::BAD_REQUEST, code, detail)
        }
    }

    /// What a caller may not see and what does not exist answer alike, so
    /// that no caller learns which of another customer's ids exist.
    pub fn not_found(what: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} of yours has this id"),
        )
    }

    /// A store that failed: the caller may retry, and learns nothing more.
    pub fn unavailable() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the data could not be read just now; retry shortly",
        )
    }

    pub fn into_response(self) -> Response<Body> {
        let mut body = json!({
            "type": format!("/problems/{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Some(parameter) = &self.parameter {
            body["parameter"] = json!(parameter);
        }
        let mut response = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/problem+json")
            .header(header::CACHE_CONTROL, "no-store");
        if self.status == StatusCode::UNAUTHORIZED {
            response = response.header(header::WWW_AUTHENTICATE, "Bearer");
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response = response.header(header::RETRY_AFTER, "1");
        }
        response
            .body(Body::Text(body.to_string()))
            .unwrap_or_default()
    }
}
