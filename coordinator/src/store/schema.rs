//! The tables, and the one way a store is brought up to date: a `schema_version`
//! row and numbered migrations ([`migrate`]); a store of a newer version than this
//! build's [`VERSION`] is refused at start. Migration 1 takes any store from before
//! versions to the first stamped schema: it creates what is missing, and every column
//! added before then ([`ADDED_COLUMNS`]) where it is missing (`CREATE TABLE IF NOT
//! EXISTS` leaves an existing table as it was).

use rusqlite::Connection;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY,
    slots_per_node INTEGER NOT NULL,
    provider TEXT NOT NULL,
    target_nodes INTEGER NOT NULL,
    fill TEXT NOT NULL,
    autoscale TEXT,
    removal TEXT,
    commands TEXT,
    start_task TEXT,
    docker TEXT,
    deleting INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS scale_log (
    pool TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    from_nodes INTEGER NOT NULL,
    to_nodes INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hostname TEXT NOT NULL,
    slots INTEGER NOT NULL,
    cpus INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    registered_at_ms INTEGER NOT NULL,
    resources TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    name TEXT NOT NULL,
    priority INTEGER NOT NULL,
    task_spec TEXT NOT NULL,
    is_graph INTEGER NOT NULL,
    open INTEGER NOT NULL,
    first_index INTEGER NOT NULL,
    last_index INTEGER NOT NULL,
    state TEXT NOT NULL,
    submitted_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    notify_url TEXT,
    notify_attempts INTEGER NOT NULL DEFAULT 0,
    notify_error TEXT,
    notify_delivered_at_ms INTEGER,
    owner TEXT NOT NULL DEFAULT '',
    max_output INTEGER NOT NULL DEFAULT 0,
    begin_at_ms INTEGER,
    schedule TEXT,
    scheduled_for_ms INTEGER,
    policy TEXT,
    after TEXT,
    reason TEXT,
    auto_pool TEXT
);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    job TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    paused INTEGER NOT NULL,
    cursor_ms INTEGER NOT NULL,
    buffered TEXT NOT NULL,
    missed INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS schedule_slots (
    schedule TEXT NOT NULL,
    slot_ms INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    PRIMARY KEY (schedule, slot_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS templates (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    job TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS triggers (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    paused INTEGER NOT NULL,
    fired INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    last_error TEXT,
    recent TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trigger_seen (
    trigger TEXT NOT NULL,
    object TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (trigger, object)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    pool TEXT,
    hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_credentials (
    node_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hash TEXT NOT NULL,
    token_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_groups (
    job_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    node_losses INTEGER NOT NULL,
    reason TEXT,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER,
    outcome TEXT,
    exit_code INTEGER,
    signal INTEGER,
    message TEXT,
    gpus TEXT,
    PRIMARY KEY (job_id, idx, attempt)
) WITHOUT ROWID;
";

/// Columns added before schema versions (migration 1 adds those an older store
/// lacks): (table, column, declaration), oldest first. A change to the schema now is
/// a new function in [`MIGRATIONS`], not a line here.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("pools", "autoscale", "TEXT"),
    ("pools", "removal", "TEXT"),
    ("pools", "commands", "TEXT"),
    ("pools", "start_task", "TEXT"),
    ("pools", "docker", "TEXT"),
    ("pools", "deleting", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "notify_url", "TEXT"),
    ("jobs", "notify_attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "notify_error", "TEXT"),
    ("jobs", "notify_delivered_at_ms", "INTEGER"),
    ("jobs", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("jobs", "max_output", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "actor", "TEXT"),
    ("jobs", "begin_at_ms", "INTEGER"),
    ("jobs", "schedule", "TEXT"),
    ("jobs", "scheduled_for_ms", "INTEGER"),
    ("jobs", "policy", "TEXT"),
    ("jobs", "after", "TEXT"),
    ("jobs", "reason", "TEXT"),
    ("nodes", "resources", "TEXT"),
    ("jobs", "auto_pool", "TEXT"),
    ("attempts", "gpus", "TEXT"),
];

/// The migrations, in order: migration N takes a store from version N-1 to N.
const MIGRATIONS: &[fn(&Connection) -> rusqlite::Result<()>] =
    &[create_or_upgrade, sessions, array_runs, job_template, output_order, gang_members];

/// Migration 2: dashboard sign-ins, by the hash of their cookie's value, so that one
/// outlives a restart (and, on PostgreSQL, a failover); each dies with its token.
fn sessions(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, token_id TEXT NOT NULL, at_ms INTEGER NOT NULL)",
    )
}

/// Migration 3: the indices of an array listed with gaps (`--array 1,3,5-9:2`), as
/// written (`NULL`: every index from `first_index` to `last_index`).
fn array_runs(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "jobs", "array_runs", "TEXT")
}

/// Migration 4: the template a job was dispatched from (`NULL`: none), so a
/// template's page lists its dispatches.
fn job_template(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "jobs", "template", "TEXT")
}

/// Migration 5: the order an attempt wrote its stdout and stderr in
/// ([`corral_types::order::Runs::to_text`]; `NULL`: it wrote to one at most, or the
/// order was not recorded), for `task logs --both`.
fn output_order(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "attempts", "output_order", "TEXT")
}

/// Migration 6: a multi-node attempt's other nodes, rank 1 onwards (a JSON list;
/// `NULL`: it ran on one node).
fn gang_members(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "attempts", "members", "TEXT")
}

/// The schema version this build writes (as many as there are migrations). A store
/// stamped with a newer one was written by a newer coordinator, which may have
/// changed what rows mean: it is refused, never read as if it were this version's.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Which migrations a store of version `stored` (`None`: never stamped, from before
/// versions, taken for version 0) needs to reach `latest`, or why it cannot be
/// opened. One rule for every backend: each keeps a `schema_version` row and a
/// numbered list of its own migrations.
pub fn migrations_needed(stored: Option<u32>, latest: u32) -> Result<std::ops::RangeInclusive<u32>, String> {
    let stored = stored.unwrap_or(0);
    if stored > latest {
        return Err(format!(
            "its schema is version {stored}, newer than the version {latest} this coordinator knows: run the newer coordinator that wrote it, or restore a backup"
        ));
    }
    Ok(stored + 1..=latest)
}

/// Brings the store to [`VERSION`]: refused if it is newer; otherwise each
/// migration it lacks is applied and the version stamped, in one transaction.
/// Migration 1 is everything up to the first stamped release: it creates what is
/// missing (tables, indexes, the columns of [`ADDED_COLUMNS`]), so an older unstamped
/// store is brought up to date too. A later change to the schema is migration 2, and
/// so on.
pub fn migrate(conn: &mut Connection, shown: &std::path::Path) -> crate::error::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let stored: Option<u32> = conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    let needed = migrations_needed(stored, VERSION)
        .map_err(|why| crate::error::Error::refused(format!("cannot open the store {}: {why}", shown.display())))?;
    if needed.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for migration in &MIGRATIONS[*needed.start() as usize - 1..] {
        migration(&tx)?;
    }
    tx.execute("DELETE FROM schema_version", [])?;
    tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [VERSION])?;
    tx.commit()?;
    Ok(())
}

/// Creates what is missing: tables, indexes, and the columns of [`ADDED_COLUMNS`].
fn create_or_upgrade(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(super::events::SCHEMA)?;
    conn.execute_batch(super::lost::SCHEMA)?;
    for (table, column, decl) in ADDED_COLUMNS {
        add_column(conn, table, column, decl)?;
    }
    Ok(())
}

/// Adds a column unless the table has it (so a migration may run again).
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let have: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    if !have.iter().any(|c| c == column) {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::model::RemovalPolicy;
    use crate::store::Store;

    #[test]
    fn a_store_of_a_newer_schema_is_refused_and_an_unstamped_one_is_stamped() {
        assert_eq!(super::migrations_needed(None, 1), Ok(1..=1));
        assert!(super::migrations_needed(Some(1), 1).unwrap().is_empty());
        assert_eq!(super::migrations_needed(Some(1), 3), Ok(2..=3));
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("corral.db")).unwrap();
        let stamped: u32 = conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).unwrap();
        assert_eq!(stamped, super::VERSION);
        drop(Store::open(dir.path()).unwrap());
        // A store of version 1 (before sign-ins were kept) gets migration 2.
        conn.execute_batch("DROP TABLE sessions; UPDATE schema_version SET version = 1").unwrap();
        drop(Store::open(dir.path()).unwrap());
        let stamped: u32 = conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).unwrap();
        let sessions: u32 = conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap();
        assert_eq!((stamped, sessions), (super::VERSION, 0));
        conn.execute("UPDATE schema_version SET version = 99", []).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap().to_string();
        let newer = format!("schema is version 99, newer than the version {} this coordinator knows", super::VERSION);
        assert!(err.contains(&newer), "{err}");
        assert!(err.contains(&dir.path().join("corral.db").display().to_string()), "{err}");
    }

    #[test]
    fn a_store_from_before_the_newer_pool_columns_opens_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("corral.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE pools (name TEXT PRIMARY KEY, slots_per_node INTEGER NOT NULL, provider TEXT NOT NULL,
                target_nodes INTEGER NOT NULL, fill TEXT NOT NULL, created_at_ms INTEGER NOT NULL);
             INSERT INTO pools VALUES ('old', 2, 'local', 1, 'spread', 5);",
        )
        .unwrap();
        drop(conn);
        let mut store = Store::open(dir.path()).unwrap();
        let snap = store.load().unwrap();
        let (spec, created, deleting) = &snap.pools[0];
        assert_eq!((spec.name.as_str(), *created, *deleting), ("old", 5, false));
        assert_eq!(spec.removal, RemovalPolicy::TaskCompletion);
        assert!(spec.docker.is_none() && spec.commands.is_none());
    }
}
