//! Fuzz the stream framer with arbitrary byte pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reap3r_wire::{Envelope, FrameReader, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new(MAX_FRAME_LEN);
    for piece in data.chunks(13) {
        reader.push(piece);
        while let Ok(Some(frame)) = reader.next_frame() {
            let _ = Envelope::parse(frame);
        }
    }
});
