//! `POST /config/reload` and `SIGHUP`: read the configuration file again
//! (see [`crate::reload`]).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::AdminState;
use crate::reload::{ReloadError, ReloadReport};

/// Reload on a blocking thread (file reads, name resolution, PEM parsing)
/// and answer what changed, or every problem.
pub async fn reload(State(state): State<Arc<AdminState>>) -> Result<Json<ReloadReport>, ApiError> {
    let config = state.config.clone();
    match tokio::task::spawn_blocking(move || config.reload()).await {
        Ok(Ok(report)) => Ok(Json(report)),
        Ok(Err(e @ ReloadError::NoFile)) => Err(ApiError::NoConfigFile(e.to_string())),
        Ok(Err(e @ ReloadError::Invalid(_))) => Err(ApiError::ReloadRefused(e.to_string())),
        Err(e) => Err(ApiError::ReloadRefused(format!(
            "the reload did not finish: {e}"
        ))),
    }
}

/// Reload on every `SIGHUP` until the returned task is aborted. The outcome
/// is logged and counted by the reload itself.
pub fn on_sighup(state: Arc<AdminState>) -> tokio::task::JoinHandle<()> {
    let hangup = tokio::signal::unix::SignalKind::hangup();
    let mut hangups = match tokio::signal::unix::signal(hangup) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP cannot be handled; reload with POST /config/reload");
            return tokio::spawn(async {});
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let config = state.config.clone();
            let _ = tokio::task::spawn_blocking(move || config.reload()).await;
        }
    })
}
