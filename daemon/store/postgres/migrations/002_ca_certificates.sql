-- edgeprov store, schema version 2: CA certificates uploaded with proof of
-- possession. name_key is the lower-cased name (names compare
-- case-insensitively); the body keeps the name as given.
CREATE TABLE ca_certificates (
    scope    text NOT NULL,
    name_key text NOT NULL,
    body     bytea NOT NULL,
    PRIMARY KEY (scope, name_key)
);
