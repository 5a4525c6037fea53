//! `bin/bench`: fleet measured against a hand-written ceiling (the `ceiling`
//! binary: the smallest async-nats task loop doing the same work) in the
//! same run, on servers of the test kit, so the ratios hold on a noisy
//! machine.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the counts of a full and a quick run |
//! | [`measure`] | processes and what they cost: CPU seconds, peak RSS |
//! | [`scenarios`] | one measured run each: ceiling, fleet, idle node, `nats bench` |
//! | [`rows`] | the table's rows from the runs, with ratios and targets; [`ROWS`] |
//! | [`report`] | the table as text, Markdown and JSON |

pub mod config;
pub mod measure;
pub mod report;
pub mod rows;
pub mod scenarios;

pub use rows::ROWS;
