-- cardgate schema, version 7: an open costs the database fewer statements.
--
-- Issue 10's profile of PostgreSQL during opens: most of its time was the
-- executor starting and ending statements, not the rows. An open ran about
-- ten statements inside plpgsql (nested PERFORMs of card_request_apply and
-- card_apply_open, the unseal trigger's own plpgsql call, the claim's
-- RETURN QUERYs) for four row writes. Here the common cases of a request
-- without a card (an open, a template) take the fewest statements, with
-- the same outcomes as before:
--
-- * the first claim: the look-up and the INSERT; a replay: the look-up
--   alone; anything else (a mismatch, a retry, a request in progress) goes
--   the general way, which judges it as before;
-- * the success of an open writes the ledger row (its sealed copy dropped
--   in the same UPDATE, so the trigger has nothing to do), the card row
--   and the gateway-call row in one statement; the rare clash of the
--   merchant's card number is still card_apply_open's.
--
-- Every other operation and outcome is the general code of migrations 002
-- to 006, unchanged.

ALTER FUNCTION card_request_claim_op(text, text, text, text, text, integer, text, text, timestamp,
                                     text, integer, bytea)
    RENAME TO card_request_claim_general;

CREATE FUNCTION card_request_claim_op(p_app_id text, p_serial text, p_hash text, p_caller text,
                                      p_token text, p_stale_ms integer, p_operation text,
                                      p_biz_card_no text, p_occur_time timestamp,
                                      p_external_card_no text, p_lock_timeout_ms integer,
                                      p_sealed bytea DEFAULT NULL)
RETURNS TABLE (verdict text, http_status integer, response_body text, attempts integer,
               biz_card_no text, prior text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF p_biz_card_no IS NULL THEN
        SELECT c.request_hash, c.state, c.http_status, c.response_body, c.attempts, c.biz_card_no
          INTO r FROM card_requests c
         WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial;
        IF NOT FOUND THEN
            -- The insert may wait for another transaction inserting the
            -- same serial: the caller's deadline bounds that wait, as in
            -- the general claim.
            IF p_lock_timeout_ms > 0 THEN
                PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
            END IF;
            INSERT INTO card_requests (app_id, out_serial_no, state, request_hash, caller,
                                       lock_token, locked_at, lock_expires_at, operation, sealed)
            VALUES (p_app_id, p_serial, 'pending', p_hash, p_caller, p_token, now(),
                    now() + make_interval(secs => p_stale_ms / 1000.0), p_operation, p_sealed)
            ON CONFLICT (app_id, out_serial_no) DO NOTHING;
            IF FOUND THEN
                verdict := 'claimed';
                attempts := 1;
                RETURN NEXT;
                RETURN;
            END IF;
        ELSIF r.request_hash = p_hash AND r.state IN ('succeeded', 'rejected') THEN
            verdict := 'replay';
            http_status := r.http_status;
            response_body := r.response_body;
            attempts := r.attempts;
            biz_card_no := r.biz_card_no;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM card_request_claim_general(p_app_id, p_serial, p_hash, p_caller,
        p_token, p_stale_ms, p_operation, p_biz_card_no, p_occur_time, p_external_card_no,
        p_lock_timeout_ms, p_sealed);
END
$$;

ALTER FUNCTION card_request_finish(text, text, text, text, text, text, text, integer, text, integer,
                                   text, text, text, jsonb, integer)
    RENAME TO card_request_finish_general;

CREATE FUNCTION card_request_finish(p_app_id text, p_serial text, p_token text, p_state text,
                                    p_outcome text, p_code text, p_sub_code text,
                                    p_http_status integer, p_body text, p_latency_ms integer,
                                    p_method text, p_operation text, p_biz_card_no text,
                                    p_card jsonb, p_cool_ms integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    held boolean;
    carded boolean;
BEGIN
    IF p_state <> 'succeeded' OR p_operation <> 'open' OR p_biz_card_no IS NULL
       OR p_method IS NULL THEN
        RETURN card_request_finish_general(p_app_id, p_serial, p_token, p_state, p_outcome, p_code,
                                           p_sub_code, p_http_status, p_body, p_latency_ms,
                                           p_method, p_operation, p_biz_card_no, p_card,
                                           p_cool_ms);
    END IF;
    -- A success is recorded whoever holds the lock now, as in the general
    -- completion; every part runs whether or not the ledger row moved.
    WITH req AS (
        UPDATE card_requests c
           SET state = 'succeeded', last_outcome = p_outcome, alipay_code = p_code,
               alipay_sub_code = p_sub_code, gateway_latency_ms = p_latency_ms,
               http_status = p_http_status, response_body = p_body,
               biz_card_no = p_biz_card_no, lock_token = NULL, locked_at = NULL,
               lock_expires_at = NULL, sealed = NULL, updated_at = now(), completed_at = now()
         WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial AND c.state <> 'succeeded'
        RETURNING 1
    ), card AS (
        INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id,
                           card_template_id, level, point, balance)
        VALUES (p_biz_card_no, p_card->>'external_card_no', p_serial, p_app_id,
                p_card->>'user_id', p_card->>'card_template_id', p_card->>'level',
                cardgate_decimal(p_card->>'point'), cardgate_decimal(p_card->>'balance'))
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), call AS (
        INSERT INTO gateway_calls (app_id, method, out_serial_no, outcome, alipay_code,
                                   alipay_sub_code, http_status, latency_ms, attempt)
        VALUES (p_app_id, p_method, p_serial, p_outcome, p_code, p_sub_code, p_http_status,
                p_latency_ms, p_token)
        ON CONFLICT (attempt) WHERE attempt IS NOT NULL DO NOTHING
    )
    SELECT EXISTS (SELECT 1 FROM req), EXISTS (SELECT 1 FROM card) INTO held, carded;
    IF NOT carded THEN
        -- Its merchant number is another live card's, or the completion
        -- is written again: card_apply_open keeps the card and flags the
        -- clash, or only touches updated_at.
        PERFORM card_apply_open(p_app_id, p_serial, p_biz_card_no, p_card);
    END IF;
    RETURN held;
END
$$;
