-- Every event received (Stripe webhooks, queue commands), stored once per (source, event id) with its outcome.
CREATE TABLE inbox (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT,
    waiting_for TEXT,
    account_id TEXT,
    attempts BIGINT NOT NULL DEFAULT 1,
    event_created BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX inbox_status ON inbox (status, waiting_for);

-- Which account a Stripe customer belongs to (the first resolution wins).
CREATE TABLE stripe_customers (
    customer_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    linked_at BIGINT NOT NULL
);

-- Stripe price objects seen in events, so an invoice line that carries only a price id can be mapped.
CREATE TABLE stripe_prices (
    id TEXT PRIMARY KEY,
    object TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);
