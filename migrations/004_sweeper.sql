-- cardgate schema, version 4: a request whose holder died is finished by
-- the sweeper of any instance, not only by its caller's retry.
--
-- While a request is pending, its ledger row keeps what is needed to make
-- it again (`sealed`: the request as cardgate received it, encrypted with
-- AES-256-GCM under a key derived from the configuration and bound to the
-- row; see lib/seal.h). Nothing in it can be read in the database. It is
-- dropped the moment the row leaves `pending`, whoever moves it. A sweeper
-- claims rows left pending past their lock (the stale_requests view) like a
-- retry would, with the same out_serial_no, so Alipay's dedup and the
-- ledger's own checks keep it to one card.

ALTER TABLE card_requests ADD COLUMN sealed bytea,
    ADD COLUMN swept_at timestamptz; -- when a sweeper last made it again

-- The request is kept only while its outcome is not known.
CREATE FUNCTION card_requests_unseal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.sealed := NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER card_requests_unseal BEFORE UPDATE ON card_requests
    FOR EACH ROW WHEN (NEW.state <> 'pending' AND NEW.sealed IS NOT NULL)
    EXECUTE FUNCTION card_requests_unseal();

-- What is left: can the sweeper make it again (false: it was claimed by a
-- version without the sweeper, or by a member's sign-up, whose one-time
-- code is spent).
CREATE OR REPLACE VIEW stale_requests AS
    SELECT app_id, out_serial_no, operation, biz_card_no, caller, attempts, locked_at,
           lock_expires_at, now() - lock_expires_at AS overdue, sealed IS NOT NULL AS redrivable
    FROM card_requests WHERE state = 'pending' AND lock_expires_at < now();

-- A request its holder abandoned pending, which the claim now refuses for
-- good (its card is gone, deleted, or changed by a newer update; its
-- merchant number is taken): closed as failed, so that neither it nor its
-- sealed copy stays pending for ever, with its outcome still unknown
-- ('abandoned': a later claim that gets through checks Alipay first).
CREATE FUNCTION card_request_close_abandoned(p_app_id text, p_serial text, p_hash text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE card_requests c
       SET state = 'failed', last_outcome = 'abandoned', lock_token = NULL, locked_at = NULL,
           lock_expires_at = NULL, updated_at = now()
     WHERE c.app_id = p_app_id AND c.out_serial_no = p_serial AND c.request_hash = p_hash
       AND c.state = 'pending' AND c.lock_expires_at < now();
$$;

-- migrations/002's claim, which now also keeps the sealed request
-- (p_sealed; NULL: nothing to make again).
DROP FUNCTION card_request_claim_op(text, text, text, text, text, integer, text, text, timestamp,
                                    text, integer);
CREATE FUNCTION card_request_claim_op(p_app_id text, p_serial text, p_hash text, p_caller text,
                                      p_token text, p_stale_ms integer, p_operation text,
                                      p_biz_card_no text, p_occur_time timestamp,
                                      p_external_card_no text, p_lock_timeout_ms integer,
                                      p_sealed bytea DEFAULT NULL)
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
                PERFORM card_request_close_abandoned(p_app_id, p_serial, p_hash);
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
                PERFORM card_request_close_abandoned(p_app_id, p_serial, p_hash);
                RETURN QUERY SELECT 'deleted'::text, NULL::integer, NULL::text, 0, NULL::text,
                                    NULL::text;
                RETURN;
            END IF;
            IF p_occur_time IS NOT NULL AND k.last_occur_time IS NOT NULL
               AND p_occur_time < k.last_occur_time THEN
                PERFORM card_request_close_abandoned(p_app_id, p_serial, p_hash);
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
                PERFORM card_request_close_abandoned(p_app_id, p_serial, p_hash);
                RETURN QUERY SELECT 'external_taken'::text, NULL::integer, NULL::text, 0,
                                    NULL::text, NULL::text;
                RETURN;
            END IF;
        END IF;

        INSERT INTO card_requests AS c (app_id, out_serial_no, state, request_hash, caller,
                                        lock_token, locked_at, lock_expires_at, operation,
                                        biz_card_no, sealed)
        VALUES (p_app_id, p_serial, 'pending', p_hash, p_caller, p_token, now(), expires,
                p_operation, p_biz_card_no, p_sealed)
        ON CONFLICT (app_id, out_serial_no) DO NOTHING;
        IF FOUND THEN
            r.attempts := 1;
            r.last_outcome := NULL;
        ELSE
            UPDATE card_requests c
               SET state = 'pending', lock_token = p_token, locked_at = now(),
                   lock_expires_at = expires, attempts = c.attempts + 1, caller = p_caller,
                   sealed = p_sealed,
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
