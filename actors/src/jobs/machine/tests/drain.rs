//! Draining at shutdown: results still on their way from connected agents are waited for and
//! committed before the node closes its sessions; nothing new is dispatched.

use super::check;

#[test]
fn a_drain_waits_for_results_of_live_agents() {
    check(
        "
        job a b batch=1
        start a b
        ack a
        started a
        drain a b
        at 40
        result a succeeded
        ?
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 a:acked@0
        persist #3 a:running@0
        persist #4 | a:succeeded@40
        ack a
        drained
        = a:succeeded b:queued
        ",
    );
}

#[test]
fn a_drain_does_not_wait_for_agents_that_are_gone() {
    check(
        "
        job a
        start a
        ack a
        started a
        gone a
        drain
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 a:acked@0
        persist #3 a:running@0
        drained
        ",
    );
}

#[test]
fn a_drain_waits_for_the_commit_in_flight() {
    check(
        "
        job a b
        start a b
        hold
        at 10
        results succeeded a b
        drain a b
        commit
        ",
        "
        dispatch a
        dispatch b
        persist #1 a:dispatched@0 b:dispatched@0
        persist #2 | a:succeeded@10 b:succeeded@10
        ack a
        ack b
        finish completed
        drained
        retire
        ",
    );
}
