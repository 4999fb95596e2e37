//! Which dispatches are accepted: a grant that does not verify is refused and not recorded;
//! an accepted job id runs once, across restarts and after its result's ack.

use super::*;

#[tokio::test]
async fn bad_grants_are_refused_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let spec = sh("echo hi");
    let id = [9; 16];

    let wrong_key = SigningKey::from_bytes(&[8; 32]);
    let d = dispatch_signed_by(&wrong_key, id, AGENT, &spec, None);
    assert!(refusal(&f.engine, &d).contains("not signed by the pinned server key"));

    let d = dispatch_signed_by(&server_key(), id, [2; 16], &spec, None);
    assert!(refusal(&f.engine, &d).contains("another agent"));

    let mut d = dispatch(id, &spec);
    d.spec = sh("rm -rf /").to_bytes();
    assert!(refusal(&f.engine, &d).contains("does not match"));

    let d = dispatch_signed_by(&server_key(), id, AGENT, &spec, Some(now_ms() - 400_000));
    assert!(refusal(&f.engine, &d).contains("expired"));

    // Still within the allowed skew: accepted.
    let mut d = dispatch_signed_by(&server_key(), id, AGENT, &spec, Some(now_ms() - 200_000));
    d.signature[0] ^= 1;
    assert!(refusal(&f.engine, &d).contains("not signed"));

    // Nothing was recorded: the same id still runs when the grant is good.
    assert!(f.engine.shared.ledger.get(&id).unwrap().is_none());
    let d = dispatch_signed_by(&server_key(), id, AGENT, &spec, Some(now_ms() - 200_000));
    assert!(matches!(
        f.engine.shared.decide(&d, now_ms()),
        Decision::Accepted { .. }
    ));
}

#[tokio::test]
async fn a_job_id_runs_once_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let id = [3; 16];
    let spec = sh("echo once");
    {
        let f = open(dir.path());
        let result = run(&f.engine, id, &spec).await;
        assert_eq!(result.end, JobEnd::Succeeded);
        assert_eq!(result.stdout, b"once\n");
        match f.engine.shared.decide(&dispatch(id, &spec), now_ms()) {
            Decision::Duplicate { job_id, result: r } => {
                assert_eq!(job_id, id);
                assert_eq!(r, Some(result));
            }
            other => panic!("{other:?}"),
        }
    }
    // Reopened (agent restart): still a duplicate, result still in the outbox.
    let f = open(dir.path());
    match f.engine.shared.decide(&dispatch(id, &spec), now_ms()) {
        Decision::Duplicate {
            result: Some(r), ..
        } => assert_eq!(r.stdout, b"once\n"),
        other => panic!("{other:?}"),
    }
    // After the ack: still a duplicate, with nothing to resend.
    f.engine.result_acked(id);
    assert!(f.engine.shared.ledger.outbox().unwrap().is_empty());
    assert!(matches!(
        f.engine.shared.decide(&dispatch(id, &spec), now_ms()),
        Decision::Duplicate { result: None, .. }
    ));
}
