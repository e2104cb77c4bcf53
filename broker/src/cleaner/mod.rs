//! Log compaction (`cleanup.policy=compact`), sans-io: [`plan`] picks the part of a log to
//! clean, [`filter`] builds the key map and judges each batch, [`records`] and [`codec`]
//! read and rewrite batches. The segment store does the I/O and the crash-safe swap
//! (`storage/segments/compact.rs`); `crate::compaction` runs the passes.

pub mod codec;
pub mod filter;
pub mod offset_map;
pub mod plan;
pub mod records;

pub use filter::{Filter, MapBuilder, Settings, Stats, Verdict};
pub use offset_map::OffsetMap;
pub use plan::{plan, Policy, View};
