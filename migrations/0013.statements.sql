-- depends: 0009.billing
-- Statements turn allocation rows into money. What is computed (statements, revenue-share
-- statements, the margin report) is not stored; what is issued (invoices, credit notes) is
-- stored once and never changed: corrections are new documents.

-- Gap-free document numbers per series and year (FB-2026-000001, CN-2026-000001). A number
-- is taken from this row inside the transaction that issues the document, so a transaction
-- that rolls back gives its number back; a sequence would leave gaps.
CREATE TABLE document_counters (
    series      text NOT NULL CHECK (series IN ('FB', 'CN')),
    year        integer NOT NULL CHECK (year BETWEEN 2000 AND 9999),
    last_number integer NOT NULL CHECK (last_number > 0),
    PRIMARY KEY (series, year)
);

-- One invoice per sponsor and billing period, issued when the period is closed.
CREATE TABLE invoices (
    invoice_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number      text NOT NULL UNIQUE CHECK (number ~ '^FB-[0-9]{4}-[0-9]{6,}$'),
    sponsor_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    period      date NOT NULL CHECK (extract(day FROM period) = 1),
    time_zone   text NOT NULL,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    total_minor bigint NOT NULL CHECK (total_minor >= 0),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    issue_date  date NOT NULL,
    UNIQUE (sponsor_id, period)
);

-- The statement's lines as they were at issue time: stored, never recomputed.
CREATE TABLE invoice_lines (
    invoice_id   bigint NOT NULL REFERENCES invoices (invoice_id),
    line_no      integer NOT NULL CHECK (line_no > 0),
    line_id      text NOT NULL,
    policy_id    bigint NOT NULL,
    policy_name  text NOT NULL,
    terms_from   timestamptz NOT NULL,
    category     text NOT NULL,
    adjustment   boolean NOT NULL,
    used_in      date,
    tariff_from  timestamptz NOT NULL,
    items        bigint NOT NULL CHECK (items > 0),
    bytes        bigint NOT NULL CHECK (bytes > 0),
    rated_bytes  bigint NOT NULL CHECK (rated_bytes >= bytes),
    mb           numeric(24, 3) NOT NULL,
    unit_price   numeric(14, 6) NOT NULL CHECK (unit_price >= 0),
    amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (invoice_id, line_no),
    UNIQUE (invoice_id, line_id),
    CHECK (adjustment = (used_in IS NOT NULL))
);

-- A correction of an invoice: credits amounts of its lines, never more than is left on each.
CREATE TABLE credit_notes (
    credit_note_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number         text NOT NULL UNIQUE CHECK (number ~ '^CN-[0-9]{4}-[0-9]{6,}$'),
    invoice_id     bigint NOT NULL REFERENCES invoices (invoice_id),
    reason         text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_minor    bigint NOT NULL CHECK (total_minor > 0),
    issued_at      timestamptz NOT NULL DEFAULT now(),
    issue_date     date NOT NULL
);
CREATE INDEX credit_notes_invoice_idx ON credit_notes (invoice_id, credit_note_id);

CREATE TABLE credit_note_lines (
    credit_note_id bigint NOT NULL REFERENCES credit_notes (credit_note_id),
    invoice_id     bigint NOT NULL,
    line_no        integer NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (credit_note_id, line_no),
    FOREIGN KEY (invoice_id, line_no) REFERENCES invoice_lines (invoice_id, line_no)
);
CREATE INDEX credit_note_lines_line_idx ON credit_note_lines (invoice_id, line_no);

-- Issued documents are immutable: corrections are credit notes.
CREATE FUNCTION refuse_change_of_issued_document() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'issued billing documents never change: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'correct an invoice with a credit note';
END
$$;

CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_issued_document();
CREATE TRIGGER invoices_not_truncated BEFORE TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_of_issued_document();
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_issued_document();
CREATE TRIGGER invoice_lines_not_truncated BEFORE TRUNCATE ON invoice_lines
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_of_issued_document();
CREATE TRIGGER credit_notes_immutable BEFORE UPDATE OR DELETE ON credit_notes
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_issued_document();
CREATE TRIGGER credit_notes_not_truncated BEFORE TRUNCATE ON credit_notes
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_of_issued_document();
CREATE TRIGGER credit_note_lines_immutable BEFORE UPDATE OR DELETE ON credit_note_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_issued_document();
CREATE TRIGGER credit_note_lines_not_truncated BEFORE TRUNCATE ON credit_note_lines
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_of_issued_document();

-- The service credits a line under a lock on its invoice; this is the database's own guard
-- that a line is never credited beyond its amount.
CREATE FUNCTION credit_within_line() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    line_amount bigint;
    credited    bigint;
BEGIN
    SELECT amount_minor INTO line_amount FROM invoice_lines
     WHERE invoice_id = NEW.invoice_id AND line_no = NEW.line_no;
    SELECT coalesce(sum(amount_minor), 0) INTO credited FROM credit_note_lines
     WHERE invoice_id = NEW.invoice_id AND line_no = NEW.line_no;
    IF credited + NEW.amount_minor > line_amount THEN
        RAISE EXCEPTION 'credit of % exceeds what is left (%) on line % of invoice %',
            NEW.amount_minor, line_amount - credited, NEW.line_no, NEW.invoice_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER credit_note_lines_within_line BEFORE INSERT ON credit_note_lines
    FOR EACH ROW EXECUTE FUNCTION credit_within_line();

-- Idempotency-Keys of billing commands (closing a period, issuing a credit note): a repeat
-- with the same key and request answers with the document the first one issued.
CREATE TABLE billing_commands (
    idempotency_key text PRIMARY KEY,
    command         text NOT NULL CHECK (command IN ('close', 'credit-note')),
    request_digest  bytea NOT NULL CHECK (length(request_digest) = 32),
    document_number text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Revenue share: a partner tenant (an app maker, a handset maker) earns a percentage of the
-- user-paid traffic revenue of the listed apps, for usage whose window starts in
-- [valid_from, valid_until).
CREATE TABLE revenue_share_rules (
    rule_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    apps        text[] NOT NULL CHECK (cardinality(apps) BETWEEN 1 AND 100),
    percent     numeric(7, 4) NOT NULL CHECK (percent > 0 AND percent <= 100),
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX revenue_share_rules_partner_idx ON revenue_share_rules (partner_id, rule_id);
CREATE INDEX revenue_share_rules_apps_idx ON revenue_share_rules USING gin (apps);
