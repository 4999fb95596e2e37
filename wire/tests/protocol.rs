#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Protocol tests: round trips for every message, hostile bytes, signatures and replays.

use proptest::prelude::*;
use reap3r_wire::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn arb_inventory() -> impl Strategy<Value = InventorySummary> {
    (
        ".{0,20}",
        ".{0,20}",
        ".{0,20}",
        ".{0,8}",
        ".{0,30}",
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(
            (
                "[a-z0-9]{0,15}",
                any::<[u8; 6]>(),
                proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32), 0..4),
            ),
            0..4,
        ),
    )
        .prop_map(
            |(os_name, os_version, kernel_version, arch, cpu_model, cpu_cores, m, d, b, nics)| {
                InventorySummary {
                    os_name,
                    os_version,
                    kernel_version,
                    arch,
                    cpu_model,
                    cpu_cores,
                    memory_total_bytes: m,
                    disk_total_bytes: d,
                    boot_time_s: b,
                    interfaces: Capped::truncated(
                        nics.into_iter()
                            .map(|(name, mac, nets)| NetInterface {
                                name: Name::truncated(&name),
                                mac,
                                ipv4: Capped::truncated(
                                    nets.into_iter()
                                        .map(|(addr, prefix)| Ipv4Net { addr, prefix })
                                        .collect(),
                                ),
                            })
                            .collect(),
                    ),
                }
            },
        )
}

fn arb_sample() -> impl Strategy<Value = MetricsSample> {
    (
        any::<[u64; 6]>(),
        any::<u16>(),
        any::<[u32; 4]>(),
        proptest::collection::vec(("[a-z/]{0,12}", any::<u64>(), any::<u64>()), 0..4),
        proptest::collection::vec(("[a-z0-9]{0,8}", any::<[u64; 4]>()), 0..3),
    )
        .prop_map(|(v, cpu, l, mounts, ifaces)| MetricsSample {
            taken_at_ms: v[0],
            cpu_centipercent: cpu,
            load1_centi: l[0],
            load5_centi: l[1],
            load15_centi: l[2],
            memory_used_bytes: v[1],
            memory_total_bytes: v[2],
            swap_used_bytes: v[3],
            swap_total_bytes: v[4],
            mounts: Capped::truncated(
                mounts
                    .into_iter()
                    .map(|(m, used_bytes, total_bytes)| MountUsage {
                        mount: Name::truncated(&m),
                        used_bytes,
                        total_bytes,
                    })
                    .collect(),
            ),
            interfaces: Capped::truncated(
                ifaces
                    .into_iter()
                    .map(|(n, c)| InterfaceCounters {
                        name: Name::truncated(&n),
                        rx_bytes: c[0],
                        tx_bytes: c[1],
                        rx_errors: c[2],
                        tx_errors: c[3],
                    })
                    .collect(),
            ),
            process_count: l[3],
            uptime_s: v[5],
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let close = (proptest::sample::select(CloseCode::ALL.to_vec()), ".{0,40}")
        .prop_map(|(code, message)| Message::Close(CloseReason { code, message }));
    prop_oneof![
        any::<u64>().prop_map(|t| Message::Challenge(Challenge { server_time_ms: t })),
        (
            ".{0,40}",
            any::<[u8; 32]>(),
            ".{0,20}",
            ".{0,10}",
            ".{0,10}",
            ".{0,10}"
        )
            .prop_map(|(token, public_key, hostname, os, arch, agent_version)| {
                Message::Enrol(EnrolRequest {
                    token,
                    public_key,
                    hostname,
                    os,
                    arch,
                    agent_version,
                })
            }),
        (any::<[u8; 16]>(), any::<bool>()).prop_map(|(agent_id, p)| Message::EnrolResult(
            EnrolResult {
                agent_id,
                approval: if p {
                    Approval::Pending
                } else {
                    Approval::Approved
                },
            }
        )),
        (
            ".{0,10}",
            ".{0,20}",
            proptest::collection::vec("[a-z_]{1,12}", 0..8),
            arb_inventory(),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(
                |(agent_version, hostname, capabilities, inventory, sealing_key)| {
                    Message::Hello(Hello {
                        agent_version,
                        hostname,
                        capabilities,
                        inventory,
                        sealing_key,
                    })
                }
            ),
        (
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|(agent_id, h, m, release_key)| {
                Message::Welcome(Welcome {
                    agent_id,
                    config: AgentConfig {
                        heartbeat_interval_s: h,
                        metrics_interval_s: m,
                    },
                    release_key,
                })
            }),
        (any::<u64>(), any::<u16>(), any::<u64>()).prop_map(
            |(uptime_s, cpu_centipercent, memory_used_bytes)| {
                Message::Heartbeat(Heartbeat {
                    uptime_s,
                    cpu_centipercent,
                    memory_used_bytes,
                })
            }
        ),
        arb_sample().prop_map(Message::Metrics),
        proptest::collection::vec(arb_sample(), 0..4).prop_map(|samples| {
            Message::MetricsBatch(MetricsBatch {
                samples: Capped::truncated(samples),
            })
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(h, m)| Message::ConfigUpdate(AgentConfig {
            heartbeat_interval_s: h,
            metrics_interval_s: m
        })),
        any::<u64>().prop_map(|seq| Message::Ack { seq }),
        close,
        arb_shell_message(),
    ]
}

fn arb_shell_message() -> impl Strategy<Value = Message> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (
            any::<[u8; 16]>(),
            bytes(),
            bytes(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(channel, grant, signature, resume_from)| Message::ShellOpen(ShellOpen {
                    channel,
                    grant,
                    signature,
                    resume_from,
                })
            ),
        (any::<[u8; 16]>(), any::<u32>(), ".{0,20}", any::<u8>()).prop_map(
            |(session_id, pid, why, pick)| Message::ShellAck(ShellAck {
                session_id,
                outcome: match pick % 3 {
                    0 => ShellOpened::Started { pid },
                    1 => ShellOpened::Resumed {
                        offset: u64::from(pid)
                    },
                    _ => ShellOpened::Refused(why),
                },
            })
        ),
        bytes().prop_map(|data| Message::ShellInput(ShellInput { data })),
        (any::<u16>(), any::<u16>())
            .prop_map(|(cols, rows)| Message::ShellResize(ShellResize { cols, rows })),
        (any::<u64>(), bytes())
            .prop_map(|(offset, data)| Message::ShellOutput(ShellOutput { offset, data })),
        (proptest::option::of(any::<i32>()), ".{0,20}", any::<u64>()).prop_map(
            |(exit_code, reason, output_bytes)| Message::ShellExit(ShellExit {
                exit_code,
                reason,
                output_bytes,
            })
        ),
        ".{0,20}".prop_map(|reason| Message::ShellClose(ShellClose { reason })),
        (any::<[u8; 16]>(), bytes(), bytes(), any::<u64>()).prop_map(
            |(channel, grant, signature, offset)| Message::FileOpen(FileOpen {
                channel,
                grant,
                signature,
                offset,
            })
        ),
        (any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(offset, size)| Message::FileReady(FileReady { offset, size })),
        (any::<u64>(), bytes(), any::<[u8; 32]>()).prop_map(|(offset, data, hash)| {
            Message::FileChunk(FileChunk { offset, data, hash })
        }),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(size, blake3)| Message::FileDone(FileDone { size, blake3 })),
        (any::<u64>(), ".{0,20}", any::<[u8; 32]>(), any::<u8>()).prop_map(
            |(offset, reason, blake3, pick)| Message::FileAck(match pick % 4 {
                0 => FileAck::Held { offset },
                1 => FileAck::Resend { offset, reason },
                2 => FileAck::Complete { blake3 },
                _ => FileAck::Failed(reason),
            })
        ),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in arb_message(), sender in any::<[u8; 16]>(), nonce in any::<[u8; 16]>(), seq in 1u64.., ts in any::<u64>()) {
        let k = key(7);
        let bytes = Envelope::seal(msg.clone(), sender, nonce, seq, ts, &k).into_bytes();
        let env = Envelope::parse(bytes).unwrap();
        prop_assert_eq!(env.header().sender, sender);
        prop_assert_eq!(env.header().nonce, nonce);
        prop_assert_eq!(env.header().seq, seq);
        prop_assert_eq!(env.header().ts_ms, ts);
        prop_assert_eq!(env.header().kind, msg.kind());
        let verified = env.verify_with(&k.verifying_key()).unwrap();
        prop_assert_eq!(verified.message(), &msg);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(env) = Envelope::parse(bytes.clone()) {
            prop_assert!(env.verify_with(&key(1).verifying_key()).is_err());
        }
        if let Ok(env) = Envelope::parse(bytes) {
            let _ = env.verify_enrol();
        }
    }

    #[test]
    fn truncated_or_flipped_envelopes_are_refused(msg in arb_message(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
        let k = key(3);
        let bytes = Envelope::seal(msg, [1; 16], [2; 16], 1, 0, &k).into_bytes();
        let truncated = bytes[..cut.index(bytes.len())].to_vec();
        prop_assert!(Envelope::parse(truncated).and_then(|e| e.verify_with(&k.verifying_key())).is_err());
        let mut flipped = bytes.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 0x01;
        prop_assert!(Envelope::parse(flipped).and_then(|e| e.verify_with(&k.verifying_key())).is_err());
    }

    #[test]
    fn replay_window_accepts_each_seq_once(seqs in proptest::collection::vec(1u64..400, 1..300)) {
        let mut w = ReplayWindow::new();
        let mut accepted = std::collections::HashSet::new();
        let mut highest = 0u64;
        for s in seqs {
            let ok = w.accept(s).is_ok();
            if ok {
                prop_assert!(accepted.insert(s), "seq {} accepted twice", s);
                highest = highest.max(s);
            } else {
                prop_assert!(accepted.contains(&s) || highest >= s + REPLAY_WINDOW);
            }
        }
    }
}

#[test]
fn frame_length_is_capped_before_allocation() {
    check_frame_len(
        (MAX_FRAME_LEN as u32 + 1).to_be_bytes(),
        Err(WireError::FrameTooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN,
        }),
    );
    check_frame_len(
        u32::MAX.to_be_bytes(),
        Err(WireError::FrameTooLarge {
            len: u32::MAX as usize,
            max: MAX_FRAME_LEN,
        }),
    );
    check_frame_len(
        3u32.to_be_bytes(),
        Err(WireError::Truncated {
            len: 3,
            min: HEADER_LEN + SIGNATURE_LEN,
        }),
    );
    check_frame_len(200u32.to_be_bytes(), Ok(200));
}

fn check_frame_len(prefix: [u8; 4], expected: Result<usize, WireError>) {
    assert_eq!(
        decode_frame_len(prefix, MAX_FRAME_LEN),
        expected,
        "prefix {prefix:?}"
    );
}

#[test]
fn frame_reader_splits_pieces_and_refuses_huge_prefix() {
    let k = key(9);
    let a = Envelope::seal(Message::Ack { seq: 1 }, [1; 16], [2; 16], 1, 0, &k).into_bytes();
    let b = Envelope::seal(Message::Ack { seq: 2 }, [1; 16], [2; 16], 2, 0, &k).into_bytes();
    let mut stream = encode_frame(&a);
    stream.extend(encode_frame(&b));
    let mut reader = FrameReader::new(MAX_FRAME_LEN);
    let mut frames = Vec::new();
    for chunk in stream.chunks(7) {
        reader.push(chunk);
        while let Some(f) = reader.next_frame().unwrap() {
            frames.push(f);
        }
    }
    assert_eq!(frames, vec![a, b]);

    let mut hostile = FrameReader::new(MAX_FRAME_LEN);
    hostile.push(&[0xff, 0xff, 0xff, 0xff, 0]);
    assert!(matches!(
        hostile.next_frame(),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn session_refuses_replay_wrong_nonce_wrong_sender_and_bad_signature() {
    let agent = key(5);
    let nonce = [42; 16];
    let id = [1; 16];
    let mut out = OutboundSession::new(id, nonce, agent.clone());
    let mut inbound = InboundSession::new(nonce);
    let hb = Message::Heartbeat(Heartbeat {
        uptime_s: 1,
        cpu_centipercent: 0,
        memory_used_bytes: 0,
    });
    let first = out.seal(hb.clone(), 10);

    let ok = inbound.accept(
        Envelope::parse(first.clone()).unwrap(),
        &id,
        &agent.verifying_key(),
    );
    assert_eq!(ok.unwrap().message(), &hb);
    let replay = inbound.accept(Envelope::parse(first).unwrap(), &id, &agent.verifying_key());
    assert_eq!(replay.unwrap_err(), WireError::Replay(1));

    let mut other_session = OutboundSession::new(id, [9; 16], agent.clone());
    let foreign = other_session.seal(hb.clone(), 10);
    let err = inbound.accept(
        Envelope::parse(foreign).unwrap(),
        &id,
        &agent.verifying_key(),
    );
    assert_eq!(err.unwrap_err(), WireError::WrongSession);

    let second = out.seal(hb.clone(), 11);
    let err = inbound.accept(
        Envelope::parse(second.clone()).unwrap(),
        &[2; 16],
        &agent.verifying_key(),
    );
    assert_eq!(err.unwrap_err(), WireError::WrongSender);

    let err = inbound.accept(
        Envelope::parse(second.clone()).unwrap(),
        &id,
        &key(6).verifying_key(),
    );
    assert_eq!(err.unwrap_err(), WireError::BadSignature);
    // A forged envelope must not burn the sequence number of the genuine one.
    assert!(
        inbound
            .accept(
                Envelope::parse(second).unwrap(),
                &id,
                &agent.verifying_key()
            )
            .is_ok()
    );
}

#[test]
fn the_hellos_sealing_key_is_covered_by_the_agents_signature() {
    let agent = key(5);
    let nonce = [42; 16];
    let id = [1; 16];
    let sealing = SealingSecret::from_bytes(&[8; 32]).unwrap();
    let hello = Message::Hello(Hello {
        agent_version: "1".into(),
        hostname: "h".into(),
        capabilities: vec![],
        inventory: InventorySummary::default(),
        sealing_key: Some(sealing.public()),
    });
    let frame = OutboundSession::new(id, nonce, agent.clone()).seal(hello.clone(), 10);
    let accepted = InboundSession::new(nonce)
        .accept(
            Envelope::parse(frame.clone()).unwrap(),
            &id,
            &agent.verifying_key(),
        )
        .unwrap();
    assert_eq!(accepted.message(), &hello);
    // The key is the body's last 32 bytes before the signature: swapping any of its bytes (an
    // attacker substituting their own key) breaks the signature.
    let key_at = frame.len() - SIGNATURE_LEN - 32;
    assert_eq!(&frame[key_at..key_at + 32], sealing.public().as_slice());
    for i in key_at..key_at + 32 {
        let mut forged = frame.clone();
        forged[i] ^= 0x01;
        let err = InboundSession::new(nonce)
            .accept(
                Envelope::parse(forged).unwrap(),
                &id,
                &agent.verifying_key(),
            )
            .unwrap_err();
        assert_eq!(err, WireError::BadSignature, "byte {i}");
    }
}

#[test]
fn enrolment_is_verified_against_the_key_it_carries() {
    let agent = key(11);
    let nonce = [3; 16];
    let req = EnrolRequest {
        token: "t".into(),
        public_key: agent.verifying_key().to_bytes(),
        hostname: "h".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0".into(),
    };
    let mut out = OutboundSession::new([0; 16], nonce, agent);
    let bytes = out.seal(Message::Enrol(req.clone()), 0);
    let mut inbound = InboundSession::new(nonce);
    assert!(
        inbound
            .accept_enrol(Envelope::parse(bytes).unwrap())
            .is_ok()
    );

    // Same request signed by a key other than the one it names.
    let mut impostor = OutboundSession::new([0; 16], nonce, key(12));
    let bytes = impostor.seal(Message::Enrol(req), 0);
    assert_eq!(
        InboundSession::new(nonce)
            .accept_enrol(Envelope::parse(bytes).unwrap())
            .unwrap_err(),
        WireError::BadSignature
    );
}

#[test]
fn challenge_must_be_signed_by_the_pinned_server_key() {
    let server = key(20);
    let nonce = [8; 16];
    let mut out = OutboundSession::new(SERVER_SENDER, nonce, server.clone());
    let bytes = out.seal(Message::Challenge(Challenge { server_time_ms: 5 }), 5);
    let (session, ch) = InboundSession::from_challenge(
        Envelope::parse(bytes.clone()).unwrap(),
        &server.verifying_key(),
    )
    .unwrap();
    assert_eq!(session.nonce(), nonce);
    assert_eq!(ch.server_time_ms, 5);
    let err =
        InboundSession::from_challenge(Envelope::parse(bytes).unwrap(), &key(21).verifying_key());
    assert_eq!(err.unwrap_err(), WireError::BadSignature);
}

#[test]
fn batch_verification_finds_the_bad_envelope() {
    let keys: Vec<SigningKey> = (0..8).map(|i| key(100 + i)).collect();
    let mut items = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let bytes = Envelope::seal(
            Message::Ack { seq: i as u64 },
            [i as u8; 16],
            [0; 16],
            1,
            0,
            k,
        )
        .into_bytes();
        // Envelope 5 is checked against the wrong key.
        let vk = if i == 5 {
            keys[0].verifying_key()
        } else {
            k.verifying_key()
        };
        items.push((Envelope::parse(bytes).unwrap(), vk));
    }
    let results = Envelope::verify_batch(items);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_err(), i == 5, "envelope {i}");
    }
}

#[test]
fn datagram_size_is_enforced() {
    let mut out = OutboundSession::new([1; 16], [2; 16], key(1));
    let big = Message::Close(CloseReason {
        code: CloseCode::Normal,
        message: "x".repeat(2000),
    });
    assert!(matches!(
        out.seal_datagram(big, 0),
        Err(WireError::DatagramTooLarge { .. })
    ));
    let hb = Message::Heartbeat(Heartbeat {
        uptime_s: u64::MAX,
        cpu_centipercent: u16::MAX,
        memory_used_bytes: u64::MAX,
    });
    assert!(out.seal_datagram(hb, u64::MAX).is_ok());
}

#[test]
fn batch_verdicts_stay_in_order_whatever_fails() {
    // Sizes around the single-check threshold and the halving; bad envelopes anywhere.
    for (n, bad) in [
        (1, vec![0]),
        (7, vec![]),
        (8, vec![7]),
        (9, vec![0, 8]),
        (100, vec![3, 50, 99]),
        (257, vec![128]),
        (64, (0..64).collect()),
    ] {
        let keys: Vec<_> = (0..n).map(|i| key(i as u8)).collect();
        let items = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ack = Message::Ack { seq: i as u64 };
                let mut bytes = Envelope::seal(ack, [i as u8; 16], [0; 16], 1, 0, k).into_bytes();
                if bad.contains(&i) {
                    let last = bytes.len() - 1;
                    bytes[last] ^= 0x40;
                }
                (Envelope::parse(bytes).unwrap(), k.verifying_key())
            })
            .collect();
        let verdicts = Envelope::verify_batch(items);
        assert_eq!(verdicts.len(), n);
        for (i, v) in verdicts.iter().enumerate() {
            match v {
                Ok(env) => {
                    assert!(!bad.contains(&i), "n={n}: envelope {i} forged but accepted");
                    assert_eq!(env.header().sender, [i as u8; 16], "n={n}: order kept");
                }
                Err(e) => {
                    assert!(bad.contains(&i), "n={n}: envelope {i} refused: {e}");
                    assert_eq!(*e, WireError::BadSignature);
                }
            }
        }
    }
}
