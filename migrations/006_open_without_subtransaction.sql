-- cardgate schema, version 6: an open's card row without a subtransaction.
--
-- migrations/002's card_apply_open caught unique_violation in an EXCEPTION
-- block, and PostgreSQL enters a subtransaction for every call of such a
-- block — on every open, though the clash it guards against is rare. Here
-- the common case is one INSERT; the clash (the merchant's external_card_no
-- held by another live card) is found by what the INSERT did not do. Same
-- outcomes: the card recorded once (a repeated completion only touches
-- updated_at), a clash kept as a card without its merchant number, flagged.
CREATE OR REPLACE FUNCTION card_apply_open(p_app_id text, p_serial text, p_biz_card_no text,
                                           p_card jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id,
                       card_template_id, level, point, balance)
    VALUES (p_biz_card_no, p_card->>'external_card_no', p_serial, p_app_id, p_card->>'user_id',
            p_card->>'card_template_id', p_card->>'level', cardgate_decimal(p_card->>'point'),
            cardgate_decimal(p_card->>'balance'))
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN;
    END IF;
    -- external_card_no already maps to another live card: keep the card,
    -- flag the clash for the merchant to resolve. (A completion written
    -- again lands here too, and only touches updated_at.)
    INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id,
                       card_template_id, status, level, point, balance)
    VALUES (p_biz_card_no, NULL, p_serial, p_app_id, p_card->>'user_id',
            p_card->>'card_template_id', 'external_card_no_conflict', p_card->>'level',
            cardgate_decimal(p_card->>'point'), cardgate_decimal(p_card->>'balance'))
    ON CONFLICT (biz_card_no) DO UPDATE SET updated_at = now();
END
$$;
