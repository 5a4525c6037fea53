//! Concurrency and rate limits per kind and per key, enforced across every
//! node: `fleet limit set|list|remove` write the `fleet-limits` bucket (key:
//! the kind; value: [`Limit`] as JSON), which every node watches; the nodes
//! take permits in the `fleet-permits` bucket before a limited task starts
//! (`node::gate`). Writing the bucket needs the admin role; nodes only read it.
//!
//! The same from the `nats` CLI: `nats kv put fleet-limits sleep
//! '{"concurrency":3}'`, `nats kv get fleet-limits sleep`, `nats kv purge
//! fleet-limits sleep -f`.

mod spec;

use async_nats::jetstream::Context;
use bytes::Bytes;
use futures::TryStreamExt;

pub use spec::{
    check_kind, lease_ttl, names, rate_step, rate_ttl, renew_every, Limit, Rate, RateStep,
    MAX_LIMIT,
};

use crate::contract;
use crate::error::{Error, ErrorKind};

/// One kind's entry in `fleet-limits`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// The kind.
    pub kind: String,
    /// Its limit; `None` when the stored value is not one.
    pub limit: Option<Limit>,
    /// Why the stored value is not a limit (nodes ignore it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

async fn bucket(js: &Context) -> Result<async_nats::jetstream::kv::Store, Error> {
    js.get_key_value(contract::LIMITS_BUCKET)
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::NotSetUp,
                format!(
                    "no {} bucket (run `fleet setup` as admin)",
                    contract::LIMITS_BUCKET
                ),
                e,
            )
        })
}

fn failed(what: String, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Connection, what, err)
}

/// Sets the limit of `kind`, replacing any it had; running nodes follow
/// within a second.
///
/// # Errors
/// [`ErrorKind::Usage`] for a kind that cannot be limited or an empty or
/// out-of-range limit; [`ErrorKind::NotSetUp`] without the bucket;
/// [`ErrorKind::Connection`] when the write fails (a user without the
/// admin role is refused here).
pub async fn set(js: &Context, kind: &str, limit: &Limit) -> Result<(), Error> {
    check_kind(kind).map_err(|why| Error::new(ErrorKind::Usage, why))?;
    limit
        .check()
        .map_err(|why| Error::new(ErrorKind::Usage, why))?;
    let value = serde_json::to_vec(limit).expect("a limit serializes");
    bucket(js)
        .await?
        .put(kind, Bytes::from(value))
        .await
        .map_err(|e| failed(format!("writing the limit of {kind}"), e))?;
    Ok(())
}

/// Every kind's limit, by kind.
///
/// # Errors
/// [`ErrorKind::NotSetUp`] without the bucket; [`ErrorKind::Connection`]
/// when it cannot be read.
pub async fn list(js: &Context) -> Result<Vec<Listed>, Error> {
    let store = bucket(js).await?;
    let mut kinds: Vec<String> = store
        .keys()
        .await
        .map_err(|e| failed("listing limits".into(), e))?
        .try_collect()
        .await
        .map_err(|e| failed("listing limits".into(), e))?;
    kinds.sort();
    let mut listed = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let Some(value) = store
            .get(&kind)
            .await
            .map_err(|e| failed(format!("reading the limit of {kind}"), e))?
        else {
            continue;
        };
        let (limit, invalid) = match Limit::from_json(&value) {
            Ok(limit) => (Some(limit), None),
            Err(why) => (None, Some(why)),
        };
        listed.push(Listed {
            kind,
            limit,
            invalid,
        });
    }
    Ok(listed)
}

/// Removes the limit of `kind`; `false` when it had none.
///
/// # Errors
/// As [`set`].
pub async fn remove(js: &Context, kind: &str) -> Result<bool, Error> {
    check_kind(kind).map_err(|why| Error::new(ErrorKind::Usage, why))?;
    let store = bucket(js).await?;
    let had = store
        .get(kind)
        .await
        .map_err(|e| failed(format!("reading the limit of {kind}"), e))?
        .is_some();
    if had {
        store
            .purge(kind)
            .await
            .map_err(|e| failed(format!("removing the limit of {kind}"), e))?;
    }
    Ok(had)
}
