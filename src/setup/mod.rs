//! The streams and the groups' consumers: their configuration (pure, below),
//! making them ([`apply`], what `fleet setup` runs with admin rights), and
//! binding to a group's consumer ([`bind`], all a node needs).
//!
//! Nodes and submitters only bind: a role that may not create or edit
//! streams never needs to. [`ensure_streams`] and [`ensure_consumer`] keep
//! the single-machine convenience (`--create`): make what is missing.

mod apply;
mod config;
pub mod tenant;

pub use apply::{apply, bind, ensure_consumer, ensure_streams, Applied};
pub use config::{
    consumer_config, consumer_configs, group_filters, stream_configs, GroupSettings,
    StreamSettings, CANCEL_MAX_AGE, SCHEDULES_MAX_AGE,
};
