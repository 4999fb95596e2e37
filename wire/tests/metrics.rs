#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Metrics on the wire: caps on mounts, interfaces, names and batch size are refused from the
//! length prefix, before anything is allocated; names are cut at a char boundary.

use reap3r_wire::*;
use serde::Serialize;

fn sample(mounts: usize, interfaces: usize) -> MetricsSample {
    MetricsSample {
        taken_at_ms: 1_700_000_000_000,
        cpu_centipercent: 1234,
        load1_centi: 50,
        load5_centi: 40,
        load15_centi: 30,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        swap_used_bytes: 0,
        swap_total_bytes: 1 << 30,
        mounts: Capped::truncated(
            (0..mounts)
                .map(|i| MountUsage {
                    mount: Name::truncated(&"m".repeat(MAX_NAME_LEN + i)),
                    used_bytes: u64::MAX,
                    total_bytes: u64::MAX,
                })
                .collect(),
        ),
        interfaces: Capped::truncated(
            (0..interfaces)
                .map(|_| InterfaceCounters {
                    name: Name::truncated(&"e".repeat(MAX_NAME_LEN)),
                    rx_bytes: u64::MAX,
                    tx_bytes: u64::MAX,
                    rx_errors: u64::MAX,
                    tx_errors: u64::MAX,
                })
                .collect(),
        ),
        process_count: 300,
        uptime_s: 99,
    }
}

/// The same shape as a batch, without caps: lets a test put more on the wire than allowed.
#[derive(Serialize)]
struct Uncapped<T> {
    items: Vec<T>,
}

#[test]
fn a_full_batch_at_every_cap_fits_in_one_frame() {
    let full = MetricsBatch {
        samples: Capped::truncated(vec![sample(MAX_MOUNTS, MAX_INTERFACES); MAX_BATCH_SAMPLES]),
    };
    let mut out = OutboundSession::new([1; 16], [2; 16], SigningKey::from_bytes(&[3; 32]));
    let env = out.seal(Message::MetricsBatch(full.clone()), 0);
    assert!(
        env.len() <= MAX_FRAME_LEN,
        "{} > {MAX_FRAME_LEN}",
        env.len()
    );
    assert_eq!(MetricsBatch::decode(&full.encode()), Ok(full));
}

#[test]
fn truncation_keeps_the_caps_and_char_boundaries() {
    let s = sample(MAX_MOUNTS + 5, MAX_INTERFACES + 5);
    assert_eq!(s.mounts.len(), MAX_MOUNTS);
    assert_eq!(s.interfaces.len(), MAX_INTERFACES);
    assert!(
        s.mounts
            .iter()
            .all(|m| m.mount.as_str().len() == MAX_NAME_LEN)
    );
    // A 3-byte char straddling the cap is dropped whole.
    let name = format!("{}€", "a".repeat(MAX_NAME_LEN - 1));
    assert_eq!(
        Name::truncated(&name).as_str(),
        "a".repeat(MAX_NAME_LEN - 1)
    );
}

#[test]
fn too_many_samples_in_a_batch_is_refused() {
    // A batch is one field: its encoding is the encoding of the list.
    let over = Uncapped {
        items: vec![sample(0, 0); MAX_BATCH_SAMPLES + 1],
    };
    let bytes = postcard::to_allocvec(&over).unwrap();
    assert!(matches!(
        MetricsBatch::decode(&bytes),
        Err(WireError::Body(_))
    ));
    let at_cap = Uncapped {
        items: vec![sample(0, 0); MAX_BATCH_SAMPLES],
    };
    let bytes = postcard::to_allocvec(&at_cap).unwrap();
    assert_eq!(
        MetricsBatch::decode(&bytes).unwrap().samples.len(),
        MAX_BATCH_SAMPLES
    );
}

#[test]
fn a_huge_length_prefix_is_refused_without_allocating() {
    // varint u32::MAX samples, then nothing: a decoder that trusted the prefix would try to
    // reserve gigabytes; this one refuses at the prefix.
    let bytes = [0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(matches!(
        MetricsBatch::decode(&bytes),
        Err(WireError::Body(_))
    ));
}

#[test]
fn too_many_mounts_or_a_long_name_is_refused() {
    let mut batch = MetricsBatch::decode(
        &MetricsBatch {
            samples: Capped::truncated(vec![sample(1, 1)]),
        }
        .encode(),
    )
    .unwrap();
    assert_eq!(batch.samples.len(), 1);
    // Re-encode by hand with 33 mounts and with a 129-byte name.
    #[derive(Serialize)]
    struct RawSample {
        taken_at_ms: u64,
        cpu_centipercent: u16,
        load: [u32; 3],
        mem: [u64; 4],
        mounts: Vec<(String, u64, u64)>,
        interfaces: Vec<(String, [u64; 4])>,
        process_count: u32,
        uptime_s: u64,
    }
    let raw = |mounts: usize, name_len: usize| RawSample {
        taken_at_ms: 1,
        cpu_centipercent: 2,
        load: [3, 4, 5],
        mem: [6, 7, 8, 9],
        mounts: (0..mounts).map(|_| ("x".repeat(name_len), 1, 2)).collect(),
        interfaces: vec![],
        process_count: 1,
        uptime_s: 1,
    };
    let decode = |r: RawSample| {
        MetricsBatch::decode(&postcard::to_allocvec(&Uncapped { items: vec![r] }).unwrap())
    };
    assert!(decode(raw(MAX_MOUNTS, MAX_NAME_LEN)).is_ok());
    assert!(decode(raw(MAX_MOUNTS + 1, 1)).is_err());
    assert!(decode(raw(1, MAX_NAME_LEN + 1)).is_err());
    batch.samples = Capped::truncated(vec![]);
    assert_eq!(MetricsBatch::decode(&batch.encode()), Ok(batch));
}

#[test]
fn metrics_intervals_have_their_own_floor() {
    let c = AgentConfig {
        heartbeat_interval_s: 1,
        metrics_interval_s: 1,
    }
    .clamped();
    assert_eq!(c.heartbeat_interval_s, 1);
    assert_eq!(c.metrics_interval_s, AgentConfig::MIN_METRICS_INTERVAL_S);
}
