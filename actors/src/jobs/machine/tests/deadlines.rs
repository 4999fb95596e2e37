//! Decisions the server takes itself: timeouts with grace, expiry, and cancel in each state.

use super::check;

#[test]
fn no_result_within_timeout_and_grace_is_timed_out() {
    // timeout 1 s + grace 500 ms after each dispatch (a at 0, b at 100, c at 200).
    check(
        "
        job a b c timeout=1 grace=500
        start a
        at 100
        online b
        at 200
        online c
        ack b
        started c
        at 1500
        tick
        at 1501
        tick
        at 1701
        tick
        ?
        ",
        "
        dispatch a
        dispatch b (not here)
        dispatch c (not here)
        persist #1 a:dispatched@0
        dispatch b
        persist #2 b:dispatched@100
        dispatch c
        persist #3 c:dispatched@200
        persist #4 b:acked@200
        persist #5 c:running@200
        persist #6 | a:timed_out@1501 \"no result from the agent within the timeout\"
        persist #7 | b:timed_out@1701 \"no result from the agent within the timeout\" c:timed_out@1701 \"no result from the agent within the timeout\"
        finish completed
        retire
        = a:timed_out b:timed_out c:timed_out
        ",
    );
}

#[test]
fn queued_targets_expire() {
    check(
        "
        job a b expires=1000
        start a
        at 999
        tick
        at 1000
        tick
        ?
        ",
        "
        dispatch a
        dispatch b (not here)
        persist #1 a:dispatched@0
        persist #2 | b:expired@1000 \"expired before the agent was reachable\"
        = a:dispatched b:expired
        ",
    );
}

#[test]
fn cancel_while_queued_is_immediate() {
    check(
        "
        show events
        job a
        start
        at 50
        cancel
        ",
        "
        dispatch a (not here)
        event job cancelling (finished 1/1)
        persist #1 | a:cancelled@50 \"cancelled before it was dispatched\"
        event a cancelled (finished 1/1)
        finish cancelled
        event job cancelled (finished 1/1)
        retire
        ",
    );
}

#[test]
fn cancel_while_dispatched_waits_a_grace() {
    check(
        "
        job a grace=500
        start a
        at 100
        cancel
        at 600
        tick
        at 601
        tick
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        cancel a
        persist #2 | a:cancelled@601 \"cancelled; the agent did not confirm in time\"
        finish cancelled
        retire
        ",
    );
}

#[test]
fn cancel_while_acked_keeps_an_earlier_deadline() {
    // Timed out at 1 s + 500 ms after the dispatch, sooner than the cancel's grace of 2 s.
    check(
        "
        job a timeout=1 grace=500
        start a
        ack a
        at 1000
        cancel
        at 1501
        tick
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 a:acked@0
        cancel a
        persist #3 | a:cancelled@1501 \"cancelled; the agent did not confirm in time\"
        finish cancelled
        retire
        ",
    );
}

#[test]
fn cancel_while_running_takes_the_agents_result() {
    check(
        "
        job a b
        start a b
        started a
        started b
        cancel
        at 300
        result a cancelled
        at 2001
        tick
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 a:running@0
        persist #3 b:running@0
        cancel a
        cancel b
        persist #4 | a:cancelled@300
        ack a
        persist #5 | b:cancelled@2001 \"cancelled; the agent did not confirm in time\"
        finish cancelled
        retire
        ",
    );
}

#[test]
fn cancel_after_the_end_changes_nothing() {
    check(
        "
        show events
        job a b
        start a b
        result a succeeded
        cancel
        cancel
        ?
        ",
        "
        dispatch a
        dispatch b
        event a dispatched (finished 0/2)
        event b dispatched (finished 0/2)
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        event a succeeded (finished 1/2)
        cancel b
        event job cancelling (finished 1/2)
        cancel b
        = a:succeeded b:dispatched
        ",
    );
}
