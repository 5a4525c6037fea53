//! The node's side of a task's controls ([`crate::control`]): a task whose
//! deadline passed is answered `408 expired` without running, and a task
//! holding a unique key frees it once it has ended for good.

use bytes::Bytes;
use tracing::{debug, warn};

use super::commit::{self, Ctx};
use super::decide::{self, AckReply};
use crate::error::TaskError;
use crate::unique::{self, Place, Released};

/// Keeps the `408 expired` result of a task that was not started in time;
/// returns how to end the delivery.
pub(super) async fn expire(ctx: &Ctx<'_>, err: &TaskError) -> AckReply {
    let written = commit::result(ctx, Bytes::new(), Some(err)).await;
    let ack = decide::after_expiry(&written);
    if ack == AckReply::Ack {
        debug!(task = %ctx.envelope.id, kind = ctx.kind, "expired before it started");
        ctx.metrics.expired();
    } else {
        warn!(task = %ctx.envelope.id, ?written, "could not keep the expired result; the task comes back");
    }
    ack
}

/// Frees the task's unique key, if it holds one and still holds it: in the
/// fleet's bucket, or for a tenant's task in the stream of the tenant its
/// subject is under (never one a header names). A site's task run from
/// the centre leaves its key to expire (after its TTL): the key is in the
/// site's bucket, out of reach of a plain publish.
pub(super) async fn release_key(ctx: &Ctx<'_>) {
    let Some(held) = &ctx.envelope.control.unique else {
        return;
    };
    if ctx.shared.config.edge.domain.is_some() {
        return;
    }
    let id = &ctx.envelope.id;
    let place = Place::of_task(ctx.envelope.tenant.as_deref());
    let js = &ctx.shared.js;
    match unique::release(js, &place, ctx.kind, &held.key, id, held.hold_for).await {
        Ok(Released::Freed) => debug!(task = %id, key = %held.key, "unique key freed"),
        Ok(Released::HeldFor(d)) => {
            debug!(task = %id, key = %held.key, for_ = ?d, "unique key kept for a while")
        }
        Ok(Released::NotOurs) => {
            debug!(task = %id, key = %held.key, "unique key not held by this task")
        }
        Err(err) => {
            warn!(task = %id, key = %held.key, %err, "could not free the unique key; it frees itself after its TTL")
        }
    }
}
