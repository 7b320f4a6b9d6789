//! Subscription logins (OAuth) against a local stand-in for a provider's API and token endpoint
//! (the real ones are unreachable here): the person's login is imported and kept on the host,
//! agents get their credentials file with placeholders, the proxy swaps the access token toward
//! the API and the refresh token at the token endpoint, and a refresh's new tokens are stored on
//! the host and never reach the sandbox; a second agent refreshes with what the first got.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

use crate::agents::Agents;
use crate::egress::Upstream;
use crate::support::*;

const AGENT: &str = r#"
import json, os, urllib.request
path = os.path.expanduser("~/.test-agent/creds.json")
c = json.load(open(path))
print("FILE", json.dumps(c))
def call(tok):
    r = urllib.request.Request("https://api.anthropic.com/echo", headers={"Authorization": "Bearer " + tok})
    return urllib.request.urlopen(r).read().decode().strip()
print("API", call(c["oauth"]["accessToken"]))
body = json.dumps({"grant_type": "refresh_token", "refresh_token": c["oauth"]["refreshToken"]}).encode()
r = urllib.request.Request("https://console.anthropic.com/v1/oauth/token", data=body,
                           headers={"Content-Type": "application/json"})
ans = json.loads(urllib.request.urlopen(r).read())
print("ANSWER", json.dumps(ans))
print("API", call(ans["access_token"]))
try:
    urllib.request.urlopen(urllib.request.Request("https://console.anthropic.com/v1/oauth/token",
                           data=b"{}", headers={"X-Leak": c["oauth"]["refreshToken"]}))
    print("LEAK-ACCEPTED")
except Exception as e:
    print("REFUSED", e)
try:
    body = json.dumps({"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                       "subject_token": c["oauth"]["refreshToken"]}).encode()
    urllib.request.urlopen(urllib.request.Request("https://console.anthropic.com/v1/oauth/token", data=body))
    print("EXCHANGE-ACCEPTED")
except Exception as e:
    print("EXCHANGE-REFUSED", e)
print("DONE")
"#;

const PROFILE: &str = r#"
command = ["python3", "/run/agent.py"]
network = "proxy"
credentials = [["ANTHROPIC_API_KEY"]]

[secret_hosts]
ANTHROPIC_API_KEY = ["api.anthropic.com"]

[login]
file = "~/.test-agent/creds.json"
access = "/oauth/accessToken"
refresh = "/oauth/refreshToken"
expires = "/oauth/expiresAt"
drop = ["/mcp"]
hosts = ["api.anthropic.com"]
token_urls = ["https://console.anthropic.com/v1/oauth/token"]
"#;

fn owned(who: As, p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    if who == As::Nobody {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

#[test]
fn a_subscription_login_stays_on_the_host_through_a_refresh() {
    require!("python3");
    for who in modes() {
        let up = Upstream::start();
        let a = Agents::new(who);
        // The person's own login, where the agent's CLI keeps it.
        let person = tempfile::tempdir().unwrap();
        let cfg = person.path().join(".test-agent");
        std::fs::create_dir_all(&cfg).unwrap();
        let creds = cfg.join("creds.json");
        std::fs::write(
            &creds,
            r#"{"oauth": {"accessToken": "real-access-0", "refreshToken": "real-refresh-0", "expiresAt": 1, "plan": "max"}, "mcp": {"token": "real-mcp-secret"}}"#,
        )
        .unwrap();
        for (p, mode) in [(person.path(), 0o755), (cfg.as_path(), 0o700), (creds.as_path(), 0o600)] {
            owned(who, p, mode);
        }
        std::fs::create_dir_all(a.home.join("profiles")).unwrap();
        std::fs::write(a.home.join("profiles/oauth-test.toml"), PROFILE).unwrap();
        let script = a.home.join("agent.py");
        std::fs::write(&script, AGENT).unwrap();
        for (p, mode) in [(a.home.join("profiles"), 0o700), (a.home.join("profiles/oauth-test.toml"), 0o600)]
        {
            owned(who, &p, mode);
        }
        owned(who, &script, 0o644);

        // Before: nothing kept, and `keys` says how to import it.
        let keys = a.ok(&["keys"]);
        assert!(keys.contains("agentbox login oauth-test"), "{keys}");
        let out = a.cmd(&["login", "oauth-test"]).env("HOME", person.path()).output().unwrap();
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        let kept = a.home.join("logins/oauth-test.json");
        assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(a.ok(&["keys"]).contains("subscription login: kept here"));
        // Bad input is named: a profile without a login, a file without tokens.
        let bad = a.run(&["login", "aider"]);
        assert!(!bad.status.success() && text(&bad.stderr).contains("has no subscription login"));
        let empty = person.path().join("empty.json");
        std::fs::write(&empty, "{}").unwrap();
        owned(who, &empty, 0o644);
        let bad = a.run(&["login", "oauth-test", "--from", empty.to_str().unwrap()]);
        assert!(!bad.status.success() && text(&bad.stderr).contains("no access token at /oauth/accessToken"));

        let mount = format!("{}:/run/agent.py:ro", script.display());
        let mut requests = 0;
        for (round, name) in ["first", "second"].iter().enumerate() {
            let mut cmd = a.cmd(&["spawn", name, "-p", "oauth-test", "-v", &mount]);
            up.configure(&mut cmd, &a.home);
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
            a.ok(&["wait", name, "--timeout", "60"]);
            let log = a.ok(&["logs", name]);
            assert!(log.contains("DONE") && log.contains("REFUSED"), "as {who:?}: {log}");
            assert!(
                !log.contains("real-") && !log.contains("LEAK-ACCEPTED"),
                "as {who:?}: a token leaked: {log}"
            );
            assert!(
                log.contains("agentbox-placeholder-oauth-test-access") && log.contains(r#""plan": "max""#),
                "{log}"
            );
            assert_eq!(log.matches(r#"API {"ok": true}"#).count(), 2, "{log}");
            // The provider saw the real tokens: the one kept, then the one the refresh brought.
            let reqs = up.requests();
            let auth: Vec<String> = reqs[requests..]
                .iter()
                .filter(|r| r["path"] == "/echo")
                .map(|r| r["headers"]["authorization"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                auth,
                [format!("Bearer real-access-{round}"), format!("Bearer real-access-{}", round + 1)]
            );
            let refresh: Vec<&Value> =
                reqs[requests..].iter().filter(|r| r["path"] == "/v1/oauth/token").collect();
            assert_eq!(
                refresh.len(),
                1,
                "the request with the placeholder in a header never left: {refresh:?}"
            );
            assert!(refresh[0]["body"].as_str().unwrap().contains(&format!("real-refresh-{round}")));
            requests = reqs.len();
            // The new tokens are kept on the host, with their expiry.
            let rec: Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
            let doc = &rec["document"]["oauth"];
            assert_eq!(doc["accessToken"], format!("real-access-{}", round + 1));
            assert_eq!(doc["refreshToken"], format!("real-refresh-{}", round + 1));
            assert!(doc["expiresAt"].as_u64().unwrap() > 1_700_000_000_000, "{rec}");
        }
        // The person's own file was never touched.
        assert!(std::fs::read_to_string(&creds).unwrap().contains("real-refresh-0"));
        a.ok(&["logout", "oauth-test"]);
        assert!(!kept.exists());
        let again = a.run(&["logout", "oauth-test"]);
        assert!(!again.status.success() && text(&again.stderr).contains("no login is stored"));
    }
}
