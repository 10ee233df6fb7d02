//! API keys. A key is `bwk_<id>_<secret>`; the id finds the row, and the secret is checked against its stored
//! SHA-256 in constant time. Only the hash is kept, so a leaked database leaks no usable key.
//!
//! Why a cache: every API call presents its key, and a database read per call costs more than the debit it
//! authorizes. A key's row is remembered for [`KEY_TTL`], so a revocation (on any instance, or from the command
//! line) takes effect within that time everywhere, and at once on the instance that revoked it.

use super::{Store, StoreError};
use crate::time::UnixTime;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a key's row is trusted from memory.
pub const KEY_TTL: Duration = Duration::from_secs(2);

/// Key rows by id, as read at `Instant` (`None`: no such key).
#[derive(Debug, Default)]
pub struct KeyCache {
    rows: Mutex<HashMap<String, (Instant, Option<KeyRow>)>>,
}

#[derive(Debug, Clone)]
struct KeyRow {
    scope: String,
    secret_hash: String,
    revoked: bool,
}

impl KeyCache {
    fn get(&self, id: &str) -> Option<Option<KeyRow>> {
        let rows = self.rows.lock().expect("key cache");
        rows.get(id).filter(|(at, _)| at.elapsed() < KEY_TTL).map(|(_, r)| r.clone())
    }

    fn put(&self, id: &str, row: Option<KeyRow>) {
        let mut rows = self.rows.lock().expect("key cache");
        if rows.len() > 10_000 {
            rows.retain(|_, (at, _)| at.elapsed() < KEY_TTL);
        }
        rows.insert(id.to_owned(), (Instant::now(), row));
    }

    fn forget(&self, id: &str) {
        self.rows.lock().expect("key cache").remove(id);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Service,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service" => Some(Scope::Service),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Service => "service",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// `bytes` random bytes from the OS, as hex (key secrets, session ids, tokens).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the OS random source");
    hex::encode(buf)
}

pub(super) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal strings, compared in time that does not depend on where they differ (secrets, tokens).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// Make a key; returns the key itself (shown once) and its id.
    pub async fn create_key(&self, name: &str, scope: Scope, now: UnixTime) -> Result<(String, String), StoreError> {
        let id = random_hex(8);
        let secret = random_hex(24);
        sqlx::query("INSERT INTO api_keys (id, name, scope, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(name)
            .bind(scope.as_str())
            .bind(hash(&secret))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok((format!("bwk_{id}_{secret}"), id))
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query("SELECT id, name, scope, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let scope: String = r.try_get("scope")?;
                Ok(KeyInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    scope: Scope::parse(&scope).ok_or_else(|| StoreError::Corrupt(format!("key scope {scope}")))?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revoke a key by id; false when there is no such key.
    pub async fn revoke_key(&self, id: &str, now: UnixTime) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.keys.forget(id);
        Ok(r.rows_affected() > 0)
    }

    /// The scope of a presented key, if it is known and not revoked.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Scope>, StoreError> {
        let Some((id, secret)) = key.strip_prefix("bwk_").and_then(|k| k.split_once('_')) else {
            return Ok(None);
        };
        let row = match self.keys.get(id) {
            Some(row) => row,
            None => {
                let row = sqlx::query("SELECT scope, secret_hash, revoked_at FROM api_keys WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                let row = match row {
                    Some(r) => Some(KeyRow {
                        scope: r.try_get("scope")?,
                        secret_hash: r.try_get("secret_hash")?,
                        revoked: r.try_get::<Option<UnixTime>, _>("revoked_at")?.is_some(),
                    }),
                    None => None,
                };
                self.keys.put(id, row.clone());
                row
            }
        };
        let Some(row) = row else { return Ok(None) };
        // Constant time over the hashes, so the comparison leaks nothing about the secret.
        if !constant_time_eq(&row.secret_hash, &hash(secret)) || row.revoked {
            return Ok(None);
        }
        Ok(Scope::parse(&row.scope))
    }
}
