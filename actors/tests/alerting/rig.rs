//! The alerting tests' rig: a domain on each test database, a manual clock (or the system clock
//! for timer tests), a sink collecting what alerting hands to routing, and helpers to enrol
//! agents, feed samples and poll until events reach a state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use reap3r_actors::access::Caller;
use reap3r_actors::alerts::{
    Aggregation, AlertChange, AlertChangeKind, AlertSamples, AlertSettings, AlertSink,
    AlertSupervisor, AlertSupervisorMsg, AlertingArgs, CreateRule, ListEvents, Operator, RuleKind,
    RuleScope, Severity, Threshold,
};
use reap3r_actors::enrolment::{CreateEnrolmentToken, EnrolAgent, EnrolmentInfo};
use reap3r_actors::metrics::{AgentSample, Metric, SampleSink, SeriesValue};
use reap3r_actors::{Clock, Domain, DomainError, EventBus, ManualClock, SystemClock};
use reap3r_store::{Agent, NewAgent, Uuid};
use reap3r_testkit::TestDatabase;

pub const T0: u64 = 1_700_000_000_000;

#[derive(Default)]
pub struct Collecting(pub Mutex<Vec<AlertChange>>);

impl AlertSink for Collecting {
    fn alert_changed(&self, change: AlertChange) {
        self.0.lock().unwrap().push(change);
    }
}

impl Collecting {
    pub fn kinds(&self) -> Vec<AlertChangeKind> {
        self.0.lock().unwrap().iter().map(|c| c.kind).collect()
    }
}

pub struct Rig {
    _db: TestDatabase,
    pub domain: Domain,
    /// The domain's clock, unless the rig runs on the system clock (then it stays unused).
    pub clock: ManualClock,
    pub cli: Caller,
    pub sink: Arc<Collecting>,
    pub samples: AlertSamples,
}

/// One rig per test database, on a manual clock at [`T0`].
pub async fn rigs() -> Vec<Rig> {
    rigs_on(false).await
}

/// One rig per test database, on the system clock (for timers the rule actors arm).
pub async fn real_time_rigs() -> Vec<Rig> {
    rigs_on(true).await
}

async fn rigs_on(system_clock: bool) -> Vec<Rig> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let clock = ManualClock::new(T0);
        let domain_clock: Arc<dyn Clock> = if system_clock {
            Arc::new(SystemClock)
        } else {
            Arc::new(clock.clone())
        };
        let domain = Domain::new(
            store,
            domain_clock,
            EventBus::new(256),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        let org = domain.store.default_org(0).await.unwrap();
        out.push(Rig {
            _db: db,
            domain,
            clock,
            cli: Caller::cli(org.id),
            sink: Arc::new(Collecting::default()),
            samples: AlertSamples::default(),
        });
    }
    out
}

impl Rig {
    pub async fn agent(&self, hostname: &str) -> Agent {
        self.enrol(hostname, false).await
    }

    pub async fn enrol(&self, hostname: &str, require_approval: bool) -> Agent {
        let info = EnrolmentInfo {
            server_addr: "cp:4433".into(),
            cert_fingerprint: "f".repeat(64),
            server_key: "k".repeat(64),
        };
        let token = CreateEnrolmentToken {
            require_approval,
            ..Default::default()
        }
        .run(&self.domain, &self.cli, &info)
        .await
        .unwrap();
        EnrolAgent {
            token: token.secret,
            agent: NewAgent {
                hostname: hostname.into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                agent_version: "0.1.0".into(),
                public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
            },
            remote: "192.0.2.7:5000".into(),
        }
        .run(&self.domain)
        .await
        .unwrap()
    }

    /// A supervisor with ticks and reloads left to the test (an hour apart).
    pub async fn supervisor(&self, grace_ms: i64) -> ActorRef<AlertSupervisorMsg> {
        let args = AlertingArgs {
            sink: self.sink.clone(),
            samples: self.samples.clone(),
            settings: AlertSettings {
                tick_ms: 3_600_000,
                reload_ms: 3_600_000,
                since_floor_ms: self.domain.now_ms() + grace_ms,
            },
        };
        AlertSupervisor::start(self.domain.clone(), args)
            .await
            .unwrap()
    }

    pub fn sample(&self, agent: &Agent, metric: Metric, value: f64) {
        self.samples.samples_committed(Arc::from(vec![AgentSample {
            agent_id: agent.id,
            org_id: agent.org_id,
            taken_at_ms: self.domain.now_ms(),
            values: vec![SeriesValue {
                metric,
                label: String::new(),
                value,
            }],
        }]));
    }

    pub async fn states(&self) -> Vec<String> {
        ListEvents::default()
            .run(&self.domain, &self.cli)
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.state)
            .collect()
    }

    /// Polls until the supervisor runs exactly the actors of `rules`, or fails after 10 s.
    pub async fn until_running(&self, sup: &ActorRef<AlertSupervisorMsg>, rules: &[Uuid]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sup
            .call(AlertSupervisorMsg::Running, None)
            .await
            .unwrap()
            .unwrap()
            != rules
        {
            assert!(Instant::now() < deadline, "rule actors never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls (every rule actor synced each time) until `want` holds, or fails after 10 s.
    pub async fn until<F: Fn(&[String], &[AlertChangeKind]) -> bool>(
        &self,
        sup: &ActorRef<AlertSupervisorMsg>,
        what: &str,
        want: F,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            sup.call(AlertSupervisorMsg::Sync, Some(Duration::from_secs(10)))
                .await
                .unwrap();
            let states = self.states().await;
            if want(&states, &self.sink.kinds()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: events {states:?}, changes {:?}",
                self.sink.kinds()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn threshold(metric: &str, op: Operator, value: f64, hold_s: u32) -> RuleKind {
    RuleKind::MetricThreshold(Threshold {
        metric: metric.into(),
        label: None,
        operator: op,
        value,
        recovery: None,
        aggregation: Aggregation::Last,
        window_s: 60,
        for_s: 0,
        hold_s,
    })
}

pub fn create(name: &str, kind: RuleKind) -> CreateRule {
    CreateRule {
        name: name.into(),
        enabled: true,
        severity: Severity::Critical,
        kind,
        scope: RuleScope::default(),
    }
}

pub fn code(err: DomainError) -> &'static str {
    match err {
        DomainError::Invalid { code, .. } => code,
        other => panic!("expected a 400, got {other:?}"),
    }
}
