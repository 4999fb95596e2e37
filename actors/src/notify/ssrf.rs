//! Where notifications may not be sent: a receiver URL or SMTP host that is, or resolves to, a
//! loopback, link-local or cloud-metadata address is refused (SSRF), unless the server config
//! allows it (local tests). Checked when an integration is saved and again at every send, on the
//! addresses actually connected to, so a name that re-resolves elsewhere (DNS rebinding) is
//! refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Resolves `host` and refuses it if any of its addresses is forbidden; the addresses returned
/// are the ones to connect to.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, String> {
    check_host(host, allow_loopback)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
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
/// so the address connected to is the address checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub allow_loopback: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_loopback;
        Box::pin(async move {
            let addrs = resolve_checked(name.as_str(), 0, allow)
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

    #[tokio::test]
    async fn send_time_resolution_refuses_loopback_unless_allowed() {
        // A plain name that resolves to loopback: what DNS rebinding would do to a checked name.
        let refused = resolve_checked("localhost", 80, false).await;
        assert!(refused.is_err(), "{refused:?}");
        let allowed = resolve_checked("127.0.0.1", 80, true).await;
        assert_eq!(allowed, Ok(vec!["127.0.0.1:80".parse().unwrap()]));
    }
}
