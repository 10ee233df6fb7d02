-- The ledger: accounts, lots, subscriptions, holds, append-only entries and idempotency keys.
-- Instants are unix seconds (BIGINT); structured state is JSON text.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    signup_granted BIGINT NOT NULL DEFAULT 0,
    stripe_customer_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    next_due_at BIGINT
);
CREATE INDEX accounts_next_due ON accounts (next_due_at);

CREATE TABLE lots (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    amount BIGINT NOT NULL,
    remaining BIGINT NOT NULL CHECK (remaining >= 0),
    granted_at BIGINT NOT NULL,
    expires_at BIGINT,
    subscription_id TEXT,
    cycle_start BIGINT,
    clawed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX lots_open ON lots (account_id) WHERE remaining > 0;

CREATE TABLE subscriptions (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX subscriptions_id ON subscriptions (id);

CREATE TABLE holds (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    amount BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX holds_id ON holds (id);
CREATE INDEX holds_active ON holds (account_id) WHERE status = 'active';

CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    lot_id TEXT,
    balance_after BIGINT NOT NULL,
    cause TEXT NOT NULL,
    user_id TEXT,
    operation TEXT,
    shortfall BIGINT NOT NULL DEFAULT 0,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX entries_account ON entries (account_id, id);

CREATE TABLE effects (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    key TEXT NOT NULL,
    request TEXT,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE members (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    user_id TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
