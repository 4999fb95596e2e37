//! Shell sessions on a real store (every backend available here): the sessions a node left
//! open when it stopped are ended and audited at its next start (and another node's are left
//! alone), limits count what is still open, and recordings past retention are pruned while the
//! sessions' records stay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use reap3r_actors::shell::{ShellHub, ShellSettings};
use reap3r_actors::{Clock, Domain, EventBus, LocalRouter, ManualClock, SessionRegistry};
use reap3r_store::{NewShellSession, ShellEnd, ShellStatus, Store, Uuid};
use reap3r_testkit::TestDatabase;
use reap3r_wire::SigningKey;

const T0: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;

struct Rig {
    _db: TestDatabase,
    store: Store,
    clock: ManualClock,
    org: Uuid,
}

async fn rigs() -> Vec<Rig> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let org = store.default_org(T0 as i64).await.unwrap().id;
        out.push(Rig {
            _db: db,
            store,
            clock: ManualClock::new(T0),
            org,
        });
    }
    out
}

impl Rig {
    async fn counts(&self, agent: Uuid, user: Option<Uuid>, since: i64) -> (i64, i64) {
        let mut tx = self.store.begin().await.unwrap();
        let counts = tx.open_shell_counts(agent, user, since).await.unwrap();
        tx.rollback().await.unwrap();
        counts
    }

    fn hub(&self, node: &str) -> ShellHub {
        let domain = Domain::new(
            self.store.clone(),
            Arc::new(self.clock.clone()),
            EventBus::new(16),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        ShellHub::new(
            domain,
            Arc::new(LocalRouter::new(SessionRegistry::default())),
            Arc::new(SigningKey::from_bytes(&[3; 32])),
            node.into(),
            ShellSettings::default(),
        )
    }

    /// A session on `node` for `agent`, started when `active`.
    async fn session(&self, node: &str, agent: Uuid, user: Option<Uuid>, active: bool) -> Uuid {
        let id = Uuid::new_v4();
        let now = self.clock.now_ms() as i64;
        let mut tx = self.store.begin().await.unwrap();
        tx.create_shell_session(
            &NewShellSession {
                id,
                org_id: self.org,
                agent_id: agent,
                user_id: user,
                operator: "user:ops@example.com".into(),
                opened_by: "session:test".into(),
                node_id: node.into(),
                cols: 80,
                rows: 24,
                expires_at: now + 60_000,
            },
            now,
        )
        .await
        .unwrap();
        if active {
            assert!(tx.start_shell_session(id, now).await.unwrap());
        }
        tx.commit().await.unwrap();
        id
    }
}

#[tokio::test]
async fn a_restarted_node_ends_the_sessions_it_left_open_and_only_those() {
    for rig in rigs().await {
        let agent = Uuid::new_v4();
        let mine = rig.session("node-1", agent, None, true).await;
        let pending = rig.session("node-1", agent, None, false).await;
        let theirs = rig.session("node-2", agent, None, true).await;
        assert_eq!(rig.hub("node-1").recover().await.unwrap(), 2);
        for id in [mine, pending] {
            let s = rig.store.shell_session(rig.org, id).await.unwrap().unwrap();
            assert_eq!(s.status, ShellStatus::Ended);
            assert_eq!(
                s.end_reason.as_deref(),
                Some("the server stopped while the session ran")
            );
        }
        let other = rig
            .store
            .shell_session(rig.org, theirs)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.status, ShellStatus::Active);
        let audit = rig.store.list_audit(Some(rig.org), 50).await.unwrap();
        let closes: Vec<_> = audit.iter().filter(|r| r.action == "shell.close").collect();
        assert_eq!(closes.len(), 2, "{audit:?}");
        assert!(closes.iter().all(|r| r.actor == "user:ops@example.com"));
        // Nothing is left to end a second time.
        assert_eq!(rig.hub("node-1").recover().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn limits_count_open_sessions_per_agent_and_per_operator() {
    for rig in rigs().await {
        let (agent, other_agent, user) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        rig.session("node-1", agent, Some(user), true).await;
        rig.session("node-1", agent, None, false).await;
        let done = rig.session("node-1", other_agent, Some(user), true).await;
        assert_eq!(rig.counts(agent, Some(user), 0).await, (2, 2));
        let mut tx = rig.store.begin().await.unwrap();
        let end = ShellEnd {
            reason: "test".into(),
            exit_code: Some(0),
            bytes_in: 3,
            bytes_out: 4,
        };
        assert!(tx.end_shell_session(done, &end, 1).await.unwrap().is_some());
        assert!(
            tx.end_shell_session(done, &end, 2).await.unwrap().is_none(),
            "ends once"
        );
        tx.commit().await.unwrap();
        assert_eq!(rig.counts(agent, Some(user), 0).await, (2, 1));
        assert_eq!(rig.counts(agent, None, 0).await.1, 0);
        // Rows older than the longest a session lives do not count (a node that died with
        // them never came back).
        let later = T0 as i64 + 1;
        assert_eq!(rig.counts(agent, Some(user), later).await, (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_opens_cannot_pass_a_limit() {
    for rig in rigs().await {
        let agent = Uuid::new_v4();
        // Eight opens at once, each counting then inserting in its transaction, limit two.
        let opens = (0..8).map(|_| {
            let store = rig.store.clone();
            let org = rig.org;
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let (per_agent, _) = tx.open_shell_counts(agent, None, 0).await.unwrap();
                if per_agent >= 2 {
                    return false;
                }
                tx.create_shell_session(
                    &NewShellSession {
                        id: Uuid::new_v4(),
                        org_id: org,
                        agent_id: agent,
                        user_id: None,
                        operator: "user:race@example.com".into(),
                        opened_by: "session:race".into(),
                        node_id: "node-1".into(),
                        cols: 80,
                        rows: 24,
                        expires_at: 1,
                    },
                    0,
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                true
            })
        });
        let mut created = 0;
        for open in opens.collect::<Vec<_>>() {
            created += usize::from(open.await.unwrap());
        }
        assert_eq!(created, 2);
        assert_eq!(rig.counts(agent, None, 0).await.0, 2);
    }
}

#[tokio::test]
async fn recordings_past_retention_are_pruned_and_the_sessions_stay() {
    for rig in rigs().await {
        let agent = Uuid::new_v4();
        let old = rig.session("node-1", agent, None, true).await;
        let live = rig.session("node-1", agent, None, true).await;
        for (id, seq) in [(old, 0), (old, 1), (live, 0)] {
            rig.store
                .append_shell_recording(id, seq, b"gzip member", 100)
                .await
                .unwrap();
        }
        let mut tx = rig.store.begin().await.unwrap();
        let end = ShellEnd {
            reason: "closed".into(),
            exit_code: None,
            bytes_in: 0,
            bytes_out: 0,
        };
        tx.end_shell_session(old, &end, T0 as i64).await.unwrap();
        tx.commit().await.unwrap();
        let shown = rig
            .store
            .shell_session(rig.org, old)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shown.recording_stored, 22);
        assert_eq!(shown.recording_bytes, 100);
        // A day short of retention, nothing goes; past it, the ended session's chunks do.
        let keep = i64::from(ShellSettings::default().retention_days) * DAY_MS as i64;
        let ended_at = T0 as i64;
        let cutoff = |now: i64| now - keep;
        let day_short = ended_at + keep - DAY_MS as i64;
        assert_eq!(
            rig.store
                .prune_shell_recordings(cutoff(day_short))
                .await
                .unwrap(),
            0
        );
        let past = ended_at + keep + 1;
        assert_eq!(
            rig.store
                .prune_shell_recordings(cutoff(past))
                .await
                .unwrap(),
            2
        );
        assert!(rig.store.shell_recording(old).await.unwrap().is_empty());
        assert_eq!(rig.store.shell_recording(live).await.unwrap().len(), 1);
        assert!(
            rig.store
                .shell_session(rig.org, old)
                .await
                .unwrap()
                .is_some()
        );
    }
}
