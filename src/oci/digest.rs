//! Content digests: `sha256:<hex>` of bytes, and lower-case hex.

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
