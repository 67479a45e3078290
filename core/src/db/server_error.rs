//! Reading ClickHouse's exception texts: the error code, and whether the server that answered
//! failed to reach another server of its cluster.

/// The error code in a ClickHouse exception's text: `Code: 53, e.displayText() = DB::Exception:
/// …` (18.16), `Code: 53. DB::Exception: …` (current), or just `Code: 53` (the crate's text
/// when only the `X-ClickHouse-Exception-Code` header came back).
pub fn server_code(text: &str) -> Option<u32> {
    let after = &text[text.find("Code:")? + "Code:".len()..];
    let after = after.trim_start();
    let digits = after
        .find(|c: char| !c.is_ascii_digit())
        .map_or(after, |end| &after[..end]);
    digits.parse().ok()
}

/// Codes a server answers when it could not reach another server a `Distributed` query needs.
const PEER_UNREACHABLE_CODES: &[u32] = &[
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR ("Connection refused (host:port)")
    279, // ALL_CONNECTION_TRIES_FAILED (every replica of a shard)
];

/// Whether the server answered that another server of the cluster could not be reached: with
/// `skip_unavailable_shards` off (the default), a read through a `Distributed` table fails
/// when no replica of one shard answers, rather than count without it. Not a failure to
/// reach the answering server itself (that is a network error on Glimpse's side).
pub fn is_peer_unreachable(error: &clickhouse::error::Error) -> bool {
    match error {
        clickhouse::error::Error::BadResponse(text) => {
            server_code(text).is_some_and(|code| PEER_UNREACHABLE_CODES.contains(&code))
                || text.contains("while receiving packet from")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    #[test]
    fn the_code_is_read_from_old_and_current_server_texts() {
        // ClickHouse 18.16.
        assert_eq!(
            server_code(
                "Code: 16, e.displayText() = DB::Exception: No such column scroll_depth in table \
                 glimpse.events, e.what() = DB::Exception"
            ),
            Some(16)
        );
        // Current ClickHouse.
        assert_eq!(
            server_code(
                "Code: 53. DB::Exception: Type mismatch in IN or VALUES section. Expected: \
                 UInt8. Got: String. (TYPE_MISMATCH) (version 26.1.1.1 (official build))"
            ),
            Some(53)
        );
        // Only the header.
        assert_eq!(server_code("Code: 62"), Some(62));
        assert_eq!(server_code("500 Internal Server Error"), None);
        assert_eq!(server_code("Code: x"), None);
        assert_eq!(server_code(""), None);
    }

    #[test]
    fn a_shard_out_of_reach_is_told_apart_from_other_failures() {
        for text in [
            // 18.16's answer in tests/cluster_outages.rs, both replicas of a shard down.
            "Code: 279, e.displayText() = DB::NetException: All connection tries failed. Log: \n\nCode: 210, e.displayText() = DB::NetException: Connection refused (127.0.0.1:32803), e.what() = DB::NetException\n",
            "Code: 210, e.displayText() = DB::NetException: Connection refused (127.0.0.1:45979), e.what() = DB::NetException",
            "Code: 279. DB::Exception: All connection tries failed. (ALL_CONNECTION_TRIES_FAILED)",
            "Code: 32, e.displayText() = DB::Exception: Attempt to read after eof: while receiving packet from 127.0.0.1:36015",
        ] {
            assert!(is_peer_unreachable(&Error::BadResponse(text.into())), "{text}");
        }
        for error in [
            Error::BadResponse("Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR)".into()),
            Error::BadResponse("Code: 159. DB::Exception: Timeout exceeded.".into()),
            Error::BadResponse("Code: 242. DB::Exception: Table is in readonly mode.".into()),
            Error::Network("connection refused".into()),
            Error::TimedOut,
        ] {
            assert!(!is_peer_unreachable(&error), "{error}");
        }
    }
}
