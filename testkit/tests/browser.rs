//! The browser driver against a page of its own: a one-page HTTP server on
//! loopback, real headless Chromium. Fails, never skips, without Chromium
//! (bin/setup installs it).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use fleet_testkit::browser::Browser;

/// A button that changes the status a moment after it is clicked (so the
/// test has to wait for it), and a script that throws when `?throw` asks.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>fleet browser test</title>
<link rel="icon" href="data:,"></head>
<body>
<h1 id="status">waiting</h1>
<button id="go">Go</button>
<script>
document.getElementById("go").addEventListener("click", () => {
  setTimeout(() => { document.getElementById("status").textContent = "clicked"; }, 100);
});
if (new URLSearchParams(location.search).has("throw")) {
  throw new Error("boom from the page");
}
</script>
</body></html>
"#;

/// Serves [`PAGE`] at every path on 127.0.0.1 and returns its base URL. The
/// server thread lives as long as the test process.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let _ = respond(stream);
        }
    });
    format!("http://{addr}")
}

/// Reads one request's head and answers it with [`PAGE`].
fn respond(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        PAGE.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(PAGE.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn drives_a_page() -> anyhow::Result<()> {
    let base = serve();
    let browser = Browser::launch().await?;
    let page = browser.new_page().await?;

    page.goto(&format!("{base}/")).await?;
    assert_eq!(page.eval("document.title").await?, "fleet browser test");
    assert_eq!(page.text("#status").await?, "waiting");

    page.click("#go").await?;
    let status = r#"document.getElementById("status").textContent === "clicked""#;
    page.wait_for(status, Duration::from_secs(5)).await?;
    assert_eq!(page.text("#status").await?, "clicked");

    let dir = tempfile::tempdir()?;
    let png = dir.path().join("page.png");
    page.screenshot(&png).await?;
    let bytes = std::fs::read(&png)?;
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (1280, 900), "the viewport's size");

    assert_eq!(page.console_errors(), Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_errors() -> anyhow::Result<()> {
    let base = serve();
    let browser = Browser::launch().await?;
    let page = browser.new_page().await?;

    page.goto(&format!("{base}/?throw")).await?;
    let errors = page.console_errors();
    assert!(
        errors.iter().any(|e| e.contains("boom from the page")),
        "{errors:?}"
    );

    // The event comes before the evaluation's answer on the one socket.
    page.eval(r#"console.error("logged", 42)"#).await?;
    let errors = page.console_errors();
    assert!(
        errors.iter().any(|e| e == "console.error: logged 42"),
        "{errors:?}"
    );

    let thrown = page
        .eval(r#"(() => { throw new TypeError("from eval"); })()"#)
        .await;
    let thrown = format!("{:#}", thrown.unwrap_err());
    assert!(thrown.contains("TypeError: from eval"), "{thrown}");
    let missing = page.text("#nothing-here").await.unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("no element matches #nothing-here"),
        "{missing}"
    );
    assert!(page.click("#nothing-here").await.is_err());
    let timeout = page
        .wait_for("false", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(timeout.to_string().contains("not true after"), "{timeout}");
    Ok(())
}
