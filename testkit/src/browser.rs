//! Headless Chromium, driven over the DevTools protocol (CDP), for tests that
//! look at a page the way a person would: load it, read text, click, wait
//! for a change, take a screenshot, and check that no script failed.
//!
//! One websocket to the browser carries every page: each page is a target
//! attached with `flatten`, so its commands and events carry a `sessionId`.
//! Responses are matched to commands by `id`, because events arrive
//! interleaved with them. Chromium comes from Debian's `chromium` package,
//! which `bin/setup` installs; without it [`Browser::launch`] fails rather
//! than letting a test skip.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let browser = fleet_testkit::browser::Browser::launch().await?;
//! let page = browser.new_page().await?;
//! page.goto("http://127.0.0.1:8080/").await?;
//! assert_eq!(page.text("h1").await?, "fleet");
//! assert!(page.console_errors().is_empty());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The names Chromium goes by on PATH: Debian's, Ubuntu's, Google's.
const CHROMIUM_NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// How long Chromium may take to start, and one command or page load to
/// finish: generous for a loaded 2-core CI machine, short enough that a hung
/// browser fails the test instead of the CI run's time limit.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The viewport every page gets, so screenshots are the same size anywhere.
const VIEWPORT: (u32, u32) = (1280, 900);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply = std::result::Result<Value, String>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;
type Sessions = Arc<Mutex<HashMap<String, Arc<PageState>>>>;

/// Finds Chromium on PATH, under any of [`CHROMIUM_NAMES`].
pub fn chromium_path() -> Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    CHROMIUM_NAMES
        .iter()
        .flat_map(|name| std::env::split_paths(&paths).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow!("no Chromium found: run bin/setup (installs Debian's chromium)"))
}

/// A headless Chromium of a test's own, with a fresh profile. Dropping it
/// kills the whole process group (renderers and GPU process too) and waits
/// for the browser, then removes the profile.
pub struct Browser {
    cdp: Arc<Cdp>,
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and connects to it. Fails, naming bin/setup, when no
    /// Chromium is on PATH, and with Chromium's own output when it will not
    /// start.
    pub async fn launch() -> Result<Browser> {
        let chromium = chromium_path()?;
        let profile = tempfile::TempDir::with_prefix("fleet-chromium-")?;
        let mut child = Command::new(&chromium)
            .args(flags(profile.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, so that Drop can kill the helpers it forks too.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", chromium.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut browser_guard = Killer(Some(child));
        let url = tokio::time::timeout(TIMEOUT, devtools_url(stderr))
            .await
            .map_err(|_| anyhow!("Chromium printed no DevTools address in {TIMEOUT:?}"))??;
        let cdp = Cdp::connect(&url).await?;
        let child = browser_guard.0.take().expect("still held");
        Ok(Browser {
            cdp,
            child,
            _profile: profile,
        })
    }

    /// Opens a new tab at about:blank, with the viewport set and the
    /// console watched.
    pub async fn new_page(&self) -> Result<Page> {
        let blank = json!({"url": "about:blank"});
        let target = self.cdp.call(None, "Target.createTarget", blank).await?;
        let attach = json!({"targetId": target["targetId"], "flatten": true});
        let attached = self.cdp.call(None, "Target.attachToTarget", attach).await?;
        let session = attached["sessionId"].as_str().context("no sessionId")?;
        let (session, state) = (session.to_string(), Arc::<PageState>::default());
        let sessions = &self.cdp.sessions;
        sessions
            .lock()
            .unwrap()
            .insert(session.clone(), state.clone());
        let page = Page {
            cdp: self.cdp.clone(),
            session,
            state,
        };
        page.call("Page.enable", json!({})).await?;
        page.call("Runtime.enable", json!({})).await?;
        let (width, height) = VIEWPORT;
        let metrics =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        page.call("Emulation.setDeviceMetricsOverride", metrics)
            .await?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.cdp.reader.abort();
        kill_group(&mut self.child);
    }
}

/// Kills a Chromium that started but never became a [`Browser`].
struct Killer(Option<Child>);

impl Drop for Killer {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
        }
    }
}

/// SIGKILL to the browser's process group, then reap the browser.
fn kill_group(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    let _ = killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGKILL,
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Chromium's flags. `--no-sandbox` because tests run as root (in CI and in
/// containers), where Chromium refuses to start with its sandbox; port 0 so
/// parallel tests never collide, the port read back from stderr; no
/// background networking or component updates, since a test's browser
/// should reach nothing but the test's own server.
fn flags(profile: &Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("--user-data-dir={}", profile.display()),
        "about:blank".into(),
    ])
    .collect()
}

/// Reads Chromium's stderr until it says where DevTools listens, then keeps
/// draining it on the same thread, since a full pipe would block the
/// browser. Errors carry what Chromium printed, if it exits first.
async fn devtools_url(stderr: ChildStderr) -> Result<String> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut lines = BufReader::new(stderr).lines().map_while(|line| line.ok());
        for line in lines.by_ref() {
            if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                let _ = tx.send(Ok(url.to_string()));
                lines.for_each(drop);
                return;
            }
            seen.push(line);
        }
        let _ = tx.send(Err(seen.join("\n")));
    });
    match rx.await {
        Ok(Ok(url)) => Ok(url),
        Ok(Err(output)) => bail!("Chromium exited before DevTools listened:\n{output}"),
        Err(_) => bail!("Chromium's stderr reader died"),
    }
}

/// What one page's events leave behind: a count of `load` events, for
/// [`Page::goto`] to wait on, and the errors seen.
struct PageState {
    loads: watch::Sender<u64>,
    errors: Mutex<Vec<String>>,
}

impl Default for PageState {
    fn default() -> Self {
        PageState {
            loads: watch::channel(0).0,
            errors: Mutex::default(),
        }
    }
}

impl PageState {
    fn on_event(&self, method: &str, params: &Value) {
        match method {
            "Page.loadEventFired" => self.loads.send_modify(|n| *n += 1),
            "Runtime.exceptionThrown" => self.error(exception_text(&params["exceptionDetails"])),
            "Runtime.consoleAPICalled" if params["type"] == "error" => {
                let args = params["args"].as_array().map(Vec::as_slice);
                let text: Vec<String> = args.unwrap_or_default().iter().map(describe).collect();
                self.error(format!("console.error: {}", text.join(" ")));
            }
            _ => {}
        }
    }

    fn error(&self, text: String) {
        self.errors.lock().unwrap().push(text);
    }
}

/// An exception's message and stack, from CDP's ExceptionDetails.
fn exception_text(details: &Value) -> String {
    let text = details["exception"]["description"].as_str();
    text.or(details["text"].as_str())
        .unwrap_or("exception")
        .to_string()
}

/// A console argument (a CDP RemoteObject) as text.
fn describe(arg: &Value) -> String {
    match (&arg["value"], arg["description"].as_str()) {
        (Value::String(s), _) => s.clone(),
        (Value::Null, Some(description)) => description.to_string(),
        (value, _) => value.to_string(),
    }
}

/// One websocket to the browser: commands out, and a reader task that hands
/// each response to its caller by `id` and each event to its page.
struct Cdp {
    sink: tokio::sync::Mutex<SplitSink<Ws, Message>>,
    pending: Pending,
    sessions: Sessions,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl Cdp {
    async fn connect(url: &str) -> Result<Arc<Cdp>> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to Chromium at {url}"))?;
        let (sink, stream) = ws.split();
        let pending = Arc::default();
        let sessions = Arc::default();
        let reader = tokio::spawn(read(stream, Arc::clone(&pending), Arc::clone(&sessions)));
        let sink = tokio::sync::Mutex::new(sink);
        Ok(Arc::new(Cdp {
            sink,
            pending,
            sessions,
            next_id: AtomicU64::new(1),
            reader,
        }))
    }

    /// Sends one command and waits for its response: its `result`, or its
    /// `error` as an Err naming the method.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let sent = self
            .sink
            .lock()
            .await
            .send(Message::text(message.to_string()))
            .await;
        if let Err(e) = sent {
            self.pending.lock().unwrap().remove(&id);
            bail!("{method}: sending to Chromium: {e}");
        }
        let reply = tokio::time::timeout(TIMEOUT, rx).await;
        self.pending.lock().unwrap().remove(&id);
        match reply {
            Err(_) => bail!("{method}: no answer from Chromium in {TIMEOUT:?}"),
            Ok(Err(_)) => bail!("{method}: the connection to Chromium closed"),
            Ok(Ok(reply)) => reply.map_err(|e| anyhow!("{method}: {e}")),
        }
    }
}

/// The reader task. When the socket closes it drops every pending sender,
/// so each waiting call fails at once instead of timing out.
async fn read(mut stream: SplitStream<Ws>, pending: Pending, sessions: Sessions) {
    while let Some(Ok(message)) = stream.next().await {
        let text = message.to_text().unwrap_or_default();
        let message: Value = serde_json::from_str(text).unwrap_or_default();
        if let Some(id) = message["id"].as_u64() {
            let reply = match message.get("error") {
                Some(error) => Err(error["message"].as_str().unwrap_or("error").to_string()),
                None => Ok(message["result"].clone()),
            };
            if let Some(tx) = pending.lock().unwrap().remove(&id) {
                let _ = tx.send(reply);
            }
        } else if let (Some(method), Some(session)) =
            (message["method"].as_str(), message["sessionId"].as_str())
        {
            let state = sessions.lock().unwrap().get(session).cloned();
            if let Some(state) = state {
                state.on_event(method, &message["params"]);
            }
        }
    }
    pending.lock().unwrap().clear();
}

/// One tab. It lives until its [`Browser`] is dropped; after that every
/// call fails.
pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
    state: Arc<PageState>,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Navigates and waits for the page's `load` event. Fails when the
    /// navigation does (no server, bad address), not on HTTP error statuses.
    pub async fn goto(&self, url: &str) -> Result<()> {
        let mut loads = self.state.loads.subscribe();
        let before = *loads.borrow_and_update();
        let nav = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = nav["errorText"].as_str() {
            bail!("navigating to {url}: {error}");
        }
        if nav.get("loaderId").is_none() {
            return Ok(()); // same document (a #fragment): no load event comes
        }
        tokio::time::timeout(TIMEOUT, loads.wait_for(|n| *n > before))
            .await
            .map_err(|_| anyhow!("{url} did not finish loading in {TIMEOUT:?}"))?
            .map_err(|_| anyhow!("the connection to Chromium closed loading {url}"))?;
        Ok(())
    }

    /// Evaluates an expression in the page and returns its value as JSON,
    /// awaiting it if it is a promise. An exception becomes an Err with its
    /// message and stack; `undefined` becomes `null`.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        let params = json!({"expression": js, "returnByValue": true, "awaitPromise": true, "userGesture": true});
        let mut reply = self.call("Runtime.evaluate", params).await?;
        if let Some(details) = reply.get("exceptionDetails") {
            bail!("{js}: {}", exception_text(details));
        }
        Ok(reply["result"]["value"].take())
    }

    /// Evaluates `js_condition` every 50 ms until it is truthy, and returns
    /// that value. Exceptions count as not yet (the element may not exist
    /// yet), and the last one is in the error when time runs out.
    pub async fn wait_for(&self, js_condition: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(js_condition).await {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => format!("last value {value}"),
                Err(e) => format!("last error {e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("{js_condition} not true after {timeout:?} ({last})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `innerText` of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        let value = self.on_first(css, "e.innerText").await?;
        value
            .as_str()
            .map(String::from)
            .context("innerText is not a string")
    }

    /// Clicks the first element matching `css` (`element.click()`, so it
    /// works whether or not the element is in view).
    pub async fn click(&self, css: &str) -> Result<()> {
        self.on_first(css, "(e.click(), true)").await.map(drop)
    }

    /// Evaluates `expr` with `e` bound to the first match for `css`; Err if
    /// nothing matches.
    async fn on_first(&self, css: &str, expr: &str) -> Result<Value> {
        let selector = serde_json::to_string(css)?;
        let js = format!("(() => {{ const e = document.querySelector({selector}); return e === null ? {{none: true}} : {{value: {expr}}}; }})()");
        let mut reply = self.eval(&js).await?;
        if reply.get("none").is_some() {
            bail!("no element matches {css}");
        }
        Ok(reply["value"].take())
    }

    /// Writes a PNG of the viewport (1280x900) to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let reply = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = reply["data"]
            .as_str()
            .context("captureScreenshot gave no data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Uncaught exceptions and `console.error` calls seen on this page so
    /// far, oldest first, so a test can assert that a page has none.
    pub fn console_errors(&self) -> Vec<String> {
        self.state.errors.lock().unwrap().clone()
    }
}

/// JavaScript's truthiness, for values that came back as JSON.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
