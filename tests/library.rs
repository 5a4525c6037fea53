//! The Rust library API: a handler written as a plain async fn runs in a node
//! started from the test's own code.

use std::time::Duration;

use bytes::Bytes;
use fleet::{Node, NodeConfig, Registry, Task, TaskError};
use fleet_testkit::*;
use futures::StreamExt;

async fn shout(task: Task) -> Result<String, TaskError> {
    let text =
        std::str::from_utf8(&task.payload).map_err(|_| TaskError::reject("shout takes UTF-8"))?;
    Ok(format!("{}!", text.to_uppercase()))
}

/// A Rust handler registered through the library runs in an in-process node,
/// its result reaches the reply subject, and the node stops on its shutdown
/// future with the counts of what it did.
#[test]
fn rust_handler_runs_in_a_node_started_from_code() {
    let server = NatsServer::start();
    rt().block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut registry = Registry::new();
        registry.register("shout", shout);
        let config = NodeConfig {
            name: "in-process".into(),
            // One trusted machine: make the streams and the group if missing.
            create: true,
            ..Default::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let node = tokio::spawn(Node::new(client.clone(), config, registry).run(async {
            let _ = stop_rx.await;
        }));

        let mut sub = client.subscribe("results.lib.>").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        // The node creates the streams; wait until TASKS exists.
        let mut tries = 0;
        while js.get_stream("TASKS").await.is_err() {
            tries += 1;
            assert!(tries < 100, "node never created TASKS");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (i, word) in ["hello", "fleet"].iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Reply-To", format!("results.lib.{i}").as_str());
            js.publish_with_headers("tasks.shout", headers, Bytes::from(*word))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut results = Vec::new();
        while results.len() < 2 {
            let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                msg.headers
                    .as_ref()
                    .unwrap()
                    .get("Task-Node")
                    .unwrap()
                    .as_str(),
                "in-process"
            );
            results.push(String::from_utf8(msg.payload.to_vec()).unwrap());
        }
        results.sort();
        assert_eq!(results, ["FLEET!", "HELLO!"]);

        stop_tx.send(()).unwrap();
        let stats = tokio::time::timeout(Duration::from_secs(10), node)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(stats.ok, 2);
        assert_eq!(stats.failed, 0);
    });
}
