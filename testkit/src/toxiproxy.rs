//! Toxiproxy (`toxiproxy-server`, installed by bin/setup) between clients
//! and a nats-server: one proxy per client link, on a free loopback port,
//! with toxics added and removed through its HTTP API: latency for a whole
//! run, a stall (`timeout` 0: no byte flows until it is removed, then the
//! held bytes go on), a reset (`reset_peer`: every connection through the
//! proxy is reset, and new ones too while it is there).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::{self, Response};
use crate::{eventually, free_addr, tool};

/// A running `toxiproxy-server`, killed on drop.
pub struct Toxiproxy {
    child: Child,
    api: SocketAddr,
}

/// One proxy: clients connect to `listen`, which forwards to the upstream.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Its name in the API.
    pub name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
}

impl Proxy {
    /// The NATS URL through this proxy.
    pub fn url(&self) -> String {
        format!("nats://{}", self.listen)
    }
}

impl Toxiproxy {
    /// Starts the server with its log in `dir`; returns once its API answers.
    pub fn start(dir: &Path) -> Self {
        let api = free_addr();
        let log = std::fs::File::create(dir.join("toxiproxy.log")).expect("toxiproxy's log file");
        let child = Command::new(tool("toxiproxy-server"))
            .args([
                "-host",
                &api.ip().to_string(),
                "-port",
                &api.port().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting toxiproxy-server");
        let proxy = Toxiproxy { child, api };
        eventually(Duration::from_secs(10), "toxiproxy's API", || {
            http::get(api, "/version").filter(|r| r.status == 200)
        });
        proxy
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Response {
        let json = [("Content-Type", "application/json")];
        let response = http::request(self.api, method, path, &json, body)
            .unwrap_or_else(|| panic!("toxiproxy did not answer {method} {path}"));
        assert!(
            (200..300).contains(&response.status),
            "toxiproxy {method} {path} {body}: {} {}",
            response.status,
            response.body
        );
        response
    }

    /// A proxy named `name` from a free loopback port to `upstream`.
    pub fn proxy(&self, name: &str, upstream: SocketAddr) -> Proxy {
        let listen = free_addr();
        let body = serde_json::json!({
            "name": name,
            "listen": listen.to_string(),
            "upstream": upstream.to_string(),
            "enabled": true,
        });
        self.call("POST", "/proxies", &body.to_string());
        Proxy {
            name: name.to_string(),
            listen,
        }
    }

    /// Adds toxic `toxic` of `kind` to `proxy`, in both directions (two
    /// toxics, `<toxic>-up` and `<toxic>-down`), with `attributes`.
    pub fn add(&self, proxy: &Proxy, toxic: &str, kind: &str, attributes: serde_json::Value) {
        for stream in ["upstream", "downstream"] {
            let body = serde_json::json!({
                "name": format!("{toxic}-{stream}"),
                "type": kind,
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            });
            self.call(
                "POST",
                &format!("/proxies/{}/toxics", proxy.name),
                &body.to_string(),
            );
        }
    }

    /// Removes both halves of toxic `toxic` from `proxy`.
    pub fn remove(&self, proxy: &Proxy, toxic: &str) {
        for stream in ["upstream", "downstream"] {
            let path = format!("/proxies/{}/toxics/{toxic}-{stream}", proxy.name);
            self.call("DELETE", &path, "");
        }
    }

    /// `ms` of latency each way on every connection through `proxy`.
    pub fn latency(&self, proxy: &Proxy, ms: u64) {
        self.add(
            proxy,
            "latency",
            "latency",
            serde_json::json!({ "latency": ms }),
        );
    }

    /// Holds every byte through `proxy` for `hold`, then lets them go on.
    pub fn stall(&self, proxy: &Proxy, hold: Duration) {
        self.during(proxy, "stall", "timeout", hold);
    }

    /// Resets every connection through `proxy` (and refuses new ones with a
    /// reset) for `hold`.
    pub fn reset(&self, proxy: &Proxy, hold: Duration) {
        self.during(proxy, "reset", "reset_peer", hold);
    }

    /// Toxic `kind` (with `timeout` 0) on `proxy` for `hold`.
    fn during(&self, proxy: &Proxy, toxic: &str, kind: &str, hold: Duration) {
        self.add(proxy, toxic, kind, serde_json::json!({ "timeout": 0 }));
        std::thread::sleep(hold);
        self.remove(proxy, toxic);
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
