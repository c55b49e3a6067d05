//! SQLite under [`Sql`]: a connection runs statements from its cache of prepared
//! ones; a transaction is rusqlite's.

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::sql::{refuse_unstorable, Dialect, Row, Sql, Tx, Value};
use crate::error::Result;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            Value::Unstorable(why) => return Err(rusqlite::Error::ToSqlConversionFailure(why.clone().into())),
        }))
    }
}

fn value(v: ValueRef<'_>) -> Value<'static> {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned().into()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec().into()),
    }
}

impl Sql for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: Vec<Value<'_>>) -> Result<()> {
        run(self, sql, &args)
    }

    fn query_each(&mut self, sql: &str, args: &[Value<'_>], each: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        query(self, sql, args, each)
    }
}

fn run(conn: &rusqlite::Connection, sql: &str, args: &[Value<'_>]) -> Result<()> {
    refuse_unstorable(args)?;
    conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(args))?;
    Ok(())
}

fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Value<'_>],
    each: &mut dyn FnMut(&Row) -> Result<()>,
) -> Result<()> {
    refuse_unstorable(args)?;
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    while let Some(r) = rows.next()? {
        let values = (0..columns).map(|i| r.get_ref(i).map(value)).collect::<rusqlite::Result<_>>()?;
        each(&Row { values })?;
    }
    Ok(())
}

/// A SQLite transaction (rolled back if dropped uncommitted).
pub struct SqliteTx<'a>(pub rusqlite::Transaction<'a>);

impl Sql for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: Vec<Value<'_>>) -> Result<()> {
        run(&self.0, sql, &args)
    }

    fn query_each(&mut self, sql: &str, args: &[Value<'_>], each: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        query(&self.0, sql, args, each)
    }
}

impl Tx for SqliteTx<'_> {
    fn commit(self: Box<Self>) -> Result<()> {
        Ok(self.0.commit()?)
    }

    fn sql(&mut self) -> &mut dyn Sql {
        self
    }
}
