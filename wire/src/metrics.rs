//! Metrics on the wire: one sample of host figures, and the batch an agent sends when it comes
//! back from an outage with samples it buffered.
//!
//! Every list and name is capped, and the cap is checked against the length prefix *before*
//! anything is allocated ([`Capped`], [`Name`]), so a hostile length cannot become an allocation.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::WireError;

/// Mounts per sample; an agent with more reports the first ones (largest first is its choice).
pub const MAX_MOUNTS: usize = 32;
/// Network interfaces per sample.
pub const MAX_INTERFACES: usize = 16;
/// Longest mount point or interface name, in bytes; agents cut longer ones at a char boundary.
pub const MAX_NAME_LEN: usize = 128;
/// Samples per [`MetricsBatch`]. With every list and name at its cap a sample is under 8 KiB, so
/// a full batch stays under `MAX_FRAME_LEN` (256 KiB).
pub const MAX_BATCH_SAMPLES: usize = 30;

/// A `Vec` of at most `N` items. Decoding refuses a longer length prefix before allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<T, const N: usize>(Vec<T>);

impl<T, const N: usize> Default for Capped<T, N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T, const N: usize> Capped<T, N> {
    /// Keeps the first `N` items.
    pub fn truncated(mut items: Vec<T>) -> Self {
        items.truncate(N);
        Self(items)
    }

    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<T> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T, const N: usize> std::ops::Deref for Capped<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Serialize, const N: usize> Serialize for Capped<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CappedVisitor<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for CappedVisitor<T, N> {
            type Value = Capped<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {N} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // postcard gives the exact length prefix here: refuse it before allocating.
                let hint = seq.size_hint().unwrap_or(0);
                if hint > N {
                    return Err(de::Error::invalid_length(hint, &self));
                }
                let mut items = Vec::with_capacity(hint);
                while let Some(item) = seq.next_element()? {
                    if items.len() == N {
                        return Err(de::Error::invalid_length(N + 1, &self));
                    }
                    items.push(item);
                }
                Ok(Capped(items))
            }
        }
        d.deserialize_seq(CappedVisitor::<T, N>(PhantomData))
    }
}

/// A mount point or interface name of at most [`MAX_NAME_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Name(String);

impl Name {
    /// Cuts `name` to [`MAX_NAME_LEN`] bytes at a char boundary.
    pub fn truncated(name: &str) -> Self {
        let mut end = name.len().min(MAX_NAME_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Self(name[..end].to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a name of at most {MAX_NAME_LEN} bytes")
            }
            // postcard hands out a borrowed str: its length is checked before it is copied.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                if v.len() > MAX_NAME_LEN {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(Name(v.to_string()))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

/// Space on one mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountUsage {
    pub mount: Name,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// Counters of one network interface since boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    pub name: Name,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// One sample of host figures, taken every `metrics_interval_s`. Integers only, so messages
/// compare exactly: CPU and load averages are in hundredths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSample {
    /// When the agent took it (agent clock; the server checks it against its own).
    pub taken_at_ms: u64,
    pub cpu_centipercent: u16,
    pub load1_centi: u32,
    pub load5_centi: u32,
    pub load15_centi: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub mounts: Capped<MountUsage, MAX_MOUNTS>,
    pub interfaces: Capped<InterfaceCounters, MAX_INTERFACES>,
    pub process_count: u32,
    pub uptime_s: u64,
}

/// Samples an agent buffered while it could not send them, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsBatch {
    pub samples: Capped<MetricsSample, MAX_BATCH_SAMPLES>,
}

impl MetricsBatch {
    /// Decodes a postcard-encoded batch (what the fuzz target feeds); never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        postcard::from_bytes(bytes).map_err(|e| WireError::Body(e.to_string()))
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}
