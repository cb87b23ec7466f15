//! The dashboard and the API description: static files compiled into the
//! binary, so the admin listener needs nothing on disk and no CDN.
//!
//! They are served without the token: the page holds no data of its own
//! and asks the operator for the token, which it sends with every API call.

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

/// The checked-in OpenAPI 3.1 description of the admin API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Path, content type and body of each static file.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "/dashboard",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "/dashboard/app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "/dashboard/style.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/style.css"),
    ),
    ("/openapi.json", "application/json", OPENAPI),
];

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
}

/// `/` (redirects to the dashboard), `/dashboard` and its assets, and
/// `/openapi.json`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.into_iter().fold(
        Router::new().route("/", get(|| async { Redirect::to("/dashboard") })),
        |router, (path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        },
    )
}
