use super::*;

fn task(id: &str, reply: &str) -> Task {
    Task {
        id: id.into(),
        reply: reply.into(),
        timeout: None,
        payload: Bytes::new(),
        msg_id: None,
        extra: Vec::new(),
    }
}

#[test]
fn the_default_reply_is_not_sent() {
    assert!(task("b.1", "results.b.1")
        .headers()
        .get(header::REPLY_TO)
        .is_none());
    let h = task("b.1", "_INBOX.x.1").headers();
    assert_eq!(
        h.get(header::REPLY_TO).map(|v| v.as_str()),
        Some("_INBOX.x.1")
    );
    assert!(h.get(header::MSG_ID).is_none());
}

/// A client that never connects: what it publishes waits in its buffer.
async fn offline() -> Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("nats://127.0.0.1:1")
        .await
        .expect("a client that retries")
}

/// An outbox of an offline client that sent tasks 1 to 3 in batch 1, and
/// the reply subject of batch 1's message `seq` with `op` (`<seq>.<op>`).
async fn three_sent() -> (Outbox, impl Fn(&str) -> String) {
    let mut outbox = Outbox::new(
        offline().await,
        "tasks.echo".into(),
        std::time::Duration::from_secs(60),
    );
    let inbox = outbox.replies().trim_end_matches(".>").to_string();
    let run = inbox.rsplit('.').next().unwrap().to_string();
    for n in 1..=3 {
        outbox
            .send(n, task(&format!("b.{n}"), "_INBOX.x"))
            .await
            .unwrap();
    }
    (outbox, move |msg: &str| {
        format!("{inbox}.{run}x1.256.fail.{msg}.$FI")
    })
}

#[tokio::test]
async fn a_gap_whose_end_never_comes_is_given_up() {
    let (mut outbox, batch1) = three_sent().await;
    // The server saw message 3 without 2 (lost with a reset): a gap,
    // and the batch's final PubAck is lost too.
    let gap = batch1("3.1");
    outbox
        .on_reply(&wire::reply_message(
            &gap,
            r#"{"type":"gap","last_seq":1,"seq":3}"#,
        ))
        .await
        .unwrap();
    assert!(!outbox.ready(), "the batch's end is awaited");
    outbox.tick().await.unwrap();
    assert!(!outbox.ready(), "not given up at once");
    tokio::time::sleep(END_WITHIN + std::time::Duration::from_millis(100)).await;
    outbox.tick().await.unwrap();
    assert!(
        outbox.ready(),
        "given up after {END_WITHIN:?}: sending goes on"
    );
    // All three went again, in a new batch, and are still awaited.
    assert_eq!(outbox.batcher.unconfirmed(), 3);
    assert_eq!(outbox.batcher.send(4).batch, 2);
    assert_eq!(outbox.pending.len(), 3);
}

#[test]
fn refusals_read_as_what_to_do() {
    assert!(refusal("maximum messages exceeded").starts_with("the queue is full"));
    assert!(transient(10077, "maximum messages exceeded"));
    assert!(!transient(10054, "message size exceeds maximum allowed"));
}

#[tokio::test]
async fn a_task_that_comes_while_a_batch_ends_waits_for_its_end() {
    let (mut outbox, batch1) = three_sent().await;
    // Idle: the outbox commits batch 1 (message 4) and awaits its end.
    tokio::time::sleep(CONFIRM_AFTER + std::time::Duration::from_millis(20)).await;
    outbox.tick().await.unwrap();
    assert!(!outbox.ready(), "batch 1's end is awaited");
    // A task comes now anyway (a named batch's lookup finished).
    outbox.send(4, task("b.4", "_INBOX.x")).await.unwrap();
    assert_eq!(outbox.batcher.unconfirmed(), 3, "task 4 is held, not sent");
    // Batch 1 ends: its three tasks are stored.
    let end = batch1("4.3");
    let heard = outbox
        .on_reply(&wire::reply_message(
            &end,
            r#"{"stream":"TASKS","seq":3,"batch":"b","count":3}"#,
        ))
        .await
        .unwrap();
    let mut stored = heard.stored;
    stored.sort_unstable();
    assert_eq!(stored, [1, 2, 3], "batch 1's end confirms all it stored");
    // Task 4 went out then, as the first message of batch 2.
    assert_eq!(outbox.pending.keys().copied().collect::<Vec<_>>(), [4]);
    assert_eq!(outbox.pending[&4].sends, 1);
    assert_eq!(outbox.batcher.unconfirmed(), 1);
    assert_eq!(outbox.batcher.send(5).batch, 2);
}
