//! The egress proxy with real clients (curl, git, Python) inside real sandboxes, against servers
//! started here on the host. Provider host names are pointed at those servers through the
//! proxy's resolver override; everything else is the production path.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::agents::Agents;
use crate::support::*;

/// Hosts the test servers answer for.
const NAMES: &[&str] = &[
    "api.anthropic.com",
    "api.openai.com",
    "github.com",
    "other.test",
    "asked.test",
    "console.anthropic.com",
];
pub const REAL_KEY: &str = "sk-ant-real-0d7e1c2b9a";
pub const REAL_TOKEN: &str = "ghp_real_token_5f4e3d";

/// A test CA, a server certificate for [`NAMES`], and the servers themselves.
pub struct Upstream {
    pub dir: tempfile::TempDir,
    pub tls_port: u16,
    pub plain_port: u16,
    _servers: Vec<KillOnDrop>,
}

fn start_server(args: &[&str]) -> (KillOnDrop, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/upstream.py");
    let mut child = Command::new("python3").arg(script).args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| panic!("upstream.py printed {line:?}"));
    (KillOnDrop(child), port)
}

impl Upstream {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("abx-up-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "agentbox test upstream CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(NAMES.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        };
        write("ca.pem", ca_cert.pem());
        write("cert.pem", leaf.pem());
        write("key.pem", key.serialize_pem());

        // A bare repository for git over HTTPS.
        let repo = Repo::new();
        repo.commit("README", "fetched through the proxy\n", "first");
        let bare = dir.path().join("repo.git");
        let out =
            Command::new("git").args(["clone", "-q", "--bare"]).arg(repo.path()).arg(&bare).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));

        let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let (tls, tls_port) = start_server(&[
            "--cert",
            &p("cert.pem"),
            "--key",
            &p("key.pem"),
            "--log",
            &p("requests.jsonl"),
            "--git-root",
            &p(""),
            "--token",
            REAL_TOKEN,
        ]);
        let (plain, plain_port) = start_server(&["--plain", "--log", &p("requests.jsonl")]);
        Self { dir, tls_port, plain_port, _servers: vec![tls, plain] }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The proxy's resolver override: every test name to the TLS server, plain.test to the other.
    /// The `[network.resolve]` table that points the test names at these servers.
    pub fn resolve_table(&self) -> String {
        let mut v: Vec<String> =
            NAMES.iter().map(|n| format!("\"{n}\" = \"127.0.0.1:{}\"", self.tls_port)).collect();
        v.push(format!("\"plain.test\" = \"127.0.0.1:{}\"", self.plain_port));
        format!("\n[network.resolve]\n{}\n", v.join("\n"))
    }

    /// What the servers received, one JSON object per request.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Points `cmd` at these servers: name pins in `home`'s config.toml (added to what is
    /// there), trust in the test CA on the proxy's side, and the real secrets in the caller's
    /// environment.
    pub fn configure(&self, cmd: &mut Command, home: &Path) {
        let config = home.join("config.toml");
        let mut text = std::fs::read_to_string(&config).unwrap_or_default();
        if !text.contains("[network.resolve]") {
            text.push_str(&self.resolve_table());
            std::fs::write(&config, text).unwrap();
        }
        cmd.env("SSL_CERT_FILE", self.ca())
            .env("ANTHROPIC_API_KEY", REAL_KEY)
            .env("GITHUB_TOKEN", REAL_TOKEN)
            .env("CODEX_API_KEY", REAL_KEY);
    }
}

/// A private AGENTBOX_HOME owned by `who`.
fn home_for(who: As) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("abx-home-").tempdir().unwrap();
    if who == As::Nobody {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    dir
}

pub(crate) fn run_proxied(who: As, up: &Upstream, flags: &[&str], script: &str) -> Output {
    let ws = workspace(who);
    let home = home_for(who);
    let mut all = vec!["--mount".to_string(), format!("{}:/run/test-ca.pem:ro", up.ca().display())];
    all.extend(flags.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut cmd = run_command(who, &ws, &all, &["sh", "-c", script]);
    cmd.env("AGENTBOX_HOME", home.path());
    up.configure(&mut cmd, home.path());
    cmd.output().unwrap()
}

pub(crate) fn header_values(reqs: &[serde_json::Value], host: &str, header: &str) -> Vec<String> {
    reqs.iter()
        .filter(|r| r["host"].as_str().unwrap_or("").starts_with(host))
        .filter_map(|r| r["headers"][header].as_str().map(String::from))
        .collect()
}

/// The real key reaches the provider (curl and Python), a placeholder sent to another allowed
/// host stays a placeholder, git over HTTPS authenticates with the real token, and the sandbox
/// only ever sees placeholders.
#[test]
fn secrets_are_swapped_only_toward_their_hosts() {
    require!("python3", "curl");
    for who in modes() {
        let up = Upstream::start();
        let script = r#"
set -e
echo "key=$ANTHROPIC_API_KEY token=$GITHUB_TOKEN"
curl -sS --fail -H "x-api-key: $ANTHROPIC_API_KEY" https://api.anthropic.com/echo
curl -sS --fail --cacert /run/test-ca.pem -H "x-api-key: $ANTHROPIC_API_KEY" https://other.test/echo
python3 -c '
import os, urllib.request
req = urllib.request.Request("https://api.anthropic.com/echo?via=python", headers={"authorization": "Bearer " + os.environ["ANTHROPIC_API_KEY"]})
print("python", urllib.request.urlopen(req).read().decode().strip())
'
git clone -q "https://x-access-token:$GITHUB_TOKEN@github.com/git/repo.git" /tmp/clone
cat /tmp/clone/README
echo "private keys inside: $(grep -rl 'PRIVATE KEY' /run/agentbox /etc/ssl/certs 2>/dev/null | wc -l)"
"#;
        let out = run_proxied(
            who,
            &up,
            &["--secret", "ANTHROPIC_API_KEY", "--secret", "GITHUB_TOKEN", "--allow", "other.test"],
            script,
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "as {who:?}: {stdout}\n{}", text(&out.stderr));
        assert!(stdout.contains("python {\"ok\": true}"), "{stdout}");
        assert!(stdout.contains("fetched through the proxy"), "{stdout}");
        assert!(stdout.contains("private keys inside: 0"), "the CA's key stays outside: {stdout}");
        let placeholder = stdout.split("key=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        assert!(placeholder.starts_with("agentbox-placeholder-anthropic-api-key-"), "{placeholder}");
        for secret in [REAL_KEY, REAL_TOKEN] {
            assert!(
                !stdout.contains(secret) && !text(&out.stderr).contains(secret),
                "as {who:?}: a secret leaked"
            );
        }

        let reqs = up.requests();
        assert_eq!(header_values(&reqs, "api.anthropic.com", "x-api-key"), vec![REAL_KEY.to_string()]);
        assert_eq!(
            header_values(&reqs, "api.anthropic.com", "authorization"),
            vec![format!("Bearer {REAL_KEY}")]
        );
        assert_eq!(
            header_values(&reqs, "other.test", "x-api-key"),
            vec![placeholder],
            "never swapped elsewhere"
        );
        let basic = header_values(&reqs, "github.com", "authorization");
        let decoded: Vec<String> = basic
            .iter()
            .filter_map(|b| b.strip_prefix("Basic "))
            .map(|b| text(&base64::engine::general_purpose::STANDARD.decode(b).unwrap()))
            .collect();
        assert!(
            decoded.contains(&format!("x-access-token:{REAL_TOKEN}")),
            "as {who:?}: git sent {decoded:?}"
        );
    }
}

/// Threat model, "the key swap" row: a placeholder in any header but its secret's declared ones
/// (a provider would quote it back in an error), in the URL, or sent over plain HTTP is refused
/// and audited; the Host header of an intercepted request is the tunnel's target; an allowed
/// host is reachable on the web's ports only, unless a rule names the port.
#[test]
fn attack_the_key_swap_stays_in_its_header() {
    require!("python3", "curl");
    for who in modes() {
        let up = Upstream::start();
        let script = r#"
try() { name=$1; shift; if out=$("$@" 2>&1); then echo "$name=ok $out"; else echo "$name=refused $out"; fi; }
try good curl -sS --fail -H "x-api-key: $ANTHROPIC_API_KEY" https://api.anthropic.com/echo
try beta curl -sS --fail -H "x-api-key: $ANTHROPIC_API_KEY" -H "anthropic-beta: $ANTHROPIC_API_KEY" https://api.anthropic.com/echo
try accept curl -sS --fail -H "Accept: text/$ANTHROPIC_API_KEY" https://api.anthropic.com/echo
try url curl -sS --fail "https://api.anthropic.com/echo?key=$ANTHROPIC_API_KEY"
try plain curl -sS --fail -H "x-api-key: $ANTHROPIC_API_KEY" http://api.anthropic.com/echo
try host curl -sS --fail -H "Host: attacker.example" -H "x-api-key: $ANTHROPIC_API_KEY" https://api.anthropic.com/echo?via=host
try port curl -sS --fail --cacert /run/test-ca.pem https://other.test:8443/echo
"#;
        let out = run_proxied(who, &up, &["--secret", "ANTHROPIC_API_KEY", "--allow", "other.test"], script);
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert!(stdout.contains("good=ok"), "as {who:?}: {stdout}{stderr}");
        for name in ["beta", "accept", "url", "plain", "port"] {
            assert!(
                stdout.contains(&format!("{name}=refused")),
                "as {who:?}: {name} went through:\n{stdout}"
            );
        }
        assert!(stderr.contains("anthropic-beta header") && stderr.contains("x-api-key"), "{stderr}");
        assert!(stderr.contains("plain HTTP to api.anthropic.com"), "{stderr}");
        assert!(stderr.contains("--allow other.test:8443"), "{stderr}");
        let reqs = up.requests();
        // The real key went out once, in x-api-key, to the real host; nowhere else, in nothing else.
        let leaked: Vec<&serde_json::Value> =
            reqs.iter().filter(|r| r.to_string().contains(REAL_KEY)).collect();
        for r in &leaked {
            let headers = r["headers"].as_object().unwrap();
            for (k, v) in headers {
                if v.as_str().unwrap_or("").contains(REAL_KEY) {
                    assert_eq!(k, "x-api-key", "as {who:?}: the key went out in {k}: {r}");
                }
            }
            assert!(!r["path"].as_str().unwrap_or("").contains(REAL_KEY), "{r}");
        }
        // The Host the agent named is not what the provider saw.
        let via_host: Vec<&serde_json::Value> =
            reqs.iter().filter(|r| r["path"].as_str().unwrap_or("").contains("via=host")).collect();
        assert_eq!(via_host.len(), 1, "{reqs:?}");
        assert_eq!(via_host[0]["host"], "api.anthropic.com", "{via_host:?}");
        assert!(!reqs.iter().any(|r| r["host"].as_str().unwrap_or("").contains("attacker")), "{reqs:?}");
    }
}

/// Threat model, network row: hosts outside the allowlist, IP literals, loopback, private and
/// metadata addresses (also behind an allowed name), relaying through the proxy to itself, a
/// Host header that names another host, direct connections and DNS from inside.
#[test]
fn attack_network_policy_bypasses_are_refused() {
    require!("python3", "curl");
    for who in modes() {
        let up = Upstream::start();
        let script = format!(
            r#"
try() {{ name=$1; shift; if out=$("$@" 2>&1); then echo "$name=ok $out"; else echo "$name=refused $out"; fi; }}
try evil curl -sS --fail https://evil.test/
try plain_evil curl -sS --fail http://evil.test/
try ip curl -sS --fail -k https://1.1.1.1/
try metadata curl -sS --fail http://169.254.169.254/latest/meta-data/
try private curl -sS --fail http://10.0.0.1/
try v6 curl -sS --fail -k --noproxy '' https://[::1]:{tls}/
try localhost curl -sS --fail --noproxy '' http://localhost:{plain}/echo
try relay curl -sS --fail --noproxy '' -p -x http://127.0.0.1:3128 http://127.0.0.1:3128/
try direct curl -sS --fail --noproxy '*' --connect-timeout 3 http://1.1.1.1/
try direct_host curl -sS --fail --noproxy '*' --connect-timeout 3 http://127.0.0.1:{plain}/echo
try dns getent hosts api.anthropic.com
try hostheader curl -sS --fail -H 'Host: evil.test' http://plain.test/echo
curl -sS http://evil.test/
"#,
            tls = up.tls_port,
            plain = up.plain_port
        );
        // localhost is allowed on the port it is asked for, so that its address is what refuses it.
        let localhost = format!("localhost:{}", up.plain_port);
        let out = run_proxied(who, &up, &["--allow", "plain.test", "--allow", &localhost], &script);
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        for name in [
            "evil",
            "plain_evil",
            "ip",
            "metadata",
            "private",
            "v6",
            "localhost",
            "relay",
            "direct",
            "direct_host",
            "dns",
        ] {
            assert!(stdout.contains(&format!("{name}=refused")), "as {who:?}: {name} got through:\n{stdout}");
        }
        // Routing follows the request's target, not its Host header.
        assert!(stdout.contains("hostheader=ok"), "{stdout}");
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "only the plain.test request reached a server: {reqs:?}");
        // Refusals say why, on the caller's terminal.
        assert!(stderr.contains("evil.test is not in the allowlist"), "{stderr}");
        assert!(stderr.contains("a loopback address"), "{stderr}");
        assert!(stderr.contains("1.1.1.1 is an IP address"), "{stderr}");
        // A plain-HTTP client sees the reason in the response.
        assert!(stdout.contains("agentbox egress proxy: GET evil.test:80 refused"), "{stdout}");
    }
}

fn net_records(a: &Agents, name: &str) -> Vec<serde_json::Value> {
    a.ok(&["net", name, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn wait_for_record(
    a: &Agents,
    name: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = net_records(a, name);
        if recs.iter().any(&pred) {
            return recs;
        }
        assert!(Instant::now() < deadline, "no such record in {recs:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every attempt is audited with bytes each way; `--ask` holds a request until `agentbox allow`;
/// allowing persists with the agent; `net` prints a table.
#[test]
fn audit_ask_and_live_allow() {
    require!("python3", "curl");
    for who in modes() {
        let up = Upstream::start();
        let a = Agents::new(who);
        std::fs::write(a.home.join("config.toml"), "[network]\nask_timeout = 3\n").unwrap();
        if who == As::Nobody {
            std::os::unix::fs::chown(a.home.join("config.toml"), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let script = "curl -sS -H \"x-api-key: $ANTHROPIC_API_KEY\" https://api.anthropic.com/echo; \
            curl -sS -k https://asked.test/echo && echo FIRST-OK; \
            curl -sS -k https://asked.test/echo || echo SECOND-REFUSED; \
            echo DONE; sleep 600";
        let mut cmd =
            a.cmd(&["spawn", "net1", "--secret", "ANTHROPIC_API_KEY", "--ask", "--", "sh", "-c", script]);
        up.configure(&mut cmd, &a.home);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));

        // The first request to asked.test waits; allowing it once lets it through.
        wait_for_record(&a, "net1", |r| r["host"] == "asked.test" && r["decision"] == "pending");
        a.ok(&["allow", "net1", "asked.test", "--once"]);
        a.screen_until("net1", "FIRST-OK");
        // The grant was used up: the second one waits and is refused when nobody answers.
        a.screen_until("net1", "SECOND-REFUSED");
        a.screen_until("net1", "DONE");

        let recs = wait_for_record(&a, "net1", |r| r["event"] == "close" && r["host"] == "api.anthropic.com");
        let close = recs.iter().find(|r| r["event"] == "close" && r["host"] == "api.anthropic.com").unwrap();
        assert_eq!(close["decision"], "intercept");
        assert_eq!(close["swapped"], serde_json::json!(["ANTHROPIC_API_KEY"]));
        assert!(
            close["bytes_up"].as_u64().unwrap() > 100 && close["bytes_down"].as_u64().unwrap() > 100,
            "{close}"
        );
        // The tunnel (relayed by the kernel, `splice`) counts its bytes too.
        let recs = wait_for_record(&a, "net1", |r| r["event"] == "close" && r["host"] == "asked.test");
        let tunnel = recs.iter().find(|r| r["event"] == "close" && r["host"] == "asked.test").unwrap();
        assert!(
            tunnel["bytes_up"].as_u64().unwrap() > 100 && tunnel["bytes_down"].as_u64().unwrap() > 100,
            "as {who:?}: {tunnel}"
        );
        // Decisions only: the first connection's close record may land between the second's.
        let asked: Vec<&str> = recs
            .iter()
            .filter(|r| r["host"] == "asked.test" && r["event"] == "decision")
            .map(|r| r["decision"].as_str().unwrap())
            .collect();
        assert_eq!(asked, ["pending", "tunnel", "pending", "denied"]);
        assert_eq!(
            header_values(&up.requests(), "api.anthropic.com", "x-api-key"),
            vec![REAL_KEY.to_string()]
        );

        let table = a.ok(&["net", "net1"]);
        assert!(table.contains("intercept") && table.contains("api.anthropic.com:443"), "{table}");
        assert!(table.contains("secrets ANTHROPIC_API_KEY"), "{table}");

        // A lasting grant is kept with the agent; bad input is explained.
        a.ok(&["allow", "net1", "*.example.org"]);
        assert!(a.ok(&["info", "net1"]).contains("*.example.org"));
        // --always also goes into the config, for every agent.
        a.ok(&["allow", "net1", "always.example.org", "--always"]);
        let cfg = std::fs::read_to_string(a.home.join("config.toml")).unwrap();
        assert!(cfg.contains("always.example.org") && cfg.contains("ask_timeout = 3"), "{cfg}");
        let bad = a.run(&["allow", "net1", "*"]);
        assert!(
            !bad.status.success() && text(&bad.stderr).contains("--network full"),
            "{}",
            text(&bad.stderr)
        );
        // A lasting grant serves new connections at once; taken back, they are refused again
        // (asked, and refused when nobody answers), and a restart keeps it off.
        a.ok(&["allow", "net1", "asked.test"]);
        let curl = ["exec", "net1", "curl", "-sS", "-k", "--fail", "https://asked.test/echo"];
        let ok = a.run(&curl);
        assert!(ok.status.success(), "as {who:?}: {}", text(&ok.stderr));
        a.ok(&["deny", "net1", "asked.test"]);
        assert!(!a.run(&curl).status.success(), "as {who:?}: a denied host was reached");
        let info: serde_json::Value = serde_json::from_str(&a.ok(&["info", "net1", "--json"])).unwrap();
        let kept = &info["spec"]["egress"]["allow"];
        assert!(!kept.as_array().unwrap().iter().any(|r| r == "asked.test"), "{kept}");
        a.ok(&["allow", "net1", "always.example.org", "--remove", "--always"]);
        let cfg = std::fs::read_to_string(a.home.join("config.toml")).unwrap();
        assert!(!cfg.contains("always.example.org") && cfg.contains("ask_timeout = 3"), "{cfg}");
        // A one-shot grant not used yet is taken back too.
        a.ok(&["allow", "net1", "once.example.org", "--once"]);
        a.ok(&["deny", "net1", "once.example.org"]);
        let out = a.run(&["deny", "net1", "never.example.org"]);
        assert!(
            !out.status.success() && text(&out.stderr).contains("not on net1's allowlist"),
            "{}",
            text(&out.stderr)
        );
        a.ok(&["kill", "net1"]);
        let out = a.run(&["allow", "net1", "x.org", "--once"]);
        assert!(text(&out.stderr).contains("not running"), "{}", text(&out.stderr));
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    u64::from_ne_bytes(b)
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("python3")
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(c.stdin.as_mut().unwrap(), data)?;
            c.wait_with_output()
        })
        .unwrap();
    text(&out.stdout).trim().to_string()
}

/// The pids of `root` and every process below it.
fn tree(root: i32) -> Vec<i32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid =
                stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(parent) && !all.contains(&pid) {
                all.push(pid);
            }
        }
        i += 1;
    }
    all
}

/// Whether `needle` is anywhere in the readable memory of `pid`.
fn memory_contains(pid: i32, needle: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let Ok(mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else { return false };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.read_exact_at(&mut buf, a).is_ok() && buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// Threat model, secrets row: a canary secret given to an agent is in no environment, argument,
/// file or process memory inside the sandbox. The agent looks for it itself, and the test scans
/// the memory of every process of the sandbox from the host.
#[test]
fn attack_canary_secret_is_not_observable_inside() {
    if !is_root() {
        eprintln!("scanning another process's memory needs root; covered when the tests run as root");
        return;
    }
    for who in modes() {
        // Random, fixed shape: the agent looks for the shape and compares hashes, so the real
        // value itself is never handed to anything inside.
        let canary = format!("canary-{:016x}", rand_u64());
        let digest = sha256_hex(canary.as_bytes());
        let a = Agents::new(who);
        let finder = r#"
import hashlib, os, re, sys
digest = sys.argv[1]
shape = re.compile(rb"canary-[0-9a-f]{16}")
def has(data):
    return any(hashlib.sha256(m.group()).hexdigest() == digest for m in shape.finditer(data))
hits, scanned = [], 0
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for what in ("environ", "cmdline"):
        try:
            if has(open(f"/proc/{pid}/{what}", "rb").read()): hits.append(f"{pid}/{what}")
        except OSError: pass
    try:
        mem = open(f"/proc/{pid}/mem", "rb")
        for line in open(f"/proc/{pid}/maps"):
            a, b = (int(x, 16) for x in line.split()[0].split("-"))
            if line.split()[1][0] != "r" or "[v" in line: continue
            try:
                mem.seek(a)
                data = mem.read(b - a)
                scanned += len(data)
                if has(data): hits.append(f"{pid}/mem")
            except OSError: pass
    except OSError: pass
for root in ("/home/agent", "/tmp", "/run", "/etc", os.getcwd()):
    for d, _, files in os.walk(root):
        for f in files:
            try:
                if has(open(os.path.join(d, f), "rb").read()): hits.append(os.path.join(d, f))
            except OSError: pass
print("SCANNED", scanned > 0, "HITS", hits if hits else "none")
"#;
        let script = format!(
            "python3 -c '{}' {digest}; echo \"placeholder=$CANARY_TOKEN_X\"; sleep 600",
            finder.replace('\'', "'\"'\"'")
        );
        let mut cmd = a.cmd(&[
            "spawn",
            "canary",
            "--secret",
            "CANARY_TOKEN_X=api.anthropic.com",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        cmd.env("CANARY_TOKEN_X", &canary);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        let screen = a.screen_until("canary", "placeholder=");
        assert!(
            screen.contains("SCANNED True HITS none"),
            "as {who:?}: the agent found the secret:\n{screen}"
        );
        // The agent searched for its placeholder; now look for the real value from outside.
        assert!(!screen.contains(&canary), "{screen}");
        let info: serde_json::Value = serde_json::from_str(&a.ok(&["info", "canary", "--json"])).unwrap();
        let init = info["agent"]["sandbox_pid"].as_i64().unwrap() as i32;
        let supervisor = info["agent"]["supervisor_pid"].as_i64().unwrap() as i32;
        assert!(memory_contains(supervisor, canary.as_bytes()), "the scan finds the secret where it is");
        for pid in tree(init) {
            assert!(
                !memory_contains(pid, canary.as_bytes()),
                "as {who:?}: the secret is in the memory of sandbox pid {pid}"
            );
        }
        a.ok(&["kill", "canary"]);

        // The same for a foreground `run`, whose launcher holds the secret for its proxy.
        let ws = workspace(who);
        let home = home_for(who);
        let mut cmd = run_command(
            who,
            &ws,
            &["--secret", "CANARY_TOKEN_X=api.anthropic.com"],
            &["sh", "-c", "echo ready; exec sleep 600"],
        );
        cmd.env("AGENTBOX_HOME", home.path()).env("CANARY_TOKEN_X", &canary).stdout(Stdio::piped());
        let mut child = KillOnDrop(cmd.spawn().unwrap());
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        // With setpriv in between, the launcher is the process that exec'd agentbox.
        let launcher = child.0.id() as i32;
        assert!(memory_contains(launcher, canary.as_bytes()), "the launcher's proxy holds it");
        let sandbox: Vec<i32> = tree(launcher).into_iter().filter(|p| *p != launcher).collect();
        assert!(!sandbox.is_empty());
        for pid in sandbox {
            assert!(
                !memory_contains(pid, canary.as_bytes()),
                "as {who:?}: the secret is in sandbox pid {pid} (run)"
            );
        }
    }
}

/// The npm packages of the real clients (`tests/node`, installed by CI with `npm ci`).
fn node_modules() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/node_modules");
    assert!(dir.join("undici").is_dir(), "run `npm ci --prefix tests/node` first (CI does)");
    std::fs::canonicalize(dir).unwrap()
}

/// Node's fetch (undici, following the proxy variables) reaches the provider with the real key
/// while the script only ever held the placeholder.
#[test]
fn node_fetch_through_the_proxy() {
    require!("node", node_dir("undici"), "python3");
    let up = Upstream::start();
    let modules = node_modules();
    let script = r#"
const { fetch, EnvHttpProxyAgent, setGlobalDispatcher } = require("undici");
setGlobalDispatcher(new EnvHttpProxyAgent());
fetch("https://api.anthropic.com/echo?via=node", { headers: { "x-api-key": process.env.ANTHROPIC_API_KEY } })
  .then((r) => r.text())
  .then((t) => console.log("node", t.trim(), process.env.ANTHROPIC_API_KEY.startsWith("agentbox-placeholder-")));
"#;
    let mount = format!("{}:/run/node_modules:ro", modules.display());
    let out = run_proxied(
        As::Caller,
        &up,
        &["--secret", "ANTHROPIC_API_KEY", "--mount", &mount, "-e", "NODE_PATH=/run/node_modules"],
        &format!("node -e '{script}'"),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("node {\"ok\": true} true"), "{stdout}");
    let reqs = up.requests();
    let node: Vec<_> =
        reqs.iter().filter(|r| r["path"].as_str().unwrap_or("").contains("via=node")).collect();
    assert_eq!(node.len(), 1, "{reqs:?}");
    assert_eq!(node[0]["headers"]["x-api-key"], REAL_KEY);
}

/// A real agent CLI from the npm registry (OpenAI's Codex) works inside the sandbox through the
/// proxy with only a placeholder key: its request reaches a local server that speaks the
/// provider's API, carrying the real key.
#[test]
fn codex_cli_works_with_a_placeholder_key() {
    require!("node", node_dir("undici"), "python3");
    let up = Upstream::start();
    let modules = node_modules();
    let bin = modules.join("@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin");
    assert!(bin.join("codex").exists(), "the codex package has no linux-x64 binary at {}", bin.display());
    let mount = format!("{}:/run/codex:ro", bin.display());
    let out = run_proxied(
        As::Caller,
        &up,
        &["--secret", "CODEX_API_KEY", "--mount", &mount],
        "cd /tmp && /run/codex/codex exec --skip-git-repo-check 'say hello' 2>&1; echo \"exit=$?\"",
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("hello from the local provider"), "{stdout}\n{}", text(&out.stderr));
    assert!(!stdout.contains(REAL_KEY), "{stdout}");
    let reqs = up.requests();
    // Codex first tries a WebSocket upgrade, which the proxy does not carry for intercepted
    // hosts, and falls back to plain HTTPS requests.
    let calls: Vec<_> = reqs
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap_or("").starts_with("/v1/responses"))
        .collect();
    assert!(!calls.is_empty(), "codex never called the provider: {reqs:#?}");
    for c in calls {
        assert_eq!(c["headers"]["authorization"], format!("Bearer {REAL_KEY}"), "{c:#}");
    }
}

/// An allowed host whose name does not resolve is audited as a DNS failure, not as a refusal,
/// and the client is told so.
#[test]
fn a_dns_failure_is_audited_as_one() {
    require!("curl");
    let a = Agents::new(As::Caller);
    let script = "curl -sS https://nosuch.invalid/ 2>&1; echo; echo done";
    a.ok(&["spawn", "dns", "--allow", "nosuch.invalid", "--", "sh", "-c", script]);
    a.ok(&["wait", "dns"]);
    let net = a.ok(&["net", "dns", "--json"]);
    let recs: Vec<serde_json::Value> = net.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rec = recs.iter().find(|r| r["host"] == "nosuch.invalid").unwrap_or_else(|| panic!("{net}"));
    assert_eq!(rec["decision"], "unresolved", "{rec}");
    assert!(rec["reason"].as_str().unwrap_or("").contains("cannot resolve nosuch.invalid"), "{rec}");
    // A tunnel's client sees the status (a gateway's failure, not a refusal).
    assert!(a.ok(&["logs", "dns"]).contains("502"), "{}", a.ok(&["logs", "dns"]));
}
