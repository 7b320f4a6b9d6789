use crate::SpecError;

/// Accepts one RFC 1123 label: 1-63 of `[A-Za-z0-9-]`, not starting or ending with `-`.
pub fn validate_hostname(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Hostname(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(validate_hostname("agentbox").is_ok());
        assert!(validate_hostname("a-1").is_ok());
        for bad in ["", "-a", "a-", "a.b", "a b", &"x".repeat(64), "ä"] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }
}
