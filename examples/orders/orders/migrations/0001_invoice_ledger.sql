-- Every invoice billing issues, numbered: billing's own table (its service's `tables`).
CREATE TABLE invoice_ledger (
    invoice_number bigserial   PRIMARY KEY,
    order_id       text        NOT NULL UNIQUE,
    customer_id    text        NOT NULL,
    amount_cents   bigint      NOT NULL CHECK (amount_cents >= 0),
    currency       text        NOT NULL,
    issued_at      timestamptz NOT NULL DEFAULT now()
);
