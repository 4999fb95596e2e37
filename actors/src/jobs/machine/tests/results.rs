//! Results and commits: acks after the commit, duplicates and late results, failed commits and
//! retries, flushing, finishing and retiring.

use super::check;

#[test]
fn a_result_is_acked_only_after_its_commit() {
    check(
        "
        show events
        job a
        start a
        ack a
        hold
        at 30
        result a succeeded
        ?
        commit
        ",
        "
        dispatch a
        event a dispatched (finished 0/1)
        persist #1 a:dispatched@0
        event a acked (finished 0/1)
        persist #2 a:acked@0
        persist #3 | a:succeeded@30
        = a:succeeded
        ack a
        event a succeeded (finished 1/1)
        finish completed
        event job completed (finished 1/1)
        retire
        ",
    );
}

#[test]
fn failed_and_refused_results_are_failed() {
    check(
        "
        job a b
        start a b
        at 40
        result a failed
        result b refused
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:failed@40
        ack a
        persist #3 | b:failed@40 \"refused by agent\"
        ack b
        finish completed
        retire
        ",
    );
}

#[test]
fn a_duplicate_result_is_acked_at_once() {
    check(
        "
        show metrics
        job a b
        start a b
        result a succeeded
        result a succeeded
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        count stored
        count duplicate
        ack a
        ",
    );
}

#[test]
fn a_duplicate_during_the_commit_is_acked_after_it() {
    check(
        "
        job a b
        start a b
        hold
        result a succeeded
        result a succeeded
        commit
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        ack a
        ",
    );
}

#[test]
fn a_late_result_after_a_timeout_is_acked_not_stored() {
    check(
        "
        show metrics
        job a b timeout=1 grace=0
        start a
        at 1001
        tick
        at 1200
        result a succeeded
        ?
        ",
        "
        dispatch a
        dispatch b (not here)
        persist #1 a:dispatched@0
        persist #2 | a:timed_out@1001 \"no result from the agent within the timeout\"
        count stored
        count duplicate
        ack a
        = a:timed_out b:queued
        ",
    );
}

#[test]
fn a_result_the_store_already_has_is_acked() {
    check(
        "
        show events
        show metrics
        job a b
        start a b
        stored a
        result a succeeded
        ",
        "
        dispatch a
        dispatch b
        event a dispatched (finished 0/2)
        event b dispatched (finished 0/2)
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        count duplicate
        ",
    );
}

#[test]
fn a_failed_commit_is_retried_before_any_ack() {
    check(
        "
        job a
        start a
        hold
        at 10
        result a succeeded
        fail
        commit
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 | a:succeeded@10
        flush in 1000ms
        persist #3 | a:succeeded@10
        ack a
        finish completed
        retire
        ",
    );
}

#[test]
fn a_retry_carries_what_arrived_meanwhile() {
    check(
        "
        job a b
        start a b
        hold
        result a succeeded
        result b failed
        fail
        result a succeeded
        commit
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@0
        flush in 1000ms
        persist #3 | a:succeeded@0 b:failed@0
        ack a
        ack a
        ack b
        finish completed
        retire
        ",
    );
}

#[test]
fn the_job_finishes_then_retires_then_stops() {
    check(
        "
        job a
        start a
        result a succeeded
        tick
        retired
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        finish completed
        retire
        stop
        ",
    );
}

/// The cause of the flaky `fanout_stores_every_result_exactly_once`: an agent whose result was
/// committed lost the ack with its cut connection and replayed the result on its new one, while
/// the job's last batch was committing. The old actor stopped right after finishing, and a
/// stopping ractor actor drops every message still in its mailbox, so the replay was never
/// acknowledged and the agent kept the result forever. Now the job retires first: until the
/// supervisor confirms it routes nothing more here, each replay is still acknowledged; later
/// ones are handled by the supervisor without an actor. (With the old order — `stop` right
/// after `finish` — this transcript ends `finish completed, stop, dropped: result of a`.)
#[test]
fn a_replay_during_retirement_is_acked() {
    check(
        "
        job a b
        start a b
        result a succeeded
        hold
        result b succeeded
        result a succeeded      # a replay while the last batch commits: a is stored, acked
        commit                  # the last batch: the job finishes and retires
        result a succeeded      # a replay routed before the supervisor took the job off
        retired                 # only now does the actor stop
        result a succeeded      # after that, the supervisor handles results without an actor
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        persist #3 | b:succeeded@0
        ack a
        ack b
        finish completed
        retire
        ack a
        stop
        dropped: result of a
        ",
    );
}

#[test]
fn many_results_flush_at_once() {
    let names: Vec<String> = (0..super::super::FLUSH_AT)
        .map(|i| format!("t{i}"))
        .collect();
    let names = names.join(" ");
    let log = super::Rig::play(&format!(
        "job {names}\nstart {names}\nresults succeeded {names}"
    ));
    // The dispatch steps, then every result in one batch: the 512th asked for a flush at once.
    let persists: Vec<&String> = log.iter().filter(|l| l.starts_with("persist")).collect();
    assert_eq!(persists.len(), 2, "{persists:?}");
    assert_eq!(
        persists[1].matches(":succeeded@").count(),
        super::super::FLUSH_AT
    );
    assert_eq!(log.iter().filter(|l| *l == "flush in 0ms").count(), 1);
    assert_eq!(log.iter().filter(|l| l.starts_with("ack ")).count(), 512);
}
