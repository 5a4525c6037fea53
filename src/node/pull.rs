//! Pull requests to the group's band consumers, on one inbox subscription
//! of the node's own (`<inbox>.high`, `<inbox>.normal`, `<inbox>.low`),
//! with the credit bookkeeping of [`super::credits`] per band and the
//! sharing of slots of [`super::bands`]: the node asks for as many tasks as
//! it has free slots, shared by the bands that have work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;
use tracing::debug;

use super::bands::{allot, BandView};
use super::credits::{classify, Credits, Inbox};
use crate::contract::{api, header};
use crate::edge::PullFields;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::priority::{Priority, Weights, BANDS};

/// How long a pull request waits on the server for tasks. Short, so that a
/// node that stops hands back its unused requests quickly.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// How long a request waits while another band has work: a request the
/// node made on a band that turned out to have none holds slots only this
/// long before they go to the band that has.
pub(crate) const SHARED_PULL_EXPIRES: Duration = Duration::from_millis(300);

/// One band's consumer and what the node knows of it.
struct Band {
    next_subject: String,
    inbox: String,
    credits: Credits,
    busy: bool,
}

/// Pull requests for one group's band consumers, and what arrives for them.
pub(super) struct Puller {
    client: Client,
    js: Context,
    sub: Subscriber,
    /// The priority group and overflow threshold the requests carry.
    fields: PullFields,
    bands: [Band; 3],
    capacity: usize,
    weights: Weights,
    turn: usize,
    /// The band that delivered the last task: an idle node's free slots
    /// wait on it.
    last: usize,
    /// Whether the group is paused ([`super::paused`]): requests are short then.
    pub(super) paused: Arc<AtomicBool>,
}

impl Puller {
    /// Pulls from `group`'s band consumers of `stream` (through the API of
    /// JetStream `domain`, if any) for a node of `slots` slots shared by
    /// `weights`; each request carries `fields`.
    pub(super) async fn new(
        client: Client,
        js: Context,
        (domain, stream, group): (Option<&str>, &str, &str),
        fields: PullFields,
        slots: usize,
        weights: Weights,
    ) -> Result<Self, Error> {
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(format!("{inbox}.*"))
            .await
            .or_fail(ErrorKind::Connection, || {
                "subscribing to the pull inbox".into()
            })?;
        let now = Instant::now();
        let bands = BANDS.map(|band| Band {
            next_subject: api::consumer_next_in(domain, stream, &band.consumer(group)),
            inbox: format!("{inbox}.{band}"),
            credits: Credits::new(slots, PULL_EXPIRES, now),
            busy: false,
        });
        Ok(Puller {
            client,
            js,
            sub,
            fields,
            bands,
            capacity: slots,
            weights,
            turn: 0,
            last: Priority::Normal.index(),
            paused: Arc::default(),
        })
    }

    /// Asks the bands for tasks, with `free` slots and `running[b]` tasks
    /// of band `b` running or held for a slot.
    pub(super) async fn ask(
        &mut self,
        free: usize,
        running: [usize; 3],
    ) -> Result<(), async_nats::PublishError> {
        let views: [BandView; 3] = std::array::from_fn(|i| BandView {
            busy: self.bands[i].busy,
            running: running[i],
            outstanding: self.bands[i].credits.outstanding(),
        });
        self.turn = self.turn.wrapping_add(1);
        let asks = allot(
            self.capacity,
            free,
            self.weights,
            views,
            self.turn,
            self.last,
        );
        let paused = self.paused.load(Ordering::Relaxed);
        for (i, &n) in asks.iter().enumerate() {
            let band = &self.bands[i];
            let Some(batch) = band.credits.to_request(band.credits.outstanding() + n) else {
                continue;
            };
            let others_busy = (0..3).any(|j| j != i && self.bands[j].busy);
            let expires = if paused {
                super::paused::PAUSED_PULL_EXPIRES
            } else if others_busy {
                SHARED_PULL_EXPIRES
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
                    band.next_subject.clone(),
                    band.inbox.clone(),
                    Bytes::from(body),
                )
                .await?;
            debug!(batch, band = %BANDS[i], "asked for tasks");
            self.bands[i].credits.asked(batch, Instant::now());
        }
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
            .and_then(|h| header::get(h, header::PENDING_MESSAGES));
        let what = classify(msg.status, pending);
        // A task carries its stored subject (the band's consumer took it
        // for its prefix); a status, the inbox it answers (`<inbox>.<band>`).
        let band = if what == Inbox::Task {
            crate::envelope::route(&msg.subject).band
        } else {
            msg.subject.rsplit('.').next()?.parse::<Priority>().ok()?
        };
        if let Inbox::Ended(None) = what {
            debug!(status = ?msg.status, description = ?msg.description, "pull request refused");
        }
        let state = &mut self.bands[band.index()];
        state.credits.on(what, Instant::now());
        if let Inbox::Ended(Some(undelivered)) = what {
            if undelivered > 0 {
                // A whole request's time without enough work: dry.
                state.busy = false;
            }
        }
        if what != Inbox::Task {
            return None;
        }
        let task = jetstream::Message {
            message: msg,
            context: self.js.clone(),
        };
        if let Ok(info) = task.info() {
            state.busy = info.pending > 0;
        }
        self.last = band.index();
        Some(task)
    }

    /// Whether any band's requests were refused outright: pause once
    /// before asking again.
    pub(super) fn take_pause(&mut self) -> bool {
        let mut any = false;
        for band in &mut self.bands {
            any |= band.credits.take_pause();
        }
        any
    }

    /// When the earliest outstanding requests count as lost, if any.
    pub(super) fn lost_at(&self) -> Option<Instant> {
        self.bands.iter().filter_map(|b| b.credits.lost_at()).min()
    }

    /// Outstanding requests are lost (with a connection): forget those
    /// past their time.
    pub(super) fn forget_lost(&mut self, now: Instant) {
        for band in &mut self.bands {
            if band.credits.lost_at().is_some_and(|at| at <= now) {
                band.credits.forget();
            }
        }
    }

    /// Tasks asked for and not yet received, over all bands.
    pub(super) fn outstanding(&self) -> usize {
        self.bands.iter().map(|b| b.credits.outstanding()).sum()
    }

    /// When the last request was sent, over all bands.
    pub(super) fn asked_at(&self) -> Instant {
        self.bands
            .iter()
            .map(|b| b.credits.asked_at())
            .max()
            .expect("three bands")
    }
}
