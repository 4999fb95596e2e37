//! The Reap3r agent protocol: message types, signed envelopes, replay windows and frame limits.
//!
//! This crate does no I/O and never reads a clock: callers pass bytes and times in. Untrusted
//! bytes go through [`Envelope::parse`] and become usable only through verification
//! ([`InboundSession::accept`] or [`Envelope::verify_with`]), so handlers only ever see
//! [`Envelope<Verified>`].

mod channel;
mod envelope;
mod error;
mod file;
mod frame;
mod grant;
mod job;
mod message;
mod metrics;
mod network;
mod replay;
mod sealing;
mod session;
mod shell;
mod update;

pub use channel::{Channel, channel_nonce};
pub use envelope::{Envelope, HEADER_LEN, Header, SIGNATURE_LEN, Unverified, Verified};
pub use error::WireError;
pub use file::{
    ChunkVerdict, DoneVerdict, FILE_CAPABILITY, FILE_CHUNK_BYTES, FILE_PROGRESS_BYTES, FileAck,
    FileChunk, FileDirection, FileDone, FileGrant, FileMismatch, FileOpen, FileReady, FileReceiver,
    FileRefusal, FileSender, MAX_FILE_PATH_BYTES, MAX_FILE_RESENDS, PathRefusal, Received,
    SenderStep, check_path,
};
pub use frame::{FrameReader, MAX_DATAGRAM_LEN, MAX_FRAME_LEN, decode_frame_len, encode_frame};
pub use job::{
    DispatchRefusal, INTERPRETERS, JobAck, JobAckOutcome, JobDispatch, JobEnd, JobGrant, JobOutput,
    JobPayload, JobResult, JobSpec, JobType, MAX_JOB_TIMEOUT_S, MAX_OUTPUT_CHUNK,
    MAX_RESULT_DATA_BYTES, MAX_SCRIPT_BYTES, MAX_STDERR_BYTES, MAX_STDOUT_BYTES, OutputStream,
    ScriptJob, ServiceVerb, VerifiedJob,
};
pub use message::{
    AgentConfig, Approval, Challenge, CloseCode, CloseReason, EnrolRequest, EnrolResult, Heartbeat,
    Hello, InventorySummary, Message, MessageKind, Welcome,
};
pub use metrics::{
    Capped, InterfaceCounters, MAX_BATCH_SAMPLES, MAX_INTERFACES, MAX_MOUNTS, MAX_NAME_LEN,
    MetricsBatch, MetricsSample, MountUsage, Name,
};
pub use network::{
    Ipv4Net, MAGIC_PACKET_LEN, MAX_IPV4_PER_INTERFACE, NetInterface, WAKE_PORT, format_mac,
    magic_packet, parse_mac,
};
pub use replay::{REPLAY_WINDOW, ReplayWindow};
pub use sealing::{
    CryptoRng, MAX_SEALED_SECRETS, MAX_SEALED_VALUE_BYTES, MAX_SECRET_ENV_NAME_CHARS, SEAL_INFO,
    SealError, SealedEnv, SealedValue, SealingSecret, open_value, seal_value, valid_env_name,
};
pub use session::{InboundSession, OutboundSession, SERVER_SENDER};
pub use shell::{
    MAX_OPERATOR_LEN, MAX_SHELL_CHUNK, MAX_SHELL_DIMENSION, SHELL_CAPABILITY, ShellAck, ShellClose,
    ShellExit, ShellGrant, ShellInput, ShellOpen, ShellOpened, ShellOutput, ShellRefusal,
    ShellResize,
};
pub use update::{
    AgentVersion, MAX_RELEASE_LABEL_BYTES, RELEASE_KEY_CAPABILITY, ReleaseManifest, UpdateRefusal,
    check_update, is_label, release_key_capability,
};

pub use ed25519_dalek::{SigningKey, VerifyingKey};
/// The RNG traits [`seal_value`] and [`SealingSecret::generate`] take (rand_core 0.10), with
/// `UnwrapErr` to make `getrandom::SysRng` one.
pub use hpke::rand_core;

/// Protocol version carried in every envelope.
pub const PROTOCOL_VERSION: u8 = 1;
/// QUIC ALPN for this protocol version.
pub const ALPN: &[u8] = b"reap3r/1";
/// TLS server name agents use; the certificate is pinned, so the name is fixed.
pub const SERVER_NAME: &str = "reap3r.server";
/// Length of a session nonce and of a sender id.
pub const ID_LEN: usize = 16;
