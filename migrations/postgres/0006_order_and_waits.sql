-- The outbox is ordered without a global lock: each row gets its position once it is committed (a sequencer
-- numbers committed rows in id order), and readers of GET /v1/events page by position.
ALTER TABLE outbox ADD COLUMN pos BIGINT;
UPDATE outbox SET pos = id;
CREATE UNIQUE INDEX outbox_pos ON outbox (pos);
CREATE INDEX outbox_unsequenced ON outbox (id) WHERE pos IS NULL;
-- Waiting events and commands are retried on a schedule, a page at a time, until a horizon.
ALTER TABLE inbox ADD COLUMN next_attempt_at BIGINT;
UPDATE inbox SET next_attempt_at = last_seen WHERE status = 'waiting';
CREATE INDEX inbox_due ON inbox (next_attempt_at) WHERE status = 'waiting';
