//! Content rules of notes (snapshot `unprotected.notes` and group `notes`): valid UTF-8,
//! at most 1 MiB, stored and shown byte-exact.

use crate::util::error::{Error, Result};

/// The one limit for snapshot notes, group notes and `pbsfs notes --set`.
pub const MAX_NOTES_LEN: usize = 1024 * 1024;

/// Check notes content and return it as a string.
pub fn validate_notes(bytes: &[u8], what: &str) -> Result<String> {
    if bytes.len() > MAX_NOTES_LEN {
        return Err(Error::TooLarge {
            what: format!("{what}: notes"),
            size: bytes.len() as u64,
            limit: MAX_NOTES_LEN as u64,
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(Error::InvalidUtf8 {
            what: format!("{what}: notes"),
            offset: e.valid_up_to(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(
            validate_notes("grüße\n".as_bytes(), "x").unwrap(),
            "grüße\n"
        );
        assert!(matches!(
            validate_notes(&[0xff], "x"),
            Err(Error::InvalidUtf8 { .. })
        ));
        assert!(validate_notes(&vec![b'a'; MAX_NOTES_LEN], "x").is_ok());
        assert!(matches!(
            validate_notes(&vec![b'a'; MAX_NOTES_LEN + 1], "x"),
            Err(Error::TooLarge { .. })
        ));
    }
}
