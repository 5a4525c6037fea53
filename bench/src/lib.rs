//! `bin/bench`: fleet measured against a hand-written task loop (the
//! `ceiling` binary: the smallest async-nats loop doing the same work) and
//! against peers (the same loop in Go on nats.go, and apalis-nats), all in
//! the same run, in interleaved rounds, on servers of the test kit, so the
//! ratios hold on a noisy machine.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the counts of a full and a quick run |
//! | [`meta`] | when, at which commit and on which server version a run was made |
//! | [`measure`] | processes and what they cost: CPU seconds, peak RSS |
//! | [`scenarios`] | one measured run each: the loop, the peers, fleet (one server or a cluster), idle node, `nats bench` |
//! | [`rows`] | the table's rows (medians of rounds) with ratios and targets; [`ROWS`] |
//! | [`report`] | the table as text, Markdown and JSON |

pub mod config;
pub mod measure;
pub mod meta;
pub mod report;
pub mod rows;
pub mod scenarios;

pub use rows::ROWS;
