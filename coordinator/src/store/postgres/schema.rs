//! PostgreSQL's tables, numbered like SQLite's (`super::super::schema`): a
//! `schema_version` row, migration N taking version N-1 to N, and the same rule
//! ([`migrations_needed`]) for a database that is older or newer than this build.
//! Integers are `BIGINT` (the store binds every number as one), flags are `BIGINT`
//! 0/1 as in SQLite, so the statements of the store run unchanged on both.
//! `tasks` and `attempts` leave room on their pages (`fillfactor`) and have no index
//! but their key: a task's end then rewrites its rows in place (HOT updates), the
//! writes every task makes twice.

use super::super::schema::migrations_needed;

/// Migration 1: every table of the first schema.
const V1: &str = "
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    slots_per_node BIGINT NOT NULL,
    provider TEXT NOT NULL,
    target_nodes BIGINT NOT NULL,
    fill TEXT NOT NULL,
    autoscale TEXT,
    removal TEXT,
    commands TEXT,
    start_task TEXT,
    docker TEXT,
    deleting BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE scale_log (
    rowid BIGSERIAL PRIMARY KEY,
    pool TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    from_nodes BIGINT NOT NULL,
    to_nodes BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX scale_log_by_pool ON scale_log (pool, rowid);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hostname TEXT NOT NULL,
    slots BIGINT NOT NULL,
    cpus BIGINT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    pid BIGINT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    registered_at_ms BIGINT NOT NULL,
    resources TEXT
);
CREATE TABLE jobs (
    id BIGINT PRIMARY KEY,
    pool TEXT NOT NULL,
    name TEXT NOT NULL,
    priority BIGINT NOT NULL,
    task_spec TEXT NOT NULL,
    is_graph BIGINT NOT NULL,
    open BIGINT NOT NULL,
    first_index BIGINT NOT NULL,
    last_index BIGINT NOT NULL,
    state TEXT NOT NULL,
    submitted_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    notify_url TEXT,
    notify_attempts BIGINT NOT NULL DEFAULT 0,
    notify_error TEXT,
    notify_delivered_at_ms BIGINT,
    owner TEXT NOT NULL DEFAULT '',
    max_output BIGINT NOT NULL DEFAULT 0,
    begin_at_ms BIGINT,
    schedule TEXT,
    scheduled_for_ms BIGINT,
    policy TEXT,
    after TEXT,
    reason TEXT,
    auto_pool TEXT
);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    job TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    paused BIGINT NOT NULL,
    cursor_ms BIGINT NOT NULL,
    buffered TEXT NOT NULL,
    missed BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    last_error TEXT
);
CREATE TABLE schedule_slots (
    schedule TEXT NOT NULL,
    slot_ms BIGINT NOT NULL,
    job_id BIGINT NOT NULL,
    PRIMARY KEY (schedule, slot_ms)
);
CREATE TABLE templates (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    job TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE triggers (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    paused BIGINT NOT NULL,
    fired BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    last_error TEXT,
    recent TEXT NOT NULL
);
CREATE TABLE trigger_seen (
    trigger TEXT NOT NULL,
    object TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (trigger, object)
);
CREATE TABLE idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    pool TEXT,
    hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    created_by TEXT NOT NULL
);
CREATE TABLE node_credentials (
    node_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hash TEXT NOT NULL,
    token_id TEXT NOT NULL
);
CREATE TABLE task_groups (
    job_id BIGINT NOT NULL,
    position BIGINT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE tasks (
    job_id BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    node_losses BIGINT NOT NULL,
    reason TEXT,
    PRIMARY KEY (job_id, idx)
) WITH (fillfactor = 70);
CREATE TABLE attempts (
    job_id BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    outcome TEXT,
    exit_code BIGINT,
    signal BIGINT,
    message TEXT,
    gpus TEXT,
    PRIMARY KEY (job_id, idx, attempt)
) WITH (fillfactor = 70);
CREATE TABLE events (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    pool TEXT,
    job_id BIGINT,
    idx BIGINT,
    attempt BIGINT,
    node_id TEXT,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    actor TEXT
);
CREATE INDEX events_by_job ON events (job_id, id) WHERE job_id IS NOT NULL;
CREATE TABLE task_logs (
    job_id BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    stderr BIGINT NOT NULL,
    off BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (job_id, idx, attempt, stderr, off)
);
CREATE TABLE lost_output (
    job_id BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    stderr BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    end_offset BIGINT NOT NULL,
    noted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx, attempt, stderr)
);
CREATE TABLE corral_writer (
    one BIGINT PRIMARY KEY CHECK (one = 1),
    commits BIGINT NOT NULL,
    holder TEXT
);
INSERT INTO corral_writer (one, commits) VALUES (1, 0);
";

/// Migration 2: a transaction counts itself in `corral_writer` only if the one
/// before it did. The writer sends a transaction before the one ahead of it is
/// answered; if that one fails, this one must not commit alone, since it was made
/// from a state that held the other's changes. The failure is the writer's own
/// (`CR001`, waited out and retried), never a refused value.
const V2: &str = "
CREATE FUNCTION corral_count_commit(expected BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    UPDATE corral_writer SET commits = expected WHERE one = 1 AND commits = expected - 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the transaction before this one did not commit, so this one cannot'
            USING ERRCODE = 'CR001';
    END IF;
END
$$;
";

/// Migration 3: the leader's lease (one row: who holds it, its epoch, when it
/// expires by the database's clock), and a commit counts itself only while its
/// coordinator's epoch is still the lease's: a leader whose lease was taken
/// (paused, cut off, slow) commits nothing more (`CR002`).
const V3: &str = "
CREATE TABLE corral_lease (
    one BIGINT PRIMARY KEY CHECK (one = 1),
    holder TEXT,
    advertise TEXT,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ
);
INSERT INTO corral_lease (one, epoch) VALUES (1, 0);
DROP FUNCTION corral_count_commit(BIGINT);
CREATE FUNCTION corral_count_commit(expected BIGINT, leader_epoch BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM corral_lease WHERE one = 1 AND epoch = leader_epoch FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'another coordinator took the lease (this one held epoch %): it writes nothing more', leader_epoch
            USING ERRCODE = 'CR002';
    END IF;
    UPDATE corral_writer SET commits = expected WHERE one = 1 AND commits = expected - 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the transaction before this one did not commit, so this one cannot'
            USING ERRCODE = 'CR001';
    END IF;
END
$$;
";

/// Migration 4: where the leader's dashboard is (a standby redirects browsers
/// there), the id of the object store the coordinators on this database share
/// (the first one writes it as an object; every later one must find it in its own
/// store, or it does not share it), and the keys they must all use (the one that
/// signs callbacks).
const V4: &str = "
ALTER TABLE corral_lease ADD COLUMN advertise_http TEXT;
CREATE TABLE corral_objects (
    one BIGINT PRIMARY KEY CHECK (one = 1),
    id TEXT NOT NULL
);
CREATE TABLE corral_keys (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Migration 5: every coordinator on the database (leader and standbys) and where
/// it is reached, refreshed as it polls or renews the lease: agents learn the list
/// when they register, and go down it when their coordinator goes away.
const V5: &str = "
CREATE TABLE corral_coordinators (
    holder TEXT PRIMARY KEY,
    advertise TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);
";

/// Migration 6: each event row says in which epoch it was committed (the writer's
/// session sets `corral.epoch`), so the record itself shows that no deposed leader
/// committed after its successor: epochs never go down as event ids go up. (Two
/// statements: a column added without a default rewrites nothing.)
const V6: &str = "
ALTER TABLE events ADD COLUMN epoch BIGINT;
ALTER TABLE events ALTER COLUMN epoch SET DEFAULT NULLIF(current_setting('corral.epoch', true), '')::bigint;
";

/// Migration 7: dashboard sign-ins, by the hash of their cookie's value, so that
/// whichever coordinator leads knows them (SQLite's migration 2).
const V7: &str = "
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
";

/// Migration 8: the indices of an array listed with gaps (`--array 1,3,5-9:2`), as
/// written (`NULL`: every index from `first_index` to `last_index`; SQLite's
/// migration 3).
const V8: &str = "
ALTER TABLE jobs ADD COLUMN array_runs TEXT;
";

/// Migration 9: the template a job was dispatched from (SQLite's migration 4).
const V9: &str = "
ALTER TABLE jobs ADD COLUMN template TEXT;
";

/// Migration 10: the order an attempt wrote its stdout and stderr in (SQLite's
/// migration 5).
const V10: &str = "
ALTER TABLE attempts ADD COLUMN output_order TEXT;
";

/// Migration 11: a multi-node attempt's other nodes (SQLite's migration 6).
const V11: &str = "
ALTER TABLE attempts ADD COLUMN members TEXT;
";

/// Migration 12: the output of a multi-node task's other ranks, beside the
/// task's own (rank 0). (SQLite keeps logs as files, named by rank.)
const V12: &str = "
ALTER TABLE task_logs ADD COLUMN rank BIGINT NOT NULL DEFAULT 0;
ALTER TABLE task_logs DROP CONSTRAINT task_logs_pkey;
ALTER TABLE task_logs ADD PRIMARY KEY (job_id, idx, attempt, rank, stderr, off);
";

/// The migrations, in order: migration N takes a database from version N-1 to N.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// The SQL that brings a database of version `stored` (`None`: no Corral tables
/// yet) to [`VERSION`], or why it cannot be opened.
pub fn needed(stored: Option<u32>) -> Result<Vec<&'static str>, String> {
    let range = migrations_needed(stored, VERSION)?;
    Ok(range.map(|n| MIGRATIONS[n as usize - 1]).collect())
}
