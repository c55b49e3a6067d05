//! The store's own error: what the rest of the coordinator may know of a failure,
//! whichever backend had it. A backend turns its driver's errors into one of these
//! (SQLite's below); nothing outside `store` names a driver's type.

/// Why the store did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A value it cannot hold, or a second row where a key is unique: the change
    /// never goes in, however often it is tried (its batch is undone).
    #[error("{0}")]
    Refused(String),
    /// The store cannot work now (a full disk, a read-only or damaged file, a lock,
    /// an unreachable database): it may pass, and is waited out.
    #[error("{0}")]
    Unavailable(String),
    /// A row it holds cannot be read back.
    #[error("{0}")]
    Corrupt(String),
    /// Another coordinator took the lease (PostgreSQL): this one writes nothing
    /// more, however often it tries, and steps down.
    #[error("{0}")]
    Fenced(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let said = e.to_string();
        match &e {
            rusqlite::Error::ToSqlConversionFailure(_) | rusqlite::Error::IntegralValueOutOfRange(..) => {
                StoreError::Refused(said)
            }
            rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, ConstraintViolation | TooBig | TypeMismatch) => {
                StoreError::Refused(said)
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::InvalidColumnName(_) => StoreError::Corrupt(said),
            rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, NotADatabase | DatabaseCorrupt) => {
                StoreError::Corrupt(said)
            }
            _ => StoreError::Unavailable(said),
        }
    }
}

impl From<rusqlite::Error> for crate::error::Error {
    fn from(e: rusqlite::Error) -> Self {
        crate::error::Error::Store(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_are_sorted_by_what_the_writer_does_with_them() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)").unwrap();
        let too_big = conn.execute("INSERT INTO t (v) VALUES (?1)", [u64::MAX]).unwrap_err();
        assert!(matches!(StoreError::from(too_big), StoreError::Refused(_)));
        conn.execute("INSERT INTO t (id, v) VALUES (1, 1)", []).unwrap();
        let twice = conn.execute("INSERT INTO t (id, v) VALUES (1, 2)", []).unwrap_err();
        assert!(matches!(StoreError::from(twice), StoreError::Refused(_)));
        let bad_read = conn.query_row("SELECT 'x'", [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert!(matches!(StoreError::from(bad_read), StoreError::Corrupt(_)));
        let missing = conn.execute("INSERT INTO nowhere VALUES (1)", []).unwrap_err();
        assert!(matches!(StoreError::from(missing), StoreError::Unavailable(_)));
    }
}
