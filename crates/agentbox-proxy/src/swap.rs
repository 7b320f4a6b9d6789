//! The credential swap: in a request toward a host a secret is bound to, its placeholder is
//! replaced by the real value, in header values only. `Basic` credentials are decoded first, so
//! that a token used as a password (git over HTTPS) is found too.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::{HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use agentbox_core::{Host, HostRule};

/// A secret as the proxy holds it.
pub struct Credential {
    pub env: String,
    pub placeholder: String,
    pub value: Zeroizing<String>,
    pub hosts: Vec<HostRule>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("env", &self.env)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn bound_to(&self, host: &Host) -> bool {
        self.hosts.iter().any(|r| r.matches(host))
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() || !haystack.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let mut out = Vec::with_capacity(haystack.len() + with.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Swaps the placeholders of `creds` in `value`, noting the secrets used; `None` when there is
/// nothing to swap.
fn swap_value(value: &[u8], creds: &[&Credential], used: &mut Vec<String>) -> Option<Vec<u8>> {
    let mut current: Option<Vec<u8>> = None;
    for c in creds {
        let base = current.as_deref().unwrap_or(value);
        if let Some(v) = replace_all(base, c.placeholder.as_bytes(), c.value.as_bytes()) {
            current = Some(v);
            if !used.contains(&c.env) {
                used.push(c.env.clone());
            }
        }
    }
    if current.is_some() {
        return current;
    }
    // `Basic base64(user:password)`: the placeholder is inside the encoding.
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = Zeroizing::new(STANDARD.decode(rest.trim_ascii()).ok()?);
    let swapped = Zeroizing::new(swap_value(&decoded, creds, used)?);
    let mut out = b"Basic ".to_vec();
    out.extend_from_slice(STANDARD.encode(&*swapped).as_bytes());
    Some(out)
}

/// Swaps in `headers` the placeholders of every credential in `creds` (already narrowed to the
/// destination host). Returns the names of the secrets swapped in, or why one cannot be sent.
pub fn swap_headers(headers: &mut HeaderMap, creds: &[&Credential]) -> Result<Vec<String>, String> {
    let mut used = Vec::new();
    for value in headers.values_mut() {
        let Some(new) = swap_value(value.as_bytes(), creds, &mut used) else { continue };
        let new = Zeroizing::new(new);
        let mut hv = HeaderValue::from_bytes(&new)
            .map_err(|_| format!("the value of {} cannot be sent in an HTTP header", used.join(", ")))?;
        hv.set_sensitive(true);
        *value = hv;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(env: &str, ph: &str, value: &str) -> Credential {
        Credential {
            env: env.into(),
            placeholder: ph.into(),
            value: Zeroizing::new(value.into()),
            hosts: vec!["api.example.com".parse().unwrap()],
        }
    }

    #[test]
    fn swaps_plain_bearer_and_basic() {
        let a = cred("A", "PH-A-0123", "real-a");
        let b = cred("B", "PH-B-4567", "real-b");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("PH-A-0123"));
        h.insert("authorization", HeaderValue::from_static("Bearer PH-B-4567"));
        h.insert("x-other", HeaderValue::from_static("nothing here"));
        let used = swap_headers(&mut h, &[&a, &b]).unwrap();
        assert_eq!(h["x-api-key"], "real-a");
        assert_eq!(h["authorization"], "Bearer real-b");
        assert_eq!(h["x-other"], "nothing here");
        assert_eq!(used, vec!["A".to_string(), "B".to_string()]);

        let mut h = HeaderMap::new();
        let basic = format!("Basic {}", STANDARD.encode("x-access-token:PH-A-0123"));
        h.insert("authorization", HeaderValue::from_str(&basic).unwrap());
        swap_headers(&mut h, &[&a]).unwrap();
        let got = h["authorization"].to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(STANDARD.decode(got).unwrap(), b"x-access-token:real-a");
    }

    #[test]
    fn only_given_credentials_are_swapped() {
        let a = cred("A", "PH-A-0123", "real-a");
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer PH-A-0123"));
        assert!(swap_headers(&mut h, &[]).unwrap().is_empty());
        assert_eq!(h["authorization"], "Bearer PH-A-0123");
        let bad = cred("BAD", "PH", "line\nbreak");
        let mut h = HeaderMap::new();
        h.insert("x", HeaderValue::from_static("PH"));
        assert!(swap_headers(&mut h, &[&bad]).unwrap_err().contains("BAD"));
        let _ = a;
    }

    /// Random header values never panic the swap, and a value without a placeholder is untouched.
    #[test]
    fn fuzz_values() {
        let a = cred("A", "PH", "secret");
        let mut rng = agentbox_core::testing::XorShift::new(77);
        for _ in 0..20000 {
            let len = rng.below(40);
            let v: Vec<u8> = (0..len).map(|_| rng.pick(b"PH Basic=UEg6QQ abc:")).collect();
            let out = swap_value(&v, &[&a], &mut Vec::new());
            if !v.windows(2).any(|w| w == b"PH") && !v.starts_with(b"Basic") && !v.starts_with(b"basic") {
                assert!(out.is_none());
            }
        }
    }
}
