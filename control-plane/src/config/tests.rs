//! The configuration's rules, one `check` per case: defaults, file and environment, every
//! error reported together.

use super::*;

/// Either a predicate the config must satisfy, or the error fragments expected.
type Expect<'a> = Result<&'a dyn Fn(&Config) -> bool, &'a [&'a str]>;

fn check(toml: Option<&str>, env: &[(&str, &str)], expect: Expect<'_>) {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match (Config::from_parts(toml, &env), expect) {
        (Ok(cfg), Ok(pred)) => assert!(pred(&cfg), "unexpected config {cfg:?}"),
        (Err(errs), Err(needles)) => {
            assert_eq!(errs.0.len(), needles.len(), "errors: {:?}", errs.0);
            for n in needles {
                assert!(
                    errs.0.iter().any(|e| e.contains(n)),
                    "missing '{n}' in {:?}",
                    errs.0
                );
            }
        }
        (got, _) => panic!("unexpected outcome {got:?}"),
    }
}

#[test]
fn defaults_file_and_env_layers() {
    check(
        None,
        &[],
        Ok(&|c| {
            c.quic_addr.port() == 4433 && c.database_url.is_none() && c.heartbeat_interval_s == 30
        }),
    );
    check(
        Some("quic_addr = \"0.0.0.0:5000\"\nheartbeat_interval_s = 5"),
        &[],
        Ok(&|c| c.public_addr == "127.0.0.1:5000" && c.heartbeat_interval_s == 5),
    );
    check(
        Some("heartbeat_interval_s = 5"),
        &[("REAP3R_HEARTBEAT_INTERVAL_S", "2")],
        Ok(&|c| c.heartbeat_interval_s == 2),
    );
    check(
        None,
        &[("REAP3R_DATABASE_URL", "postgres://u@h/db")],
        Ok(&|c| c.database_url.as_deref() == Some("postgres://u@h/db")),
    );
}

#[test]
fn every_error_is_reported_at_once() {
    check(
        Some("bogus = 1"),
        &[
            ("REAP3R_QUIC_ADDR", "nope"),
            ("REAP3R_HEARTBEAT_INTERVAL_S", "0"),
            ("REAP3R_DATABASE_URL", "mysql://x"),
            ("REAP3R_TYPO", "1"),
        ],
        Err(&[
            "config file",
            "quic_addr",
            "heartbeat_interval_s must be",
            "database_url",
            "REAP3R_TYPO",
        ]),
    );
    check(
        None,
        &[("REAP3R_MISSED_HEARTBEATS", "x")],
        Err(&["missed_heartbeats"]),
    );
}

#[test]
fn metrics_interval_and_retention_are_validated() {
    check(
        None,
        &[],
        Ok(&|c| {
            c.metrics_interval_s == 60
                && c.metrics_raw_retention_h == 48
                && c.metrics_rollup_retention_d == [7, 30, 180, 730]
        }),
    );
    check(
        Some("metrics_interval_s = 5\nmetrics_retention_1d_d = 3650"),
        &[("REAP3R_METRICS_RAW_RETENTION_H", "24")],
        Ok(&|c| {
            c.metrics_interval_s == 5
                && c.metrics_raw_retention_h == 24
                && c.metrics_rollup_retention_d[3] == 3650
        }),
    );
    check(
        None,
        &[
            ("REAP3R_METRICS_INTERVAL_S", "4"),
            ("REAP3R_METRICS_RAW_RETENTION_H", "1"),
            ("REAP3R_METRICS_RETENTION_1H_D", "1"),
            ("REAP3R_METRICS_RETENTION_5M_D", "x"),
        ],
        Err(&[
            "metrics_interval_s must be",
            "metrics_raw_retention_h must be",
            "metrics_retention_1h_d must be",
            "metrics_retention_5m_d: 'x'",
        ]),
    );
}

#[test]
fn the_metrics_queue_is_configurable_within_bounds() {
    check(None, &[], Ok(&|c| c.metrics_queue == 20_000));
    check(
        Some("metrics_queue = 50000"),
        &[],
        Ok(&|c| c.metrics_queue == 50_000),
    );
    check(
        None,
        &[("REAP3R_METRICS_QUEUE", "100000")],
        Ok(&|c| c.metrics_queue == 100_000),
    );
    check(
        None,
        &[("REAP3R_METRICS_QUEUE", "1999")],
        Err(&["metrics_queue must be between 2000 and 2000000"]),
    );
    check(
        None,
        &[("REAP3R_METRICS_QUEUE", "lots")],
        Err(&["metrics_queue: 'lots'"]),
    );
}

#[test]
fn api_rate_defaults_fractions_off_and_bounds() {
    check(None, &[], Ok(&|c| c.api_rate == RateSettings::DEFAULT));
    check(
        Some("api_rate_per_s = 5\napi_rate_burst = 20"),
        &[],
        Ok(&|c| c.api_rate.milli_per_s == 5_000 && c.api_rate.burst == 20),
    );
    check(
        Some("api_rate_per_s = 0.25"),
        &[("REAP3R_API_RATE_BURST", "3")],
        Ok(&|c| c.api_rate.milli_per_s == 250 && c.api_rate.burst == 3),
    );
    check(
        None,
        &[("REAP3R_API_RATE_PER_S", "0")],
        Ok(&|c| !c.api_rate.enabled()),
    );
    check(
        None,
        &[
            ("REAP3R_API_RATE_PER_S", "0.0001"),
            ("REAP3R_API_RATE_BURST", "0"),
        ],
        Err(&[
            "api_rate_per_s must be 0 (off) or between",
            "api_rate_burst must be",
        ]),
    );
    check(
        None,
        &[("REAP3R_API_RATE_PER_S", "fast")],
        Err(&["api_rate_per_s: 'fast'"]),
    );
    check(
        None,
        &[("REAP3R_API_RATE_PER_S", "NaN")],
        Err(&["api_rate_per_s must be"]),
    );
}

#[test]
fn api_tls_modes_and_their_files_are_checked() {
    check(None, &[], Ok(&|c| c.api_tls == ApiTls::Off));
    check(
        None,
        &[("REAP3R_API_TLS", "self")],
        Ok(&|c| c.api_tls == ApiTls::NodeCertificate && c.api_tls.scheme() == "https"),
    );
    check(
        Some("api_tls = \"on\""),
        &[],
        Err(&["api_tls must be off, self or files, not \"on\""]),
    );
    check(
        None,
        &[("REAP3R_API_TLS", "files")],
        Err(&[
            "needs api_tls_cert (REAP3R_API_TLS_CERT)",
            "needs api_tls_key",
        ]),
    );
    check(
        None,
        &[("REAP3R_API_TLS", "self"), ("REAP3R_API_TLS_KEY", "/k.pem")],
        Err(&["api_tls_key is set but api_tls is self"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["api.example".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    check(
        None,
        &[
            ("REAP3R_API_TLS", "files"),
            ("REAP3R_API_TLS_CERT", &cert_s),
            ("REAP3R_API_TLS_KEY", &key_s),
        ],
        Ok(&|c| {
            c.api_tls
                == ApiTls::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                }
        }),
    );
    // A file that is not there, reported with the rest of the configuration's errors.
    let missing = dir.path().join("nope.pem").display().to_string();
    check(
        None,
        &[
            ("REAP3R_API_TLS", "files"),
            ("REAP3R_API_TLS_CERT", &missing),
            ("REAP3R_API_TLS_KEY", &key_s),
            ("REAP3R_HEARTBEAT_INTERVAL_S", "0"),
        ],
        Err(&["api_tls_cert", "heartbeat_interval_s must be"]),
    );
}

#[test]
fn shell_settings_come_from_file_and_env_within_their_ranges() {
    check(None, &[], Ok(&|c| c.shell == ShellSettings::default()));
    check(
        Some("shell_max_per_agent = 4\nshell_recording_cap_mb = 8\nshell_require_step_up = false"),
        &[("REAP3R_SHELL_IDLE_TIMEOUT_S", "120")],
        Ok(&|c| {
            c.shell.max_per_agent == 4
                && c.shell.recording_cap_bytes == 8 * 1024 * 1024
                && !c.shell.require_step_up
                && c.shell.idle_timeout_s == 120
                && c.shell.max_duration_s == ShellSettings::default().max_duration_s
        }),
    );
    check(
        Some("shell_max_per_agent = 0"),
        &[
            ("REAP3R_SHELL_REATTACH_GRACE_S", "1"),
            ("REAP3R_SHELL_REQUIRE_STEP_UP", "maybe"),
        ],
        Err(&[
            "shell_max_per_agent must be between 1 and 64",
            "shell_reattach_grace_s must be between 5 and 600",
            "REAP3R_SHELL_REQUIRE_STEP_UP must be 1, 0, true or false",
        ]),
    );
    // Unknown keys are still refused next to the shell keys.
    check(
        Some("shell_max_per_agnet = 3"),
        &[],
        Err(&["shell_max_per_agnet"]),
    );
}

#[test]
fn file_settings_come_from_file_and_env_within_their_ranges() {
    check(None, &[], Ok(&|c| c.files == FileSettings::default()));
    check(
        Some("file_max_mb = 50\nfile_rate_limit_kib_s = 512"),
        &[("REAP3R_FILE_MAX_PER_AGENT", "2")],
        Ok(&|c| {
            c.files.max_file_bytes == 50 * 1024 * 1024
                && c.files.rate_limit_bytes_per_s == 512 * 1024
                && c.files.max_per_agent == 2
                && c.files.resume_timeout_s == FileSettings::default().resume_timeout_s
        }),
    );
    check(
        Some("file_max_mb = 0"),
        &[("REAP3R_FILE_RESUME_TIMEOUT_S", "1")],
        Err(&[
            "file_max_mb must be between 1 and 65536",
            "file_resume_timeout_s must be between 10 and 86400",
        ]),
    );
    check(Some("file_max_bm = 3"), &[], Err(&["unknown field"]));
}
