//! Passwords as ACL users keep them: SHA-256 digests, shown as lowercase hex
//! (`#<hex>` in ACL LIST), compared without an early exit.

use crate::error::AclError;

/// A password's SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hash([u8; 32]);

impl std::fmt::Debug for Hash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.hex())
    }
}

impl Hash {
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(64);
        for byte in self.0 {
            text.push(DIGITS[usize::from(byte >> 4)] as char);
            text.push(DIGITS[usize::from(byte & 15)] as char);
        }
        text
    }

    /// Equality in time independent of where the digests differ.
    pub fn matches(&self, other: &Hash) -> bool {
        let difference = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }
}

pub fn hash_password(password: &[u8]) -> Hash {
    let digest = ring::digest::digest(&ring::digest::SHA256, password);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    Hash(bytes)
}

/// A `#`/`!` rule's digest: exactly 64 lowercase hex digits, as Redis requires.
pub fn parse_hash(hex: &[u8]) -> Result<Hash, AclError> {
    if hex.len() != 64 {
        return Err(AclError::BadHash);
    }
    let digit = |byte: u8| match byte {
        b'0'..=b'9' => Ok(byte - b'0'),
        b'a'..=b'f' => Ok(byte - b'a' + 10),
        _ => Err(AclError::BadHash),
    };
    let mut bytes = [0u8; 32];
    for (target, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        *target = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(Hash(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_redis() {
        // ACL GETUSER of a user with >secret on redis-server 7.0
        let hash = hash_password(b"secret");
        assert_eq!(
            hash.hex(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert_eq!(parse_hash(hash.hex().as_bytes()), Ok(hash));
        assert!(hash.matches(&hash_password(b"secret")));
        assert!(!hash.matches(&hash_password(b"secreT")));
        assert_eq!(
            parse_hash(hash.hex().to_ascii_uppercase().as_bytes()),
            Err(AclError::BadHash)
        );
        assert_eq!(parse_hash(b"zz"), Err(AclError::BadHash));
    }
}
