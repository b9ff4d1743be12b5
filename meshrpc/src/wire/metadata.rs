//! [`Metadata`]: optional key → bytes pairs carried by requests and responses.

use bytes::Bytes;

/// Call metadata: an ordered list of `key → bytes` pairs (trace context, auth, hash key…).
///
/// Keys are at most 255 bytes of lowercase ASCII by convention (not enforced on
/// receipt); values at most 65,535 bytes. An empty `Metadata` costs nothing on the wire
/// and does not allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Bytes)>,
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Adds a pair (keeping any earlier pair with the same key).
    ///
    /// Keys longer than 255 bytes and values longer than 65,535 bytes are rejected with
    /// `Err` and the set is left unchanged.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Result<(), String> {
        let key = key.into();
        let value = value.into();
        if key.len() > u8::MAX as usize {
            return Err(format!("metadata key of {} bytes exceeds 255", key.len()));
        }
        if value.len() > u16::MAX as usize {
            return Err(format!("metadata value of {} bytes exceeds 65535", value.len()));
        }
        if self.entries.len() >= u16::MAX as usize {
            return Err("more than 65535 metadata entries".to_string());
        }
        self.entries.push((key, value));
        Ok(())
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The first value under `key`, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Removes every pair under `key`.
    pub(crate) fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    pub(crate) fn push_unchecked(&mut self, key: String, value: Bytes) {
        self.entries.push((key, value));
    }
}
