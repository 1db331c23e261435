-- cardgate schema, version 1.
-- Dashboards read the tables and the views below; change them only by adding
-- a new numbered file.

-- The idempotency ledger: one row per (app_id, out_serial_no).
CREATE TABLE card_requests (
    app_id             text        NOT NULL,
    out_serial_no      text        NOT NULL,
    state              text        NOT NULL
                       CHECK (state IN ('pending', 'succeeded', 'rejected', 'failed')),
    request_hash       text        NOT NULL,   -- HMAC of the request's meaning, never the request
    caller             text        NOT NULL,   -- the API key's name
    attempts           integer     NOT NULL DEFAULT 1,
    lock_token         text,                   -- who holds the request while pending
    locked_at          timestamptz,
    lock_expires_at    timestamptz,            -- the holder's gateway timeout + margin
    last_outcome       text,                   -- outcome class of the last gateway call
    alipay_code        text,
    alipay_sub_code    text,
    http_status        integer,                -- the answer given (stored for final states)
    response_body      text,                   -- the answer replayed for final states
    biz_card_no        text,
    gateway_latency_ms integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    PRIMARY KEY (app_id, out_serial_no)
);
CREATE INDEX card_requests_state_idx ON card_requests (state) WHERE state IN ('pending', 'failed');

-- One row per opened card: the mapping between the merchant's serial number,
-- Alipay's card number and the merchant's own card number.
CREATE TABLE cards (
    biz_card_no      text        PRIMARY KEY,
    external_card_no text,
    out_serial_no    text        NOT NULL,
    app_id           text        NOT NULL,
    user_id          text        NOT NULL,
    card_template_id text        NOT NULL,
    status           text        NOT NULL DEFAULT 'active',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX cards_external_card_no_key ON cards (external_card_no)
    WHERE external_card_no IS NOT NULL;
CREATE INDEX cards_user_id_idx ON cards (user_id);
CREATE INDEX cards_out_serial_no_idx ON cards (out_serial_no);

-- Every call made to the gateway, for the failure dashboards.
CREATE TABLE gateway_calls (
    id              bigserial   PRIMARY KEY,
    app_id          text        NOT NULL,
    method          text        NOT NULL,
    out_serial_no   text,
    outcome         text        NOT NULL,  -- ok, rejected, auth_failed, refused, unavailable, bad_signature, timeout
    alipay_code     text,
    alipay_sub_code text,
    http_status     integer,
    latency_ms      integer,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gateway_calls_created_at_idx ON gateway_calls (created_at);

CREATE VIEW cards_opened_per_day AS
    SELECT date_trunc('day', created_at) AS day, app_id, count(*) AS cards
    FROM cards GROUP BY 1, 2;

CREATE VIEW gateway_failures_per_hour AS
    SELECT date_trunc('hour', created_at) AS hour, method, outcome,
           coalesce(alipay_code, '') AS alipay_code,
           coalesce(alipay_sub_code, '') AS alipay_sub_code, count(*) AS failures
    FROM gateway_calls WHERE outcome <> 'ok' GROUP BY 1, 2, 3, 4, 5;

CREATE VIEW gateway_calls_per_hour AS
    SELECT date_trunc('hour', created_at) AS hour, method, outcome, count(*) AS calls,
           avg(latency_ms)::integer AS avg_latency_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)::integer AS p99_latency_ms
    FROM gateway_calls GROUP BY 1, 2, 3;

CREATE VIEW card_requests_by_state AS
    SELECT state, count(*) AS requests, max(updated_at) AS last_change
    FROM card_requests GROUP BY state;

-- Claims (app_id, out_serial_no) for one gateway call, in one round trip.
-- verdict: 'claimed' (the caller must call the gateway, then complete),
-- 'replay' (a final outcome is stored: http_status/response_body, and the
-- biz_card_no of a success),
-- 'mismatch' (the serial number was used for another request),
-- 'in_progress' (another holder's lock is fresh).
-- The lock's life is the holder's own (p_stale_ms: its gateway timeout plus a
-- margin), stored with it: a claimer with a shorter timeout cannot take over
-- a lock whose holder may still be waiting on the gateway.
-- Each statement of a plpgsql function sees rows committed before it ran,
-- so a racing insert is seen by the UPDATE/SELECT that follow.
CREATE FUNCTION card_request_claim(p_app_id text, p_serial text, p_hash text, p_caller text,
                                   p_token text, p_stale_ms integer)
RETURNS TABLE (verdict text, http_status integer, response_body text, attempts integer,
               biz_card_no text)
LANGUAGE plpgsql AS $$
DECLARE
    r card_requests%ROWTYPE;
BEGIN
    FOR i IN 1..3 LOOP
        INSERT INTO card_requests AS c (app_id, out_serial_no, state, request_hash, caller,
                                        lock_token, locked_at, lock_expires_at)
        VALUES (p_app_id, p_serial, 'pending', p_hash, p_caller, p_token, now(),
                now() + make_interval(secs => p_stale_ms / 1000.0))
        ON CONFLICT (app_id, out_serial_no) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT 'claimed'::text, NULL::integer, NULL::text, 1, NULL::text;
            RETURN;
        END IF;

        UPDATE card_requests c
           SET state = 'pending', lock_token = p_token, locked_at = now(),
               lock_expires_at = now() + make_interval(secs => p_stale_ms / 1000.0),
               attempts = c.attempts + 1, caller = p_caller, updated_at = now()
         WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial AND c.request_hash = p_hash
           AND (c.state = 'failed' OR (c.state = 'pending' AND c.lock_expires_at < now()))
        RETURNING c.* INTO r;
        IF FOUND THEN
            RETURN QUERY SELECT 'claimed'::text, NULL::integer, NULL::text, r.attempts, NULL::text;
            RETURN;
        END IF;

        SELECT * INTO r FROM card_requests c
         WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        IF r.request_hash <> p_hash THEN
            RETURN QUERY SELECT 'mismatch'::text, NULL::integer, NULL::text, r.attempts, NULL::text;
            RETURN;
        END IF;
        IF r.state IN ('succeeded', 'rejected') THEN
            RETURN QUERY SELECT 'replay'::text, r.http_status, r.response_body, r.attempts,
                                r.biz_card_no;
            RETURN;
        END IF;
        IF r.state = 'pending' THEN
            RETURN QUERY SELECT 'in_progress'::text, NULL::integer, NULL::text, r.attempts, NULL::text;
            RETURN;
        END IF;
        -- 'failed' between our UPDATE and SELECT: try the takeover again.
    END LOOP;
    RETURN QUERY SELECT 'in_progress'::text, NULL::integer, NULL::text, 0, NULL::text;
END
$$;

-- Records the outcome of a claimed call. p_state: 'succeeded' and 'rejected'
-- are final and keep the answer for replay; 'failed' releases the lock so a
-- retry calls the gateway again with the same out_serial_no.
-- A success is recorded whoever holds the lock now: Alipay dedups on
-- out_serial_no, so a late success of a holder that was taken over is the
-- same card, and the ledger must not later say 'failed' or 'rejected' for a
-- serial number whose card exists. Other outcomes count only while the lock
-- is still ours and no card is recorded for the serial number.
-- Returns false when the outcome was not taken into the ledger.
CREATE FUNCTION card_request_complete(p_app_id text, p_serial text, p_token text, p_state text,
                                      p_outcome text, p_code text, p_sub_code text,
                                      p_http_status integer, p_body text, p_latency_ms integer,
                                      p_biz_card_no text, p_external_card_no text,
                                      p_user_id text, p_template_id text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    held boolean;
BEGIN
    UPDATE card_requests c
       SET state = p_state, last_outcome = p_outcome, alipay_code = p_code,
           alipay_sub_code = p_sub_code, gateway_latency_ms = p_latency_ms,
           http_status = CASE WHEN p_state = 'failed' THEN NULL ELSE p_http_status END,
           response_body = CASE WHEN p_state = 'failed' THEN NULL ELSE p_body END,
           biz_card_no = coalesce(p_biz_card_no, c.biz_card_no),
           lock_token = NULL, locked_at = NULL, lock_expires_at = NULL, updated_at = now(),
           completed_at = CASE WHEN p_state = 'failed' THEN NULL ELSE now() END
     WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial
       AND CASE WHEN p_state = 'succeeded' THEN c.state <> 'succeeded'
                ELSE c.lock_token = p_token AND c.state = 'pending'
                     AND NOT EXISTS (SELECT 1 FROM cards k
                                      WHERE k.app_id = p_app_id AND k.out_serial_no = p_serial)
           END;
    held := FOUND;

    IF p_state = 'succeeded' AND p_biz_card_no IS NOT NULL THEN
        BEGIN
            INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id,
                               card_template_id)
            VALUES (p_biz_card_no, p_external_card_no, p_serial, p_app_id, p_user_id,
                    p_template_id)
            ON CONFLICT (biz_card_no) DO UPDATE SET updated_at = now();
        EXCEPTION WHEN unique_violation THEN
            -- external_card_no already maps to another card: keep the card,
            -- flag the clash for the merchant to resolve.
            INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id,
                               card_template_id, status)
            VALUES (p_biz_card_no, NULL, p_serial, p_app_id, p_user_id, p_template_id,
                    'external_card_no_conflict')
            ON CONFLICT (biz_card_no) DO UPDATE SET updated_at = now();
        END;
    END IF;

    INSERT INTO gateway_calls (app_id, method, out_serial_no, outcome, alipay_code,
                               alipay_sub_code, http_status, latency_ms)
    VALUES (p_app_id, 'alipay.marketing.card.open', p_serial, p_outcome, p_code, p_sub_code,
            p_http_status, p_latency_ms);
    RETURN held;
END
$$;
