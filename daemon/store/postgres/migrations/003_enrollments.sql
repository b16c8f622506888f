-- Schema version 3: enrollments and groups made through the service API. The
-- body is the enrollment model's JSON, kept opaque. IDs are compared in byte
-- order (COLLATE "C"), as the bbolt store and the service API's paging do.
CREATE TABLE enrollments (
    scope text NOT NULL,
    kind  text NOT NULL,
    id    text COLLATE "C" NOT NULL,
    etag  text NOT NULL,
    body  bytea NOT NULL,
    PRIMARY KEY (scope, kind, id)
);
