//! Pull requests on one inbox of the node's own, with the credit bookkeeping
//! of [`super::credits`]: the node asks for as many tasks as it has free
//! slots, and the server delivers them on the inbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;
use tracing::debug;

use super::credits::{classify, Credits, Inbox};
use crate::contract::{api, header};
use crate::edge::PullFields;
use crate::error::{Error, ErrorKind, ResultExt};

/// How long a pull request waits on the server for tasks. Short, so that a
/// node that stops hands back its unused requests quickly.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Pull requests for one consumer, and what arrives for them.
pub(super) struct Puller {
    client: Client,
    js: Context,
    next_subject: String,
    /// The priority group and overflow threshold the requests carry.
    fields: PullFields,
    inbox: String,
    sub: Subscriber,
    pub(super) credits: Credits,
    /// Whether the group is paused ([`super::paused`]): requests are short then.
    pub(super) paused: Arc<AtomicBool>,
}

impl Puller {
    pub(super) async fn new(
        client: Client,
        js: Context,
        next_subject: String,
        fields: PullFields,
        slots: usize,
    ) -> Result<Self, Error> {
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(inbox.clone())
            .await
            .or_fail(ErrorKind::Connection, || {
                "subscribing to the pull inbox".into()
            })?;
        Ok(Puller {
            client,
            js,
            next_subject,
            fields,
            inbox,
            sub,
            credits: Credits::new(slots, PULL_EXPIRES, Instant::now()),
            paused: Arc::default(),
        })
    }

    /// Asks for tasks when `free` slots make a request worth sending.
    pub(super) async fn ask(&mut self, free: usize) -> Result<(), async_nats::PublishError> {
        let Some(batch) = self.credits.to_request(free) else {
            return Ok(());
        };
        let expires = if self.paused.load(Ordering::Relaxed) {
            super::paused::PAUSED_PULL_EXPIRES
        } else {
            PULL_EXPIRES
        };
        let request = api::PullRequest {
            batch,
            expires,
            group: self.fields.group.as_deref(),
            min_pending: self.fields.min_pending,
        };
        let body = serde_json::to_vec(&request).expect("a pull request serializes");
        self.client
            .publish_with_reply(
                self.next_subject.clone(),
                self.inbox.clone(),
                Bytes::from(body),
            )
            .await?;
        debug!(batch, "asked for tasks");
        self.credits.asked(batch, Instant::now());
        Ok(())
    }

    /// The next message on the inbox; `None` when the connection is closed
    /// for good.
    pub(super) async fn next(&mut self) -> Option<Message> {
        self.sub.next().await
    }

    /// Accounts for one message on the inbox: a task (returned) or a status
    /// about a request.
    pub(super) fn take(&mut self, msg: Message) -> Option<jetstream::Message> {
        let pending = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(header::PENDING_MESSAGES))
            .map(|v| v.as_str());
        let what = classify(msg.status, pending);
        if let Inbox::Ended(None) = what {
            debug!(status = ?msg.status, description = ?msg.description, "pull request refused");
        }
        self.credits.on(what, Instant::now());
        (what == Inbox::Task).then(|| jetstream::Message {
            message: msg,
            context: self.js.clone(),
        })
    }
}
