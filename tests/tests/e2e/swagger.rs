//! Swagger UI in a real headless Chromium, driven over WebDriver by chromedriver: the page
//! loads from our server, "Try it out" on an operation executes a real call, and the UI shows
//! the 200 answer.
//!
//! Needs Debian's `chromium` and `chromium-driver`. CI installs them and sets
//! `REAP3R_REQUIRE_BROWSER=1`, which turns their absence into a failure; elsewhere the test says
//! loudly that it did not run.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reap3r_store::Backend;
use serde_json::{Value, json};

use crate::harness::{TestServer, eventually};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct WebDriver {
    base: String,
    http: reqwest::Client,
    session: String,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl WebDriver {
    async fn start() -> Result<Self> {
        let port = free_port()?;
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("chromedriver to listen", Duration::from_secs(20), || {
            let http = http.clone();
            let url = format!("{base}/status");
            async move {
                Ok(match http.get(url).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["value"]["ready"].as_bool().filter(|r| *r).map(|_| ())),
                    Err(_) => None,
                })
            }
        })
        .await?;
        let profile = tempfile::tempdir()?;
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = resp["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no WebDriver session: {resp}"))?
            .to_owned();
        Ok(Self {
            base,
            http,
            session,
            _driver: driver,
            _profile: profile,
        })
    }

    async fn command(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let resp: Value = self.http.post(url).json(&body).send().await?.json().await?;
        if resp["value"]["error"].is_string() {
            bail!("WebDriver {path}: {}", resp["value"]);
        }
        Ok(resp["value"].clone())
    }

    async fn navigate(&self, url: &str) -> Result<()> {
        self.command("url", json!({ "url": url })).await.map(|_| ())
    }

    /// Runs a script in the page; its return value comes back as JSON.
    async fn script(&self, script: &str) -> Result<Value> {
        self.command("execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn quit(&self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn browser_available() -> Result<bool> {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !present && std::env::var("REAP3R_REQUIRE_BROWSER").as_deref() == Ok("1") {
        bail!("REAP3R_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing");
    }
    if !present {
        eprintln!("NOT RUN: swagger browser test needs {CHROMIUM} and {CHROMEDRIVER}");
    }
    Ok(present)
}

/// Clicks through Swagger UI for one operation and returns the status code it displays.
const TRY_IT_OUT: &str = r#"
const op = document.querySelector('#operations-Health-getHealth');
if (!op) {
  const tag = document.querySelector('#operations-tag-Health');
  if (tag) { tag.click(); }
  return 'no-operation';
}
if (!op.classList.contains('is-open')) { op.querySelector('.opblock-summary-control').click(); return 'opening'; }
const tryOut = op.querySelector('.try-out__btn');
if (tryOut && !op.querySelector('.execute')) { tryOut.click(); return 'try-out'; }
const status = op.querySelector('.live-responses-table .response .response-col_status');
if (status) { return 'status:' + status.textContent.trim(); }
const execute = op.querySelector('.execute');
if (execute && !window.__reap3rExecuted) { window.__reap3rExecuted = true; execute.click(); }
return 'executing';
"#;

#[tokio::test]
async fn swagger_ui_loads_in_chromium_and_try_it_out_succeeds() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let server = TestServer::start(Backend::Sqlite).await?;
    let driver = WebDriver::start().await?;
    let outcome = async {
        driver
            .navigate(&format!("http://{}/docs", server.node().http_addr))
            .await?;
        let title = eventually("Swagger UI to render the spec", Duration::from_secs(30), || async {
            let t = driver
                .script("const t = document.querySelector('.info .title'); return t ? t.textContent : null;")
                .await?;
            Ok(t.as_str().map(str::to_owned))
        })
        .await?;
        assert!(title.contains("Reap3r API"), "title: {title}");
        let status = eventually("the try-it-out call to finish", Duration::from_secs(30), || async {
            let state = driver.script(TRY_IT_OUT).await?;
            Ok(state
                .as_str()
                .and_then(|s| s.strip_prefix("status:"))
                .map(str::to_owned))
        })
        .await;
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                let state = driver.script(TRY_IT_OUT).await?;
                let html = driver
                    .script("const o = document.querySelector('#operations-Health-getHealth'); return o ? o.outerHTML.slice(0, 3000) : document.body.innerHTML.slice(0, 3000);")
                    .await?;
                return Err(e.context(format!("last state {state}; page: {html}")));
            }
        };
        assert_eq!(status, "200");
        // The page itself rendered every tag's operations from our spec.
        let ops = driver
            .script("return document.querySelectorAll('.opblock').length;")
            .await?;
        assert!(ops.as_u64().unwrap_or(0) >= 60, "operations shown: {ops}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    driver.quit().await;
    outcome
}
