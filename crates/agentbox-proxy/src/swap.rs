//! The credential swap: in a request toward a host a secret is bound to, its placeholder is
//! replaced by the real value in the secret's declared authentication headers, and nowhere else.
//! `Basic` credentials are decoded first, so that a token used as a password (git over HTTPS) is
//! found too.
//!
//! A placeholder anywhere else (another header, the URL) is refused: a provider that quotes a
//! header back in an error message (`invalid anthropic-beta: ...`) would otherwise hand the real
//! key to the agent.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroizing;

use agentbox_core::{Host, HostRule};

/// A secret as the proxy holds it.
pub struct Credential {
    pub env: String,
    pub placeholder: String,
    pub value: Zeroizing<String>,
    pub hosts: Vec<HostRule>,
    /// The only headers the value is sent in (lower case).
    pub headers: Vec<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("env", &self.env)
            .field("hosts", &self.hosts)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn bound_to(&self, host: &Host) -> bool {
        self.hosts.iter().any(|r| r.matches_host(host))
    }

    fn allowed_in(&self, header: &HeaderName) -> bool {
        self.headers.iter().any(|h| h == header.as_str())
    }
}

/// Why a request was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapError {
    /// A placeholder where its secret does not belong.
    Misplaced { secret: String, place: String, allowed: Vec<String> },
    /// The real value cannot travel in a header.
    Unsendable(String),
}

impl std::fmt::Display for SwapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwapError::Misplaced { secret, place, allowed } => write!(
                f,
                "the placeholder of {secret} is in {place}; it is only swapped in the {} header(s), and sent nowhere else",
                allowed.join(", ")
            ),
            SwapError::Unsendable(secret) => write!(f, "the value of {secret} cannot be sent in an HTTP header"),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if !contains(haystack, needle) {
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

/// The `Basic` credentials of a header value, decoded.
fn basic(value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    STANDARD.decode(rest.trim_ascii()).ok().map(Zeroizing::new)
}

/// Which of `creds` have their placeholder in `value` (plainly or inside `Basic` credentials).
fn placeholders_in<'c>(value: &[u8], creds: &[&'c Credential]) -> Vec<&'c Credential> {
    let decoded = basic(value);
    creds
        .iter()
        .filter(|c| {
            contains(value, c.placeholder.as_bytes())
                || decoded.as_ref().is_some_and(|d| contains(d, c.placeholder.as_bytes()))
        })
        .copied()
        .collect()
}

/// Swaps the placeholders of `creds` in `value`.
fn swap_value(value: &[u8], creds: &[&Credential]) -> Option<Vec<u8>> {
    let mut current: Option<Vec<u8>> = None;
    for c in creds {
        let base = current.as_deref().unwrap_or(value);
        if let Some(v) = replace_all(base, c.placeholder.as_bytes(), c.value.as_bytes()) {
            current = Some(v);
        }
    }
    if current.is_some() {
        return current;
    }
    let decoded = basic(value)?;
    let swapped = Zeroizing::new(swap_value(&decoded, creds)?);
    let mut out = b"Basic ".to_vec();
    out.extend_from_slice(STANDARD.encode(&*swapped).as_bytes());
    Some(out)
}

/// Swaps in `headers` the placeholders of every credential in `creds` (already narrowed to the
/// destination host), each in its own declared headers only. `uri` is checked too. Returns the
/// names of the secrets swapped in; a placeholder anywhere else refuses the whole request.
pub fn swap_headers(
    headers: &mut HeaderMap,
    uri: &str,
    creds: &[&Credential],
) -> Result<Vec<String>, SwapError> {
    if let Some(c) = creds.iter().find(|c| contains(uri.as_bytes(), c.placeholder.as_bytes())) {
        return Err(SwapError::Misplaced {
            secret: c.env.clone(),
            place: "the URL".into(),
            allowed: c.headers.clone(),
        });
    }
    // Every header is checked before any is changed: a refused request holds no real value.
    for (name, value) in headers.iter() {
        if let Some(c) = placeholders_in(value.as_bytes(), creds).iter().find(|c| !c.allowed_in(name)) {
            return Err(SwapError::Misplaced {
                secret: c.env.clone(),
                place: format!("the {} header", name.as_str()),
                allowed: c.headers.clone(),
            });
        }
    }
    let mut used = Vec::new();
    for (_, value) in headers.iter_mut() {
        let present = placeholders_in(value.as_bytes(), creds);
        if present.is_empty() {
            continue;
        }
        let Some(new) = swap_value(value.as_bytes(), &present) else { continue };
        let new = Zeroizing::new(new);
        let names: Vec<String> = present.iter().map(|c| c.env.clone()).collect();
        let mut hv = HeaderValue::from_bytes(&new).map_err(|_| SwapError::Unsendable(names.join(", ")))?;
        hv.set_sensitive(true);
        *value = hv;
        for n in names {
            if !used.contains(&n) {
                used.push(n);
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(env: &str, ph: &str, value: &str, headers: &[&str]) -> Credential {
        Credential {
            env: env.into(),
            placeholder: ph.into(),
            value: Zeroizing::new(value.into()),
            hosts: vec!["api.example.com".parse().unwrap()],
            headers: headers.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn swaps_in_declared_headers_plain_bearer_and_basic() {
        let a = cred("A", "PH-A-0123", "real-a", &["x-api-key"]);
        let b = cred("B", "PH-B-4567", "real-b", &["authorization"]);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("PH-A-0123"));
        h.insert("authorization", HeaderValue::from_static("Bearer PH-B-4567"));
        h.insert("x-other", HeaderValue::from_static("nothing here"));
        let used = swap_headers(&mut h, "/v1/messages", &[&a, &b]).unwrap();
        assert_eq!(h["x-api-key"], "real-a");
        assert_eq!(h["authorization"], "Bearer real-b");
        assert_eq!(h["x-other"], "nothing here");
        assert_eq!(used, vec!["A".to_string(), "B".to_string()]);

        let mut h = HeaderMap::new();
        let basic = format!("Basic {}", STANDARD.encode("x-access-token:PH-B-4567"));
        h.insert("authorization", HeaderValue::from_str(&basic).unwrap());
        swap_headers(&mut h, "/", &[&b]).unwrap();
        let got = h["authorization"].to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(STANDARD.decode(got).unwrap(), b"x-access-token:real-b");
    }

    /// A placeholder in any other header, or in the URL, refuses the request: nothing is swapped.
    #[test]
    fn a_placeholder_elsewhere_refuses_the_request() {
        let a = cred("A", "PH-A-0123", "real-a", &["x-api-key", "authorization"]);
        for (name, value) in
            [("accept", "PH-A-0123"), ("anthropic-beta", "x,PH-A-0123"), ("openai-organization", "PH-A-0123")]
        {
            let mut h = HeaderMap::new();
            h.insert("x-api-key", HeaderValue::from_static("PH-A-0123"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
            let e = swap_headers(&mut h, "/", &[&a]).unwrap_err();
            assert!(e.to_string().contains(name) && e.to_string().contains("x-api-key"), "{e}");
            assert!(
                !h.values().any(|v| v.as_bytes().windows(6).any(|w| w == b"real-a")),
                "{name}: swapped anyway"
            );
        }
        // Basic credentials in a header the secret is not declared for: refused as well.
        let b = cred("B", "PH-B-4567", "real-b", &["x-api-key"]);
        let mut h = HeaderMap::new();
        let basic = format!("Basic {}", STANDARD.encode("u:PH-B-4567"));
        h.insert("authorization", HeaderValue::from_str(&basic).unwrap());
        assert!(swap_headers(&mut h, "/", &[&b]).is_err());
        let mut h = HeaderMap::new();
        let e = swap_headers(&mut h, "/v1?key=PH-A-0123", &[&a]).unwrap_err();
        assert!(e.to_string().contains("URL"), "{e}");
    }

    #[test]
    fn only_given_credentials_are_swapped() {
        let a = cred("A", "PH-A-0123", "real-a", &["authorization"]);
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer PH-A-0123"));
        assert!(swap_headers(&mut h, "/", &[]).unwrap().is_empty());
        assert_eq!(h["authorization"], "Bearer PH-A-0123");
        let bad = cred("BAD", "PH", "line\nbreak", &["x"]);
        let mut h = HeaderMap::new();
        h.insert("x", HeaderValue::from_static("PH"));
        assert!(swap_headers(&mut h, "/", &[&bad]).unwrap_err().to_string().contains("BAD"));
        let _ = a;
    }

    /// Random header values never panic the swap, and a value without a placeholder is untouched.
    #[test]
    fn fuzz_values() {
        let a = cred("A", "PH", "secret", &["authorization"]);
        let mut rng = agentbox_core::testing::XorShift::new(77);
        for _ in 0..20000 {
            let len = rng.below(40);
            let v: Vec<u8> = (0..len).map(|_| rng.pick(b"PH Basic=UEg6QQ abc:")).collect();
            let out = swap_value(&v, &[&a]);
            if !v.windows(2).any(|w| w == b"PH") && !v.starts_with(b"Basic") && !v.starts_with(b"basic") {
                assert!(out.is_none());
            }
        }
    }
}
