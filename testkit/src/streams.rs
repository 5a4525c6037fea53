//! What NATS kept: every message of a stream, per-subject counts, states.
//! Each reader takes a URL (no credentials) or, with `_from`, a client of
//! the caller's (a role with the rights to read).

use std::collections::HashMap;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;

async fn connect(url: &str) -> async_nats::Client {
    async_nats::connect(url)
        .await
        .expect("connecting to read a stream")
}

/// Every message of `stream` (subject, headers, payload), read with an
/// ordered consumer from the first.
pub async fn read_stream(url: &str, stream: &str) -> Vec<async_nats::Message> {
    read_stream_from(connect(url).await, stream).await
}

/// [`read_stream`] through `client`.
pub async fn read_stream_from(
    client: async_nats::Client,
    stream: &str,
) -> Vec<async_nats::Message> {
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("the stream exists");
    let total = s.info().await.expect("stream info").state.messages;
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    let consumer = s
        .create_consumer(OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    while let Some(msg) = messages.next().await {
        let msg = msg.expect("a message");
        let pending = msg.info().expect("a JetStream message").pending;
        out.push(msg.message.clone());
        if pending == 0 {
            break;
        }
    }
    out
}

/// How many results `RESULTS` keeps for each subject.
pub async fn results_per_subject(url: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for msg in read_stream(url, "RESULTS").await {
        *counts.entry(msg.subject.to_string()).or_insert(0) += 1;
    }
    counts
}

/// A stream's state: message count, first and last sequence.
pub async fn stream_state(url: &str, stream: &str) -> async_nats::jetstream::stream::State {
    stream_state_from(connect(url).await, stream).await
}

/// [`stream_state`] through `client`.
pub async fn stream_state_from(
    client: async_nats::Client,
    stream: &str,
) -> async_nats::jetstream::stream::State {
    let js = async_nats::jetstream::new(client);
    js.get_stream(stream)
        .await
        .expect("the stream exists")
        .info()
        .await
        .expect("stream info")
        .state
        .clone()
}

/// Number of messages in a stream.
pub async fn stream_len(url: &str, stream: &str) -> u64 {
    stream_state(url, stream).await.messages
}
