//! Bad input never crashes a node and never loses anything: each class gets a
//! clear error result, and the node goes on running good tasks.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use fleet_testkit::*;
use futures::StreamExt;

/// Publishes raw tasks and waits for the result of each on `results.>`.
struct Raw {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    results: async_nats::Subscriber,
    seen: HashMap<String, async_nats::Message>,
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let results = client.subscribe("results.>").await.unwrap();
        client.flush().await.unwrap();
        Raw {
            client,
            js,
            results,
            seen: HashMap::new(),
        }
    }

    /// Publishes to `subject`; returns the TASKS sequence.
    async fn publish(
        &self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: impl Into<Bytes>,
    ) -> u64 {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, *v);
        }
        self.js
            .publish_with_headers(subject.to_string(), map, payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    async fn result(&mut self, subject: &str) -> async_nats::Message {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(msg) = self.seen.get(subject) {
                return msg.clone();
            }
            let msg = tokio::time::timeout_at(deadline, self.results.next())
                .await
                .unwrap_or_else(|_| panic!("no result on {subject}"))
                .unwrap();
            self.seen.insert(msg.subject.to_string(), msg);
        }
    }
}

fn header(msg: &async_nats::Message, name: &str) -> String {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

fn assert_error(msg: &async_nats::Message, code: &str, needle: &str) {
    assert_eq!(
        header(msg, "Nats-Service-Error-Code"),
        code,
        "{:?}",
        msg.headers
    );
    let text = header(msg, "Nats-Service-Error");
    assert!(
        text.contains(needle),
        "error {text:?} should mention {needle:?}"
    );
}

/// Malformed and huge headers, a bad Task-Timeout, non-UTF-8 payloads and
/// forbidden reply subjects each end as a clear result; the node lives on.
#[test]
fn bad_headers_and_reply_subjects() {
    let server = NatsServer::start();
    let mut node = NodeProc::spawn(&server, "node1", &[]);
    rt().block_on(async {
        let mut raw = Raw::connect(&server.url()).await;

        let huge = "x".repeat(9000);
        let seq = raw.publish("tasks.echo", &[("X-Huge", &huge)], "a").await;
        assert_error(
            &raw.result(&format!("results.{seq}")).await,
            "400",
            "headers larger than",
        );

        let seq = raw
            .publish("tasks.echo", &[("Task-Id", "has*wildcard")], "a")
            .await;
        assert_error(
            &raw.result(&format!("results.{seq}")).await,
            "400",
            "Task-Id",
        );

        raw.publish(
            "tasks.echo",
            &[("Task-Id", "t-timeout"), ("Task-Timeout", "soon")],
            "a",
        )
        .await;
        assert_error(
            &raw.result("results.t-timeout").await,
            "400",
            "Task-Timeout",
        );

        let bytes: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, b'\n', 0xc3];
        let seq = raw.publish("tasks.echo", &[], bytes.clone()).await;
        let echoed = raw.result(&format!("results.{seq}")).await;
        assert_eq!(echoed.payload.as_ref(), bytes.as_slice());
        assert_eq!(header(&echoed, "Nats-Service-Error-Code"), "");

        for (i, reply) in [
            "$JS.API.STREAM.DELETE.TASKS",
            "$SYS.REQ.SERVER.PING",
            "results.*",
            "results.>",
            "results..x",
            "elsewhere.x",
            "",
        ]
        .iter()
        .enumerate()
        {
            let id = format!("reply-{i}");
            raw.publish("tasks.echo", &[("Task-Id", &id), ("Reply-To", reply)], "a")
                .await;
            assert_error(
                &raw.result(&format!("results.{id}")).await,
                "400",
                "refused",
            );
        }
        // The $JS.API reply did nothing: TASKS is still there.
        assert!(raw.js.get_stream("TASKS").await.is_ok());

        // The node is alive and still runs good tasks.
        let seq = raw.publish("tasks.sha256", &[], "still fine").await;
        assert_eq!(
            raw.result(&format!("results.{seq}")).await.payload.as_ref(),
            sha256_hex(b"still fine").as_bytes()
        );
        raw.client.flush().await.unwrap();
    });
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "node died:\n{}",
        node.log_text()
    );
    assert!(!node.log_text().contains("panicked"));
}

/// A result larger than the server allows becomes a 413 error result on the
/// first attempt (no redelivery loop) and a dead letter.
#[test]
fn oversized_result_is_an_error_not_a_loop() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(
        &server,
        "node1",
        &["--exec", "big=head -c 2000000 /dev/zero"],
    );
    let out = fleet(&server, &["submit", "big", "x", "--json"], b"");
    assert_eq!(out.status.code(), Some(1));
    let line = &json_lines(&out.stdout)[0];
    assert_eq!(line["code"], 413, "{line}");
    assert_eq!(line["attempt"], 1, "{line}");
    assert!(line["error"].as_str().unwrap().contains("result too large"));
    assert_eq!(rt().block_on(stream_len(&server.url(), "DEAD")), 1);
}

/// A payload over max_payload is refused by `fleet submit` with a clear
/// error before anything is sent; the other tasks of the batch are fine.
#[test]
fn oversized_payload_is_refused_up_front() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let input = format!("first\n{}\nlast\n", "y".repeat(1_500_000));
    let out = fleet(&server, &["submit", "echo", "--json"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out.stdout);
    let by_id: HashMap<String, &serde_json::Value> = lines
        .iter()
        .map(|l| {
            (
                l["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('.')
                    .next()
                    .unwrap()
                    .to_string(),
                l,
            )
        })
        .collect();
    assert_eq!(by_id["1"]["result"], "first");
    assert_eq!(by_id["3"]["result"], "last");
    // Never submitted: code 503, whatever the reason, and the reason says so.
    assert_eq!(by_id["2"]["code"], 503);
    assert!(
        by_id["2"]["error"]
            .as_str()
            .unwrap()
            .contains("not submitted: the payload is 1500000 bytes")
            && by_id["2"]["error"]
                .as_str()
                .unwrap()
                .contains("max_payload"),
        "{}",
        by_id["2"]
    );
    let last_seq = rt()
        .block_on(stream_state(&server.url(), "TASKS"))
        .last_sequence;
    assert_eq!(last_seq, 2, "only the two good tasks reached TASKS");
}

/// A handler that panics is caught per task: the attempt counts as a
/// retryable failure, the task ends with an error result after its attempts,
/// and the node keeps running other tasks.
#[test]
fn handler_panic_is_caught_per_task() {
    let server = NatsServer::start();
    rt().block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut registry = fleet::Registry::with_builtins();
        registry.register("boom", |_task: fleet::Task| async move {
            if true {
                panic!("kaboom");
            }
            Ok::<_, fleet::TaskError>(Bytes::new())
        });
        let config = fleet::NodeConfig {
            name: "panicky".into(),
            create: true,
            retry: fleet::RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let node = tokio::spawn(
            fleet::Node::new(client.clone(), config, registry).run(async {
                let _ = stopped.await;
            }),
        );
        while async_nats::jetstream::new(client.clone())
            .get_stream("TASKS")
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut raw = Raw::connect(&server.url()).await;
        let seq = raw.publish("tasks.boom", &[], "x").await;
        let failed = raw.result(&format!("results.{seq}")).await;
        assert_error(&failed, "500", "kaboom");
        assert_eq!(header(&failed, "Task-Attempt"), "2");
        let seq = raw.publish("tasks.echo", &[], "after").await;
        assert_eq!(
            raw.result(&format!("results.{seq}")).await.payload.as_ref(),
            b"after"
        );
        stop.send(()).unwrap();
        let stats = node.await.unwrap().unwrap();
        assert_eq!((stats.ok, stats.failed, stats.retried), (1, 1, 1));
    });
}
