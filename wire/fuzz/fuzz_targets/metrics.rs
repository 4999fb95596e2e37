//! Fuzz the metrics decoders: a batch (and so every sample, mount and interface in it) from
//! arbitrary bytes must decode or be refused, never panic or allocate past its caps.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reap3r_wire::MetricsBatch;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = MetricsBatch::decode(data) {
        // What decodes re-encodes to something that decodes to the same value.
        assert_eq!(MetricsBatch::decode(&batch.encode()).ok(), Some(batch));
    }
});
