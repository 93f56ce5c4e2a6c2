//! Benchmarks of the grid: real node processes on loopback, a load generator with HDR
//! latency histograms, and CPU accounting from `/proc`.
//!
//! - [`nodes`]: start and stop `grid-node` release processes, read their CPU time.
//! - [`load`]: fixed-duration closed-loop load with warm-up, reporting ops/s and
//!   percentiles.

pub mod load;
pub mod nodes;
