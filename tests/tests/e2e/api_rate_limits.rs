//! Rate limits per credential against a real server with a small configured rate: an API key's
//! burst passes and the next request is refused with 429, `Retry-After` and the usual error
//! body; another key and a login session keep their own budgets; after `Retry-After` seconds
//! the key passes again. Requests without a valid credential spend their address's budget, a
//! bad credential included. Every refusal is counted in `/metrics`.

use std::time::Duration;

use anyhow::{Result, anyhow};
use reap3r_api::rate_limit::RateSettings;
use serde_json::{Value, json};

use crate::api_harness::{Api, Reply, default_org, logged_in};
use crate::harness::{TestFleet, eventually};

/// One request a second, five at once.
const RATE: RateSettings = RateSettings {
    milli_per_s: 1000,
    burst: 5,
};

/// A 429 from the rate limit: checks the body and returns `Retry-After`, in seconds.
fn limited(reply: Reply) -> Result<u64> {
    let retry_after: u64 = reply
        .headers
        .get("retry-after")
        .ok_or_else(|| anyhow!("429 without Retry-After: {:?}", reply.headers))?
        .to_str()?
        .parse()?;
    let body = reply.body.clone();
    assert_eq!(reply.error(429)?, "rate_limited");
    assert_eq!(body["details"]["retry_after_s"], retry_after);
    Ok(retry_after)
}

async fn new_key(admin: &Api, name: &str) -> Result<Api> {
    let created: Value = admin
        .post(
            "/api/api-keys",
            json!({ "name": name, "scopes": ["agent:list"] }),
        )
        .await?
        .expect(200)?;
    let secret = created["secret"]
        .as_str()
        .ok_or_else(|| anyhow!("no secret in {created}"))?;
    Ok(admin.anonymous().with_api_key(secret))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_credential_has_its_own_bucket_and_429_says_when_to_retry() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(0)
        .api_rate(RATE)
        .spawn()
        .await?;
    let server = &fleet.server;
    let org = default_org(server).await?.id;
    // The login spends the address's budget; the two keys, the session's.
    let session = logged_in(server, org, "ops@example.com", "org_admin").await?;
    let a = new_key(&session, "script a").await?;
    let b = new_key(&session, "script b").await?;

    for i in 0..RATE.burst {
        a.get("/api/agents")
            .await?
            .expect(200)
            .map_err(|e| e.context(i))?;
    }
    let retry_after = limited(a.get("/api/agents").await?)?;
    assert_eq!(retry_after, 1, "one request a second");
    // Refused requests spend nothing, but do not pass either.
    limited(a.get("/api/agents").await?)?;
    // Another key and the session that made both are untouched by a's refusals.
    b.get("/api/agents").await?.expect(200)?;
    session.get("/api/auth/me").await?.expect(200)?;

    // What the bucket needs, then a's next request passes.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    eventually("key a to pass again", Duration::from_secs(5), || async {
        let reply = a.get("/api/agents").await?;
        Ok((reply.status == 200).then_some(()))
    })
    .await?;

    // Without a credential, the address's budget: public routes and refused credentials alike.
    let anonymous = session.anonymous();
    let mut refused = None;
    for _ in 0..=RATE.burst {
        let reply = anonymous.get("/api/health").await?;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        reply.expect(200)?;
    }
    let refused = refused.ok_or_else(|| anyhow!("the address was never limited"))?;
    limited(refused)?;
    limited(
        anonymous
            .with_api_key("r3k_not-a-real-key")
            .get("/api/agents")
            .await?,
    )?;
    // Authenticated callers from the same address keep their own budgets.
    b.get("/api/agents").await?.expect(200)?;

    // The scrape is unauthenticated too: it passes once the address's bucket has a token.
    let url = format!("{}/metrics", server.node().api_url());
    let metrics = eventually("a metrics scrape", Duration::from_secs(5), || async {
        let reply = reqwest::get(&url).await?;
        Ok(if reply.status() == 200 {
            Some(reply.text().await?)
        } else {
            None
        })
    })
    .await?;
    let counted = |kind: &str| {
        let prefix = format!("reap3r_http_rate_limited_total{{credential=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(counted("api_key"), Some(2), "{metrics}");
    assert_eq!(counted("session"), Some(0), "{metrics}");
    assert!(counted("address") >= Some(2), "{metrics}");
    Ok(())
}
