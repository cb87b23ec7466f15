//! The admin API's one error shape: a status and `{"error": "..."}`, as
//! `#/components/schemas/Error` in `openapi.json` describes it.

use axum::extract::rejection::{JsonRejection, QueryRejection, StringRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No bearer token was presented (401).
    #[error("a bearer token is required")]
    Unauthorized,
    /// The bearer token is wrong (403).
    #[error("wrong token")]
    Forbidden,
    /// Without a token, a request whose Host is not a loopback name (403):
    /// a web page the operator visits could otherwise rebind its own name
    /// to 127.0.0.1 and drive the API.
    #[error("without admin.token only a loopback Host (localhost, 127.0.0.1, [::1]) is accepted, not {0:?}")]
    ForeignHost(String),
    /// The request is well formed but names nothing this proxy serves,
    /// or asks for something contradictory (400).
    #[error("{0}")]
    BadRequest(String),
    /// A path names a module no file could have (400).
    #[error("{0:?} is not a module name: use letters, digits, '-' and '_'")]
    NotAModuleName(String),
    /// A key-value store has no such key (404).
    #[error("no such key: {0:?}")]
    NoSuchKey(String),
    /// The request could not be read: a body of the wrong type or shape,
    /// a missing query parameter (axum's status and message).
    #[error("{message}")]
    Unreadable {
        /// 400, 415 or 422, as the extractor decided.
        status: StatusCode,
        /// What the extractor found wrong.
        message: String,
    },
    /// The configuration cannot be reloaded: there is no file (409).
    #[error("{0}")]
    NoConfigFile(String),
    /// The reloaded configuration was refused, every problem listed, one a
    /// line; the running one keeps serving (422).
    #[error("{0}")]
    ReloadRefused(String),
    /// The store's purge catalog could not be read, so nothing was
    /// selected (503); the cache keeps serving.
    #[error("the store's catalog did not read: {0}")]
    CatalogUnreadable(String),
}

impl ApiError {
    /// A purge or an inspection that the store's catalog could not answer.
    pub fn catalog(error: edge_cdn_store::StoreError) -> ApiError {
        ApiError::CatalogUnreadable(error.to_string())
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::ForeignHost(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) | ApiError::NotAModuleName(_) => StatusCode::BAD_REQUEST,
            ApiError::NoSuchKey(_) => StatusCode::NOT_FOUND,
            ApiError::Unreadable { status, .. } => *status,
            ApiError::NoConfigFile(_) => StatusCode::CONFLICT,
            ApiError::ReloadRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::CatalogUnreadable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody {
    /// What went wrong, for a person.
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: self.to_string(),
        });
        let mut response = (self.status(), body).into_response();
        if self == ApiError::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("a valid value"),
            );
        }
        response
    }
}

/// Extractor rejections answer in the same shape, keeping axum's status
/// and message.
macro_rules! unreadable_from {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> ApiError {
                ApiError::Unreadable {
                    status: rejection.status(),
                    message: rejection.body_text(),
                }
            }
        }
    )*};
}

unreadable_from!(JsonRejection, QueryRejection, StringRejection);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_error_is_json_with_its_status() {
        let response = ApiError::Unauthorized.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": "a bearer token is required" })
        );
        let missing = ApiError::NoSuchKey("k".into()).into_response();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
