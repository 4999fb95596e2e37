//! The API's transport and rate-limit settings: `api_tls` (off, the node's own certificate, or
//! PEM files checked at load) and `api_rate_per_s` / `api_rate_burst`.

use std::path::PathBuf;

use reap3r_api::rate_limit::RateSettings;
use serde::Deserialize;

/// What the HTTP API speaks (`api_tls` = `off` | `self` | `files`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ApiTls {
    /// Plain HTTP (the default): for loopback, or behind a proxy that terminates TLS.
    #[default]
    Off,
    /// HTTPS with the node's own certificate, the one the QUIC gateway presents and agents
    /// pin (clients pin its SHA-256 fingerprint too).
    NodeCertificate,
    /// HTTPS with a PEM certificate chain and PEM private key, checked at load.
    Files { cert: PathBuf, key: PathBuf },
}

impl ApiTls {
    pub fn enabled(&self) -> bool {
        *self != ApiTls::Off
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.enabled() { "https" } else { "http" }
    }
}

/// `api_rate_per_s`: requests a second (fractions allowed, 0 = off) and its bounds.
pub(super) const API_RATE_PER_S: (&str, f64, f64) = ("api_rate_per_s", 0.001, 1_000_000.0);
/// `api_rate_burst`: requests at once.
pub(super) const API_RATE_BURST: (&str, std::ops::RangeInclusive<u32>) =
    ("api_rate_burst", 1..=1_000_000);

/// A number in the file: TOML integers and floats alike.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(super) enum FileNumber {
    Int(u64),
    Float(f64),
}

impl FileNumber {
    fn value(self) -> f64 {
        match self {
            FileNumber::Int(i) => i as f64,
            FileNumber::Float(f) => f,
        }
    }
}

/// `api_tls` with its files: the mode must be known, `files` needs both paths (and they are
/// loaded and checked now, so a bad certificate stops the server before it binds), and paths
/// given without `files` are refused rather than silently ignored.
pub(super) fn parse_api_tls(
    errors: &mut Vec<String>,
    mode: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> ApiTls {
    let mode = mode.unwrap_or_else(|| "off".into());
    let tls = match mode.as_str() {
        "off" => ApiTls::Off,
        "self" => ApiTls::NodeCertificate,
        "files" => match (cert.clone(), key.clone()) {
            (Some(cert), Some(key)) => {
                if let Err(mut e) = crate::api_tls::files_config(&cert, &key) {
                    errors.append(&mut e);
                }
                return ApiTls::Files { cert, key };
            }
            (c, k) => {
                for (missing, name, var) in [
                    (c.is_none(), "api_tls_cert", "REAP3R_API_TLS_CERT"),
                    (k.is_none(), "api_tls_key", "REAP3R_API_TLS_KEY"),
                ] {
                    if missing {
                        errors.push(format!(
                            "api_tls = files needs {name} ({var}): the path of a PEM file"
                        ));
                    }
                }
                return ApiTls::Off;
            }
        },
        other => {
            errors.push(format!("api_tls must be off, self or files, not {other:?}"));
            return ApiTls::Off;
        }
    };
    for (given, name) in [
        (cert.is_some(), "api_tls_cert"),
        (key.is_some(), "api_tls_key"),
    ] {
        if given {
            errors.push(format!(
                "{name} is set but api_tls is {mode}: set api_tls = files to serve it"
            ));
        }
    }
    tls
}

/// `api_rate_per_s` in thousandths of a request a second: 0 (off) or within the bounds.
pub(super) fn parse_rate(
    errors: &mut Vec<String>,
    env: Option<&String>,
    file: Option<FileNumber>,
) -> u64 {
    let (name, min, max) = API_RATE_PER_S;
    let default = RateSettings::DEFAULT.milli_per_s;
    let value = match (env, file) {
        (Some(text), _) => match text.trim().parse::<f64>() {
            Ok(v) => v,
            Err(_) => {
                errors.push(format!("{name}: '{text}' is not a valid number"));
                return default;
            }
        },
        (None, Some(n)) => n.value(),
        (None, None) => return default,
    };
    if value == 0.0 {
        return 0;
    }
    if !(min..=max).contains(&value) {
        errors.push(format!(
            "{name} must be 0 (off) or between {min} and {max}, not {value}"
        ));
        return default;
    }
    // Within the bounds, so the product is a small positive integer.
    (value * 1000.0).round() as u64
}
