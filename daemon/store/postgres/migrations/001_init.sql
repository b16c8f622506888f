-- edgeprov store, schema version 1. Bodies are the same JSON bytes the bbolt store
-- keeps; keys are the lookup columns. Every record is keyed by ID scope.
CREATE TABLE instance (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id_scope   text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE operations (
    scope      text NOT NULL,
    id         text NOT NULL,
    updated_at timestamptz NOT NULL,
    body       bytea NOT NULL,
    PRIMARY KEY (scope, id)
);
CREATE INDEX operations_updated_at ON operations (updated_at);

CREATE TABLE records (
    scope           text NOT NULL,
    registration_id text NOT NULL,
    etag            text NOT NULL,
    body            bytea NOT NULL,
    PRIMARY KEY (scope, registration_id)
);

CREATE TABLE identities (
    hub       text NOT NULL,
    device_id text NOT NULL,
    body      bytea NOT NULL,
    PRIMARY KEY (hub, device_id)
);
