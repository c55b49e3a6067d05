//! The one place the store's SQL meets a database: both backends run the same
//! statements (written with `?N` placeholders and portable SQL: `ON CONFLICT`
//! upserts, no engine's own functions) through [`Sql`], and read rows as
//! [`Row`]s of [`Value`]s. What differs between SQLite and PostgreSQL (the schema's
//! column types, how an id column is named, how the newest event is found) is
//! asked of the [`Dialect`], in a handful of places.

use std::borrow::Cow;

use crate::error::Result;

use super::StoreError;

/// A value bound to a statement (borrowed from what is written: SQLite binds it
/// in place) or read from a row (owned).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
    /// A value no column can hold (an unsigned number past `i64::MAX`): the
    /// statement it is bound to is refused.
    Unstorable(String),
}

impl Value<'_> {
    /// The value, owning its text or bytes (to be sent later).
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Int(v) => Value::Int(v),
            Value::Real(v) => Value::Real(v),
            Value::Text(s) => Value::Text(Cow::Owned(s.into_owned())),
            Value::Blob(b) => Value::Blob(Cow::Owned(b.into_owned())),
            Value::Unstorable(why) => Value::Unstorable(why),
        }
    }
}

/// Which engine runs the SQL, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection or a transaction that runs the store's statements.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs a statement that returns no rows. A backend may send it later (in one
    /// round trip with others), but before the next query and the commit, and any
    /// failure is reported by then.
    fn execute(&mut self, sql: &str, args: Vec<Value<'_>>) -> Result<()>;
    /// Runs a query, calling `each` for every row in order.
    fn query_each(&mut self, sql: &str, args: &[Value<'_>], each: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()>;
}

/// Query helpers for any `Sql`, trait object included.
pub trait SqlExt {
    /// Every row of a query, each made into a `T`.
    fn rows<'a, T>(
        &mut self,
        sql: &str,
        args: impl AsRef<[Value<'a>]>,
        f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>>;
    /// The first row of a query, if any, made into a `T`.
    fn first<'a, T>(
        &mut self,
        sql: &str,
        args: impl AsRef<[Value<'a>]>,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>>;
}

impl<S: Sql + ?Sized> SqlExt for S {
    fn rows<'a, T>(
        &mut self,
        sql: &str,
        args: impl AsRef<[Value<'a>]>,
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query_each(sql, args.as_ref(), &mut |row| {
            out.push(f(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn first<'a, T>(
        &mut self,
        sql: &str,
        args: impl AsRef<[Value<'a>]>,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.query_each(sql, args.as_ref(), &mut |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// A transaction: its statements take effect together at [`Tx::commit`], or not
/// at all when it is dropped.
pub trait Tx: Sql {
    fn commit(self: Box<Self>) -> Result<()>;
    /// Sends the commit and returns before it is answered, where the engine
    /// allows it (PostgreSQL: the answer is read by the store's `settle`); else
    /// commits at once.
    fn commit_later(self: Box<Self>) -> Result<()> {
        self.commit()
    }
    /// The transaction as a plain `Sql`, for helpers that take one.
    fn sql(&mut self) -> &mut dyn Sql;
}

/// One row of a query.
pub struct Row {
    pub(super) values: Vec<Value<'static>>,
}

impl Row {
    /// Column `i`, as a `T`; a value of the wrong type or range is a corrupt row.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let value = self.values.get(i).unwrap_or(&Value::Null);
        T::from_value(value).map_err(|why| super::corrupt(format!("column {i}: {why}")))
    }

    /// The row of a query that selected `columns`, read by their names.
    pub fn named<'a>(&'a self, columns: &'a [&'a str]) -> Named<'a> {
        Named { row: self, columns }
    }
}

/// The values of `columns`, each given with its name: checked against the list in
/// tests and debug builds, so that a column cannot take another's value.
pub fn in_order<'a>(columns: &[&str], named: Vec<(&str, Value<'a>)>) -> Vec<Value<'a>> {
    debug_assert_eq!(columns, named.iter().map(|(name, _)| *name).collect::<Vec<_>>().as_slice());
    named.into_iter().map(|(_, value)| value).collect()
}

/// A row read by column name, so that a column added to a query cannot shift
/// the others.
pub struct Named<'a> {
    row: &'a Row,
    columns: &'a [&'a str],
}

impl Named<'_> {
    /// Column `name`, as a `T`.
    pub fn get<T: FromValue>(&self, name: &str) -> Result<T> {
        let i = self.columns.iter().position(|c| *c == name);
        let value = i.and_then(|i| self.row.values.get(i)).ok_or_else(|| {
            super::corrupt(format!("column {name} was not read (it is not among the query's columns)"))
        })?;
        T::from_value(value).map_err(|why| super::corrupt(format!("column {name}: {why}")))
    }
}

/// A Rust value that can be bound to a statement.
pub trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

/// A Rust value that a column can be read as.
pub trait FromValue: Sized {
    fn from_value(value: &Value<'_>) -> std::result::Result<Self, String>;
}

/// The arguments of a statement: `args![a, b]` binds `a` to `?1` and `b` to `?2`.
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        vec![$($crate::store::sql::ToValue::to_value(&$x)),*] as Vec<$crate::store::sql::Value<'_>>
    };
}
pub(crate) use args;

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }
    )*};
}
signed!(i64, i32, u32, u16, u8);

impl ToValue for u64 {
    fn to_value(&self) -> Value<'_> {
        match i64::try_from(*self) {
            Ok(v) => Value::Int(v),
            Err(_) => Value::Unstorable(format!("{self} is out of range for an integer column")),
        }
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value<'_> {
        (*self as u64).to_value().into_owned()
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(*self as i64)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self.as_str()))
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self.as_slice()))
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value<'_>) -> std::result::Result<Self, String> {
                match value {
                    Value::Int(v) => <$t>::try_from(*v).map_err(|_| format!("{v} does not fit a {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {}", kind(other))),
                }
            }
        }
    )*};
}
integer!(i64, i32, u64, u32, u16, u8, usize);

impl FromValue for bool {
    fn from_value(value: &Value<'_>) -> std::result::Result<Self, String> {
        i64::from_value(value).map(|v| v != 0)
    }
}

impl FromValue for String {
    fn from_value(value: &Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.to_string()),
            other => Err(format!("expected text, found {}", kind(other))),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value<'_>) -> std::result::Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b.to_vec()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {}", kind(other))),
        }
    }
}

fn kind(value: &Value<'_>) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a real number",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
        Value::Unstorable(_) => "an unstorable value",
    }
}

/// The first unstorable argument, as the refusal of its statement.
pub fn refuse_unstorable(args: &[Value<'_>]) -> Result<()> {
    match args.iter().find_map(|a| if let Value::Unstorable(why) = a { Some(why) } else { None }) {
        Some(why) => Err(StoreError::Refused(why.clone()).into()),
        None => Ok(()),
    }
}

/// `INSERT INTO table (columns) VALUES (?1..) ON CONFLICT (key) DO UPDATE SET`
/// every other column, and `cleared` to NULL: a row written whole, replacing the
/// one with its key, in SQL both engines run.
pub fn upsert(table: &str, columns: &[&str], key: &[&str], cleared: &[&str]) -> String {
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let mut set: Vec<String> =
        columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{c} = excluded.{c}")).collect();
    set.extend(cleared.iter().map(|c| format!("{c} = NULL")));
    let action = match set.is_empty() {
        true => "NOTHING".to_string(),
        false => format!("UPDATE SET {}", set.join(", ")),
    };
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
        columns.join(", "),
        marks.join(", "),
        key.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_both_ways_and_refuse_what_does_not_fit() {
        assert_eq!(
            u64::MAX.to_value(),
            Value::Unstorable(format!("{} is out of range for an integer column", u64::MAX))
        );
        assert!(refuse_unstorable(&args![1u32, u64::MAX]).is_err());
        assert!(refuse_unstorable(&args![1u32, "x", None::<u64>, true]).is_ok());
        assert_eq!(u32::from_value(&Value::Int(7)), Ok(7));
        assert!(u32::from_value(&Value::Int(-1)).is_err());
        assert_eq!(Option::<String>::from_value(&Value::Null), Ok(None));
        assert!(String::from_value(&Value::Int(1)).is_err());
        assert_eq!(bool::from_value(&Value::Int(1)), Ok(true));
    }

    #[test]
    fn an_upsert_replaces_every_column_but_the_key() {
        assert_eq!(
            upsert("t", &["a", "b", "c"], &["a"], &["d"]),
            "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3) ON CONFLICT (a) DO UPDATE SET b = excluded.b, c = excluded.c, d = NULL"
        );
    }
}
