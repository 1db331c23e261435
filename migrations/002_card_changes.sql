-- cardgate schema, version 2: updates and deletions of cards.
--
-- card_requests gains the operation it records; cards gains the last values
-- Alipay accepted, the deletion, and a per-card lock so that one change of a
-- card is in flight at a time across every instance. The functions of 001
-- stay (an instance of the previous version keeps working during a rolling
-- upgrade); this version uses card_request_claim_op / card_request_finish.

ALTER TABLE card_requests
    ADD COLUMN operation text NOT NULL DEFAULT 'open'
        CHECK (operation IN ('open', 'update', 'delete', 'activate'));
CREATE INDEX card_requests_created_at_idx ON card_requests (created_at);

-- The ledger attempt a gateway call belongs to (its lock token): a
-- completion written twice (its first commit's answer lost) records the
-- call once.
ALTER TABLE gateway_calls ADD COLUMN attempt text;
CREATE UNIQUE INDEX gateway_calls_attempt_key ON gateway_calls (attempt) WHERE attempt IS NOT NULL;

ALTER TABLE cards
    ADD COLUMN level           text,
    ADD COLUMN point           numeric,
    ADD COLUMN balance         numeric,
    ADD COLUMN last_occur_time timestamp,   -- occur_time of the newest accepted update (Beijing time, as sent)
    ADD COLUMN deleted_at      timestamptz,
    ADD COLUMN delete_reason   text,        -- USER_UNBUND | CANCEL | PRESENT
    ADD COLUMN lock_serial     text,        -- the change in flight: its out_serial_no,
    ADD COLUMN lock_token      text,        -- its holder,
    ADD COLUMN lock_expires_at timestamptz; -- and when a dead holder's lock may be taken
ALTER TABLE cards ADD CONSTRAINT cards_status_check
    CHECK (status IN ('active', 'deleted', 'external_card_no_conflict'));

-- A deleted card's merchant number may be given to a new card.
DROP INDEX cards_external_card_no_key;
CREATE UNIQUE INDEX cards_external_card_no_key ON cards (external_card_no)
    WHERE external_card_no IS NOT NULL AND status <> 'deleted';

-- A decimal as Alipay writes points and balances, or NULL for anything else
-- (an answer's text must never make the ledger write fail).
CREATE FUNCTION cardgate_decimal(p text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p ~ '^-?[0-9]{1,30}(\.[0-9]{1,2})?$' THEN p::numeric END
$$;

CREATE VIEW card_changes_per_day AS
    SELECT date_trunc('day', created_at) AS day, app_id, operation, count(*) AS requests,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state IN ('rejected', 'failed')) AS failed
    FROM card_requests GROUP BY 1, 2, 3;

CREATE VIEW stale_requests AS
    SELECT app_id, out_serial_no, operation, biz_card_no, caller, attempts, locked_at,
           lock_expires_at, now() - lock_expires_at AS overdue
    FROM card_requests WHERE state = 'pending' AND lock_expires_at < now();

-- Claims (app_id, out_serial_no) for one operation, in one round trip.
-- Verdicts as card_request_claim's ('claimed', 'replay', 'mismatch',
-- 'in_progress') and, for a change of a card (p_biz_card_no given):
-- 'no_card' (cardgate has no such card), 'deleted', 'stale' (p_occur_time
-- is older than the newest update Alipay accepted), 'busy' (another change
-- of the card holds its lock), 'external_taken' (p_external_card_no belongs
-- to another live card). A claimed change holds the card's lock as well as
-- the request's; card_request_finish releases both.
-- prior: how the previous attempt of this out_serial_no ended — NULL for a
-- first attempt, its outcome class, or 'abandoned' when its holder died.
-- Claims of one card serialize on the card's row lock, so the checks and the
-- lock are one atomic step across every instance.
CREATE FUNCTION card_request_claim_op(p_app_id text, p_serial text, p_hash text, p_caller text,
                                      p_token text, p_stale_ms integer, p_operation text,
                                      p_biz_card_no text, p_occur_time timestamp,
                                      p_external_card_no text, p_lock_timeout_ms integer)
RETURNS TABLE (verdict text, http_status integer, response_body text, attempts integer,
               biz_card_no text, prior text)
LANGUAGE plpgsql AS $$
DECLARE
    r card_requests%ROWTYPE;
    k cards%ROWTYPE;
    expires timestamptz := now() + make_interval(secs => p_stale_ms / 1000.0);
BEGIN
    -- The caller's deadline bounds every lock wait below (a card or a serial
    -- held by another transaction): past it the claim fails and commits
    -- nothing, so no claim can outlive the 503 its caller was given.
    IF p_lock_timeout_ms > 0 THEN
        PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    END IF;
    FOR i IN 1..3 LOOP
        -- A change of a card locks the card's row first: claims and
        -- completions of one card then run one at a time, in the same lock
        -- order (cards, then card_requests) as card_request_finish.
        IF p_biz_card_no IS NOT NULL THEN
            SELECT * INTO k FROM cards WHERE cards.biz_card_no = p_biz_card_no
                                         AND cards.app_id = p_app_id FOR UPDATE;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'no_card'::text, NULL::integer, NULL::text, 0, NULL::text,
                                    NULL::text;
                RETURN;
            END IF;
        END IF;

        -- What is already known of this serial number answers next: a
        -- replay of a delete must not be told the card is deleted.
        SELECT * INTO r FROM card_requests c
         WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial;
        IF FOUND THEN
            IF r.request_hash <> p_hash THEN
                RETURN QUERY SELECT 'mismatch'::text, NULL::integer, NULL::text, r.attempts,
                                    NULL::text, NULL::text;
                RETURN;
            END IF;
            IF r.state IN ('succeeded', 'rejected') THEN
                RETURN QUERY SELECT 'replay'::text, r.http_status, r.response_body, r.attempts,
                                    r.biz_card_no, NULL::text;
                RETURN;
            END IF;
            IF r.state = 'pending' AND r.lock_expires_at >= now() THEN
                RETURN QUERY SELECT 'in_progress'::text, NULL::integer, NULL::text, r.attempts,
                                    NULL::text, NULL::text;
                RETURN;
            END IF;
        END IF;

        IF p_biz_card_no IS NOT NULL THEN
            IF k.status = 'deleted' THEN
                RETURN QUERY SELECT 'deleted'::text, NULL::integer, NULL::text, 0, NULL::text,
                                    NULL::text;
                RETURN;
            END IF;
            IF p_occur_time IS NOT NULL AND k.last_occur_time IS NOT NULL
               AND p_occur_time < k.last_occur_time THEN
                RETURN QUERY SELECT 'stale'::text, NULL::integer, NULL::text, 0, NULL::text,
                                    to_char(k.last_occur_time, 'YYYY-MM-DD HH24:MI:SS');
                RETURN;
            END IF;
            IF k.lock_serial IS NOT NULL AND k.lock_serial <> p_serial
               AND k.lock_expires_at >= now() THEN
                RETURN QUERY SELECT 'busy'::text, NULL::integer, NULL::text, 0, NULL::text,
                                    NULL::text;
                RETURN;
            END IF;
            IF p_external_card_no IS NOT NULL AND EXISTS (
                   SELECT 1 FROM cards o
                    WHERE o.external_card_no = p_external_card_no AND o.status <> 'deleted'
                      AND o.biz_card_no <> p_biz_card_no) THEN
                RETURN QUERY SELECT 'external_taken'::text, NULL::integer, NULL::text, 0,
                                    NULL::text, NULL::text;
                RETURN;
            END IF;
        END IF;

        INSERT INTO card_requests AS c (app_id, out_serial_no, state, request_hash, caller,
                                        lock_token, locked_at, lock_expires_at, operation,
                                        biz_card_no)
        VALUES (p_app_id, p_serial, 'pending', p_hash, p_caller, p_token, now(), expires,
                p_operation, p_biz_card_no)
        ON CONFLICT (app_id, out_serial_no) DO NOTHING;
        IF FOUND THEN
            r.attempts := 1;
            r.last_outcome := NULL;
        ELSE
            UPDATE card_requests c
               SET state = 'pending', lock_token = p_token, locked_at = now(),
                   lock_expires_at = expires, attempts = c.attempts + 1, caller = p_caller,
                   last_outcome = CASE WHEN c.state = 'pending' THEN 'abandoned'
                                       ELSE c.last_outcome END,
                   updated_at = now()
             WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial
               AND c.request_hash = p_hash
               AND (c.state = 'failed' OR (c.state = 'pending' AND c.lock_expires_at < now()))
            RETURNING c.* INTO r;
            IF NOT FOUND THEN
                CONTINUE; -- changed under us: judge it again
            END IF;
        END IF;

        IF p_biz_card_no IS NOT NULL THEN
            UPDATE cards SET lock_serial = p_serial, lock_token = p_token,
                             lock_expires_at = expires
             WHERE cards.biz_card_no = p_biz_card_no;
        END IF;
        RETURN QUERY SELECT 'claimed'::text, NULL::integer, NULL::text, r.attempts, NULL::text,
                            r.last_outcome;
        RETURN;
    END LOOP;
    RETURN QUERY SELECT 'in_progress'::text, NULL::integer, NULL::text, 0, NULL::text,
                        NULL::text;
END
$$;

-- What a success changes beyond the ledger: one function per operation,
-- and card_request_apply to pick it (a later migration that adds an
-- operation adds its function and replaces only the picker). p_card (jsonb):
--   open:   external_card_no, user_id, card_template_id, level, point, balance
--   update: occur_time, and any of external_card_no, level, point, balance
--   delete: reason_code
CREATE FUNCTION card_apply_open(p_app_id text, p_serial text, p_biz_card_no text, p_card jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id,
                       card_template_id, level, point, balance)
    VALUES (p_biz_card_no, p_card->>'external_card_no', p_serial, p_app_id, p_card->>'user_id',
            p_card->>'card_template_id', p_card->>'level', cardgate_decimal(p_card->>'point'),
            cardgate_decimal(p_card->>'balance'))
    ON CONFLICT (biz_card_no) DO UPDATE SET updated_at = now();
EXCEPTION WHEN unique_violation THEN
    -- external_card_no already maps to another live card: keep the card,
    -- flag the clash for the merchant to resolve.
    INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id,
                       card_template_id, status, level, point, balance)
    VALUES (p_biz_card_no, NULL, p_serial, p_app_id, p_card->>'user_id',
            p_card->>'card_template_id', 'external_card_no_conflict', p_card->>'level',
            cardgate_decimal(p_card->>'point'), cardgate_decimal(p_card->>'balance'))
    ON CONFLICT (biz_card_no) DO UPDATE SET updated_at = now();
END
$$;

CREATE FUNCTION card_apply_update(p_biz_card_no text, p_card jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    occ timestamp := (p_card->>'occur_time')::timestamp;
BEGIN
    -- A late success of an older update moves nothing back.
    UPDATE cards k
       SET level = CASE WHEN p_card ? 'level' THEN p_card->>'level' ELSE k.level END,
           point = CASE WHEN p_card ? 'point' THEN cardgate_decimal(p_card->>'point')
                        ELSE k.point END,
           balance = CASE WHEN p_card ? 'balance' THEN cardgate_decimal(p_card->>'balance')
                          ELSE k.balance END,
           last_occur_time = occ, updated_at = now()
     WHERE k.biz_card_no = p_biz_card_no
       AND (k.last_occur_time IS NULL OR k.last_occur_time <= occ);
    IF FOUND AND p_card ? 'external_card_no' THEN
        BEGIN
            UPDATE cards k SET external_card_no = p_card->>'external_card_no'
             WHERE k.biz_card_no = p_biz_card_no;
        EXCEPTION WHEN unique_violation THEN
            UPDATE cards k SET status = 'external_card_no_conflict'
             WHERE k.biz_card_no = p_biz_card_no AND k.status = 'active';
        END;
    END IF;
END
$$;

CREATE FUNCTION card_apply_delete(p_biz_card_no text, p_card jsonb)
RETURNS void
LANGUAGE sql AS $$
    UPDATE cards k
       SET status = 'deleted', deleted_at = coalesce(k.deleted_at, now()),
           delete_reason = coalesce(k.delete_reason, p_card->>'reason_code'),
           updated_at = now()
     WHERE k.biz_card_no = p_biz_card_no;
$$;

-- p_caller: the request's caller. Called by card_request_finish only.
CREATE FUNCTION card_request_apply(p_app_id text, p_serial text, p_operation text,
                                   p_biz_card_no text, p_card jsonb, p_caller text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_biz_card_no IS NULL THEN
        RETURN;
    ELSIF p_operation = 'open' THEN
        PERFORM card_apply_open(p_app_id, p_serial, p_biz_card_no, p_card);
    ELSIF p_operation = 'update' THEN
        PERFORM card_apply_update(p_biz_card_no, p_card);
    ELSIF p_operation = 'delete' THEN
        PERFORM card_apply_delete(p_biz_card_no, p_card);
    END IF;
END
$$;

-- Records the outcome of a claimed request, whatever its operation.
-- p_state: 'succeeded' and 'rejected' are final and keep the answer for
-- replay; 'failed' releases the lock so a retry calls the gateway again.
-- A success is recorded whoever holds the lock now (Alipay did it; the
-- ledger must never say otherwise); other outcomes count only while the
-- lock is still ours and, for an open, no card is recorded for the serial.
-- p_cool_ms > 0 (a 'failed' call that may still land at Alipay: it timed
-- out or its connection broke): no other change of its card for that long,
-- so the late call cannot land after a newer one (the card's lock stays
-- with this out_serial_no until then). Its own retry may go at once: it
-- checks the card first (see the README).
-- p_method NULL: no gateway call to record (an update found already applied).
-- Returns false when the outcome was not taken into the ledger.
CREATE FUNCTION card_request_finish(p_app_id text, p_serial text, p_token text, p_state text,
                                    p_outcome text, p_code text, p_sub_code text,
                                    p_http_status integer, p_body text, p_latency_ms integer,
                                    p_method text, p_operation text, p_biz_card_no text,
                                    p_card jsonb, p_cool_ms integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    held boolean;
    who text;
    cool interval := make_interval(secs => greatest(coalesce(p_cool_ms, 0), 0) / 1000.0);
    change boolean := p_operation IN ('update', 'delete') AND p_biz_card_no IS NOT NULL;
BEGIN
    -- The claim's lock order: the card first.
    IF change THEN
        PERFORM 1 FROM cards k WHERE k.biz_card_no = p_biz_card_no FOR UPDATE;
    END IF;
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
                     AND (p_operation NOT IN ('open', 'activate') OR NOT EXISTS (
                          SELECT 1 FROM cards k
                           WHERE k.app_id = p_app_id AND k.out_serial_no = p_serial))
           END
    RETURNING c.caller INTO who;
    held := FOUND;

    IF p_state = 'succeeded' THEN
        PERFORM card_request_apply(p_app_id, p_serial, p_operation, p_biz_card_no, p_card, who);
    END IF;

    IF change THEN
        IF p_state = 'failed' AND cool > interval '0' AND held THEN
            UPDATE cards k SET lock_expires_at = now() + cool
             WHERE k.biz_card_no = p_biz_card_no AND k.lock_token = p_token;
        ELSE
            UPDATE cards k SET lock_serial = NULL, lock_token = NULL, lock_expires_at = NULL
             WHERE k.biz_card_no = p_biz_card_no AND k.lock_token = p_token;
        END IF;
    END IF;

    IF p_method IS NOT NULL THEN
        INSERT INTO gateway_calls (app_id, method, out_serial_no, outcome, alipay_code,
                                   alipay_sub_code, http_status, latency_ms, attempt)
        VALUES (p_app_id, p_method, p_serial, p_outcome, p_code, p_sub_code, p_http_status,
                p_latency_ms, p_token)
        ON CONFLICT (attempt) WHERE attempt IS NOT NULL DO NOTHING;
    END IF;
    RETURN held;
END
$$;
