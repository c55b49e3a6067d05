//! The event feed's rows: inserted in the transaction of the change they describe
//! (`crate::events::describe`), numbered by the writer (ids only grow, with no gaps,
//! even across a trim), read back in pages.

use super::sql::{args, Dialect, Sql, SqlExt, ToValue, Value};
use crate::error::Result;

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

const INSERT: &str =
    "INSERT INTO events (id, at_ms, kind, pool, job_id, idx, attempt, node_id, state, detail, actor) VALUES ";

/// The columns of one event's row, borrowed from it.
fn row(event: &Event) -> Vec<Value<'_>> {
    vec![
        event.id.to_value(),
        event.at_ms.to_value(),
        Value::Text(event.kind.as_str().into()),
        event.pool.to_value(),
        event.job.to_value(),
        event.task.to_value(),
        event.attempt.to_value(),
        event.node.to_value(),
        event.state.to_value(),
        event.detail.to_value(),
        event.actor.to_value(),
    ]
}

/// Records `events` (numbered by the writer, so ids have no gaps on either
/// engine) in the transaction. SQLite takes them many rows to a statement (a
/// statement's cost is mostly its own, not its rows'); PostgreSQL gathers the
/// rows of one statement by itself (`postgres::batch`).
pub fn insert(sql: &mut dyn Sql, events: &[Event]) -> Result<()> {
    if sql.dialect() == Dialect::Postgres {
        for event in events {
            sql.execute(&STATEMENTS[ONE_ROW], row(event))?;
        }
        return Ok(());
    }
    let mut rest = events;
    while !rest.is_empty() {
        // A few sizes, so that each is one statement in the connection's cache.
        let size = SIZES.iter().position(|&n| n <= rest.len()).unwrap_or(ONE_ROW);
        let (these, after) = rest.split_at(SIZES[size]);
        sql.execute(&STATEMENTS[size], these.iter().flat_map(row).collect())?;
        rest = after;
    }
    Ok(())
}

/// How many rows SQLite's statements take, largest first; the last is 1.
const SIZES: [usize; 4] = [64, 16, 4, 1];
const ONE_ROW: usize = SIZES.len() - 1;

/// `INSERT INTO events ... VALUES` with each of [`SIZES`] rows.
static STATEMENTS: std::sync::LazyLock<[String; 4]> =
    std::sync::LazyLock::new(|| SIZES.map(|n| format!("{INSERT}{}", marks(n))));

fn marks(n: usize) -> String {
    (0..n)
        .map(|r| format!("({})", (1..=11).map(|c| format!("?{}", r * 11 + c)).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drops all but the newest [`KEEP`] events.
pub fn trim(sql: &mut dyn Sql, last_id: u64) -> Result<()> {
    if last_id > KEEP {
        sql.execute("DELETE FROM events WHERE id <= ?1", args![last_id - KEEP])?;
    }
    Ok(())
}

/// The id of the newest event recorded (0 if none ever was). SQLite's
/// `AUTOINCREMENT` remembers it even when the feed was emptied; on PostgreSQL the
/// newest event is never deleted (a trim keeps the last [`KEEP`], a job's deletion
/// its own event), so the highest id kept is it.
pub fn last_id(sql: &mut dyn Sql) -> Result<u64> {
    let query = match sql.dialect() {
        Dialect::Sqlite => "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
        Dialect::Postgres => "SELECT MAX(id) FROM events",
    };
    Ok(sql.first(query, args![], |r| r.get::<Option<u64>>(0))?.flatten().unwrap_or(0))
}

/// The oldest event still kept, if any.
pub fn first_id(sql: &mut dyn Sql) -> Result<Option<u64>> {
    Ok(sql.first("SELECT MIN(id) FROM events", args![], |r| r.get::<Option<u64>>(0))?.flatten())
}

/// Up to `limit` events after `after` that pass `filter`, oldest first.
pub fn read(sql: &mut dyn Sql, after: u64, filter: &Filter, limit: usize) -> Result<Vec<Event>> {
    const COLUMNS: &str =
        "SELECT id, at_ms, kind, pool, job_id, idx, attempt, node_id, state, detail, actor FROM events";
    // One statement per filter shape: `job_id = ?` lets the engine use the job index.
    let job = filter.job.map(|j| j.0);
    let pool = filter.pool.as_ref().map(|p| p.as_str());
    let (query, args) = match (job, pool) {
        (Some(_), Some(_)) => (
            format!("{COLUMNS} WHERE job_id = ?2 AND id > ?1 AND pool = ?3 ORDER BY id LIMIT ?4"),
            args![after, job, pool, limit],
        ),
        (Some(_), None) => {
            (format!("{COLUMNS} WHERE job_id = ?2 AND id > ?1 ORDER BY id LIMIT ?3"), args![after, job, limit])
        }
        (None, Some(_)) => {
            (format!("{COLUMNS} WHERE id > ?1 AND pool = ?2 ORDER BY id LIMIT ?3"), args![after, pool, limit])
        }
        (None, None) => (format!("{COLUMNS} WHERE id > ?1 ORDER BY id LIMIT ?2"), args![after, limit]),
    };
    sql.rows(&query, args, |r| {
        let kind: String = r.get(2)?;
        Ok(Event {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            kind: kind.parse::<Kind>().map_err(|why| super::corrupt(format!("event kind: {why}")))?,
            pool: r.get(3)?,
            job: r.get(4)?,
            task: r.get(5)?,
            attempt: r.get(6)?,
            node: r.get(7)?,
            state: r.get(8)?,
            detail: r.get(9)?,
            actor: r.get(10)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::StoreOp;
    use crate::events::describe;
    use crate::events::tests::task;
    use crate::model::*;

    fn conn() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    #[test]
    fn reads_resume_after_an_id_and_filter_by_job_and_pool() {
        let mut conn = conn();
        let pools = ["a", "b"];
        // 90 rows in one call: statements of 64, 16, 4, 4, 1 and 1 rows.
        let events: Vec<Event> = (0..90u64)
            .map(|i| {
                let mut e = describe(&task(i % 2 + 1, i as u32, TaskState::Succeeded), |j| {
                    Ok::<_, ()>(Some(PoolName::parse("pool", pools[(j.0 - 1) as usize]).unwrap()))
                })
                .unwrap()
                .unwrap();
                (e.id, e.at_ms) = (i + 1, i);
                e
            })
            .collect();
        insert(&mut conn, &events).unwrap();
        let all = read(&mut conn, 0, &Filter::default(), 100).unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=90).collect::<Vec<_>>());
        assert_eq!(format!("{all:?}"), format!("{events:?}"), "every column read back as written");
        conn.execute("DELETE FROM events WHERE id > 10", []).unwrap();
        let rest = read(&mut conn, 7, &Filter::default(), 100).unwrap();
        assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![8, 9, 10]);
        let job2 = read(&mut conn, 0, &Filter { job: Some(JobId(2)), pool: None }, 100).unwrap();
        assert_eq!(job2.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 4, 6, 8, 10]);
        let pool_a =
            read(&mut conn, 0, &Filter { job: None, pool: Some(PoolName::parse("pool", "a").unwrap()) }, 2).unwrap();
        assert_eq!(pool_a.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(last_id(&mut conn).unwrap(), 90, "the newest ever recorded, though deleted");
    }

    #[test]
    fn trimming_keeps_ids_growing() {
        let mut conn = conn();
        let e = describe(&StoreOp::DeletePool(PoolName::parse("pool", "p").unwrap()), |_| Ok::<_, ()>(None))
            .unwrap()
            .unwrap();
        let numbered = |id| Event { id, ..e.clone() };
        insert(&mut conn, &[numbered(1), numbered(2), numbered(3)]).unwrap();
        conn.execute("DELETE FROM events", []).unwrap();
        assert_eq!(last_id(&mut conn).unwrap(), 3, "an emptied feed must not reuse ids");
        insert(&mut conn, &[numbered(4)]).unwrap();
        assert_eq!(first_id(&mut conn).unwrap(), Some(4));
    }
}
