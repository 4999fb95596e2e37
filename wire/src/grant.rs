//! Signing and checking a server-signed grant (jobs, shells, file transfers): an Ed25519
//! signature over a context string that names the grant's kind and version, then the grant's
//! postcard bytes. The context keeps one kind's signature from passing as another's.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

fn signing_input(context: &[u8], grant: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(context.len() + grant.len());
    input.extend_from_slice(context);
    input.extend_from_slice(grant);
    input
}

/// The signature of `grant` (its bytes as sent) under `context`.
pub(crate) fn sign(context: &[u8], grant: &[u8], key: &SigningKey) -> [u8; 64] {
    key.sign(&signing_input(context, grant)).to_bytes()
}

/// Whether `signature` (64 bytes; any other length fails) signs `grant` under `context`.
pub(crate) fn verify(context: &[u8], grant: &[u8], signature: &[u8], key: &VerifyingKey) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    key.verify(
        &signing_input(context, grant),
        &Signature::from_bytes(&signature),
    )
    .is_ok()
}
