//! The vault's operations on a real store (every backend available here) with a manual clock:
//! rows cannot be swapped between secrets or versions, reveals need a grant, a reason and a
//! fresh step-up, lists show only what is shared, the master key is checked at start and a
//! rotation moves every sealed value while reveals go on, and plaintext from before the vault
//! is sealed at start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use reap3r_actors::access::{
    AccessSettings, Caller, CreateUser, EnableMfa, Login, LoginMfa, LoginOutcome, Origin, Role,
    SetupMfa, StepUp, authenticate, totp,
};
use reap3r_actors::vault::{
    CharClass, CreateSecret, GrantSubject, KeySource, ListSecrets, ListVersions, MasterKey,
    ReadAccessLog, RevealSecret, RotateMasterKey, RotateSecret, RotationPolicy, STEP_UP_WINDOW_MS,
    SecretKind, SecretValue, ShareSecret, UnlockError, UnshareSecret, UpdateSecret, reseal_all,
    sweep, unlock,
};
use reap3r_actors::{Domain, DomainError, EventBus, ManualClock};
use reap3r_store::{GrantFlags, SealedColumn, Store, Uuid};
use reap3r_testkit::TestDatabase;

const T0: u64 = 1_700_000_000_000;
const PASSWORD: &str = "a long enough password";
const VALUE: &str = "Zq7#correct-horse-battery-staple";

struct Rig {
    _db: TestDatabase,
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
    domain: Domain,
    source: KeySource,
}

async fn rigs() -> Vec<Rig> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::File(dir.path().join("master.key"));
        let keys = unlock(&store, source.clone(), T0 as i64).await.unwrap();
        let clock = ManualClock::new(T0);
        let domain = Domain::new(
            store.clone(),
            Arc::new(clock.clone()),
            EventBus::new(64),
            keys,
        );
        out.push(Rig {
            _db: db,
            _dir: dir,
            store,
            clock,
            domain,
            source,
        });
    }
    out
}

fn origin() -> Origin {
    Origin::new(Some("192.0.2.9".into()), Some("test"))
}

impl Rig {
    async fn org(&self) -> Uuid {
        self.store.default_org(T0 as i64).await.unwrap().id
    }

    /// A user with a login session, as the API would see them.
    async fn person(&self, email: &str, role: Role) -> Caller {
        let org = self.org().await;
        CreateUser {
            email: email.into(),
            password: PASSWORD.into(),
            role,
            display_name: None,
        }
        .run(&self.domain, &Caller::cli(org))
        .await
        .unwrap();
        let tokens = match self.login(email).await {
            LoginOutcome::Tokens(t) => t,
            other => panic!("expected tokens, got {other:?}"),
        };
        authenticate(&self.domain, &tokens.access_token, None)
            .await
            .unwrap()
    }

    async fn login(&self, email: &str) -> LoginOutcome {
        Login {
            email: email.into(),
            password: PASSWORD.into(),
            origin: Origin::new(Some("192.0.2.7".into()), Some("test")),
        }
        .run(&self.domain, &AccessSettings::default())
        .await
        .unwrap()
    }

    async fn secret(&self, caller: &Caller, name: &str, value: &str) -> Uuid {
        CreateSecret {
            name: name.into(),
            kind: SecretKind::Password,
            value: SecretValue::new(value.into()),
            folder_id: None,
            tags: vec!["db".into()],
            notes: None,
            expires_at: None,
            rotation: None,
            origin: origin(),
        }
        .run(&self.domain, caller)
        .await
        .unwrap()
        .row
        .id
    }

    async fn reveal(
        &self,
        caller: &Caller,
        id: Uuid,
        version: Option<i64>,
    ) -> Result<String, DomainError> {
        RevealSecret {
            id,
            version,
            reason: "restore the customer's backup job".into(),
            origin: origin(),
        }
        .run(&self.domain, caller)
        .await
        .map(|r| r.value.to_string())
    }

    async fn new_version(&self, caller: &Caller, id: Uuid, value: &str) {
        UpdateSecret {
            id,
            value: Some(SecretValue::new(value.into())),
            origin: origin(),
            ..UpdateSecret::default()
        }
        .run(&self.domain, caller)
        .await
        .unwrap();
    }

    /// Every text column of the vault's and sealed tables, for greps.
    async fn dump(&self) -> String {
        let mut all = String::new();
        for (table, cols) in [
            ("vault_secret_versions", "ciphertext, value_mac"),
            ("vault_secrets", "name, dek_sealed"),
            ("users", "COALESCE(mfa_secret, '')"),
            ("audit_log", "details"),
            ("vault_access_log", "COALESCE(reason, '')"),
        ] {
            let rows = self
                .store
                .raw_query_text(&format!("SELECT {cols} FROM {table}"))
                .await
                .unwrap();
            all.push_str(&rows.join("\n"));
        }
        all
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, DomainError>) -> String {
    match result {
        Err(DomainError::Forbidden { code, .. } | DomainError::Invalid { code, .. }) => code.into(),
        Err(DomainError::NotFound(what)) => format!("not_found:{what}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_open_only_in_their_own_row() {
    for rig in rigs().await {
        let owner = rig.person("owner@example.com", Role::Technician).await;
        let a = rig.secret(&owner, "db-a", VALUE).await;
        let b = rig
            .secret(&owner, "db-b", "another value entirely 91!")
            .await;
        rig.new_version(&owner, a, "second value of a 77#").await;
        assert_eq!(rig.reveal(&owner, a, Some(1)).await.unwrap(), VALUE);
        assert_eq!(
            rig.reveal(&owner, a, None).await.unwrap(),
            "second value of a 77#"
        );
        let versions = ListVersions {
            id: a,
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [2, 1]
        );
        assert_ne!(versions[0].value_mac, versions[1].value_mac);

        // Version 2's ciphertext copied into version 1 of the same secret: the AAD names the
        // version, so it does not open.
        rig.store
            .raw_execute(&format!(
                "UPDATE vault_secret_versions SET ciphertext = (SELECT ciphertext FROM \
                 vault_secret_versions WHERE secret_id = '{a}' AND version = 2) \
                 WHERE secret_id = '{a}' AND version = 1"
            ))
            .await
            .unwrap();
        assert!(matches!(
            rig.reveal(&owner, a, Some(1)).await,
            Err(DomainError::Unavailable(_))
        ));
        // Secret b's sealed data key moved onto secret a: the AAD names the secret.
        rig.store
            .raw_execute(&format!(
                "UPDATE vault_secrets SET dek_sealed = (SELECT dek_sealed FROM vault_secrets \
                 WHERE id = '{b}') WHERE id = '{a}'"
            ))
            .await
            .unwrap();
        assert!(matches!(
            rig.reveal(&owner, a, None).await,
            Err(DomainError::Unavailable(_))
        ));
        // Nothing stored holds a value in plain text, the audit chain included.
        let dump = rig.dump().await;
        for plain in [VALUE, "second value of a 77#", "another value entirely 91!"] {
            assert!(!dump.contains(plain), "{plain} is stored in plain text");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reveal_needs_a_grant_a_reason_and_a_fresh_step_up() {
    for rig in rigs().await {
        let owner = rig.person("owner@example.com", Role::Technician).await;
        let tech = rig.person("tech@example.com", Role::Technician).await;
        let viewer = rig.person("viewer@example.com", Role::Viewer).await;
        let admin = rig.person("admin@example.com", Role::OrgAdmin).await;
        let id = rig.secret(&owner, "db", VALUE).await;
        let other = rig
            .secret(&owner, "other", "not shared with anyone 55$")
            .await;

        // Not shared: the technician neither lists nor finds it.
        let listed = ListSecrets::default()
            .run(&rig.domain, &tech)
            .await
            .unwrap();
        assert!(listed.is_empty());
        assert_eq!(
            code_of(rig.reveal(&tech, id, None).await),
            "not_found:secret"
        );
        // The org admin sees metadata of every secret but needs a grant for the value.
        let listed = ListSecrets::default()
            .run(&rig.domain, &admin)
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(code_of(rig.reveal(&admin, id, None).await), "forbidden");

        // Shared with the technicians to read: listed, not revealable.
        ShareSecret {
            id,
            subject: GrantSubject::Role(Role::Technician),
            flags: GrantFlags {
                read: true,
                ..GrantFlags::default()
            },
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        let listed = ListSecrets::default()
            .run(&rig.domain, &tech)
            .await
            .unwrap();
        assert_eq!(listed.iter().map(|v| v.row.id).collect::<Vec<_>>(), [id]);
        assert!(!listed[0].access.reveal);
        assert_eq!(code_of(rig.reveal(&tech, id, None).await), "forbidden");
        // Only the owner or an admin shares.
        let by_tech = ShareSecret {
            id,
            subject: GrantSubject::User(tech.user_id.unwrap()),
            flags: GrantFlags {
                reveal: true,
                ..GrantFlags::default()
            },
            origin: origin(),
        }
        .run(&rig.domain, &tech)
        .await;
        assert_eq!(code_of(by_tech), "forbidden");
        ShareSecret {
            id,
            subject: GrantSubject::User(tech.user_id.unwrap()),
            flags: GrantFlags {
                reveal: true,
                ..GrantFlags::default()
            },
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        // A user without MFA reveals with a reason; an empty reason is refused.
        assert_eq!(rig.reveal(&tech, id, None).await.unwrap(), VALUE);
        let no_reason = RevealSecret {
            id,
            version: None,
            reason: "  ".into(),
            origin: origin(),
        }
        .run(&rig.domain, &tech)
        .await;
        assert_eq!(code_of(no_reason), "invalid_input");
        // A viewer's role holds no secret:reveal, whatever a grant says.
        ShareSecret {
            id,
            subject: GrantSubject::User(viewer.user_id.unwrap()),
            flags: GrantFlags {
                reveal: true,
                ..GrantFlags::default()
            },
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        assert_eq!(code_of(rig.reveal(&viewer, id, None).await), "forbidden");
        assert_eq!(
            code_of(rig.reveal(&tech, other, None).await),
            "not_found:secret"
        );

        // With MFA on, the technician needs a step-up, which lapses after five minutes.
        let mfa_caller = enable_mfa(&rig, &tech).await;
        assert_eq!(
            code_of(rig.reveal(&mfa_caller, id, None).await),
            "step_up_required"
        );
        rig.clock.advance(31_000);
        let secret = rig
            .store
            .user_by_id(tech.user_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        let sealed = secret.mfa_secret.unwrap();
        assert!(sealed.starts_with("r3v1:"), "the TOTP secret is sealed");
        let plain = rig
            .domain
            .vault
            .open_column_text(SealedColumn::UserMfaSecret, None, secret.id, &sealed)
            .unwrap();
        let wrong = StepUp {
            code: "000000".into(),
        }
        .run(&rig.domain, &mfa_caller)
        .await;
        assert!(wrong.is_err());
        StepUp {
            code: totp::code_at(&plain, rig.domain.now_ms()).unwrap(),
        }
        .run(&rig.domain, &mfa_caller)
        .await
        .unwrap();
        assert_eq!(rig.reveal(&mfa_caller, id, None).await.unwrap(), VALUE);
        rig.clock.advance(STEP_UP_WINDOW_MS as u64 + 1);
        assert_eq!(
            code_of(rig.reveal(&mfa_caller, id, None).await),
            "step_up_required"
        );

        // The access log names every reveal with its reason; only the owner (or an admin)
        // reads it.
        let log = ReadAccessLog {
            id,
            before: None,
            limit: None,
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        let reveals: Vec<_> = log.iter().filter(|e| e.action == "reveal").collect();
        assert_eq!(reveals.len(), 2);
        assert!(
            reveals
                .iter()
                .all(|e| e.reason.as_deref() == Some("restore the customer's backup job"))
        );
        assert!(log.iter().any(|e| e.action == "list"));
        assert!(log.iter().any(|e| e.action == "share"));
        let by_tech = ReadAccessLog {
            id,
            before: None,
            limit: None,
        }
        .run(&rig.domain, &tech)
        .await;
        assert_eq!(code_of(by_tech), "forbidden");
        let audited = rig.store.list_audit(None, 1000).await.unwrap();
        let reveal_records: Vec<_> = audited
            .iter()
            .filter(|r| r.action == "secret.reveal")
            .collect();
        assert_eq!(reveal_records.len(), 2);
        assert!(
            reveal_records
                .iter()
                .all(|r| r.details["value_mac"].is_string())
        );
    }
}

/// Turns MFA on for `caller`'s account and logs in again through the second factor, as the
/// API does; answers the new session's caller.
async fn enable_mfa(rig: &Rig, caller: &Caller) -> Caller {
    let enrolment = SetupMfa
        .run(&rig.domain, caller, &AccessSettings::default())
        .await
        .unwrap();
    EnableMfa {
        code: totp::code_at(&enrolment.secret, rig.domain.now_ms()).unwrap(),
    }
    .run(&rig.domain, caller)
    .await
    .unwrap();
    rig.clock.advance(31_000);
    let LoginOutcome::MfaRequired {
        challenge_token, ..
    } = rig.login(&caller.email).await
    else {
        panic!("MFA is on: the login needs a second step");
    };
    let tokens = LoginMfa {
        challenge_token,
        code: totp::code_at(&enrolment.secret, rig.domain.now_ms()).unwrap(),
        origin: Origin::new(None, None),
    }
    .run(&rig.domain, &AccessSettings::default())
    .await
    .unwrap();
    authenticate(&rig.domain, &tokens.access_token, None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_master_key_is_refused_and_nothing_is_overwritten() {
    for rig in rigs().await {
        let owner = rig.person("owner@example.com", Role::Technician).await;
        rig.secret(&owner, "db", VALUE).await;
        let KeySource::File(path) = &rig.source else {
            unreachable!()
        };
        let original = std::fs::read(path).unwrap();
        // Another key file: refused, naming the key the database needs.
        let other = path.with_file_name("other.key");
        KeySource::File(other.clone()).create().unwrap();
        let err = unlock(&rig.store, KeySource::File(other), T0 as i64)
            .await
            .unwrap_err();
        let needed = rig.store.vault_master_keys().await.unwrap()[0].id.clone();
        assert!(matches!(err, UnlockError::Wrong { .. }), "{err}");
        assert!(err.to_string().contains(&needed), "{err}");
        // The key file gone: refused, and no new key file is made in its place.
        let moved = path.with_file_name("moved.key");
        std::fs::rename(path, &moved).unwrap();
        let err = unlock(&rig.store, rig.source.clone(), T0 as i64)
            .await
            .unwrap_err();
        assert!(matches!(err, UnlockError::Missing { .. }), "{err}");
        assert!(!path.exists(), "a missing key file is not recreated");
        std::fs::rename(&moved, path).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), original);
        unlock(&rig.store, rig.source.clone(), T0 as i64)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_rotation_moves_every_sealed_value_while_reveals_go_on() {
    for rig in rigs().await {
        let owner = rig.person("owner@example.com", Role::Technician).await;
        let mfa_owner = enable_mfa(&rig, &owner).await;
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(
                rig.secret(&owner, &format!("s{i}"), &format!("value number {i} !x9"))
                    .await,
            );
        }
        let before = rig.store.vault_master_keys().await.unwrap()[0].id.clone();
        // The owner has MFA: reveals need a step-up, proved once; they run while the
        // rotation runs.
        StepUp {
            code: totp_code(&rig, &owner).await,
        }
        .run(&rig.domain, &mfa_owner)
        .await
        .unwrap();
        let revealing = {
            let domain = rig.domain.clone();
            let caller = mfa_owner.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut done = 0;
                for round in 0..5 {
                    for (i, id) in ids.iter().enumerate() {
                        let v = RevealSecret {
                            id: *id,
                            version: None,
                            reason: format!("round {round}"),
                            origin: Origin::default(),
                        }
                        .run(&domain, &caller)
                        .await
                        .unwrap();
                        assert_eq!(v.value.as_str(), format!("value number {i} !x9"));
                        done += 1;
                    }
                }
                done
            })
        };
        let rotation = RotateMasterKey::default()
            .run(&rig.domain, "cli:test")
            .await
            .unwrap();
        assert_eq!(rotation.from.as_deref(), Some(before.as_str()));
        assert_ne!(rotation.to, before);
        assert_eq!(rotation.retired, std::slice::from_ref(&before));
        assert_eq!(revealing.await.unwrap(), 150);
        // Everything is under the new key: data keys and the TOTP secret.
        let under_old = format!("r3v1:{before}:");
        let dump = rig.dump().await;
        assert!(
            !dump.contains(&under_old),
            "a value is still sealed under the old key"
        );
        assert!(dump.contains(&format!("r3v1:{}:", rotation.to)));
        // A node started afresh with the rotated key file opens everything; the old key alone
        // is refused.
        let keys = unlock(&rig.store, rig.source.clone(), T0 as i64)
            .await
            .unwrap();
        let fresh = Domain::new(
            rig.store.clone(),
            Arc::new(rig.clock.clone()),
            EventBus::new(8),
            keys,
        );
        let v = RevealSecret {
            id: ids[3],
            version: None,
            reason: "after".into(),
            origin: Origin::default(),
        }
        .run(&fresh, &mfa_owner)
        .await
        .unwrap();
        assert_eq!(v.value.as_str(), "value number 3 !x9");
        let old_only = rig
            .source
            .read()
            .unwrap()
            .into_iter()
            .find(|k| k.id() == before)
            .unwrap();
        let err = reap3r_actors::vault::unlock(
            &rig.store,
            write_keys(&rig, "old-only.key", &[old_only]),
            T0 as i64,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UnlockError::Wrong { .. }), "{err}");
    }
}

async fn totp_code(rig: &Rig, caller: &Caller) -> String {
    rig.clock.advance(31_000);
    let user = rig
        .store
        .user_by_id(caller.user_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    let plain = rig
        .domain
        .vault
        .open_column_text(
            SealedColumn::UserMfaSecret,
            None,
            user.id,
            &user.mfa_secret.unwrap(),
        )
        .unwrap();
    totp::code_at(&plain, rig.domain.now_ms()).unwrap()
}

fn write_keys(rig: &Rig, name: &str, keys: &[MasterKey]) -> KeySource {
    let KeySource::File(path) = &rig.source else {
        unreachable!()
    };
    let source = KeySource::File(path.with_file_name(name));
    source.write_all(keys).unwrap();
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_from_before_the_vault_is_sealed_at_start() {
    for rig in rigs().await {
        let user = rig.person("legacy@example.com", Role::Technician).await;
        let org = rig.org().await;
        let id = user.user_id.unwrap();
        // As a database from before the vault holds them: a TOTP secret and channel secrets
        // in plain text.
        rig.store
            .raw_execute(&format!(
                "UPDATE users SET mfa_secret = 'JBSWY3DPEHPK3PXPJBSWY3DP' WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        let integration = Uuid::now_v7();
        rig.store
            .raw_execute(&format!(
                "INSERT INTO alert_integrations (id, org_id, name, kind, config, secrets, enabled, \
                 created_at) VALUES ('{integration}', '{org}', 'hook', 'webhook', \
                 '{{\"url\":\"https://example.com/h\"}}', '{{\"webhook_secret\":\"legacy-hmac-secret-123\"}}', 1, 0)"
            ))
            .await
            .unwrap();
        let report = reseal_all(&rig.domain, "system:vault").await.unwrap();
        assert_eq!(report.sealed_plaintext, 2);
        let dump = rig
            .store
            .raw_query_text("SELECT secrets FROM alert_integrations")
            .await
            .unwrap()
            .join("\n")
            + &rig.dump().await;
        assert!(!dump.contains("JBSWY3DPEHPK3PXPJBSWY3DP"));
        assert!(!dump.contains("legacy-hmac-secret-123"));
        // They still open where they are used.
        let row = rig
            .store
            .integration(org, integration)
            .await
            .unwrap()
            .unwrap();
        let channel =
            reap3r_actors::notify::channels::Channel::decode(&row, &rig.domain.vault).unwrap();
        assert_eq!(
            channel.secrets.webhook_secret.as_deref(),
            Some("legacy-hmac-secret-123")
        );
        // A second start finds nothing left to seal.
        assert_eq!(
            reseal_all(&rig.domain, "system:vault")
                .await
                .unwrap()
                .sealed_plaintext,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_policy_writes_a_generated_password_when_due() {
    for rig in rigs().await {
        let owner = rig.person("owner@example.com", Role::Technician).await;
        let id = CreateSecret {
            name: "svc".into(),
            kind: SecretKind::Password,
            value: SecretValue::new("password".into()),
            folder_id: None,
            tags: vec![],
            notes: None,
            expires_at: None,
            rotation: Some(RotationPolicy {
                every_days: 7,
                length: 20,
                classes: vec![CharClass::Lower, CharClass::Digits],
            }),
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap()
        .row
        .id;
        let counts = reap3r_actors::vault::vault_counts(&rig.domain, &owner)
            .await
            .unwrap();
        assert_eq!((counts.total, counts.weak, counts.rotation_due), (1, 1, 0));
        assert_eq!(sweep(&rig.domain).await.unwrap(), 0, "not due yet");
        rig.clock.advance(7 * 86_400_000 + 1);
        assert_eq!(sweep(&rig.domain).await.unwrap(), 1);
        assert_eq!(sweep(&rig.domain).await.unwrap(), 0, "rotated once");
        let new = rig.reveal(&owner, id, None).await.unwrap();
        assert_eq!(new.len(), 20);
        assert!(
            new.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        let counts = reap3r_actors::vault::vault_counts(&rig.domain, &owner)
            .await
            .unwrap();
        assert_eq!(counts.weak, 0);
        // A manual rotation of a token needs the value; of a password it may generate one.
        let generated = RotateSecret {
            id,
            value: None,
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        assert_eq!(generated.row.current_version, 3);
        let audited = rig.store.list_audit(None, 1000).await.unwrap();
        assert!(
            audited
                .iter()
                .any(|r| r.action == "secret.rotate" && r.actor == "system:vault-rotation")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_echoing_the_value() {
    for rig in rigs().await {
        let owner = rig.person("owner@example.com", Role::Technician).await;
        let big = "s3cr3t-".repeat(10_000);
        let r = CreateSecret {
            name: "big".into(),
            kind: SecretKind::Note,
            value: SecretValue::new(big),
            folder_id: None,
            tags: vec![],
            notes: None,
            expires_at: None,
            rotation: None,
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await;
        let err = r.unwrap_err();
        assert!(matches!(err, DomainError::Invalid { .. }));
        assert!(!err.to_string().contains("s3cr3t"));
        let r = CreateSecret {
            name: "kv".into(),
            kind: SecretKind::KeyValue,
            value: SecretValue::new("user=admin s3cr3t".into()),
            folder_id: None,
            tags: vec![],
            notes: None,
            expires_at: None,
            rotation: None,
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await;
        assert!(!r.unwrap_err().to_string().contains("s3cr3t"));
        let id = rig.secret(&owner, "dup", VALUE).await;
        let dup = CreateSecret {
            name: "dup".into(),
            kind: SecretKind::Password,
            value: SecretValue::new(VALUE.into()),
            folder_id: None,
            tags: vec![],
            notes: None,
            expires_at: None,
            rotation: None,
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await;
        assert!(
            matches!(
                dup,
                Err(DomainError::Store(reap3r_store::StoreError::Conflict(_)))
            ),
            "{dup:?}"
        );
        assert_eq!(
            code_of(rig.reveal(&owner, Uuid::now_v7(), None).await),
            "not_found:secret"
        );
        assert!(matches!(
            rig.reveal(&owner, id, Some(9)).await,
            Err(DomainError::NotFound("secret version"))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unshared_secret_is_gone_for_its_grantee_and_only_a_manager_unshares() {
    for rig in rigs().await {
        let owner = rig.person("owner@example.com", Role::Technician).await;
        let tech = rig.person("tech@example.com", Role::Technician).await;
        let id = rig.secret(&owner, "db", VALUE).await;
        let grant = ShareSecret {
            id,
            subject: GrantSubject::User(tech.user_id.unwrap()),
            flags: GrantFlags {
                reveal: true,
                ..GrantFlags::default()
            },
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        assert_eq!(rig.reveal(&tech, id, None).await.unwrap(), VALUE);
        let by_grantee = UnshareSecret {
            grant_id: grant.id,
            origin: origin(),
        }
        .run(&rig.domain, &tech)
        .await;
        assert_eq!(code_of(by_grantee), "forbidden");
        UnshareSecret {
            grant_id: grant.id,
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await
        .unwrap();
        assert_eq!(
            code_of(rig.reveal(&tech, id, None).await),
            "not_found:secret"
        );
        let again = UnshareSecret {
            grant_id: grant.id,
            origin: origin(),
        }
        .run(&rig.domain, &owner)
        .await;
        assert_eq!(code_of(again), "not_found:grant");
        let audited = rig.store.list_audit(None, 1000).await.unwrap();
        assert!(audited.iter().any(|r| r.action == "secret.unshare"));
    }
}
