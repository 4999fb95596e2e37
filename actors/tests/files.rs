//! File operations on a real store (every backend available here) and a real file store on
//! disk: uploads are content-addressed, capped and audited; permissions, paths and offline
//! agents are refused with clear errors; transfers a node left unfinished are failed and
//! audited at its next start (and another node's are left alone).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use reap3r_actors::access::{Caller, Role};
use reap3r_actors::enrolment::hash_enrolment_token;
use reap3r_actors::files::{
    BlobStore, FileHub, FileSettings, ListFiles, OpenFile, PullFile, PushFile, UploadFile,
};
use reap3r_actors::{Domain, DomainError, EventBus, LocalRouter, ManualClock, SessionRegistry};
use reap3r_store::{
    FileDirectionRow, NewAgent, NewEnrolmentToken, NewFileTransfer, Store, TransferStatus, Uuid,
};
use reap3r_testkit::TestDatabase;
use reap3r_wire::SigningKey;

const T0: u64 = 1_700_000_000_000;

struct Rig {
    _db: TestDatabase,
    dir: tempfile::TempDir,
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
            dir: tempfile::tempdir().unwrap(),
            store,
            clock: ManualClock::new(T0),
            org,
        });
    }
    out
}

fn body(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
    let pieces: Vec<Result<Bytes, String>> = data
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(pieces)
}

impl Rig {
    fn hub(&self, node: &str, settings: FileSettings) -> FileHub {
        let domain = Domain::new(
            self.store.clone(),
            Arc::new(self.clock.clone()),
            EventBus::new(16),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        FileHub::new(
            domain,
            Arc::new(LocalRouter::new(SessionRegistry::default())),
            Arc::new(SigningKey::from_bytes(&[3; 32])),
            node.into(),
            settings,
            BlobStore::open(&self.dir.path().join("files")).unwrap(),
        )
    }

    fn caller(&self, role: Role) -> Caller {
        let mut caller = Caller::cli(self.org).run_by("ops@example.com");
        caller.role = role;
        caller
    }

    async fn transfer(&self, node: &str, direction: FileDirectionRow) -> Uuid {
        let id = Uuid::new_v4();
        let mut tx = self.store.begin().await.unwrap();
        tx.create_file_transfer(
            &NewFileTransfer {
                id,
                org_id: self.org,
                agent_id: Uuid::new_v4(),
                direction,
                path: "/tmp/x".into(),
                blake3: None,
                size: None,
                user_id: None,
                operator: "user:ops@example.com".into(),
                node_id: node.into(),
            },
            T0 as i64,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }
}

#[tokio::test]
async fn uploads_are_stored_once_by_hash_capped_and_audited() {
    for rig in rigs().await {
        let hub = rig.hub(
            "node-1",
            FileSettings {
                max_file_bytes: 10_000,
                ..FileSettings::default()
            },
        );
        let admin = rig.caller(Role::OrgAdmin);
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let upload = |name: Option<&str>| UploadFile {
            name: name.map(str::to_owned),
        };
        let blob = upload(Some("tool.sh"))
            .run(&hub, &admin, body(&data))
            .await
            .unwrap();
        assert_eq!(blob.blake3, blake3::hash(&data).to_hex().to_string());
        assert_eq!(blob.size, 5000);
        // The same bytes again: the same file, first name kept.
        let again = upload(None).run(&hub, &admin, body(&data)).await.unwrap();
        assert_eq!(
            (again.blake3.as_str(), again.name.as_deref()),
            (blob.blake3.as_str(), Some("tool.sh"))
        );
        let listed = ListFiles::default().run(&hub, &admin).await.unwrap();
        assert_eq!(listed.len(), 1);
        let opened = OpenFile {
            blake3: blob.blake3.clone(),
        }
        .run(&hub, &admin)
        .await
        .unwrap();
        assert_eq!(std::fs::read(&opened.path).unwrap(), data);

        // Over the cap: 413, nothing stored.
        let big = vec![1u8; 10_001];
        let err = upload(None)
            .run(&hub, &admin, body(&big))
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::TooLarge(_)), "{err:?}");
        for bad in ["", "a/b", "x\ny"] {
            let err = upload(Some(bad))
                .run(&hub, &admin, body(b"x"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, DomainError::Invalid { .. }),
                "{bad:?}: {err:?}"
            );
        }
        // Technicians see files but neither upload, push nor download.
        let tech = rig.caller(Role::Technician);
        assert!(ListFiles::default().run(&hub, &tech).await.is_ok());
        let err = upload(None).run(&hub, &tech, body(b"x")).await.unwrap_err();
        assert!(matches!(err, DomainError::Forbidden { .. }), "{err:?}");
        let err = OpenFile {
            blake3: blob.blake3.clone(),
        }
        .run(&hub, &tech)
        .await
        .unwrap_err();
        assert!(matches!(err, DomainError::Forbidden { .. }), "{err:?}");
        // Not a hash; a hash the organisation does not hold.
        for name in ["../../etc/passwd", &"0".repeat(64)] {
            let err = OpenFile {
                blake3: name.into(),
            }
            .run(&hub, &admin)
            .await
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    DomainError::Invalid { .. } | DomainError::NotFound("file")
                ),
                "{name}: {err:?}"
            );
        }

        let audit = rig.store.list_audit(Some(rig.org), 50).await.unwrap();
        let count = |action: &str| audit.iter().filter(|r| r.action == action).count();
        assert_eq!(
            (count("file.upload"), count("file.download")),
            (2, 1),
            "{audit:?}"
        );
    }
}

#[tokio::test]
async fn pushes_and_pulls_refuse_bad_paths_unknown_files_and_offline_agents() {
    for rig in rigs().await {
        let hub = rig.hub("node-1", FileSettings::default());
        let admin = rig.caller(Role::OrgAdmin);
        let token = NewEnrolmentToken {
            org_id: rig.org,
            token_hash: hash_enrolment_token("t"),
            label: None,
            expires_at: None,
            max_uses: None,
            require_approval: false,
            created_by: None,
        };
        let mut tx = rig.store.begin().await.unwrap();
        tx.create_enrolment_token(&token, 0).await.unwrap();
        let new = NewAgent {
            hostname: "web-1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "0.1.0".into(),
            public_key: [7; 32],
        };
        let agent = tx
            .enrol_agent(&hash_enrolment_token("t"), &new, 0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let blob = UploadFile::default()
            .run(&hub, &admin, body(b"payload"))
            .await
            .unwrap();
        let push = |path: &str, blake3: &str| PushFile {
            agent_id: agent.id,
            blake3: blake3.into(),
            path: path.into(),
        };
        for path in ["relative/x", "/tmp/../etc/shadow", "/tmp//x", "/"] {
            let err = push(path, &blob.blake3)
                .run(&hub, &admin)
                .await
                .unwrap_err();
            assert!(
                matches!(err, DomainError::Invalid { .. }),
                "{path}: {err:?}"
            );
        }
        let err = push("/tmp/x", &"ab".repeat(32))
            .run(&hub, &admin)
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::NotFound("file")), "{err:?}");
        let err = push("/tmp/x", &blob.blake3)
            .run(&hub, &admin)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DomainError::Conflict(m) if m.contains("not online")),
            "{err:?}"
        );
        let pull = PullFile {
            agent_id: Uuid::new_v4(),
            path: "/etc/hostname".into(),
        };
        let err = pull.run(&hub, &admin).await.unwrap_err();
        assert!(matches!(err, DomainError::NotFound("agent")), "{err:?}");
        let viewer = rig.caller(Role::Viewer);
        let err = push("/tmp/x", &blob.blake3)
            .run(&hub, &viewer)
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::Forbidden { .. }), "{err:?}");
        assert_eq!(hub.active(), 0, "refused transfers hold no place");
    }
}

#[tokio::test]
async fn a_restarted_node_fails_the_transfers_it_left_unfinished_and_only_those() {
    for rig in rigs().await {
        let mine = rig.transfer("node-1", FileDirectionRow::Push).await;
        let pulling = rig.transfer("node-1", FileDirectionRow::Pull).await;
        let theirs = rig.transfer("node-2", FileDirectionRow::Pull).await;
        let hub = rig.hub("node-1", FileSettings::default());
        // A pull's partial bytes go with it.
        let partial = rig
            .dir
            .path()
            .join("files/partial")
            .join(pulling.to_string());
        std::fs::write(&partial, b"half").unwrap();
        assert_eq!(hub.recover().await.unwrap(), 2);
        for id in [mine, pulling] {
            let t = rig.store.file_transfer(rig.org, id).await.unwrap().unwrap();
            assert_eq!(t.status, TransferStatus::Failed);
            assert_eq!(
                t.error.as_deref(),
                Some("the server stopped during the transfer")
            );
        }
        assert!(!partial.exists());
        let other = rig
            .store
            .file_transfer(rig.org, theirs)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.status, TransferStatus::Pending);
        let audit = rig.store.list_audit(Some(rig.org), 50).await.unwrap();
        let failed: Vec<_> = audit.iter().filter(|r| r.action == "file.failed").collect();
        assert_eq!(failed.len(), 2, "{audit:?}");
        assert!(failed.iter().all(|r| r.actor == "user:ops@example.com"));
        assert_eq!(hub.recover().await.unwrap(), 0, "once");
    }
}
