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
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge { limit: super::MAX_BODY })
            }
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

/// A paging cursor this API gave out (an id, 0 or more); none: from the start.
pub fn cursor(name: &str, v: Option<&str>) -> Result<i64, ApiError> {
    match v {
        None => Ok(0),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| ApiError::BadRequest(format!("{name} {c:?} is not a cursor this API gave"))),
    }
}

/// A page size, 1 to 1000, default 100.
pub fn limit(v: Option<i64>) -> Result<i64, ApiError> {
    let limit = v.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and 1000, got {limit}")));
    }
    Ok(limit)
}

/// A raw body that could not be read: 413 when too large, else 400.
pub fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit: super::MAX_BODY }
    } else {
        ApiError::BadRequest(e.body_text())
    }
}
