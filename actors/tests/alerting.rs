//! Alert rules and events on a real store (SQLite always, PostgreSQL when
//! `REAP3R_TEST_POSTGRES_URL` is set), driven through the alert supervisor with a manual clock:
//! validation and audit of rule operations; a threshold rule fed through the `SampleSink` fires,
//! survives a supervisor restart and a rule-actor crash without firing again, and resolves;
//! ack, notes, snooze and manual resolve; offline alerts with the restart grace; on the system
//! clock, a pending `for` fires on the rule actor's own timer with no periodic tick.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "alerting/rig.rs"]
mod rig;

use rig::{T0, code, create, real_time_rigs, rigs, threshold};

use std::time::{Duration, Instant};

use reap3r_actors::access::Caller;
use reap3r_actors::alerts::{
    AckAlert, AddAlertNote, AlertChangeKind, AlertSupervisorMsg, DeleteRule, ListEvents,
    MAX_SCOPE_ITEMS, Operator, ResolveAlert, RuleKind, Severity, SnoozeAlert, UpdateRule,
    alert_stats, get_event,
};
use reap3r_actors::audit::ListAudit;
use reap3r_actors::enrolment::{DeleteAgent, SetAgentApproval};
use reap3r_actors::metrics::Metric;
use reap3r_actors::{DomainError, FleetEvent};
use reap3r_store::{AgentApproval, TargetCounts, Uuid};
use reap3r_wire::JobType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_operations_validate_and_audit() {
    for rig in rigs().await {
        let (d, cli) = (&rig.domain, &rig.cli);
        let bad = create("x", threshold("cpu.percnt", Operator::Gt, 1.0, 0));
        assert_eq!(code(bad.run(d, cli).await.unwrap_err()), "unknown_metric");
        let bad = create("x", RuleKind::AgentOffline { for_s: 0 });
        assert_eq!(code(bad.run(d, cli).await.unwrap_err()), "invalid_duration");
        let mut big = create("x", RuleKind::AgentOffline { for_s: 60 });
        big.scope.tags = vec![Uuid::new_v4(); MAX_SCOPE_ITEMS + 1];
        assert_eq!(code(big.run(d, cli).await.unwrap_err()), "scope_too_large");
        let long = create(&"n".repeat(201), RuleKind::AgentOffline { for_s: 60 });
        assert_eq!(code(long.run(d, cli).await.unwrap_err()), "invalid_input");

        let rule = create("offline", RuleKind::AgentOffline { for_s: 60 })
            .run(d, cli)
            .await
            .unwrap();
        assert_eq!(rule.kind, RuleKind::AgentOffline { for_s: 60 });
        let dup = create("offline", RuleKind::AgentOffline { for_s: 60 })
            .run(d, cli)
            .await;
        assert!(matches!(
            dup,
            Err(DomainError::Store(_)) | Err(DomainError::Conflict(_))
        ));
        let updated = UpdateRule {
            id: rule.id,
            enabled: Some(false),
            severity: Some(Severity::Info),
            ..Default::default()
        }
        .run(d, cli)
        .await
        .unwrap();
        assert!(!updated.enabled);
        assert_eq!(updated.severity, Severity::Info);
        let bad_update = UpdateRule {
            id: rule.id,
            kind: Some(RuleKind::AgentOffline { for_s: u32::MAX }),
            ..Default::default()
        };
        assert_eq!(
            code(bad_update.run(d, cli).await.unwrap_err()),
            "invalid_duration"
        );
        DeleteRule { id: rule.id }.run(d, cli).await.unwrap();
        assert!(matches!(
            DeleteRule { id: rule.id }.run(d, cli).await,
            Err(DomainError::NotFound(_))
        ));
        let other_org = Caller::cli(Uuid::new_v4());
        assert!(
            reap3r_actors::alerts::list_rules(d, &other_org)
                .await
                .unwrap()
                .is_empty()
        );
        let actions: Vec<String> = ListAudit::default()
            .run(d, cli)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .filter(|a| a.starts_with("alert_rule."))
            .collect();
        assert_eq!(
            actions,
            [
                "alert_rule.delete",
                "alert_rule.update",
                "alert_rule.create"
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_rule_fires_once_across_restarts_and_resolves() {
    for rig in rigs().await {
        let agent = rig.agent("web-1").await;
        let other = rig.agent("db-1").await;
        let mut bus = rig.domain.events.subscribe();
        let sup = rig.supervisor(0).await;
        // Created while the supervisor runs: it learns of it from the audit event.
        let rule = create("procs", threshold("processes.count", Operator::Gt, 0.0, 0))
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        rig.until_running(&sup, &[rule.id]).await;
        // A metric the rule does not watch changes nothing.
        rig.sample(&agent, Metric::CpuPercent, 99.0);
        rig.sample(&agent, Metric::ProcessCount, 120.0);
        rig.until(&sup, "fired", |s, k| {
            s == ["firing"] && k == [AlertChangeKind::Fired]
        })
        .await;
        let change = rig.sink.0.lock().unwrap()[0].clone();
        assert_eq!(change.agent_id, Some(agent.id));
        assert_eq!(change.hostname.as_deref(), Some("web-1"));
        assert_eq!(change.severity, Severity::Critical);
        assert_eq!(change.value, Some(120.0));
        let fired = loop {
            if let FleetEvent::AlertFired { agent_id, .. } = bus.recv().await.unwrap() {
                break agent_id;
            }
        };
        assert_eq!(fired, Some(agent.id));

        // A restarted supervisor resumes the firing alert and does not fire it again.
        sup.stop_and_wait(None, None).await.unwrap();
        let sup = rig.supervisor(0).await;
        rig.clock.advance(1_000);
        rig.sample(&agent, Metric::ProcessCount, 130.0);
        rig.until(&sup, "still firing", |s, k| s == ["firing"] && k.len() == 1)
            .await;

        // So does a crashed rule actor, restarted from its persisted state.
        sup.cast(AlertSupervisorMsg::CrashRule(rule.id)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let running = sup
                .call(AlertSupervisorMsg::Running, None)
                .await
                .unwrap()
                .unwrap();
            if running == vec![rule.id] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "crashed rule actor not restarted"
            );
        }
        rig.clock.advance(1_000);
        rig.sample(&agent, Metric::ProcessCount, 140.0);
        rig.sample(&other, Metric::ProcessCount, 0.0);
        rig.until(&sup, "still one alert", |s, k| {
            s == ["firing"] && k.len() == 1
        })
        .await;

        // The condition clears: resolved, by the system.
        rig.clock.advance(1_000);
        rig.sample(&agent, Metric::ProcessCount, 0.0);
        rig.until(&sup, "resolved", |s, k| {
            s == ["resolved"] && k == [AlertChangeKind::Fired, AlertChangeKind::Resolved]
        })
        .await;
        let page = ListEvents::default()
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        let detail = get_event(&rig.domain, &rig.cli, page.events[0].id)
            .await
            .unwrap();
        let history: Vec<(&str, &str)> = detail
            .history
            .iter()
            .map(|h| (h.action.as_str(), h.actor.as_str()))
            .collect();
        assert_eq!(
            history,
            [
                ("pending", "system"),
                ("fired", "system"),
                ("resolved", "system")
            ]
        );
        assert_eq!(rig.samples.dropped(), 0);
        sup.stop_and_wait(None, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_ack_note_snooze_and_resolve() {
    for rig in rigs().await {
        let agent = rig.agent("web-1").await;
        create("uptime", threshold("uptime.seconds", Operator::Gt, 0.0, 0))
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        let sup = rig.supervisor(0).await;
        rig.until(&sup, "rule started", |_, _| true).await;
        rig.sample(&agent, Metric::UptimeSeconds, 5000.0);
        rig.until(&sup, "fired", |s, _| s == ["firing"]).await;
        let id = ListEvents::default()
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap()
            .events[0]
            .id;

        let (d, cli, sink) = (&rig.domain, &rig.cli, &*rig.sink);
        let acked = AckAlert { id }.run(d, cli, sink).await.unwrap();
        assert_eq!(acked.acked_by.as_deref(), Some("cli"));
        assert!(matches!(
            AckAlert { id }.run(d, cli, sink).await,
            Err(DomainError::Conflict(_))
        ));
        let other_org = Caller::cli(Uuid::new_v4());
        assert!(matches!(
            AckAlert { id }.run(d, &other_org, sink).await,
            Err(DomainError::NotFound(_))
        ));
        assert_eq!(
            code(
                SnoozeAlert { id, for_s: 0 }
                    .run(d, cli, sink)
                    .await
                    .unwrap_err()
            ),
            "invalid_duration"
        );
        let snoozed = SnoozeAlert { id, for_s: 600 }
            .run(d, cli, sink)
            .await
            .unwrap();
        assert_eq!(snoozed.snoozed_until, Some(T0 as i64 + 600_000));
        assert_eq!(
            code(
                AddAlertNote {
                    id,
                    body: "  ".into()
                }
                .run(d, cli)
                .await
                .unwrap_err()
            ),
            "invalid_input"
        );
        AddAlertNote {
            id,
            body: "looking into it".into(),
        }
        .run(d, cli)
        .await
        .unwrap();
        let stats = alert_stats(d, cli, 10).await.unwrap();
        assert_eq!((stats.open, stats.acked, stats.critical), (0, 1, 1));
        assert_eq!(stats.top_agents, vec![(agent.id, 1)]);

        ResolveAlert {
            id,
            reason: Some("fixed by hand".into()),
        }
        .run(d, cli, sink)
        .await
        .unwrap();
        assert!(matches!(
            ResolveAlert { id, reason: None }.run(d, cli, sink).await,
            Err(DomainError::Conflict(_))
        ));
        assert_eq!(
            rig.sink.kinds(),
            [
                AlertChangeKind::Fired,
                AlertChangeKind::Acked,
                AlertChangeKind::Snoozed,
                AlertChangeKind::Resolved
            ]
        );
        // The snooze reaches routing with its end, and later changes still carry it.
        let until = Some(T0 as i64 + 600_000);
        let changes = rig.sink.0.lock().unwrap().clone();
        assert_eq!(changes[2].snoozed_until_ms, until);
        assert_eq!(changes[3].snoozed_until_ms, until);
        let detail = get_event(d, cli, id).await.unwrap();
        assert_eq!(detail.notes.len(), 1);
        let actions: Vec<&str> = detail.history.iter().map(|h| h.action.as_str()).collect();
        assert_eq!(
            actions,
            ["pending", "fired", "acked", "snoozed", "note", "resolved"]
        );
        let audited: Vec<String> = ListAudit::default()
            .run(d, cli)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .filter(|a| a.starts_with("alert_event."))
            .collect();
        assert_eq!(
            audited,
            [
                "alert_event.resolve",
                "alert_event.note",
                "alert_event.snooze",
                "alert_event.ack"
            ]
        );

        // The rule starts over for the agent: a sample still over the line opens a new event.
        rig.clock.advance(1_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            rig.sample(&agent, Metric::UptimeSeconds, 5001.0);
            sup.call(AlertSupervisorMsg::Sync, None).await.unwrap();
            if rig.states().await == ["firing", "resolved"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no new event after a manual resolve"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sup.stop_and_wait(None, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_alerts_wait_out_the_restart_grace() {
    for rig in rigs().await {
        // Enrolled at T0 and never connected: offline since T0 as far as the database knows.
        let agent = rig.agent("web-1").await;
        create("offline", RuleKind::AgentOffline { for_s: 30 })
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        rig.clock.advance(120_000);
        // The node started now with a 60 s grace: nothing fires although the agent's last
        // contact is 120 s old, and it comes back within the grace.
        let sup = rig.supervisor(60_000).await;
        rig.until(&sup, "pending", |s, _| s == ["pending"]).await;
        rig.clock.advance(70_000);
        sup.cast(AlertSupervisorMsg::Tick).unwrap();
        rig.domain.events.publish(FleetEvent::AgentOnline {
            agent_id: agent.id,
            org_id: agent.org_id,
            hostname: "web-1".into(),
        });
        rig.until(&sup, "cleared", |s, _| s == ["resolved"]).await;
        assert!(
            rig.sink.kinds().is_empty(),
            "a restart raised an offline alert"
        );

        // Killed for real: it fires once `for` has elapsed, and resolves when it is back.
        rig.domain.events.publish(FleetEvent::AgentOffline {
            agent_id: agent.id,
            org_id: agent.org_id,
            reason: "connection lost".into(),
        });
        rig.until(&sup, "pending again", |s, _| {
            s.first().map(String::as_str) == Some("pending")
        })
        .await;
        rig.clock.advance(29_999);
        sup.cast(AlertSupervisorMsg::Tick).unwrap();
        rig.until(&sup, "not yet", |s, _| s[0] == "pending").await;
        rig.clock.advance(1);
        sup.cast(AlertSupervisorMsg::Tick).unwrap();
        rig.until(&sup, "fired", |s, k| {
            s[0] == "firing" && k == [AlertChangeKind::Fired]
        })
        .await;
        rig.domain.events.publish(FleetEvent::AgentOnline {
            agent_id: agent.id,
            org_id: agent.org_id,
            hostname: "web-1".into(),
        });
        rig.until(&sup, "resolved", |s, k| {
            s == ["resolved", "resolved"]
                && k == [AlertChangeKind::Fired, AlertChangeKind::Resolved]
        })
        .await;
        sup.stop_and_wait(None, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_failures_and_pending_approvals_alert() {
    for rig in rigs().await {
        let agent = rig.agent("web-1").await;
        let waiting = rig.enrol("new-1", true).await;
        let any_job = create("jobs", RuleKind::JobFailed { job_type: None })
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        // Only reboots: the failed job below is of no known type, so this one stays quiet.
        create(
            "reboots",
            RuleKind::JobFailed {
                job_type: Some(JobType::Reboot),
            },
        )
        .run(&rig.domain, &rig.cli)
        .await
        .unwrap();
        create("approval", RuleKind::AgentPendingApproval { for_s: 60 })
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        let sup = rig.supervisor(0).await;
        rig.until(&sup, "approval pending", |s, _| s == ["pending"])
            .await;

        let job_update = |state: &str| FleetEvent::JobUpdate {
            job_id: Uuid::new_v4(),
            org_id: agent.org_id,
            agent_id: Some(agent.id),
            state: state.into(),
            counts: TargetCounts::default(),
        };
        rig.domain.events.publish(job_update("failed"));
        rig.until(&sup, "job failure fired", |s, k| {
            s.len() == 2 && k == [AlertChangeKind::Fired]
        })
        .await;
        let page = ListEvents {
            rule_id: Some(any_job.id),
            ..Default::default()
        }
        .run(&rig.domain, &rig.cli)
        .await
        .unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].state, "firing");
        rig.domain.events.publish(job_update("succeeded"));
        rig.until(&sup, "job failure resolved", |_, k| {
            k == [AlertChangeKind::Fired, AlertChangeKind::Resolved]
        })
        .await;

        // Waiting for approval 60 s: fires; approved: resolves.
        rig.clock.advance(60_000);
        sup.cast(AlertSupervisorMsg::Tick).unwrap();
        rig.until(&sup, "approval fired", |_, k| k.len() == 3).await;
        let withdraw = |_: Uuid, _: &str| {};
        SetAgentApproval {
            id: waiting.id,
            approval: AgentApproval::Approved,
        }
        .run(&rig.domain, &rig.cli, &withdraw)
        .await
        .unwrap();
        rig.until(&sup, "approval resolved", |s, k| {
            k.len() == 4 && s.iter().all(|s| s == "resolved")
        })
        .await;
        let changes = rig.sink.0.lock().unwrap().clone();
        assert_eq!(changes[2].agent_id, Some(waiting.id));
        assert_eq!(changes[3].kind, AlertChangeKind::Resolved);
        sup.stop_and_wait(None, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_agent_s_alert_resolves_and_the_others_stay() {
    for rig in rigs().await {
        let gone = rig.agent("gone-1").await;
        let stays = rig.agent("stays-1").await;
        create("uptime", threshold("uptime.seconds", Operator::Gt, 0.0, 0))
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        let sup = rig.supervisor(0).await;
        rig.until(&sup, "rule started", |_, _| true).await;
        rig.sample(&gone, Metric::UptimeSeconds, 5000.0);
        rig.sample(&stays, Metric::UptimeSeconds, 5000.0);
        rig.until(&sup, "both fired", |s, _| s == ["firing", "firing"])
            .await;
        // The supervisor re-reads only the agent the audit event names, and ends its alert.
        let withdraw = |_: Uuid, _: &str| {};
        DeleteAgent { id: gone.id }
            .run(&rig.domain, &rig.cli, &withdraw)
            .await
            .unwrap();
        rig.until(&sup, "the deleted agent's alert resolved", |s, k| {
            let mut s = s.to_vec();
            s.sort();
            s == ["firing", "resolved"] && k.len() == 3
        })
        .await;
        let changes = rig.sink.0.lock().unwrap().clone();
        assert_eq!(
            (changes[2].kind, changes[2].agent_id),
            (AlertChangeKind::Resolved, Some(gone.id))
        );
        let open = ListEvents {
            state: Some("firing".into()),
            ..Default::default()
        }
        .run(&rig.domain, &rig.cli)
        .await
        .unwrap();
        assert_eq!(open.events.len(), 1);
        assert_eq!(open.events[0].agent_id, Some(stays.id));
        sup.stop_and_wait(None, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_for_fires_on_the_rule_s_own_timer() {
    for rig in real_time_rigs().await {
        let agent = rig.agent("web-1").await;
        let mut kind = threshold("cpu.percent", Operator::Gt, 90.0, 0);
        if let RuleKind::MetricThreshold(t) = &mut kind {
            t.for_s = 1;
        }
        let rule = create("cpu", kind)
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap();
        // The supervisor's periodic tick is an hour away: only the armed timer can fire it.
        let sup = rig.supervisor(0).await;
        rig.until_running(&sup, &[rule.id]).await;
        rig.sample(&agent, Metric::CpuPercent, 99.0);
        rig.until(&sup, "pending", |s, _| s == ["pending"]).await;
        rig.until(&sup, "fired by the timer", |s, k| {
            s == ["firing"] && k == [AlertChangeKind::Fired]
        })
        .await;
        let event = ListEvents::default()
            .run(&rig.domain, &rig.cli)
            .await
            .unwrap()
            .events
            .remove(0);
        let fired_after = event.fired_at.unwrap() - event.pending_at;
        assert!(
            fired_after >= 1_000,
            "fired {fired_after} ms after pending, before its `for`"
        );
    }
}
