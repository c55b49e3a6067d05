//! The event feed's rows in SQLite: inserted in the transaction of the change they
//! describe (`crate::events::describe`), numbered by `AUTOINCREMENT` (ids only grow,
//! with no gaps, even across a trim), read back in pages.

use rusqlite::{params, Connection, OptionalExtension};

use crate::events::{Event, Filter, Kind, KEEP};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    pool TEXT,
    job_id INTEGER,
    idx INTEGER,
    attempt INTEGER,
    node_id TEXT,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id) WHERE job_id IS NOT NULL;
";

/// Records `event` in the transaction; returns its id.
pub fn insert(conn: &Connection, at_ms: u64, event: &Event) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "INSERT INTO events (at_ms, kind, pool, job_id, idx, attempt, node_id, state, detail, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        at_ms,
        event.kind.as_str(),
        event.pool,
        event.job,
        event.task,
        event.attempt,
        event.node,
        event.state,
        event.detail,
        event.actor
    ])?;
    Ok(conn.last_insert_rowid() as u64)
}

/// Drops all but the newest [`KEEP`] events.
pub fn trim(conn: &Connection, last_id: u64) -> rusqlite::Result<()> {
    if last_id > KEEP {
        conn.prepare_cached("DELETE FROM events WHERE id <= ?1")?.execute([last_id - KEEP])?;
    }
    Ok(())
}

/// The id of the newest event recorded (0 if none ever was).
pub fn last_id(conn: &Connection) -> rusqlite::Result<u64> {
    let seq: Option<i64> =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// The oldest event still kept, if any.
pub fn first_id(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.query_row("SELECT MIN(id) FROM events", [], |r| r.get::<_, Option<i64>>(0)).map(|id| id.map(|i| i as u64))
}

/// Up to `limit` events after `after` that pass `filter`, oldest first.
pub fn read(conn: &Connection, after: u64, filter: &Filter, limit: usize) -> rusqlite::Result<Vec<Event>> {
    // One statement per filter shape: `job_id = ?` lets SQLite use the job index.
    let sql = match (filter.job.is_some(), filter.pool.is_some()) {
        (true, true) => "SELECT id, at_ms, kind, pool, job_id, idx, attempt, node_id, state, detail, actor FROM events WHERE job_id = ?2 AND id > ?1 AND pool = ?3 ORDER BY id LIMIT ?4",
        (true, false) => "SELECT id, at_ms, kind, pool, job_id, idx, attempt, node_id, state, detail, actor FROM events WHERE job_id = ?2 AND id > ?1 AND ?3 IS NULL ORDER BY id LIMIT ?4",
        (false, true) => "SELECT id, at_ms, kind, pool, job_id, idx, attempt, node_id, state, detail, actor FROM events WHERE id > ?1 AND ?2 IS NULL AND pool = ?3 ORDER BY id LIMIT ?4",
        (false, false) => "SELECT id, at_ms, kind, pool, job_id, idx, attempt, node_id, state, detail, actor FROM events WHERE id > ?1 AND ?2 IS NULL AND ?3 IS NULL ORDER BY id LIMIT ?4",
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        params![after, filter.job.map(|j| j.0), filter.pool.as_ref().map(|p| p.as_str()), limit as i64],
        |r| {
            let kind: String = r.get(2)?;
            Ok(Event {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                kind: Kind::parse(&kind).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        format!("unknown event kind {kind:?}").into(),
                    )
                })?,
                pool: r.get(3)?,
                job: r.get(4)?,
                task: r.get(5)?,
                attempt: r.get(6)?,
                node: r.get(7)?,
                state: r.get(8)?,
                detail: r.get(9)?,
                actor: r.get(10)?,
            })
        },
    )?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::StoreOp;
    use crate::events::describe;
    use crate::events::tests::task;
    use crate::model::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    #[test]
    fn reads_resume_after_an_id_and_filter_by_job_and_pool() {
        let conn = conn();
        let pools = ["a", "b"];
        for i in 0..10u64 {
            let mut e = describe(&task(i % 2 + 1, i as u32, TaskState::Succeeded), |j| {
                Ok::<_, ()>(Some(PoolName::parse("pool", pools[(j.0 - 1) as usize]).unwrap()))
            })
            .unwrap()
            .unwrap();
            e.at_ms = i;
            assert_eq!(insert(&conn, i, &e).unwrap(), i + 1);
        }
        let all = read(&conn, 0, &Filter::default(), 100).unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
        let rest = read(&conn, 7, &Filter::default(), 100).unwrap();
        assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![8, 9, 10]);
        let job2 = read(&conn, 0, &Filter { job: Some(JobId(2)), pool: None }, 100).unwrap();
        assert_eq!(job2.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 4, 6, 8, 10]);
        let pool_a =
            read(&conn, 0, &Filter { job: None, pool: Some(PoolName::parse("pool", "a").unwrap()) }, 2).unwrap();
        assert_eq!(pool_a.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(last_id(&conn).unwrap(), 10);
    }

    #[test]
    fn trimming_keeps_ids_growing() {
        let conn = conn();
        let e = describe(&StoreOp::DeletePool(PoolName::parse("pool", "p").unwrap()), |_| Ok::<_, ()>(None))
            .unwrap()
            .unwrap();
        for _ in 0..3 {
            insert(&conn, 0, &e).unwrap();
        }
        conn.execute("DELETE FROM events", []).unwrap();
        assert_eq!(insert(&conn, 0, &e).unwrap(), 4, "an emptied feed must not reuse ids");
        assert_eq!(first_id(&conn).unwrap(), Some(4));
    }
}
