-- Subscription invoices seen (paid), and which payment paid which invoice, so a refund of a subscription payment
-- finds the cycles it paid for (both API shapes: invoice.payment_intent / charge.invoice before 2025-03-31,
-- invoice_payment.paid from then on).
CREATE TABLE stripe_invoices (
    id TEXT PRIMARY KEY,
    subscription_id TEXT,
    account_id TEXT,
    period_start BIGINT,
    period_end BIGINT,
    seen_at BIGINT NOT NULL
);
CREATE TABLE stripe_invoice_payments (
    payment_id TEXT PRIMARY KEY,
    invoice_id TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);
