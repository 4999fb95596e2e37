//! HTTP side of the test fleet: a JSON client for a running node's API, and helpers that set up
//! organisations and users the way an operator would (users straight in the store, since the
//! very first admin of an installation comes from the CLI, then everything else over HTTP).

use anyhow::{Context, Result, anyhow, bail};
use reap3r_actors::access::Caller;
use reap3r_actors::access::password::hash_password;
use reap3r_actors::orgs::CreateOrg;
use reap3r_store::{NewUser, Org, Uuid};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::TestServer;

pub const PASSWORD: &str = "correct horse battery staple";

/// One HTTP answer: status, headers, the HTTP version it came over, and the JSON body
/// (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub version: reqwest::Version,
    pub body: Value,
}

impl Reply {
    /// The body, after checking the status.
    pub fn expect(self, status: u16) -> Result<Value> {
        if self.status.as_u16() != status {
            bail!("expected {status}, got {}: {}", self.status, self.body);
        }
        Ok(self.body)
    }

    /// The `code` of an error body, after checking the status and the error shape.
    pub fn error(self, status: u16) -> Result<String> {
        let body = self.expect(status)?;
        let code = body["code"]
            .as_str()
            .ok_or_else(|| anyhow!("error body without code: {body}"))?;
        if !body["message"].is_string() {
            bail!("error body without message: {body}");
        }
        Ok(code.to_owned())
    }
}

/// The HTTP versions a client offers (over TLS, by ALPN; over plain HTTP, HTTP/1.1 either way
/// unless it is HTTP/2 with prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// `h2` then `http/1.1`: what the server picks.
    Any,
    Http1,
    Http2,
}

impl Http {
    pub fn alpn(self) -> &'static [&'static [u8]] {
        match self {
            Http::Any => &[b"h2", b"http/1.1"],
            Http::Http1 => &[b"http/1.1"],
            Http::Http2 => &[b"h2"],
        }
    }
}

/// A reqwest client that trusts only the certificate with this SHA-256 (hex).
pub fn pinned_client(fingerprint: &str, http: Http) -> Result<reqwest::Client> {
    let tls = reap3r_testkit::pinned_client_config(fingerprint, http.alpn())
        .map_err(|e| anyhow!("pinned TLS client: {e}"))?;
    let builder = reqwest::Client::builder().use_preconfigured_tls(tls);
    let builder = match http {
        Http::Any => builder,
        Http::Http1 => builder.http1_only(),
        Http::Http2 => builder.http2_prior_knowledge(),
    };
    Ok(builder.build()?)
}

/// A JSON client with an optional credential and acting organisation.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    pub bearer: Option<String>,
    pub api_key: Option<String>,
    pub org: Option<Uuid>,
}

impl Api {
    /// A client for the test server's API: plain HTTP, or HTTPS pinned to the certificate the
    /// server presents when it serves TLS.
    pub fn new(server: &TestServer) -> Self {
        Self::over(server, Http::Any).expect("a client for the test server")
    }

    /// Like [`Api::new`], offering only `http` (over TLS).
    pub fn over(server: &TestServer, http: Http) -> Result<Self> {
        let node = server.node();
        let client = match &node.api_tls {
            None => reqwest::Client::new(),
            Some(tls) => pinned_client(&tls.fingerprint(), http)?,
        };
        Ok(Self {
            base: node.api_url(),
            http: client,
            bearer: None,
            api_key: None,
            org: None,
        })
    }

    /// A client for a server reached only by address (a server running as a process).
    pub fn from_base(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            bearer: None,
            api_key: None,
            org: None,
        }
    }

    pub fn with_bearer(&self, token: &str) -> Self {
        Self {
            bearer: Some(token.to_owned()),
            api_key: None,
            ..self.clone()
        }
    }

    pub fn with_api_key(&self, key: &str) -> Self {
        Self {
            api_key: Some(key.to_owned()),
            bearer: None,
            ..self.clone()
        }
    }

    pub fn in_org(&self, org: Uuid) -> Self {
        Self {
            org: Some(org),
            ..self.clone()
        }
    }

    pub fn anonymous(&self) -> Self {
        Self {
            bearer: None,
            api_key: None,
            org: None,
            ..self.clone()
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Reply> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(k) = &self.api_key {
            req = req.header("X-API-Key", k);
        }
        if let Some(o) = self.org {
            req = req.header("X-Reap3r-Org", o.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("request {path}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let version = resp.version();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_server_error() {
            bail!("server error {status} for {path}: {text}");
        }
        Ok(Reply {
            status,
            headers,
            version,
            body,
        })
    }

    /// Sends raw bytes with a content type, for malformed-input tests.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Reply> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let version = resp.version();
        let text = resp.text().await?;
        Ok(Reply {
            status,
            headers,
            version,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Reply> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Reply> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Reply> {
        self.send(Method::DELETE, path, None).await
    }

    /// Logs in (no MFA) and returns a client carrying the access token, plus the login body.
    pub async fn login(&self, email: &str, password: &str) -> Result<(Api, Value)> {
        let body = self
            .anonymous()
            .post(
                "/api/auth/login",
                json!({ "email": email, "password": password }),
            )
            .await?
            .expect(200)?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("no access token in {body}"))?;
        Ok((self.anonymous().with_bearer(token), body))
    }
}

/// Puts a user straight into the store, without an audit record (fixtures, not operations).
pub async fn seed_user(server: &TestServer, org: Uuid, email: &str, role: &str) -> Result<Uuid> {
    let mut tx = server.node().store.begin().await?;
    let user = tx
        .create_user(
            &NewUser {
                org_id: org,
                email: email.into(),
                password_hash: hash_password(PASSWORD)?,
                role: role.into(),
                display_name: None,
            },
            now_ms(),
        )
        .await?;
    tx.commit().await?;
    Ok(user.id)
}

pub async fn default_org(server: &TestServer) -> Result<Org> {
    Ok(server.node().store.default_org(now_ms()).await?)
}

/// A user with the role in the org, logged in.
pub async fn logged_in(server: &TestServer, org: Uuid, email: &str, role: &str) -> Result<Api> {
    seed_user(server, org, email, role).await?;
    Ok(Api::new(server).login(email, PASSWORD).await?.0)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn id_of(v: &Value) -> Result<Uuid> {
    let s = v["id"].as_str().ok_or_else(|| anyhow!("no id in {v}"))?;
    Ok(Uuid::parse_str(s)?)
}

/// A new organisation, created as the admin CLI would.
pub async fn create_org(server: &TestServer, name: &str) -> Result<Uuid> {
    let store = &server.node().store;
    let cli = Caller::cli(store.default_org(now_ms()).await?.id);
    let org = CreateOrg {
        name: name.into(),
        parent_org_id: None,
    }
    .run(&server.node().api.domain, &cli)
    .await?;
    Ok(org.id)
}
