//! Crash injection for tests: `FINSTREAM_FAILPOINT=<name>` makes the process abort (as
//! abruptly as kill -9: nothing more is written or flushed) when it reaches that point.
//! Points: `txn-after-prepare` (a transaction's outcome is durable, no marker written yet).

/// Aborts the process if `FINSTREAM_FAILPOINT` names `point`.
pub(crate) fn hit(point: &str) {
    if std::env::var("FINSTREAM_FAILPOINT").is_ok_and(|v| v == point) {
        tracing::error!(point, "failpoint reached: aborting the process");
        std::process::abort();
    }
}
