//! Fuzz the shell opener as an agent meets it: arbitrary bytes as the first frame of a
//! server-opened stream must be refused or give a channel, and an arbitrary grant with an
//! arbitrary signature must be refused, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reap3r_wire::{Channel, Message, ShellOpen, SigningKey};

fuzz_target!(|data: &[u8]| {
    let server = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let agent = SigningKey::from_bytes(&[8; 32]);
    if let Ok((_, Message::ShellOpen(open))) =
        Channel::accept_open(data.to_vec(), &[1; 16], &server, [2; 16], agent.clone())
    {
        // Only the server key signs envelopes that verify; fuzzed bytes never do.
        panic!("accepted a forged opener: {open:?}");
    }
    let split = data.len() / 2;
    let open = ShellOpen {
        channel: [3; 16],
        grant: data[..split].to_vec(),
        signature: data[split..].to_vec(),
        resume_from: None,
    };
    assert!(open.verify(&server, &[2; 16], 0, 0).is_err());
});
