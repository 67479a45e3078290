//! From a beacon body to event rows: parsing, then the pure pipeline, one module per concern:
//! `client_ip` (who the client is), `optout` (DNT, GPC, cookie), `sites` (site rules),
//! `useragent` and `bots`, `geo` (GeoIP), `ip_prefix` (truncation), `referrer` (sources,
//! campaigns, spam), `pseudonym` (daily salts, visitor ids), `sessions` (visits). `protocols`
//! maps other trackers' requests (Umami, Matomo, the pixel) into the same beacon.

pub mod beacon;
pub mod bots;
pub mod drop_reason;
pub mod geo;
pub mod geo_reload;
pub mod optout;
pub mod pipeline;
pub mod protocols;
pub mod pseudonym;
pub mod referrer;
pub mod salt;
pub mod sessions;
pub mod shared_salts;
pub mod useragent;

pub use beacon::{Beacon, BeaconError, BeaconLimits};
pub use pipeline::{process, DropReason, RequestFacts};
