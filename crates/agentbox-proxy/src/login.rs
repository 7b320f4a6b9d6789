//! Subscription logins (OAuth) without tokens in the sandbox.
//!
//! The sandbox holds two placeholders. The access token is swapped into the `Authorization`
//! header toward the login's API hosts, like a key. The refresh token is swapped into the body of
//! a POST to one of the login's token endpoints, and only there; the endpoint's answer carries
//! new tokens, which are handed to the [`TokenStore`] (kept on the host) and replaced by the same
//! placeholders before the answer reaches the sandbox. The placeholders never change, so a
//! refresh made by one agent serves every agent of the login: the store is read at each use.

use std::sync::Arc;

use agentbox_core::{Host, LoginBinding};
use zeroize::Zeroizing;

use crate::swap::Credential;

/// The largest token request or answer read whole (they are a few hundred bytes).
pub(crate) const MAX_TOKEN_BODY: usize = 1 << 20;

/// A login's tokens as they are now.
pub struct Tokens {
    pub access: Zeroizing<String>,
    pub refresh: Zeroizing<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens")
    }
}

/// Where a login's tokens live (on the host, outside the sandbox).
pub trait TokenStore: Send + Sync {
    /// The tokens now: another agent of the same login may have refreshed them.
    fn current(&self) -> Result<Tokens, String>;
    /// A token endpoint answered with new tokens (`expires_in` in seconds).
    fn refreshed(
        &self,
        access: Option<&str>,
        refresh: Option<&str>,
        expires_in: Option<u64>,
    ) -> Result<(), String>;
}

/// A login as the proxy holds it.
#[derive(Clone)]
pub struct Login {
    pub binding: LoginBinding,
    pub store: Arc<dyn TokenStore>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("login", &self.binding.login).finish_non_exhaustive()
    }
}

impl Login {
    pub(crate) fn api_host(&self, host: &Host) -> bool {
        self.binding.hosts.iter().any(|r| r.matches_host(host))
    }

    pub(crate) fn token_host(&self, host: &Host) -> bool {
        self.binding.token_endpoints.iter().any(|(r, _)| r.matches_host(host))
    }

    /// Whether a request is a refresh: a POST to one of the token endpoints (query ignored).
    pub(crate) fn is_token_request(&self, host: &Host, method: &hyper::Method, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        method == hyper::Method::POST
            && self.binding.token_endpoints.iter().any(|(r, p)| r.matches_host(host) && p == path)
    }

    /// The access token as a credential toward the API hosts, in `Authorization` only.
    pub(crate) fn access_credential(&self, tokens: &Tokens) -> Credential {
        Credential {
            env: format!("login {}", self.binding.login),
            placeholder: self.binding.access_placeholder.clone(),
            value: tokens.access.clone(),
            hosts: self.binding.hosts.clone(),
            headers: vec!["authorization".into()],
        }
    }

    /// The refresh placeholder as a credential sent in no header: found in a header or the URL,
    /// the request is refused (it travels in a token request's body only).
    pub(crate) fn refresh_guard(&self) -> Credential {
        Credential {
            env: format!("login {} (refresh token)", self.binding.login),
            placeholder: self.binding.refresh_placeholder.clone(),
            value: Zeroizing::new(String::new()),
            hosts: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// A token request's body with the refresh placeholder swapped for the token.
    pub(crate) fn swap_request(&self, body: &[u8], tokens: &Tokens) -> Vec<u8> {
        replace(body, self.binding.refresh_placeholder.as_bytes(), tokens.refresh.as_bytes())
    }

    /// A token endpoint's answer as the sandbox may see it: new tokens stored and replaced by
    /// the placeholders; any real token that appears anywhere else replaced too. An answer
    /// with new tokens that cannot be stored is an error (the sandbox gets neither).
    pub(crate) fn rewrite_answer(&self, body: &[u8], before: &Tokens) -> Result<Vec<u8>, String> {
        let (access_ph, refresh_ph) = (&self.binding.access_placeholder, &self.binding.refresh_placeholder);
        let mut out = body.to_vec();
        let mut news: Vec<(Zeroizing<String>, &String)> = Vec::new();
        if let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_slice::<serde_json::Value>(body) {
            let text = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(|s| Zeroizing::new(s.to_string()));
            let (access, refresh) = (text("access_token"), text("refresh_token"));
            if access.is_some() || refresh.is_some() {
                let expires = doc.get("expires_in").and_then(|v| v.as_u64());
                self.store.refreshed(
                    access.as_deref().map(String::as_str),
                    refresh.as_deref().map(String::as_str),
                    expires,
                )?;
                if access.is_some() {
                    doc.insert("access_token".into(), serde_json::Value::String(access_ph.clone()));
                }
                if refresh.is_some() {
                    doc.insert("refresh_token".into(), serde_json::Value::String(refresh_ph.clone()));
                }
                out = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
                news.extend(access.map(|a| (a, access_ph)));
                news.extend(refresh.map(|r| (r, refresh_ph)));
            }
        }
        news.push((before.access.clone(), access_ph));
        news.push((before.refresh.clone(), refresh_ph));
        for (real, ph) in &news {
            if !real.is_empty() {
                out = replace(&out, real.as_bytes(), ph.as_bytes());
            }
        }
        Ok(out)
    }
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// What a refresh handed over: access, refresh, expires_in.
    type Refresh = (Option<String>, Option<String>, Option<u64>);

    #[derive(Default)]
    struct Mem(Mutex<Vec<Refresh>>);

    impl TokenStore for Mem {
        fn current(&self) -> Result<Tokens, String> {
            Ok(Tokens { access: Zeroizing::new("real-a1".into()), refresh: Zeroizing::new("real-r1".into()) })
        }
        fn refreshed(&self, a: Option<&str>, r: Option<&str>, e: Option<u64>) -> Result<(), String> {
            self.0.lock().unwrap().push((a.map(Into::into), r.map(Into::into), e));
            Ok(())
        }
    }

    fn login(store: Arc<dyn TokenStore>) -> Login {
        Login {
            binding: LoginBinding {
                login: "claude-code".into(),
                hosts: vec!["api.example.com".parse().unwrap()],
                access_placeholder: "PH-A".into(),
                refresh_placeholder: "PH-R".into(),
                token_endpoints: vec![("auth.example.com".parse().unwrap(), "/oauth/token".into())],
            },
            store,
        }
    }

    #[test]
    fn a_refresh_answer_is_stored_and_the_sandbox_sees_placeholders() {
        let mem = Arc::new(Mem::default());
        let l = login(mem.clone());
        let before = l.store.current().unwrap();
        let body = l.swap_request(br#"{"grant_type":"refresh_token","refresh_token":"PH-R"}"#, &before);
        assert_eq!(body, br#"{"grant_type":"refresh_token","refresh_token":"real-r1"}"#);
        let answer =
            br#"{"access_token":"real-a2","refresh_token":"real-r2","expires_in":3600,"note":"was real-r1"}"#;
        let out = String::from_utf8(l.rewrite_answer(answer, &before).unwrap()).unwrap();
        assert!(!out.contains("real-"), "{out}");
        assert!(
            out.contains(r#""access_token":"PH-A""#) && out.contains(r#""refresh_token":"PH-R""#),
            "{out}"
        );
        assert_eq!(
            mem.0.lock().unwrap().as_slice(),
            [(Some("real-a2".to_string()), Some("real-r2".to_string()), Some(3600))]
        );
        // An error answer that quotes a token (not JSON with tokens) reaches the sandbox without it.
        let out = l.rewrite_answer(b"invalid_grant for real-r1", &before).unwrap();
        assert_eq!(out, b"invalid_grant for PH-R");
        assert!(l.is_token_request(
            &Host::parse("auth.example.com").unwrap(),
            &hyper::Method::POST,
            "/oauth/token?x=1"
        ));
        assert!(!l.is_token_request(
            &Host::parse("auth.example.com").unwrap(),
            &hyper::Method::GET,
            "/oauth/token"
        ));
        assert!(!l.is_token_request(
            &Host::parse("api.example.com").unwrap(),
            &hyper::Method::POST,
            "/oauth/token"
        ));
    }
}
