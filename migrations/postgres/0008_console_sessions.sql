-- Operator console sessions: only a SHA-256 of the session id (the cookie) is stored, with the key that signed
-- in (a revoked key ends its sessions) and the session's CSRF token.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_seen ON console_sessions (seen_at);
