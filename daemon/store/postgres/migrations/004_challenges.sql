-- Schema version 4: TPM challenges (protocol.md §5.4), one per device, kept
-- here so that whichever replica receives the device's answer can verify it.
CREATE TABLE challenges (
    scope           text NOT NULL,
    registration_id text NOT NULL,
    expires_at      timestamptz NOT NULL,
    body            bytea NOT NULL,
    PRIMARY KEY (scope, registration_id)
);
