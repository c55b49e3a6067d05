//! PostgreSQL's failures as the store's: refused, or waited out; in a few words.

use super::*;

/// What the writer does with a failure: a value the database will not take
/// (integrity or data errors) is refused; the rest may pass (the server is down,
/// restarting, full, or the session was lost) and is waited out.
pub(super) fn sort(e: &tokio_postgres::Error) -> StoreError {
    let said = describe(e);
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code == "CR002" {
            return StoreError::Fenced(said);
        }
        return match &code[..2] {
            "22" | "23" => StoreError::Refused(said),
            "XX" => StoreError::Corrupt(said),
            _ => StoreError::Unavailable(said),
        };
    }
    if said.starts_with("error serializing parameter") {
        return StoreError::Refused(said);
    }
    StoreError::Unavailable(said)
}

/// A failure in a few words: the server's message, or the client's with its cause.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut said = format!("PostgreSQL: {}", db.message());
        if let Some(detail) = db.detail() {
            said.push_str(&format!(" ({detail})"));
        }
        return said;
    }
    let cause = corral_proto::tls::root_cause(e);
    let top = e.to_string();
    match cause == top || cause.is_empty() {
        true => format!("PostgreSQL: {top}"),
        false => format!("PostgreSQL: {top}: {cause}"),
    }
}

/// Why a connection could not be made, in one line that says what to do.
pub(super) fn connect_error(target: &Target, e: &tokio_postgres::Error) -> crate::error::Error {
    let server = target.server();
    let user = target.user();
    if let Some(db) = e.as_db_error() {
        let why = match db.code().code() {
            "28P01" => format!(
                "PostgreSQL at {server} refused the password of user {user:?} (it comes from --store-password-file, PGPASSWORD or ~/.pgpass)"
            ),
            "28000" => format!("PostgreSQL at {server} refused user {user:?}: {}", db.message()),
            "3D000" => format!(
                "database {:?} does not exist on {server}: create it (createdb -O {user} {}) or name another",
                target.database(),
                target.database()
            ),
            "57P03" => format!("PostgreSQL at {server} is starting or shutting down: {}", db.message()),
            _ => format!("PostgreSQL at {server}: {}", db.message()),
        };
        return StoreError::Unavailable(why).into();
    }
    let cause = corral_proto::tls::root_cause(e);
    let why = if cause.contains("password missing") {
        format!(
            "PostgreSQL at {server} asks for a password for user {user:?}: give it in --store-password-file, PGPASSWORD or ~/.pgpass"
        )
    } else if cause.to_lowercase().contains("refused") {
        format!("cannot reach PostgreSQL at {server}: connection refused (is it running, and is the address right?)")
    } else if cause.contains("No such file") {
        format!(
            "cannot reach PostgreSQL at {server}: no server listens there (is it running, and is the address right?)"
        )
    } else {
        format!("cannot reach PostgreSQL at {server}: {cause}")
    };
    StoreError::Unavailable(why).into()
}
