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

    /// A token request's body with the refresh placeholder swapped for the token, if it is a
    /// refresh and nothing else: a JSON object or a form whose `grant_type` is `refresh_token`
    /// and whose `refresh_token` is the placeholder, which appears nowhere else. Any other
    /// request to the endpoint of a kept login is refused (an exchange of another token, a
    /// placeholder the agent placed where the endpoint might echo it back).
    pub(crate) fn swap_request(&self, body: &[u8], tokens: &Tokens) -> Result<Vec<u8>, String> {
        let ph = self.binding.refresh_placeholder.as_str();
        let refused = || {
            format!(
                "the token endpoint of the kept login {} takes a refresh and nothing else \
                 (grant_type=refresh_token with the refresh token the agent was given)",
                self.binding.login
            )
        };
        if count(body, ph.as_bytes()) != 1 {
            return Err(refused());
        }
        if let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_slice::<serde_json::Value>(body) {
            let is = |k: &str, v: &str| doc.get(k).and_then(|x| x.as_str()) == Some(v);
            if !(is("grant_type", "refresh_token") && is("refresh_token", ph)) {
                return Err(refused());
            }
            doc.insert("refresh_token".into(), serde_json::Value::String(tokens.refresh.to_string()));
            return serde_json::to_vec(&doc).map_err(|e| e.to_string());
        }
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let is = |k: &str, v: &str| pairs.iter().any(|(pk, pv)| pk == k && pv == v);
        let once = |k: &str| pairs.iter().filter(|(pk, _)| pk == k).count() == 1;
        if !(is("grant_type", "refresh_token")
            && once("grant_type")
            && is("refresh_token", ph)
            && once("refresh_token"))
        {
            return Err(refused());
        }
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            out.append_pair(k, if k == "refresh_token" { tokens.refresh.as_str() } else { v });
        }
        Ok(out.finish().into_bytes())
    }

    /// A token endpoint's answer as the sandbox may see it (`status` is its HTTP status).
    /// Success must be a JSON object with a new access token: the new tokens are stored and
    /// replaced by the placeholders (any real token anywhere else in it too). Anything else is
    /// refused, and a refusal by the endpoint reaches the sandbox as its status with a body of
    /// our own (an error that quoted the request would quote the real token).
    pub(crate) fn rewrite_answer(
        &self,
        status: u16,
        body: &[u8],
        before: &Tokens,
    ) -> Result<Vec<u8>, String> {
        let (access_ph, refresh_ph) = (&self.binding.access_placeholder, &self.binding.refresh_placeholder);
        let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
        if !(200..300).contains(&status) {
            let code = parsed
                .as_ref()
                .and_then(|v| v.get("error")?.as_str())
                .filter(|e| e.len() <= 40 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .unwrap_or("refused");
            let answer = serde_json::json!({
                "error": code,
                "error_description": format!("the token endpoint refused the refresh (HTTP {status}); run `agentbox login {}` again if it lasts", self.binding.login),
            });
            return serde_json::to_vec(&answer).map_err(|e| e.to_string());
        }
        let Some(serde_json::Value::Object(mut doc)) = parsed else {
            return Err("the token endpoint's answer is not a JSON object; not passed on".into());
        };
        let text = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(|s| Zeroizing::new(s.to_string()));
        let (Some(access), refresh) = (text("access_token"), text("refresh_token")) else {
            return Err("the token endpoint's answer has no access token; not passed on".into());
        };
        let expires = doc.get("expires_in").and_then(|v| v.as_u64());
        self.store.refreshed(Some(access.as_str()), refresh.as_deref().map(String::as_str), expires)?;
        doc.insert("access_token".into(), serde_json::Value::String(access_ph.clone()));
        if refresh.is_some() {
            doc.insert("refresh_token".into(), serde_json::Value::String(refresh_ph.clone()));
        }
        let mut out = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        let news = [(Some(access), access_ph), (refresh, refresh_ph)];
        let olds = [(Some(before.access.clone()), access_ph), (Some(before.refresh.clone()), refresh_ph)];
        for (real, ph) in news.iter().chain(olds.iter()) {
            if let Some(real) = real.as_ref().filter(|r| !r.is_empty()) {
                out = replace(&out, real.as_bytes(), ph.as_bytes());
            }
        }
        Ok(out)
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// `hay` with every `needle` replaced (the swap's own replace; unchanged when there is none).
fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    crate::swap::replace_all(hay, needle, with).unwrap_or_else(|| hay.to_vec())
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
        let body =
            l.swap_request(br#"{"grant_type":"refresh_token","refresh_token":"PH-R"}"#, &before).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["refresh_token"], "real-r1");
        let form =
            l.swap_request(b"grant_type=refresh_token&refresh_token=PH-R&client_id=x", &before).unwrap();
        assert_eq!(form, b"grant_type=refresh_token&refresh_token=real-r1&client_id=x");
        let answer =
            br#"{"access_token":"real-a2","refresh_token":"real-r2","expires_in":3600,"note":"was real-r1"}"#;
        let out = String::from_utf8(l.rewrite_answer(200, answer, &before).unwrap()).unwrap();
        assert!(!out.contains("real-"), "{out}");
        assert!(
            out.contains(r#""access_token":"PH-A""#) && out.contains(r#""refresh_token":"PH-R""#),
            "{out}"
        );
        assert_eq!(
            mem.0.lock().unwrap().as_slice(),
            [(Some("real-a2".to_string()), Some("real-r2".to_string()), Some(3600))]
        );
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

    /// Only a refresh goes out, and only what a refresh answers comes back.
    #[test]
    fn anything_but_a_refresh_is_refused_and_errors_quote_nothing() {
        let mem = Arc::new(Mem::default());
        let l = login(mem.clone());
        let t = l.store.current().unwrap();
        for bad in [
            &br#"{"grant_type":"refresh_token","refresh_token":"x","note":"PH-R"}"#[..],
            br#"{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","subject_token":"PH-R"}"#,
            br#"{"grant_type":"refresh_token","refresh_token":"PH-R","again":"PH-R"}"#,
            b"grant_type=refresh_token&refresh_token=PH-R&refresh_token=x",
            b"grant_type=refresh_token&grant_type=token-exchange&refresh_token=PH-R",
            b"grant_type=authorization_code&code=1",
            b"PH-R",
        ] {
            assert!(l.swap_request(bad, &t).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // A refusal that quotes the request reaches the sandbox as our own words.
        let out = l
            .rewrite_answer(400, br#"{"error":"invalid_grant","error_description":"real-r1 is bad"}"#, &t)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "invalid_grant");
        assert!(!String::from_utf8_lossy(&out).contains("real-"));
        // Success that is not a JSON object with an access token is not passed on, nor stored.
        assert!(l.rewrite_answer(200, b"access_token=real-a2&refresh_token=real-r2", &t).is_err());
        assert!(l.rewrite_answer(200, br#"{"data":{"access_token":"real-a2"}}"#, &t).is_err());
        assert!(mem.0.lock().unwrap().is_empty());
    }
}
