//! Request extractors: the API key (with its scope) and JSON bodies whose rejections use our error shape.

use super::AppState;
use super::error::ApiError;
use crate::store::Scope;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A caller with any valid key (service or admin).
pub struct Service;
/// A caller with an admin key.
pub struct Admin;

async fn scope_of(parts: &Parts, app: &AppState) -> Result<Scope, ApiError> {
    let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let key =
        header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).ok_or(ApiError::Unauthorized)?;
    app.store.authenticate(key.trim()).await?.ok_or(ApiError::Unauthorized)
}

impl FromRequestParts<AppState> for Service {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        scope_of(parts, app).await.map(|_| Service)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match scope_of(parts, app).await? {
            Scope::Admin => Ok(Admin),
            Scope::Service => Err(ApiError::Forbidden),
        }
    }
}

/// A JSON body; malformed JSON gets `{"error": {"code": "invalid_request", ...}}` like every other error.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Query strings with the same error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}
