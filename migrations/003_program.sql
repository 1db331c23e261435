-- cardgate schema, version 3: the membership program — card templates, the
-- settings cardgate opens members' own sign-ups with, and the sequence their
-- merchant card numbers come from.
--
-- Template creation and modification, asking Alipay for a template's
-- sign-up URL, and a member's sign-up all go through the one ledger
-- (card_requests), each under its own operation and out_serial_no
-- namespace: "template:<request_id>", "template-modify:<request_id>",
-- "activateurl:<template_id>:<hash of the callback>", and for a sign-up an
-- out_serial_no derived from Alipay's request_id.

ALTER TABLE card_requests DROP CONSTRAINT card_requests_operation_check;
ALTER TABLE card_requests ADD CONSTRAINT card_requests_operation_check
    CHECK (operation IN ('open', 'update', 'delete', 'activate', 'template', 'template_modify',
                         'activation_url'));

-- One row per template cardgate created or configured.
CREATE TABLE card_templates (
    template_id    text        PRIMARY KEY,   -- Alipay's
    app_id         text        NOT NULL,
    request_id     text,                      -- the create's; NULL: made outside cardgate
    caller         text,                      -- who created it (or first configured it)
    activation     jsonb,                     -- how members' own sign-ups are opened
    apply_card_url text,                      -- the sign-up address Alipay gave
    apply_callback text,                      -- the callback that address was asked for
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX card_templates_request_id_key ON card_templates (app_id, request_id)
    WHERE request_id IS NOT NULL;

-- external_card_no of a member's own sign-up: the template's prefix and this.
CREATE SEQUENCE card_external_no_seq START 100001;

-- Stores a template's activation settings (creating its row when the
-- template was made outside cardgate); returns the stored sign-up URL for
-- that callback, if Alipay already gave one.
CREATE FUNCTION card_template_configure(p_app_id text, p_template_id text, p_caller text,
                                        p_settings jsonb, p_callback text)
RETURNS TABLE (apply_card_url text)
LANGUAGE sql AS $$
    INSERT INTO card_templates AS t (template_id, app_id, caller, activation)
    VALUES (p_template_id, p_app_id, p_caller, p_settings)
    ON CONFLICT (template_id) DO UPDATE SET activation = p_settings, updated_at = now()
    RETURNING CASE WHEN t.apply_callback = p_callback THEN t.apply_card_url END;
$$;

-- What the program's operations change, on success.
CREATE FUNCTION card_apply_template(p_app_id text, p_card jsonb, p_caller text)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO card_templates (template_id, app_id, request_id, caller)
    VALUES (p_card->>'template_id', p_app_id, p_card->>'request_id', p_caller)
    ON CONFLICT (template_id) DO UPDATE
        SET request_id = coalesce(card_templates.request_id, excluded.request_id),
            updated_at = now();
$$;

CREATE FUNCTION card_apply_template_modify(p_app_id text, p_card jsonb, p_caller text)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO card_templates (template_id, app_id, caller)
    VALUES (p_card->>'template_id', p_app_id, p_caller)
    ON CONFLICT (template_id) DO UPDATE SET updated_at = now();
$$;

CREATE FUNCTION card_apply_activation_url(p_card jsonb)
RETURNS void
LANGUAGE sql AS $$
    UPDATE card_templates t
       SET apply_card_url = p_card->>'apply_card_url',
           apply_callback = p_card->>'callback', updated_at = now()
     WHERE t.template_id = p_card->>'template_id';
$$;

-- migrations/002's picker, with the program's operations; a member's
-- sign-up ('activate') records its card as an open does.
CREATE OR REPLACE FUNCTION card_request_apply(p_app_id text, p_serial text, p_operation text,
                                              p_biz_card_no text, p_card jsonb, p_caller text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_operation = 'template' THEN
        PERFORM card_apply_template(p_app_id, p_card, p_caller);
    ELSIF p_operation = 'template_modify' THEN
        PERFORM card_apply_template_modify(p_app_id, p_card, p_caller);
    ELSIF p_operation = 'activation_url' THEN
        PERFORM card_apply_activation_url(p_card);
    ELSIF p_biz_card_no IS NULL THEN
        RETURN;
    ELSIF p_operation IN ('open', 'activate') THEN
        PERFORM card_apply_open(p_app_id, p_serial, p_biz_card_no, p_card);
    ELSIF p_operation = 'update' THEN
        PERFORM card_apply_update(p_biz_card_no, p_card);
    ELSIF p_operation = 'delete' THEN
        PERFORM card_apply_delete(p_biz_card_no, p_card);
    END IF;
END
$$;

-- A template's activation settings and sign-up address, for the callback.
CREATE FUNCTION card_template_activation(p_app_id text, p_template_id text)
RETURNS TABLE (activation jsonb, external_no bigint)
LANGUAGE sql AS $$
    SELECT t.activation, nextval('card_external_no_seq')
      FROM card_templates t
     WHERE t.app_id = p_app_id AND t.template_id = p_template_id AND t.activation IS NOT NULL;
$$;
