//! The writes of one transaction, gathered: a group commit of thousands of task
//! changes is thousands of one-row `INSERT`s into a handful of tables, and PostgreSQL
//! spends far more on each statement than on each row. Rows of the same `INSERT INTO
//! t (cols) VALUES (?1..?k) [ON CONFLICT ...]` go out as one statement over arrays
//! (`INSERT INTO t (cols) SELECT * FROM unnest($1::int8[], ...) [ON CONFLICT ...]`).
//!
//! The order of what the transaction does is kept where it matters: a group takes
//! rows only while nothing else has touched its table since it opened (an `UPDATE` or
//! `DELETE` of that table, or another statement into it, closes it; the next row opens
//! a new group after that statement), and an upsert's group never holds two rows of
//! one key (PostgreSQL refuses to update a row twice in one statement). Rows move only
//! past statements on other tables, and no statement of the store reads one table to
//! write another.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_postgres::types::Type;

use super::super::sql::Value;

/// What a statement is, for gathering.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// `INSERT INTO table (columns) VALUES (?1, ..., ?k)` and a tail.
    Rows(Arc<RowsShape>),
    /// Anything else, and the table it changes (`None`: unknown, so every group
    /// closes before it).
    Other { table: Option<String> },
}

#[derive(Debug, PartialEq)]
pub struct RowsShape {
    pub table: String,
    /// The column each parameter (`?1`, `?2`...) goes to or is compared with: its type
    /// is the parameter's.
    pub columns: Vec<String>,
    /// What follows the values (`ON CONFLICT ...`), kept as written.
    pub tail: String,
    /// The positions of the parameters that name one row: an upsert's conflict key,
    /// an update's `WHERE` (two rows of one key never share a statement).
    pub key: Option<Vec<usize>>,
    /// `Some` for `UPDATE t SET col = ?N | col = COALESCE(?N, col), ... WHERE col = ?N
    /// AND ...`: the assignments (column, parameter, whether it keeps the old value
    /// when the parameter is NULL).
    pub sets: Option<Vec<(String, usize, bool)>>,
}

/// Reads a statement's shape.
pub fn shape(sql: &str) -> Shape {
    let sql = sql.trim();
    let word = |rest: &str| rest.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("").to_string();
    if let Some(rest) = sql.strip_prefix("UPDATE ") {
        let table = word(rest);
        return update_shape(&rest[table.len()..], &table)
            .map(|s| Shape::Rows(Arc::new(s)))
            .unwrap_or(Shape::Other { table: Some(table) });
    }
    if let Some(rest) = sql.strip_prefix("DELETE FROM ") {
        return Shape::Other { table: Some(word(rest)) };
    }
    let Some(rest) = sql.strip_prefix("INSERT INTO ") else { return Shape::Other { table: None } };
    let table = word(rest);
    rows_shape(&rest[table.len()..], &table)
        .map(|s| Shape::Rows(Arc::new(s)))
        .unwrap_or(Shape::Other { table: Some(table) })
}

fn rows_shape(rest: &str, table: &str) -> Option<RowsShape> {
    let rest = rest.trim_start().strip_prefix('(')?;
    let (columns, rest) = rest.split_once(')')?;
    let columns: Vec<String> = columns.split(',').map(|c| c.trim().to_string()).collect();
    let rest = rest.trim_start().strip_prefix("VALUES")?.trim_start().strip_prefix('(')?;
    let (marks, tail) = rest.split_once(')')?;
    let marks: Vec<&str> = marks.split(',').map(str::trim).collect();
    let in_order = marks.len() == columns.len() && marks.iter().enumerate().all(|(i, m)| *m == format!("?{}", i + 1));
    if !in_order {
        return None;
    }
    let tail = tail.trim().to_string();
    let key = match tail.strip_prefix("ON CONFLICT (") {
        Some(conflict) if tail.contains("DO UPDATE") => {
            let (names, _) = conflict.split_once(')')?;
            Some(names.split(',').map(|n| columns.iter().position(|c| c == n.trim())).collect::<Option<Vec<_>>>()?)
        }
        _ => None,
    };
    if !tail.is_empty() && !tail.starts_with("ON CONFLICT") {
        return None;
    }
    Some(RowsShape { table: table.to_string(), columns, tail, key, sets: None })
}

/// `?N` as the parameter's position (N - 1).
fn param(mark: &str) -> Option<usize> {
    mark.trim().strip_prefix('?')?.parse::<usize>().ok()?.checked_sub(1)
}

fn update_shape(rest: &str, table: &str) -> Option<RowsShape> {
    let rest = rest.trim_start().strip_prefix("SET ")?;
    let (sets, wheres) = rest.split_once(" WHERE ")?;
    let mut columns: Vec<Option<String>> = Vec::new();
    let mut tie = |n: usize, column: &str| -> Option<()> {
        if columns.len() <= n {
            columns.resize(n + 1, None);
        }
        match columns[n].replace(column.to_string()) {
            None => Some(()),
            Some(_) => None,
        }
    };
    let mut assignments = Vec::new();
    // Split at commas outside parentheses.
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in sets.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&sets[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&sets[start..]);
    for part in parts {
        let (column, value) = part.split_once('=')?;
        let column = column.trim();
        let value = value.trim();
        let keep = format!(", {column})");
        let (n, keeps) = match value.strip_prefix("COALESCE(").and_then(|v| v.strip_suffix(&keep)) {
            Some(mark) => (param(mark)?, true),
            None => (param(value)?, false),
        };
        tie(n, column)?;
        assignments.push((column.to_string(), n, keeps));
    }
    let mut key = Vec::new();
    for cond in wheres.split(" AND ") {
        let (column, mark) = cond.split_once('=')?;
        let n = param(mark)?;
        tie(n, column.trim())?;
        key.push(n);
    }
    let columns = columns.into_iter().collect::<Option<Vec<String>>>()?;
    Some(RowsShape { table: table.to_string(), columns, tail: String::new(), key: Some(key), sets: Some(assignments) })
}

/// The statement that writes many rows of `shape` at once, its parameters of `types`:
/// the arrays are unnested in the select list (a `ProjectSet`, which streams, where
/// `FROM unnest(...)` would first copy every row into a tuplestore).
pub fn gathered_sql(shape: &RowsShape, types: &[Type]) -> String {
    let rows: Vec<String> =
        types.iter().enumerate().map(|(i, t)| format!("unnest(${}::{}[]) AS p{}", i + 1, t.name(), i + 1)).collect();
    let rows = format!("SELECT {}", rows.join(", "));
    let t = &shape.table;
    if let Some(sets) = &shape.sets {
        let sets: Vec<String> = sets
            .iter()
            .map(|(c, n, keep)| match keep {
                true => format!("{c} = COALESCE(u.p{}, {t}.{c})", n + 1),
                false => format!("{c} = u.p{}", n + 1),
            })
            .collect();
        let key = shape.key.as_deref().unwrap_or_default();
        let wheres: Vec<String> = key.iter().map(|&n| format!("{t}.{} = u.p{}", shape.columns[n], n + 1)).collect();
        return format!("UPDATE {t} SET {} FROM ({rows}) AS u WHERE {}", sets.join(", "), wheres.join(" AND "));
    }
    format!("INSERT INTO {t} ({}) {rows} {}", shape.columns.join(", "), shape.tail).trim_end().to_string()
}

/// One thing to send: a statement as written, or the rows of one gathered `INSERT`.
#[derive(Debug)]
pub enum Item {
    One {
        sql: String,
        args: Vec<Value<'static>>,
    },
    /// `keys`: a hash of each row's key (two keys that hash alike only split a
    /// group, harmlessly).
    Rows {
        sql: String,
        shape: Arc<RowsShape>,
        rows: Vec<Vec<Value<'static>>>,
        keys: HashSet<u64>,
    },
}

/// The writes of a transaction not yet sent, gathered.
#[derive(Debug, Default)]
pub struct Gathered {
    pub items: Vec<Item>,
    /// The group still taking rows, per table.
    open: HashMap<String, usize>,
}

impl Gathered {
    pub fn push(&mut self, sql: &str, shape: &Shape, args: Vec<Value<'static>>) {
        match shape {
            Shape::Other { table: Some(table) } => {
                self.open.remove(table);
                self.items.push(Item::One { sql: sql.to_string(), args });
            }
            Shape::Other { table: None } => {
                self.open.clear();
                self.items.push(Item::One { sql: sql.to_string(), args });
            }
            Shape::Rows(rows_shape) => {
                let key = rows_shape.key.as_ref().map(|k| key_hash(k, &args));
                if let Some(&at) = self.open.get(&rows_shape.table) {
                    if let Item::Rows { sql: open_sql, rows, keys, .. } = &mut self.items[at] {
                        let fits = open_sql == sql && key.as_ref().is_none_or(|k| !keys.contains(k));
                        if fits {
                            keys.extend(key);
                            rows.push(args);
                            return;
                        }
                    }
                }
                self.open.insert(rows_shape.table.clone(), self.items.len());
                self.items.push(Item::Rows {
                    sql: sql.to_string(),
                    shape: rows_shape.clone(),
                    rows: vec![args],
                    keys: key.into_iter().collect(),
                });
            }
        }
    }

    pub fn take(&mut self) -> Vec<Item> {
        self.open.clear();
        std::mem::take(&mut self.items)
    }
}

/// A hash of the values at `positions`.
fn key_hash(positions: &[usize], args: &[Value<'_>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for &i in positions {
        match args.get(i) {
            Some(Value::Int(v)) => (1u8, v).hash(&mut h),
            Some(Value::Text(v)) => (2u8, v).hash(&mut h),
            Some(Value::Blob(v)) => (3u8, v).hash(&mut h),
            Some(Value::Real(v)) => (4u8, v.to_bits()).hash(&mut h),
            Some(Value::Null | Value::Unstorable(_)) | None => 0u8.hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(g: &mut Gathered, sql: &str, args: &[i64]) {
        g.push(sql, &shape(sql), args.iter().map(|a| Value::Int(*a)).collect());
    }

    fn layout(g: &Gathered) -> Vec<String> {
        g.items
            .iter()
            .map(|i| match i {
                Item::One { sql, .. } => sql.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
                Item::Rows { shape, rows, .. } => format!("{} x{}", shape.table, rows.len()),
            })
            .collect()
    }

    #[test]
    fn statements_are_read_for_their_table_columns_and_key() {
        let Shape::Rows(s) = shape("INSERT INTO tasks (job_id, idx, state) VALUES (?1, ?2, ?3) ON CONFLICT (job_id, idx) DO UPDATE SET state = excluded.state") else {
            panic!("rows")
        };
        assert_eq!((s.table.as_str(), s.columns.len(), s.key.clone()), ("tasks", 3, Some(vec![0, 1])));
        assert!(matches!(shape("INSERT INTO t (a, b) VALUES (?2, ?1)"), Shape::Other { table: Some(t) } if t == "t"));
        assert!(matches!(shape("INSERT INTO t (a, b) VALUES (?1, 0)"), Shape::Other { .. }));
        assert_eq!(shape("UPDATE jobs SET open = 0 WHERE id = ?1"), Shape::Other { table: Some("jobs".into()) });
        let Shape::Rows(u) =
            shape("UPDATE attempts SET ended_at_ms = ?3, started_at_ms = COALESCE(?4, started_at_ms) WHERE job_id = ?1 AND idx = ?2")
        else {
            panic!("an update of rows")
        };
        assert_eq!(u.columns, ["job_id", "idx", "ended_at_ms", "started_at_ms"]);
        assert_eq!(
            gathered_sql(&u, &[Type::INT8, Type::INT8, Type::INT8, Type::INT8]),
            "UPDATE attempts SET ended_at_ms = u.p3, started_at_ms = COALESCE(u.p4, attempts.started_at_ms) FROM (SELECT unnest($1::int8[]) AS p1, unnest($2::int8[]) AS p2, unnest($3::int8[]) AS p3, unnest($4::int8[]) AS p4) AS u WHERE attempts.job_id = u.p1 AND attempts.idx = u.p2"
        );
        assert_eq!(shape("DELETE FROM events WHERE id <= ?1"), Shape::Other { table: Some("events".into()) });
        let Shape::Rows(s) = shape("INSERT INTO events (id, kind) VALUES (?1, ?2)") else { panic!("rows") };
        assert_eq!(
            gathered_sql(&s, &[Type::INT8, Type::TEXT]),
            "INSERT INTO events (id, kind) SELECT unnest($1::int8[]) AS p1, unnest($2::text[]) AS p2"
        );
    }

    #[test]
    fn rows_gather_until_their_table_is_touched_or_a_key_repeats() {
        let ins = "INSERT INTO events (id) VALUES (?1)";
        let up = "INSERT INTO tasks (job_id, idx) VALUES (?1, ?2) ON CONFLICT (job_id, idx) DO UPDATE SET idx = excluded.idx";
        let mut g = Gathered::default();
        put(&mut g, ins, &[1]);
        put(&mut g, up, &[1, 0]);
        put(&mut g, ins, &[2]);
        put(&mut g, up, &[1, 1]);
        put(&mut g, "UPDATE jobs SET open = 0 WHERE id = ?1", &[1]);
        put(&mut g, ins, &[3]);
        // The same task again: a new group, after the first.
        put(&mut g, up, &[1, 0]);
        put(&mut g, "DELETE FROM events WHERE id < ?1", &[3]);
        put(&mut g, ins, &[4]);
        assert_eq!(
            layout(&g),
            ["events x3", "tasks x2", "UPDATE jobs SET", "tasks x1", "DELETE FROM events", "events x1"]
        );
    }
}
