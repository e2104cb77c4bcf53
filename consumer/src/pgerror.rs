//! What a PostgreSQL error means for the loader, and how it is printed.
//!
//! Three kinds, by SQLSTATE:
//! * **unavailable** (retry after a pause): the connection is gone or never came (no
//!   SQLSTATE), class 08 connection exception, class 53 insufficient resources, 57P admin or
//!   crash shutdown, 40001 serialization failure, 40P01 deadlock;
//! * **row** (that row goes to the dead-letter table, the rest of the batch loads): class 22
//!   data exception (e.g. a NUL byte in text), class 23 integrity constraint violation (a
//!   CHECK, NOT NULL or UNIQUE constraint a user added to the table), 54000 program limit
//!   exceeded (e.g. a value too large for a user's index);
//! * **fatal** (the run stops and says why): everything else, e.g. 42P01 when the table was
//!   dropped, 42501 insufficient privilege.

use tokio_postgres::error::SqlState;

/// How the loader reacts to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Pause, reconnect, retry.
    Unavailable,
    /// The content of one row was refused.
    Row,
    /// Retrying cannot help.
    Fatal,
}

/// Classifies `e` (see the module documentation).
pub fn kind(e: &tokio_postgres::Error) -> Kind {
    if e.is_closed() {
        return Kind::Unavailable;
    }
    match e.code() {
        None => Kind::Unavailable, // I/O, connect, protocol errors: no SQLSTATE
        Some(code) => kind_of_sqlstate(code),
    }
}

/// Classifies a SQLSTATE.
pub fn kind_of_sqlstate(code: &SqlState) -> Kind {
    let c = code.code();
    if c.starts_with("08")
        || c.starts_with("53")
        || c.starts_with("57P")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        Kind::Unavailable
    } else if c.starts_with("22")
        || c.starts_with("23")
        || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
    {
        Kind::Row
    } else {
        Kind::Fatal
    }
}

/// One line naming everything PostgreSQL said: `SQLSTATE: message (detail: ...; hint: ...;
/// context: ...)`, or the client-side error and its cause when there is no server error.
/// Never a bare "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
    };
    let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    let extras = [
        ("detail", db.detail()),
        ("hint", db.hint()),
        ("context", db.where_()),
        ("constraint", db.constraint()),
    ];
    let mut first = true;
    for (label, value) in extras {
        if let Some(v) = value {
            s.push_str(if first { " (" } else { "; " });
            first = false;
            s.push_str(label);
            s.push_str(": ");
            s.push_str(v);
        }
    }
    if !first {
        s.push(')');
    }
    s
}

/// The 1-based row number PostgreSQL names in a COPY error's context
/// (`COPY transactions, line 17, column description`), if it names one. Only a hint: the
/// context text follows the server's language, so callers must not depend on it.
pub fn copy_line(e: &tokio_postgres::Error) -> Option<usize> {
    let context = e.as_db_error()?.where_()?;
    let rest = &context[context.find(", line ")? + ", line ".len()..];
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_as_the_issue_lists_them() {
        for (code, want) in [
            ("08006", Kind::Unavailable),
            ("08001", Kind::Unavailable),
            ("53100", Kind::Unavailable),
            ("53300", Kind::Unavailable),
            ("57P01", Kind::Unavailable),
            ("57P03", Kind::Unavailable),
            ("40001", Kind::Unavailable),
            ("40P01", Kind::Unavailable),
            ("22021", Kind::Row),
            ("22P05", Kind::Row),
            ("23514", Kind::Row),
            ("23502", Kind::Row),
            ("23505", Kind::Row),
            ("54000", Kind::Row),
            ("42P01", Kind::Fatal),
            ("42501", Kind::Fatal),
            ("57014", Kind::Fatal),
            ("XX000", Kind::Fatal),
        ] {
            assert_eq!(kind_of_sqlstate(&SqlState::from_code(code)), want, "{code}");
        }
    }
}
