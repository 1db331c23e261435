-- cardgate schema, version 8: Alipay's certificates, shared by every
-- instance (certificate mode).
--
-- When Alipay signs an answer with a certificate an instance does not have
-- (Alipay rotated it), the instance looks here first, and only when no
-- other instance has fetched it downloads it (alipay.open.app.alipaycert.
-- download), after claiming the row so that two instances meeting the new
-- certificate at once download it once. A certificate is stored only after
-- it was checked: it chains to the configured root bundle and is within its
-- validity. Every instance checks it again when it reads it.
CREATE TABLE alipay_certs (
    sn          text        PRIMARY KEY,  -- MD5 of issuer and serial (certificate mode's SN)
    app_id      text        NOT NULL,
    pem         text,                     -- the certificate as downloaded; NULL while being fetched
    claimed_at  timestamptz NOT NULL DEFAULT now(),  -- when an instance started fetching it
    fetched_at  timestamptz
);
