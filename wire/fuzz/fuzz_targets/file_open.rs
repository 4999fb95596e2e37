//! Fuzz the file transfer's opener and chunks as an agent or the server meets them: an
//! arbitrary grant with an arbitrary signature is refused, arbitrary chunks never panic the
//! receiver nor take it past its cap, and a path check never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reap3r_wire::{FileChunk, FileOpen, FileReceiver, SigningKey, check_path};

fuzz_target!(|data: &[u8]| {
    let server = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let split = data.len() / 2;
    let open = FileOpen {
        channel: [3; 16],
        grant: data[..split].to_vec(),
        signature: data[split..].to_vec(),
        offset: 0,
    };
    assert!(open.verify(&server, &[2; 16], 0, 0).is_err());
    let _ = check_path(&String::from_utf8_lossy(data));
    let cap = 4096;
    let mut receiver = FileReceiver::new(cap, None);
    for (i, piece) in data.chunks(97).enumerate() {
        let offset = if i % 3 == 0 {
            receiver.offset()
        } else {
            u64::from(piece[0])
        };
        let mut chunk = FileChunk::new(offset, piece.to_vec());
        if i % 5 == 4 {
            chunk.hash[0] ^= 1;
        }
        let _ = receiver.accept(&chunk);
        assert!(receiver.offset() <= cap);
    }
});
