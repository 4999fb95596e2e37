//! Where notifications may not be sent: a receiver URL or SMTP host that is, or resolves to, a
//! loopback, link-local or cloud-metadata address is refused (SSRF), unless the server config
//! allows it (local tests). Checked when an integration is saved and again at every send, on the
//! addresses actually connected to: a send resolves the name once, checks every address, and
//! connects only to those, so a name that re-resolves elsewhere (DNS rebinding) is refused too.
//! Names are looked up through [`Lookup`], the system resolver in production, so tests can play
//! DNS deterministically.

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::Url;

/// Longest receiver URL, in bytes (the API schema says the same number).
pub const MAX_URL_LEN: usize = 2048;
/// Longest host name (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;

/// Names that reach the machine itself or a cloud metadata service.
const FORBIDDEN_NAMES: &[&str] = &["localhost", "metadata.google.internal", "metadata"];

/// AWS's IPv6 metadata address (fd00:ec2::254).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Whether sending to `ip` is refused without the allow-loopback setting.
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            v6.is_loopback()
                || v6.is_unspecified()
                // fe80::/10, link-local
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == AWS_METADATA_V6
        }
    }
}

fn forbidden_v4(v4: Ipv4Addr) -> bool {
    // 169.254/16 holds the metadata address 169.254.169.254 too.
    v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
}

/// Whether a host name (not an address) is refused without the allow-loopback setting.
fn forbidden_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    FORBIDDEN_NAMES.contains(&name.as_str()) || name.ends_with(".localhost")
}

/// Checks a host (name or address literal) without resolving it.
pub fn check_host(host: &str, allow_loopback: bool) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.len() > MAX_HOST_LEN {
        return Err(format!("host must be 1 to {MAX_HOST_LEN} characters"));
    }
    if allow_loopback {
        return Ok(());
    }
    let refused = match bare.parse::<IpAddr>() {
        Ok(ip) => forbidden_ip(ip),
        Err(_) => forbidden_name(bare),
    };
    if refused {
        return Err(format!(
            "host {host} is a loopback, link-local or metadata address, which this server does \
             not send to"
        ));
    }
    Ok(())
}

/// Parses and checks a receiver URL: http(s), a host, no credentials, not forbidden.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} bytes"));
    }
    let url = Url::parse(raw.trim()).map_err(|e| format!("url is malformed: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    let Some(host) = url.host_str() else {
        return Err("url has no host".into());
    };
    check_host(host, allow_loopback)?;
    Ok(url)
}

/// Turns a host name into addresses. A seam: production uses [`SystemLookup`]; a test gives a
/// table, so a name can resolve to loopback, or change its answer between two sends, without
/// touching the machine's DNS.
pub trait Lookup: Send + Sync + Debug {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver (getaddrinfo through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((name, port)).await?.collect()) })
    }
}

/// Resolves `host` once and refuses it if any of its addresses is forbidden; the addresses
/// returned are the ones to connect to (never resolve the name again for this send). An
/// address literal is used as it is, without a lookup.
pub async fn resolve_checked(
    lookup: &dyn Lookup,
    host: &str,
    port: u16,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, String> {
    check_host(host, allow_loopback)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => lookup
            .lookup(bare, port)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?,
    };
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if !allow_loopback && let Some(bad) = addrs.iter().find(|a| forbidden_ip(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a loopback, link-local or metadata address",
            bad.ip()
        ));
    }
    Ok(addrs)
}

/// reqwest's resolver for notifications: every name is resolved through [`resolve_checked`],
/// and reqwest connects to the addresses it returns, so the address connected to is the
/// address checked.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub allow_loopback: bool,
    pub lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_loopback;
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let addrs = resolve_checked(lookup.as_ref(), name.as_str(), 0, allow)
                .await
                .map_err(|e| Box::new(std::io::Error::other(e)) as Box<_>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, allow_loopback: bool, refused_because: Option<&str>) {
        let got = check_url(url, allow_loopback);
        match (refused_because, got) {
            (None, Ok(_)) => {}
            (Some(want), Err(e)) => assert!(e.contains(want), "{url}: {e:?} lacks {want:?}"),
            (want, got) => panic!("{url} (allow {allow_loopback}): want {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn receiver_urls_are_refused_by_scheme_shape_and_address() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("https://hooks.example.com/x", false, None),
            ("http://203.0.113.7:8080/hook", false, None),
            ("http://10.1.2.3/private-nets-are-allowed", false, None),
            ("ftp://example.com/x", false, Some("scheme")),
            ("file:///etc/passwd", false, Some("scheme")),
            ("gopher://127.0.0.1:25/", false, Some("scheme")),
            ("not a url", false, Some("malformed")),
            ("http://", false, Some("malformed")),
            ("https://user:pw@example.com/", false, Some("credentials")),
            ("http://127.0.0.1:9/", false, Some("loopback")),
            ("http://127.9.9.9/", false, Some("loopback")),
            ("http://localhost/", false, Some("loopback")),
            ("http://LOCALHOST./", false, Some("loopback")),
            ("http://app.localhost/", false, Some("loopback")),
            ("http://[::1]/", false, Some("loopback")),
            ("http://[::ffff:127.0.0.1]/", false, Some("loopback")),
            ("http://0.0.0.0/", false, Some("loopback")),
            (
                "http://169.254.169.254/latest/meta-data/",
                false,
                Some("metadata"),
            ),
            ("http://169.254.1.1/", false, Some("link-local")),
            ("http://[fe80::1]/", false, Some("link-local")),
            ("http://[fd00:ec2::254]/", false, Some("metadata")),
            ("http://metadata.google.internal/", false, Some("metadata")),
            ("http://2130706433/", false, Some("loopback")),
            // The setting lets local tests reach their receivers.
            ("http://127.0.0.1:9/", true, None),
            ("http://localhost:8080/", true, None),
            ("ftp://127.0.0.1/", true, Some("scheme")),
        ];
        for &(url, allow, why) in cases {
            check(url, allow, why);
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        check(&long, false, Some("longer"));
    }

    /// A DNS table for tests: each name's answer, and how many lookups were made.
    #[derive(Debug, Default)]
    struct Table {
        answers: std::sync::Mutex<std::collections::HashMap<String, Vec<IpAddr>>>,
        lookups: std::sync::atomic::AtomicUsize,
    }

    impl Table {
        fn set(&self, name: &str, ips: &[&str]) {
            let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
            self.answers.lock().unwrap().insert(name.into(), ips);
        }
    }

    impl Lookup for Table {
        fn lookup<'a>(
            &'a self,
            name: &'a str,
            port: u16,
        ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let found = self.answers.lock().unwrap().get(name).cloned();
            Box::pin(async move {
                let ips = found.ok_or_else(|| std::io::Error::other("no such name"))?;
                Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect())
            })
        }
    }

    #[tokio::test]
    async fn names_resolving_to_forbidden_addresses_are_refused() {
        let dns = Table::default();
        dns.set("hooks.example.com", &["203.0.113.7"]);
        dns.set("rebind.example.com", &["127.0.0.1"]);
        dns.set("metadata.example.com", &["169.254.169.254"]);
        dns.set("v6.example.com", &["2001:db8::1", "fe80::1"]);
        dns.set("mapped.example.com", &["::ffff:127.0.0.1"]);
        assert_eq!(
            resolve_checked(&dns, "hooks.example.com", 443, false).await,
            Ok(vec!["203.0.113.7:443".parse().unwrap()])
        );
        for (name, bad) in [
            ("rebind.example.com", "127.0.0.1"),
            ("metadata.example.com", "169.254.169.254"),
            // One forbidden address among good ones is enough to refuse the name.
            ("v6.example.com", "fe80::1"),
            ("mapped.example.com", "::ffff:127.0.0.1"),
        ] {
            let refused = resolve_checked(&dns, name, 443, false).await;
            let want = format!("{name} resolves to {bad}");
            assert!(
                refused.as_ref().is_err_and(|e| e.starts_with(&want)),
                "{name}: {refused:?}"
            );
        }
        // The allow-loopback setting lets it through, to the addresses looked up.
        assert_eq!(
            resolve_checked(&dns, "rebind.example.com", 25, true).await,
            Ok(vec!["127.0.0.1:25".parse().unwrap()])
        );
        let unknown = resolve_checked(&dns, "nowhere.example.com", 25, false).await;
        assert!(
            unknown
                .as_ref()
                .is_err_and(|e| e.starts_with("cannot resolve")),
            "{unknown:?}"
        );
    }

    #[tokio::test]
    async fn a_name_that_rebinds_is_refused_at_the_next_resolution() {
        let dns = Table::default();
        dns.set("hooks.example.com", &["203.0.113.7"]);
        assert!(
            resolve_checked(&dns, "hooks.example.com", 443, false)
                .await
                .is_ok()
        );
        dns.set("hooks.example.com", &["127.0.0.1"]);
        let refused = resolve_checked(&dns, "hooks.example.com", 443, false).await;
        assert!(refused.is_err(), "{refused:?}");
        // Literals are checked without a lookup; refused names never reach the resolver.
        let before = dns.lookups.load(std::sync::atomic::Ordering::SeqCst);
        assert!(resolve_checked(&dns, "127.0.0.1", 80, false).await.is_err());
        assert!(
            resolve_checked(&dns, "app.localhost", 80, false)
                .await
                .is_err()
        );
        assert_eq!(
            resolve_checked(&dns, "[2001:db8::2]", 80, false).await,
            Ok(vec!["[2001:db8::2]:80".parse().unwrap()])
        );
        assert_eq!(
            dns.lookups.load(std::sync::atomic::Ordering::SeqCst),
            before
        );
    }

    #[tokio::test]
    async fn the_system_resolver_is_checked_too() {
        // "127.1" is not an address literal to a URL-less host check, but getaddrinfo turns
        // it into 127.0.0.1 without any DNS server: deterministic on every machine.
        let refused = resolve_checked(&SystemLookup, "127.1", 25, false).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("resolves to 127.0.0.1")),
            "{refused:?}"
        );
    }
}
