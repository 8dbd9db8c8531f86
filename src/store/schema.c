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

    /* 2: identity — users, devices, hashed tokens, pairing, rate-limit buckets. */
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  role TEXT NOT NULL CHECK (role IN ('owner', 'user')),"
    "  created_ms INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE devices ("
    "  id INTEGER PRIMARY KEY,"
    "  public_id TEXT NOT NULL UNIQUE,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  last_seen_ms INTEGER,"
    "  revoked_ms INTEGER"
    ") STRICT;"
    "CREATE INDEX devices_user ON devices(user_id);"
    /* Only a keyed BLAKE2b-256 of a token is stored. A refresh token that has
     * been rotated keeps its row with rotated_ms set, so reuse is detected. */
    "CREATE TABLE tokens ("
    "  id INTEGER PRIMARY KEY,"
    "  hash BLOB NOT NULL UNIQUE,"
    "  kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  rotated_ms INTEGER,"
    "  revoked_ms INTEGER"
    ") STRICT;"
    "CREATE INDEX tokens_device ON tokens(device_id);"
    "CREATE INDEX tokens_user ON tokens(user_id);"
    /* Pairing codes, both directions. code_hash/device_code_hash are keyed
     * hashes; failures counts wrong guesses made while the code was open. */
    "CREATE TABLE pairings ("
    "  id INTEGER PRIMARY KEY,"
    "  code_hash BLOB NOT NULL UNIQUE,"
    "  device_code_hash BLOB UNIQUE,"
    "  direction TEXT NOT NULL CHECK (direction IN ('owner', 'device')),"
    "  user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,"
    "  device_name TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'completed',"
    "    'dead')),"
    "  failures INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  last_poll_ms INTEGER,"
    "  client_ip TEXT"
    ") STRICT;"
    "CREATE INDEX pairings_open ON pairings(status, expires_ms);"
    /* Durable copy of the shared-memory rate-limit state (write-behind). */
    "CREATE TABLE rate_buckets ("
    "  key_hash INTEGER PRIMARY KEY,"
    "  tat0_ms INTEGER NOT NULL,"
    "  tat1_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL"
    ") STRICT;",

    /* 3: sessions, messages and live settings. A session row carries the
     * lease of its running turn (lease_token + lease_until_ms): one turn at a
     * time, and a crashed holder's lease simply expires. Messages keep their
     * status (pending until the turn ends, then ok or failed); only ok
     * messages are sent back to the orchestrator as history. settings holds
     * the configuration overrides made with PATCH /api/v1/config; every
     * process re-reads them when meta.settings_version changes. */
    "CREATE TABLE sessions ("
    "  id INTEGER PRIMARY KEY,"
    "  public_id TEXT NOT NULL UNIQUE,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  channel TEXT NOT NULL,"
    "  work_dir TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('active', 'ended')),"
    "  trusted_tools TEXT NOT NULL DEFAULT '[]',"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  ended_ms INTEGER,"
    "  lease_token TEXT,"
    "  lease_request_id TEXT,"
    "  lease_until_ms INTEGER"
    ") STRICT;"
    "CREATE INDEX sessions_user ON sessions(user_id, status, id);"
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  public_id TEXT NOT NULL UNIQUE,"
    "  session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),"
    "  content TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'failed')),"
    "  tool_calls TEXT,"
    "  tool_call_id TEXT,"
    "  attachments TEXT,"
    "  input_tokens INTEGER,"
    "  output_tokens INTEGER,"
    "  request_id TEXT,"
    "  error_code TEXT,"
    "  created_ms INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX messages_session ON messages(session_id, id);"
    "CREATE TABLE settings ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  updated_by INTEGER"
    ") STRICT;"
    "INSERT INTO meta(key, value) VALUES ('settings_version', '0');",

    /* 4: Telegram. telegram_inbox is the durable inbox of webhook updates,
     * keyed by Telegram's update_id (a redelivery is a primary-key conflict,
     * acknowledged and dropped). The worker moves a row new → working → done
     * (or ignored / failed); reply_message_id is the Bot API message that
     * shows the reply, so a turn re-run after a crash edits the same message.
     * telegram_identities maps Telegram user ids to meao users (status
     * 'linked'), or holds a stranger's pending pairing code (status
     * 'pending', code_hash keyed like every pairing code). telegram_chats
     * names each chat's current session. telegram_approvals remembers which
     * prompt message shows which orchestrator approval, so a button press
     * finds its approval and the prompt can be edited with the outcome.
     * telegram_state keeps the webhook's secret (a keyed hash only) and URL. */
    "CREATE TABLE telegram_inbox ("
    "  update_id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  chat_id INTEGER,"
    "  from_id INTEGER,"
    "  body TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('new', 'working', 'done', 'ignored', 'failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  not_before_ms INTEGER NOT NULL DEFAULT 0,"
    "  reply_message_id INTEGER,"
    "  lease_token TEXT,"
    "  session TEXT,"
    "  outcome TEXT,"
    "  received_ms INTEGER NOT NULL,"
    "  done_ms INTEGER"
    ") STRICT;"
    "CREATE INDEX telegram_inbox_open ON telegram_inbox(status, update_id)"
    "  WHERE status IN ('new', 'working');"
    "CREATE TABLE telegram_identities ("
    "  telegram_user_id INTEGER PRIMARY KEY,"
    "  user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,"
    "  status TEXT NOT NULL CHECK (status IN ('linked', 'pending')),"
    "  code_hash BLOB UNIQUE,"
    "  code_expires_ms INTEGER,"
    "  display_name TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE telegram_chats ("
    "  chat_id INTEGER PRIMARY KEY,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  session_public_id TEXT,"
    "  updated_ms INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE telegram_approvals ("
    "  approval_id TEXT PRIMARY KEY,"
    "  chat_id INTEGER NOT NULL,"
    "  message_id INTEGER NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  tool_name TEXT NOT NULL,"
    "  details TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'timeout')),"
    "  created_ms INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE telegram_state ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL,"
    "  updated_ms INTEGER NOT NULL"
    ") STRICT;",
};

const size_t meao_schema_count = sizeof meao_schema / sizeof meao_schema[0];
