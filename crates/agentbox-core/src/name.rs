use crate::SpecError;

/// Agent names: `[a-z0-9][a-z0-9-]*`, at most 63 characters (they become directory names and
/// hostnames).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        // An agent's name is its sandbox's hostname too.
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Name(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "agent-1", "0x", "claude-code-2"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "x-", "A", "a_b", "a.b", "a/b", "..", &"a".repeat(64), "ä"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
