//! The operator side: the HTTP API (login, jobs, agents) and the Prometheus text at `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Rows per results page. Not the API's maximum (1000): at 1000 the server asks its store for
/// 1001 rows to see whether another page exists, the store caps pages at 1000, and so no
/// `next_cursor` ever comes back (reported to the jobs work).
const RESULTS_PAGE: usize = 500;

#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build()?;
        Ok(Self {
            client,
            base: format!("http://{addr}"),
            token: None,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.get(self.url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.client.get(self.url("/api/ready")).timeout(Duration::from_secs(2)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// The access token of the last login.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `POST /api/auth/login`; later requests carry the access token.
    pub async fn login(&mut self, email: &str, password: &str) -> Result<()> {
        let resp = self
            .client
            .post(self.url("/api/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("login failed: {status} {body}");
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("login answered no access_token: {body}"))?;
        self.token = Some(token.to_string());
        Ok(())
    }

    /// The unlabelled series of `GET /metrics` (counters and gauges), by name.
    pub async fn metrics(&self) -> Result<HashMap<String, f64>> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(parse_metrics(&text))
    }

    /// One metric, or an error if the server does not export it.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        self.metrics()
            .await?
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("the server exports no {name}"))
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.get(path).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    /// A GET for latency sampling: how long it took and whether it succeeded.
    pub async fn timed_get(&self, path: &str) -> (Duration, Result<u16>) {
        let start = Instant::now();
        let result = match self.get(path).timeout(Duration::from_secs(10)).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the body: the latency includes producing it.
                match resp.bytes().await {
                    Ok(_) => Ok(status),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        };
        (start.elapsed(), result)
    }

    /// A POST with a JSON body; the answer's JSON, or an error naming the status and body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let req = self.client.post(self.url(path)).json(body);
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await?;
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status} {answer}");
        }
        Ok(answer)
    }

    /// A POST with a raw body (`application/octet-stream`); the answer's JSON.
    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value> {
        let req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/octet-stream")
            .timeout(Duration::from_secs(600))
            .body(body);
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await?;
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status} {answer}");
        }
        Ok(answer)
    }

    /// A POST that creates something; returns the new object's `id`.
    pub async fn create(&self, path: &str, body: &Value) -> Result<String> {
        let answer = self.post_json(path, body).await?;
        answer
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("POST {path} answered no id: {answer}"))
    }

    /// `POST /api/jobs`: a job; returns its id.
    pub async fn create_job(&self, body: &Value) -> Result<String> {
        self.create("/api/jobs", body).await
    }

    pub async fn job(&self, id: &str) -> Result<Value> {
        self.get_json(&format!("/api/jobs/{id}")).await
    }

    /// Every result row of a job, following `next_cursor` pages (passed back as `after`).
    pub async fn job_results(&self, id: &str) -> Result<Vec<Value>> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100_000 {
            let path = match &cursor {
                Some(c) => format!("/api/jobs/{id}/results?limit={RESULTS_PAGE}&after={c}"),
                None => format!("/api/jobs/{id}/results?limit={RESULTS_PAGE}"),
            };
            let page = self.get_json(&path).await?;
            let items = match &page {
                Value::Array(items) => items.clone(),
                other => other
                    .get("items")
                    .or_else(|| other.get("results"))
                    .and_then(Value::as_array)
                    .cloned()
                    .context("results page has no items")?,
            };
            let empty = items.is_empty();
            rows.extend(items);
            let next = page
                .get("next_cursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            // A cursor that does not move would loop forever.
            if next.is_none() || next == cursor || empty {
                return Ok(rows);
            }
            cursor = next;
        }
        bail!("too many result pages")
    }
}

/// Parses Prometheus text exposition: unlabelled samples only (`name value`).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.contains('{') {
            continue;
        }
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(value)) = (parts.next(), parts.next())
            && let Ok(v) = value.parse::<f64>()
        {
            out.insert(name.to_string(), v);
        }
    }
    out
}

/// Finds `key` as a number anywhere in a JSON document (first match, depth first).
pub fn find_number(v: &Value, key: &str) -> Option<f64> {
    match v {
        Value::Object(map) => {
            if let Some(n) = map.get(key).and_then(Value::as_f64) {
                return Some(n);
            }
            map.values().find_map(|c| find_number(c, key))
        }
        Value::Array(items) => items.iter().find_map(|c| find_number(c, key)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unlabelled_samples() {
        let m = parse_metrics(
            "# HELP a x\n# TYPE a counter\na 12\nb{x=\"1\"} 3\nreap3r_agents_connected 7\n",
        );
        assert_eq!(m.get("a"), Some(&12.0));
        assert_eq!(m.get("reap3r_agents_connected"), Some(&7.0));
        assert!(!m.contains_key("b"));
    }

    #[test]
    fn finds_nested_numbers() {
        let v = serde_json::json!({"id": "x", "counts": {"succeeded": 5, "failed": 0}});
        assert_eq!(find_number(&v, "succeeded"), Some(5.0));
        assert_eq!(find_number(&v, "missing"), None);
    }
}
