//! The id of the request being answered: in the log lines, the error answers and the query ids
//! of its ClickHouse queries.

use std::sync::atomic::{AtomicU64, Ordering};

/// Ids when the system's random source fails: unique in the process, at least.
static FALLBACK: AtomicU64 = AtomicU64::new(0);

tokio::task_local! {
    /// The id of the request being answered: in the log lines, the error answers and the
    /// query ids of its ClickHouse queries.
    pub static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".into())
}

/// A new request id: 16 hex digits.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = FALLBACK.fetch_add(1, Ordering::Relaxed).to_le_bytes();
    }
    format!("{:016x}", u64::from_be_bytes(bytes))
}
