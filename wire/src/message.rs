//! Every message of the agent protocol; bodies are postcard-encoded inside an envelope.

use serde::{Deserialize, Serialize};

use crate::WireError;
use crate::file::{FileAck, FileChunk, FileDone, FileOpen, FileReady};
use crate::job::{JobAck, JobDispatch, JobOutput, JobResult};
use crate::metrics::{Capped, MAX_INTERFACES, MetricsBatch, MetricsSample};
use crate::network::NetInterface;
use crate::shell::{
    ShellAck, ShellClose, ShellExit, ShellInput, ShellOpen, ShellOutput, ShellResize,
};

/// First envelope on a connection, from the server: its header carries the session nonce and the
/// server's signature proves it holds the key the agent pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub server_time_ms: u64,
}

/// Enrolment: a new agent presents its token and proves possession of its fresh public key by
/// signing this envelope with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub token: String,
    pub public_key: [u8; 32],
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Approval {
    Approved,
    Pending,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResult {
    pub agent_id: [u8; 16],
    pub approval: Approval,
}

/// Hardware and OS summary sent with every hello.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventorySummary {
    pub os_name: String,
    pub os_version: String,
    pub kernel_version: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub memory_total_bytes: u64,
    pub disk_total_bytes: u64,
    pub boot_time_s: u64,
    /// Interfaces with a MAC address (loopback left out, at most [`MAX_INTERFACES`]), for
    /// Wake-on-LAN relays.
    pub interfaces: Capped<NetInterface, MAX_INTERFACES>,
}

/// What an enrolled agent presents on every connection (signed with its Ed25519 key, like
/// every envelope of the session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub agent_version: String,
    pub hostname: String,
    pub capabilities: Vec<String>,
    pub inventory: InventorySummary,
    /// The agent's X25519 public key for secrets sealed to it ([`crate::SealingSecret`]);
    /// `None` from an agent that takes no sealed secrets.
    pub sealing_key: Option<[u8; 32]>,
}

/// Runtime settings the server gives an agent; sent in `Welcome` and `ConfigUpdate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub heartbeat_interval_s: u32,
    pub metrics_interval_s: u32,
}

impl AgentConfig {
    pub const MIN_INTERVAL_S: u32 = 1;
    pub const MAX_INTERVAL_S: u32 = 3600;
    /// Metrics have their own floor: a sample is heavier than a heartbeat (disks, interfaces).
    pub const MIN_METRICS_INTERVAL_S: u32 = 5;

    /// Clamps intervals to the range an agent accepts, whatever the server sent.
    pub fn clamped(self) -> Self {
        Self {
            heartbeat_interval_s: self
                .heartbeat_interval_s
                .clamp(Self::MIN_INTERVAL_S, Self::MAX_INTERVAL_S),
            metrics_interval_s: self
                .metrics_interval_s
                .clamp(Self::MIN_METRICS_INTERVAL_S, Self::MAX_INTERVAL_S),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_s: 30,
            metrics_interval_s: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub agent_id: [u8; 16],
    pub config: AgentConfig,
    /// The public half of the key that signs agent releases: an agent pins it the first time
    /// it sees it (this message is signed by the pinned server key) and refuses another after.
    /// `None` when the server has no release key.
    pub release_key: Option<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub uptime_s: u64,
    /// CPU use in hundredths of a percent (integer, so messages compare exactly).
    pub cpu_centipercent: u16,
    pub memory_used_bytes: u64,
}

/// Why a connection is being closed; also the QUIC application close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 0,
    ServerShutdown = 1,
    UnknownAgent = 2,
    Revoked = 3,
    Rejected = 4,
    PendingApproval = 5,
    BadSignature = 6,
    Replay = 7,
    ProtocolError = 8,
    FrameTooLarge = 9,
    HeartbeatTimeout = 10,
    TokenInvalid = 11,
    Superseded = 12,
    Internal = 13,
    Overloaded = 14,
}

impl CloseCode {
    pub const ALL: [CloseCode; 15] = [
        Self::Normal,
        Self::ServerShutdown,
        Self::UnknownAgent,
        Self::Revoked,
        Self::Rejected,
        Self::PendingApproval,
        Self::BadSignature,
        Self::Replay,
        Self::ProtocolError,
        Self::FrameTooLarge,
        Self::HeartbeatTimeout,
        Self::TokenInvalid,
        Self::Superseded,
        Self::Internal,
        Self::Overloaded,
    ];

    pub fn from_u16(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u16 == code)
    }

    /// Whether an agent should keep retrying after this close. Refusals that only an operator
    /// can lift still retry, but slowly (the agent decides the pace).
    pub fn is_fatal_for_agent(self) -> bool {
        matches!(self, Self::Revoked | Self::Rejected | Self::UnknownAgent)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::ServerShutdown => "server_shutdown",
            Self::UnknownAgent => "unknown_agent",
            Self::Revoked => "revoked",
            Self::Rejected => "rejected",
            Self::PendingApproval => "pending_approval",
            Self::BadSignature => "bad_signature",
            Self::Replay => "replay",
            Self::ProtocolError => "protocol_error",
            Self::FrameTooLarge => "frame_too_large",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::TokenInvalid => "token_invalid",
            Self::Superseded => "superseded",
            Self::Internal => "internal",
            Self::Overloaded => "overloaded",
        }
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseReason {
    pub code: CloseCode,
    pub message: String,
}

/// A protocol message. The header's kind byte repeats the variant so routers need not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Challenge(Challenge),
    Enrol(EnrolRequest),
    EnrolResult(EnrolResult),
    Hello(Hello),
    Welcome(Welcome),
    Heartbeat(Heartbeat),
    Metrics(MetricsSample),
    ConfigUpdate(AgentConfig),
    Ack {
        seq: u64,
    },
    Close(CloseReason),
    /// S → A, first frame of a job stream: a job and its signed grant.
    JobDispatch(JobDispatch),
    /// A → S: the agent recorded (or refused, or already had) the job.
    JobAck(JobAck),
    /// A → S: the job's process started.
    JobStarted {
        job_id: [u8; 16],
        started_at_ms: u64,
    },
    /// A → S: live output.
    JobOutput(JobOutput),
    /// A → S: the outcome; live on the job stream, or replayed from the outbox on a uni stream.
    JobResult(JobResult),
    /// S → A (control stream): stop the job and kill its process group.
    JobCancel {
        job_id: [u8; 16],
    },
    /// S → A (control stream): the result is committed; the agent may drop it from its outbox.
    JobResultAck {
        job_id: [u8; 16],
    },
    /// A → S (uni stream): samples buffered while the agent was offline, oldest first.
    MetricsBatch(MetricsBatch),
    /// S → A, the opener of a shell channel (its own stream and sequence space).
    ShellOpen(ShellOpen),
    /// A → S, shell channel: started, resumed or refused.
    ShellAck(ShellAck),
    /// S → A, shell channel: keystrokes.
    ShellInput(ShellInput),
    /// S → A, shell channel: the terminal's new size.
    ShellResize(ShellResize),
    /// A → S, shell channel: output at a byte offset.
    ShellOutput(ShellOutput),
    /// A → S, shell channel: the shell ended.
    ShellExit(ShellExit),
    /// S → A, shell channel: end the shell.
    ShellClose(ShellClose),
    /// S → A, the opener of a file transfer's channel.
    FileOpen(FileOpen),
    /// Receiver → sender, transfer channel: how much it holds (and a pull's size).
    FileReady(FileReady),
    /// Sender → receiver, transfer channel: one chunk.
    FileChunk(FileChunk),
    /// Sender → receiver, transfer channel: everything was sent.
    FileDone(FileDone),
    /// Receiver → sender, transfer channel: held so far, send again, complete or failed.
    FileAck(FileAck),
}

/// The kind byte of an envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    Challenge = 1,
    Enrol = 2,
    EnrolResult = 3,
    Hello = 4,
    Welcome = 5,
    Heartbeat = 6,
    Metrics = 7,
    ConfigUpdate = 8,
    Ack = 9,
    Close = 10,
    JobDispatch = 11,
    JobAck = 12,
    JobStarted = 13,
    JobOutput = 14,
    JobResult = 15,
    JobCancel = 16,
    JobResultAck = 17,
    MetricsBatch = 18,
    ShellOpen = 19,
    ShellAck = 20,
    ShellInput = 21,
    ShellResize = 22,
    ShellOutput = 23,
    ShellExit = 24,
    ShellClose = 25,
    FileOpen = 26,
    FileReady = 27,
    FileChunk = 28,
    FileDone = 29,
    FileAck = 30,
}

impl MessageKind {
    pub fn from_u8(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            1 => Self::Challenge,
            2 => Self::Enrol,
            3 => Self::EnrolResult,
            4 => Self::Hello,
            5 => Self::Welcome,
            6 => Self::Heartbeat,
            7 => Self::Metrics,
            8 => Self::ConfigUpdate,
            9 => Self::Ack,
            10 => Self::Close,
            11 => Self::JobDispatch,
            12 => Self::JobAck,
            13 => Self::JobStarted,
            14 => Self::JobOutput,
            15 => Self::JobResult,
            16 => Self::JobCancel,
            17 => Self::JobResultAck,
            18 => Self::MetricsBatch,
            19 => Self::ShellOpen,
            20 => Self::ShellAck,
            21 => Self::ShellInput,
            22 => Self::ShellResize,
            23 => Self::ShellOutput,
            24 => Self::ShellExit,
            25 => Self::ShellClose,
            26 => Self::FileOpen,
            27 => Self::FileReady,
            28 => Self::FileChunk,
            29 => Self::FileDone,
            30 => Self::FileAck,
            other => return Err(WireError::UnknownKind(other)),
        })
    }
}

impl Message {
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Challenge(_) => MessageKind::Challenge,
            Self::Enrol(_) => MessageKind::Enrol,
            Self::EnrolResult(_) => MessageKind::EnrolResult,
            Self::Hello(_) => MessageKind::Hello,
            Self::Welcome(_) => MessageKind::Welcome,
            Self::Heartbeat(_) => MessageKind::Heartbeat,
            Self::Metrics(_) => MessageKind::Metrics,
            Self::ConfigUpdate(_) => MessageKind::ConfigUpdate,
            Self::Ack { .. } => MessageKind::Ack,
            Self::Close(_) => MessageKind::Close,
            Self::JobDispatch(_) => MessageKind::JobDispatch,
            Self::JobAck(_) => MessageKind::JobAck,
            Self::JobStarted { .. } => MessageKind::JobStarted,
            Self::JobOutput(_) => MessageKind::JobOutput,
            Self::JobResult(_) => MessageKind::JobResult,
            Self::JobCancel { .. } => MessageKind::JobCancel,
            Self::JobResultAck { .. } => MessageKind::JobResultAck,
            Self::MetricsBatch(_) => MessageKind::MetricsBatch,
            Self::ShellOpen(_) => MessageKind::ShellOpen,
            Self::ShellAck(_) => MessageKind::ShellAck,
            Self::ShellInput(_) => MessageKind::ShellInput,
            Self::ShellResize(_) => MessageKind::ShellResize,
            Self::ShellOutput(_) => MessageKind::ShellOutput,
            Self::ShellExit(_) => MessageKind::ShellExit,
            Self::ShellClose(_) => MessageKind::ShellClose,
            Self::FileOpen(_) => MessageKind::FileOpen,
            Self::FileReady(_) => MessageKind::FileReady,
            Self::FileChunk(_) => MessageKind::FileChunk,
            Self::FileDone(_) => MessageKind::FileDone,
            Self::FileAck(_) => MessageKind::FileAck,
        }
    }

    /// The channel a channel opener opens ([`crate::Channel`]); `None` for every other message.
    pub fn channel_id(&self) -> Option<[u8; 16]> {
        match self {
            Self::ShellOpen(open) => Some(open.channel),
            Self::FileOpen(open) => Some(open.channel),
            _ => None,
        }
    }

    pub(crate) fn encode_body(&self) -> Vec<u8> {
        // Serialising plain owned data into a Vec cannot fail; an empty body would be refused
        // by the receiver anyway, so no panic path is needed here.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub(crate) fn decode_body(kind: MessageKind, body: &[u8]) -> Result<Self, WireError> {
        let msg: Message =
            postcard::from_bytes(body).map_err(|e| WireError::Body(e.to_string()))?;
        if msg.kind() != kind {
            return Err(WireError::KindMismatch {
                header: kind as u8,
                body: msg.kind() as u8,
            });
        }
        Ok(msg)
    }
}
