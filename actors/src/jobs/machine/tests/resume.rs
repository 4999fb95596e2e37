//! Rolling batches, restarts (resume with extended deadlines) and reconnects (every open target
//! dispatched again).

use super::check;

#[test]
fn a_rolling_batch_refills_after_each_commit() {
    check(
        "
        job a b c batch=2
        start a b c
        result a succeeded
        ?
        result b succeeded
        result c succeeded
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        dispatch c
        persist #3 c:dispatched@0
        = a:succeeded b:dispatched c:dispatched
        persist #4 | b:succeeded@0
        ack b
        persist #5 | c:succeeded@0
        ack c
        finish completed
        retire
        ",
    );
}

#[test]
fn an_undelivered_batch_slot_goes_to_the_next_target() {
    // b is away: its slot goes to c; b gets the next free slot once it is back.
    check(
        "
        job a b c batch=2
        start a c
        online b
        result a succeeded
        ",
        "
        dispatch a
        dispatch b (not here)
        dispatch c
        persist #1 a:dispatched@0 c:dispatched@0
        persist #2 | a:succeeded@0
        ack a
        dispatch b
        persist #3 b:dispatched@0
        ",
    );
}

#[test]
fn a_restart_resumes_with_extended_deadlines() {
    // Restarted at 100 s: a and b were dispatched long ago, their deadlines (10 s + 2 s after
    // dispatch) are past, so they get a grace from now for the agent to reconnect and replay.
    // c was dispatched recently and keeps its own deadline.
    check(
        "
        at 100000
        resume a=running@0 b=acked@1000 c=dispatched@99000 d=succeeded e=queued
        start a c
        at 102000
        tick
        ?
        at 102001
        tick
        ?
        ",
        "
        dispatch a
        dispatch b (not here)
        dispatch c
        dispatch e (not here)
        = a:running b:acked c:dispatched d:succeeded e:queued
        persist #1 | a:timed_out@102001 \"no result from the agent within the timeout\" b:timed_out@102001 \"no result from the agent within the timeout\"
        = a:timed_out b:timed_out c:dispatched d:succeeded e:queued
        ",
    );
}

/// Defect 1 of issue 17. An agent that finished its script while the server was down, or
/// whose result the old process received but never acknowledged, holds the result and sends
/// nothing until its next heartbeat; only then does the restarted endpoint's stateless reset
/// tell it to reconnect. With a grace from the restart alone (10 s, against 30 s heartbeats),
/// the target was judged `timed_out` first and the real result, arriving later, was acked and
/// dropped. The deadline now waits a heartbeat interval (`reconnect`) plus the grace.
#[test]
fn a_restart_waits_a_heartbeat_for_agents_to_notice() {
    check(
        "
        at 100000
        resume a=running@95000 b=running@95000 timeout=5 grace=10000 reconnect=30000
        start
        at 139000               # 39 s after the restart: past the grace, within heartbeat + grace
        tick
        online a
        result a succeeded
        at 140001               # past restart + heartbeat + grace: b never came back
        tick
        ?
        ",
        "
        dispatch a (not here)
        dispatch b (not here)
        dispatch a
        persist #1 | a:succeeded@139000
        ack a
        persist #2 | b:timed_out@140001 \"no result from the agent within the timeout\"
        finish completed
        retire
        = a:succeeded b:timed_out
        ",
    );
}

#[test]
fn a_restart_of_a_cancelled_job_applies_the_cancel() {
    check(
        "
        at 5000
        resume a=running@4000 b=queued c=failed cancelled
        start a b
        at 7001
        tick
        ",
        "
        cancel a
        persist #1 | b:cancelled@5000 \"cancelled before it was dispatched\"
        persist #2 | a:cancelled@7001 \"cancelled; the agent did not confirm in time\"
        finish cancelled
        retire
        ",
    );
}

#[test]
fn a_restart_with_every_target_done_finishes() {
    check(
        "
        resume a=succeeded b=expired
        start a
        retired
        ",
        "
        finish completed
        retire
        stop
        ",
    );
}

#[test]
fn a_reconnect_dispatches_every_open_target_again() {
    check(
        "
        job a b c d
        start a b c d
        ack b
        started c
        result d succeeded
        gone a
        online a
        online b
        online c
        online d
        ?
        ",
        "
        dispatch a
        dispatch b
        dispatch c
        dispatch d
        persist #1 a:dispatched@0 b:dispatched@0 c:dispatched@0 d:dispatched@0
        persist #2 b:acked@0
        persist #3 c:running@0
        persist #4 | d:succeeded@0
        ack d
        dispatch a
        dispatch b
        dispatch c
        = a:dispatched b:acked c:running d:succeeded
        ",
    );
}

#[test]
fn a_reconnect_during_a_cancel_repeats_the_cancel() {
    check(
        "
        job a
        start a
        started a
        cancel
        online a
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 a:running@0
        cancel a
        cancel a
        ",
    );
}
