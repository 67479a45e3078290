//! From a beacon body to event rows: parsing, then the pure pipeline.

pub mod beacon;
pub mod pipeline;
pub mod sites;

pub use beacon::{Beacon, BeaconError, BeaconLimits};
pub use pipeline::{process, DropReason, RequestFacts};
pub use sites::Sites;
