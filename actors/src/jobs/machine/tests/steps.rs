//! Dispatch and the steps before a result: start, undelivered dispatches, agents coming online,
//! acks, starts, steps merged between flushes, strangers and output.

use super::check;

#[test]
fn start_dispatches_to_connected_agents() {
    check(
        "
        show events
        job a b
        start a b
        ",
        "
        dispatch a
        dispatch b
        event a dispatched (finished 0/2)
        event b dispatched (finished 0/2)
        persist #1 a:dispatched@0 b:dispatched@0
        ",
    );
}

#[test]
fn an_undelivered_dispatch_leaves_the_target_queued() {
    check(
        "
        job a b
        start a
        ?
        ",
        "
        dispatch a
        dispatch b (not here)
        persist #1 a:dispatched@0
        = a:dispatched b:queued
        ",
    );
}

#[test]
fn an_agent_coming_online_gets_its_queued_job() {
    check(
        "
        job a
        start
        at 500
        online a
        ?
        ",
        "
        dispatch a (not here)
        dispatch a
        persist #1 a:dispatched@500
        = a:dispatched
        ",
    );
}

#[test]
fn steps_between_two_flushes_are_one_write() {
    // The rig fires flushes after each line; `hold` keeps the dispatch unwritten while the
    // agent acks and starts, so one step carries all three times.
    check(
        "
        job a
        hold
        start a
        at 10
        ack a
        at 20
        started a 15
        commit
        ?
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 a:running@15(d10,a10)
        = a:running
        ",
    );
}

#[test]
fn a_refused_dispatch_fails_the_target() {
    check(
        "
        job a
        start a
        at 5
        refuse a
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 | a:failed@5 \"refused by agent: bad grant\"
        finish completed
        retire
        ",
    );
}

#[test]
fn a_duplicate_ack_changes_nothing() {
    check(
        "
        job a
        start a
        dup a
        ?
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        = a:dispatched
        ",
    );
}

#[test]
fn steps_never_go_backwards() {
    check(
        "
        job a
        start a
        started a
        ack a
        ?
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        persist #2 a:running@0
        = a:running
        ",
    );
}

#[test]
fn a_stranger_is_ignored() {
    check(
        "
        job a
        start a
        result z succeeded
        online z
        ",
        "
        dispatch a
        persist #1 a:dispatched@0
        ",
    );
}

#[test]
fn output_is_published_not_written() {
    check(
        "
        show events
        job a
        start a
        output a hello world
        ",
        "
        dispatch a
        event a dispatched (finished 0/1)
        persist #1 a:dispatched@0
        event output a stdout \"hello world\"
        ",
    );
}
