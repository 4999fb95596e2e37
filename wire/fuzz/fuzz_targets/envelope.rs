//! Fuzz the envelope decoder: parse, verify and enrolment verification on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reap3r_wire::{Envelope, InboundSession, SigningKey};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
    if let Ok(env) = Envelope::parse(data.to_vec()) {
        let nonce = env.header().nonce;
        let sender = env.header().sender;
        let _ = InboundSession::new(nonce).accept(env, &sender, &key);
    }
    if let Ok(env) = Envelope::parse(data.to_vec()) {
        let _ = env.verify_enrol();
    }
});
