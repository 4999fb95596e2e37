//! Fuzz the sealed env decoder: arbitrary bytes (a dispatch's `sealed` field, from a peer) must
//! decode or be refused, never panic or allocate past the caps on entries, names, keys and
//! ciphertexts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reap3r_wire::{MAX_SEALED_SECRETS, SealedEnv};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = SealedEnv::from_bytes(data) {
        assert!(env.entries.len() <= MAX_SEALED_SECRETS);
        // What decodes re-encodes to something that decodes to the same value.
        let bytes = env.to_bytes().expect("a decoded env is within its caps");
        assert_eq!(SealedEnv::from_bytes(&bytes).ok(), Some(env));
    }
});
