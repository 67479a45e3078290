//! HTTP plumbing both servers share: the accept loop with its connection limits, per-address
//! rate limits, who the client is behind trusted proxies, and IP prefixes.

pub mod client_ip;
pub mod rate_limit;
pub mod response;
pub mod server;
