//! Enrolment: the tokens that let new agents in, the enrolment itself (a token use consumed, the
//! agent created and its audit record written in one transaction), and operators' decisions on
//! enrolled agents (approve, reject, revoke, delete).
//!
//! Token secrets exist only in the answer to their creation; everything else, the store
//! included, sees their hash ([`hash_enrolment_token`]).

mod agents;
mod enrol;
mod tokens;

pub use agents::{DeleteAgent, RevokeAgent, SetAgentApproval, Withdraw, agent_target};
pub use enrol::EnrolAgent;
pub use tokens::{
    CreateEnrolmentToken, CreatedEnrolmentToken, DEFAULT_TOKEN_LIFETIME_S, DeleteEnrolmentToken,
    EnrolCommands, EnrolmentInfo, ListEnrolmentTokens, MAX_TOKEN_LABEL_CHARS, MAX_TOKEN_LIFETIME_S,
    MAX_TOKEN_USES, MIN_TOKEN_LIFETIME_S, RevokeEnrolmentToken, TOKEN_PLACEHOLDER,
    enrolment_commands, token_target,
};

/// Enrolment tokens are high-entropy secrets, so a fast hash is enough; only the hash is stored.
pub fn hash_enrolment_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}
