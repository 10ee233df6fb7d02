-- The outbox is ordered without a global lock: each row gets its position once it is committed (a sequencer
-- numbers committed rows in id order), and readers of GET /v1/events page by position.
ALTER TABLE outbox ADD COLUMN pos BIGINT;
UPDATE outbox SET pos = id;
CREATE UNIQUE INDEX outbox_pos ON outbox (pos) WHERE pos IS NOT NULL;
CREATE INDEX outbox_unsequenced ON outbox (id) WHERE pos IS NULL;
-- Waiting events and commands are retried on a schedule, a page at a time, until a horizon.
ALTER TABLE inbox ADD COLUMN next_attempt_at BIGINT;
UPDATE inbox SET next_attempt_at = last_seen WHERE status = 'waiting';
CREATE INDEX inbox_due ON inbox (next_attempt_at) WHERE status = 'waiting';
-- Every write to an account's rows bumps its version, so a writer may keep an account in memory between
-- batches and reload it only when another writer changed it.
ALTER TABLE accounts ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
-- The Stripe customers linked to an account (account pages, moving a fallback account's credits).
CREATE INDEX stripe_customers_account ON stripe_customers (account_id);
