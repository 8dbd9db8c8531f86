#include "store/schema.h"

const char *const meao_schema[] = {
    /* 1: foundation — key/value metadata and the audit trail. */
    "CREATE TABLE meta ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL"
    ") STRICT;"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"
    "  at_ms INTEGER NOT NULL,"
    "  request_id TEXT,"
    "  actor_user_id INTEGER,"
    "  action TEXT NOT NULL,"
    "  target TEXT,"
    "  detail TEXT"
    ") STRICT;"
    "CREATE INDEX audit_at ON audit(at_ms);"
    "INSERT INTO meta(key, value) VALUES ('created_at_ms', CAST(unixepoch() * 1000 AS TEXT));",
};

const size_t meao_schema_count = sizeof meao_schema / sizeof meao_schema[0];
