//! Operator console sessions, kept in the database so every instance knows them. The cookie carries a random
//! id; only its SHA-256 is stored, so a leaked table signs nobody in. A session lives while its key does (an
//! admin key, not revoked) and until it has been idle for [`SESSION_IDLE_SECS`].

use super::keys::{hash, random_hex};
use super::{Store, StoreError};
use crate::time::UnixTime;
use sqlx::Row;

/// A session unused this long is over.
pub const SESSION_IDLE_SECS: i64 = 12 * 3600;

/// A live session: the key that signed in, and the token every form of the session must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub key_id: String,
    pub csrf: String,
    pub seen_at: UnixTime,
}

impl Store {
    /// Sign in with a presented admin key: a new session, returned as (cookie value, CSRF token); `None` when
    /// the key is not a live admin key. Sessions idle too long are swept on the way.
    pub async fn session_start(&self, key: &str, now: UnixTime) -> Result<Option<(String, String)>, StoreError> {
        if key.contains('\0') || self.authenticate(key).await? != Some(super::keys::Scope::Admin) {
            return Ok(None);
        }
        let key_id = key.trim_start_matches("bwk_").split('_').next().unwrap_or_default().to_owned();
        let (id, csrf) = (random_hex(32), random_hex(32));
        sqlx::query("DELETE FROM console_sessions WHERE seen_at < $1")
            .bind(now - SESSION_IDLE_SECS)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, key_id, csrf, created_at, seen_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(hash(&id))
        .bind(&key_id)
        .bind(&csrf)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(Some((id, csrf)))
    }

    /// The live session of a cookie value: its key still an admin key and not revoked, not idle too long. Marks
    /// it seen (at most once a minute, so reading pages does not write on every click).
    pub async fn session(&self, id: &str, now: UnixTime) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT s.key_id, s.csrf, s.seen_at FROM console_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id_hash = $1 AND k.revoked_at IS NULL AND k.scope = 'admin'",
        )
        .bind(hash(id))
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let s = Session { key_id: r.try_get("key_id")?, csrf: r.try_get("csrf")?, seen_at: r.try_get("seen_at")? };
        if now - s.seen_at > SESSION_IDLE_SECS {
            self.session_end(id).await?;
            return Ok(None);
        }
        if now - s.seen_at >= 60 {
            sqlx::query("UPDATE console_sessions SET seen_at = $2 WHERE id_hash = $1")
                .bind(hash(id))
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(s))
    }

    /// Sign out: the session is gone on every instance.
    pub async fn session_end(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1").bind(hash(id)).execute(&self.pool).await?;
        Ok(())
    }
}
