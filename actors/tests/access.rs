//! The access operations on a real store (every backend available here) with a manual clock:
//! lockout thresholds and window, MFA challenge attempt limits, refresh reuse revoking the
//! session, and each change committed with its audit record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use reap3r_actors::access::{
    AccessSettings, Caller, CreateUser, EnableMfa, Login, LoginMfa, LoginOutcome, Origin, Refresh,
    Role, SetupMfa, Tokens, authenticate, totp,
};
use reap3r_actors::{Domain, DomainError, EventBus, FleetEvent, ManualClock};
use reap3r_store::Store;
use reap3r_testkit::TestDatabase;

const T0: u64 = 1_700_000_000_000;
const PASSWORD: &str = "a long enough password";

struct Rig {
    _db: TestDatabase,
    store: Store,
    clock: ManualClock,
    domain: Domain,
    settings: AccessSettings,
}

async fn rigs() -> Vec<Rig> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let clock = ManualClock::new(T0);
        let domain = Domain::new(
            store.clone(),
            Arc::new(clock.clone()),
            EventBus::new(64),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        let settings = AccessSettings {
            lockout_account_failures: 2,
            lockout_ip_failures: 100,
            mfa_max_attempts: 2,
            ..AccessSettings::default()
        };
        out.push(Rig {
            _db: db,
            store,
            clock,
            domain,
            settings,
        });
    }
    out
}

impl Rig {
    async fn user(&self, email: &str) -> reap3r_store::User {
        let org = self.store.default_org(T0 as i64).await.unwrap();
        CreateUser {
            email: email.into(),
            password: PASSWORD.into(),
            role: Role::OrgAdmin,
            display_name: Some("  Ops  ".into()),
        }
        .run(&self.domain, &Caller::cli(org.id))
        .await
        .unwrap()
    }

    async fn login(&self, email: &str, password: &str) -> Result<LoginOutcome, DomainError> {
        Login {
            email: email.into(),
            password: password.into(),
            origin: Origin::new(Some("192.0.2.7".into()), Some("test")),
        }
        .run(&self.domain, &self.settings)
        .await
    }

    async fn tokens(&self, email: &str) -> Tokens {
        match self.login(email, PASSWORD).await.unwrap() {
            LoginOutcome::Tokens(t) => t,
            other => panic!("expected tokens, got {other:?}"),
        }
    }

    async fn actions(&self) -> Vec<String> {
        let mut all = self.store.list_audit(None, 1000).await.unwrap();
        all.reverse();
        all.into_iter().map(|r| r.action).collect()
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, DomainError>) -> &'static str {
    match result {
        Err(
            DomainError::Unauthenticated { code, .. }
            | DomainError::TooMany { code, .. }
            | DomainError::Forbidden { code, .. }
            | DomainError::Invalid { code, .. },
        ) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_commits_the_display_name_and_audit_record_together() {
    for rig in rigs().await {
        let mut events = rig.domain.events.subscribe();
        let user = rig.user("Ops@Example.com").await;
        assert_eq!(user.email, "ops@example.com");
        assert_eq!(user.display_name.as_deref(), Some("Ops"));
        assert_eq!(rig.actions().await, ["user.create"]);
        let event = events.recv().await.unwrap();
        assert!(matches!(event, FleetEvent::Audit { ref action, .. } if action == "user.create"));
        // A refused creation leaves neither a row nor a record.
        let org = rig.store.default_org(T0 as i64).await.unwrap();
        let dup = CreateUser {
            email: "ops@example.com".into(),
            password: PASSWORD.into(),
            role: Role::Viewer,
            display_name: None,
        }
        .run(&rig.domain, &Caller::cli(org.id))
        .await;
        assert!(matches!(dup, Err(DomainError::Store(_))), "{dup:?}");
        assert_eq!(rig.actions().await, ["user.create"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_counts_failures_within_the_window() {
    for rig in rigs().await {
        rig.user("ops@example.com").await;
        for _ in 0..2 {
            assert_eq!(
                code_of(rig.login("ops@example.com", "wrong password!").await),
                "invalid_credentials"
            );
        }
        // Even the right password is refused while the account is locked out.
        assert_eq!(
            code_of(rig.login("ops@example.com", PASSWORD).await),
            "account_locked"
        );
        // The failures age out of the window (the refusal itself counted as one).
        rig.clock.advance(rig.settings.lockout_window_ms as u64 + 1);
        let tokens = rig.tokens("ops@example.com").await;
        assert!(tokens.access_token.starts_with("r3a_"));
        assert_eq!(tokens.expires_in_s, 15 * 60);
        assert_eq!(rig.actions().await, ["user.create", "auth.login"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_refresh_token_revokes_the_session() {
    for rig in rigs().await {
        rig.user("ops@example.com").await;
        let first = rig.tokens("ops@example.com").await;
        rig.clock.advance(1_000);
        let refresh = |token: &str| {
            Refresh {
                refresh_token: token.to_owned(),
            }
            .run(&rig.domain, &rig.settings)
        };
        let second = refresh(&first.refresh_token).await.unwrap();
        assert_eq!(second.session_id, first.session_id);
        assert_ne!(second.access_token, first.access_token);
        assert_eq!(
            code_of(refresh(&first.refresh_token).await),
            "refresh_token_reused"
        );
        // The whole session is gone, the newer pair included.
        assert_eq!(
            code_of(refresh(&second.refresh_token).await),
            "invalid_refresh_token"
        );
        assert_eq!(
            code_of(authenticate(&rig.domain, &second.access_token, None).await),
            "unauthenticated"
        );
        let session = rig
            .store
            .auth_session(first.session_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            session.revoked_reason.as_deref(),
            Some("refresh_token_reuse")
        );
        assert_eq!(
            rig.actions().await,
            ["user.create", "auth.login", "auth.refresh_reuse"]
        );
        // An expired refresh token changes nothing.
        let third = rig.tokens("ops@example.com").await;
        rig.clock.advance(rig.settings.refresh_ttl_ms as u64);
        assert_eq!(
            code_of(refresh(&third.refresh_token).await),
            "refresh_token_expired"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_challenges_allow_few_attempts_and_codes_work_once() {
    for mut rig in rigs().await {
        // Wrong codes count towards the account's lockout too; keep it out of the way here.
        rig.settings.lockout_account_failures = 10;
        rig.user("ops@example.com").await;
        let tokens = rig.tokens("ops@example.com").await;
        let caller = authenticate(&rig.domain, &tokens.access_token, None)
            .await
            .unwrap();
        let enrolment = SetupMfa
            .run(&rig.domain, &caller, &rig.settings)
            .await
            .unwrap();
        let now = rig.domain.now_ms();
        EnableMfa {
            code: totp::code_at(&enrolment.secret, now).unwrap(),
        }
        .run(&rig.domain, &caller)
        .await
        .unwrap();
        let challenge = || async {
            match rig.login("ops@example.com", PASSWORD).await.unwrap() {
                LoginOutcome::MfaRequired { challenge_token } => challenge_token,
                other => panic!("expected a challenge, got {other:?}"),
            }
        };
        let second_step = |challenge: String, code: String| {
            LoginMfa {
                challenge_token: challenge,
                code,
                origin: Origin::new(None, None),
            }
            .run(&rig.domain, &rig.settings)
        };
        // The code that enabled MFA cannot be replayed at login.
        let c = challenge().await;
        let used = totp::code_at(&enrolment.secret, now).unwrap();
        assert_eq!(
            code_of(second_step(c.clone(), used).await),
            "code_already_used"
        );
        let wrong = |secret: &str| {
            let right = totp::code_at(secret, rig.domain.now_ms()).unwrap();
            if right == "000000" {
                "111111"
            } else {
                "000000"
            }
            .to_owned()
        };
        assert_eq!(
            code_of(second_step(c.clone(), wrong(&enrolment.secret)).await),
            "invalid_code"
        );
        // Two attempts per challenge: the third is refused whatever the code.
        rig.clock.advance(30_000);
        let good = totp::code_at(&enrolment.secret, rig.domain.now_ms()).unwrap();
        assert_eq!(
            code_of(second_step(c, good.clone()).await),
            "too_many_attempts"
        );
        // A fresh challenge with the next step's code opens a session, once.
        let c = challenge().await;
        let t = second_step(c.clone(), good).await.unwrap();
        assert!(t.refresh_token.starts_with("r3r_"));
        assert_eq!(
            code_of(second_step(c, "123456".into()).await),
            "invalid_challenge"
        );
        let actions = rig.actions().await;
        assert_eq!(
            actions,
            [
                "user.create",
                "auth.login",
                "user.mfa_setup",
                "user.mfa_enable",
                "auth.login"
            ]
        );
    }
}
