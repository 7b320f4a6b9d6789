//! Copy-on-write workspaces: `spawn --from-dir` as an overlay, `diff` from its upper layer,
//! `apply` (and `--undo`) back into the person's directory, checkpoints, rollback and fork.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::agents::Agents;
use crate::server::Server;
use crate::support::*;

/// A project directory owned by the sandbox's host id (so it can be overlaid), reachable by it.
fn project(who: As) -> tempfile::TempDir {
    let p = tempfile::tempdir().unwrap();
    std::fs::write(p.path().join("a.txt"), "one\n").unwrap();
    std::fs::write(p.path().join("del.txt"), "gone\n").unwrap();
    std::fs::write(p.path().join("old.txt"), "moved\n").unwrap();
    std::fs::create_dir(p.path().join("src")).unwrap();
    std::fs::write(p.path().join("src/k.rs"), "fn main() {}\n").unwrap();
    give(p.path(), agent_host_id(who));
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn give(dir: &Path, id: u32) {
    std::os::unix::fs::lchown(dir, Some(id), Some(id)).unwrap();
    if std::fs::symlink_metadata(dir).unwrap().is_dir() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            give(&e.path(), id);
        }
    }
}

/// Every entry below `dir` with its content (files), target (links) or `/` (directories).
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        let rel = p.strip_prefix(dir).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.push(format!("{rel}/"));
            out.extend(listing(&p).into_iter().map(|s| format!("{rel}/{s}")));
        } else if m.file_type().is_symlink() {
            out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
        } else if m.is_file() {
            out.push(format!("{rel}: {}", std::fs::read_to_string(&p).unwrap_or_default().trim_end()));
        } else {
            out.push(format!("{rel} (special)"));
        }
    }
    out
}

const EDITS: &str = "echo two > a.txt; rm del.txt; mv old.txt new.txt; mkdir -p d; echo x > d/f; \
                     ln -s /etc/shadow lnk; echo edited; sleep 1000";

#[test]
fn from_dir_is_an_overlay_the_directory_never_sees() {
    for who in modes() {
        let a = Agents::new(who);
        let p = project(who);
        let before = listing(p.path());
        let out = a
            .cmd(&["spawn", "w", "--from-dir", p.path().to_str().unwrap(), "--", "sh", "-c", EDITS])
            .output()
            .unwrap();
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("is a copy"), "as {who:?}: {}", text(&out.stderr));
        a.screen_until("w", "edited");
        // The person's directory is as it was; the agent's writes are its upper layer alone
        // (nothing of the tree was copied: src/ is not there).
        assert_eq!(listing(p.path()), before, "as {who:?}");
        let upper = a.dir("w").join("layers/upper");
        assert!(upper.join("a.txt").exists() && !upper.join("src").exists(), "as {who:?}");
        assert_eq!(a.ok(&["exec", "w", "cat", "a.txt", "src/k.rs"]), "two\nfn main() {}\n");
        let diff = a.ok(&["diff", "w", "--no-git"]);
        assert_eq!(
            diff.lines().collect::<Vec<_>>(),
            ["M a.txt", "A d", "A d/f", "D del.txt", "A lnk", "R old.txt -> new.txt"],
            "as {who:?}"
        );
        let json: serde_json::Value = serde_json::from_str(&a.ok(&["diff", "w", "--json"])).unwrap();
        assert!(
            json.as_array().unwrap().iter().any(|c| c["change"] == "R" && c["from"] == "old.txt"),
            "{json}"
        );
        // Removing the agent removes its layers (the scratch directory overlayfs left unreadable
        // included); the person's directory stays.
        a.ok(&["rm", "-f", "w"]);
        assert!(!a.dir("w").exists(), "as {who:?}");
        assert_eq!(listing(p.path()), before, "as {who:?}");
    }
    // Root's own directory: the sandbox (another host id) could not change its files through an
    // overlay; the workspace is a copy, and spawn says why.
    if is_root() {
        let a = Agents::new(As::Caller);
        let p = project(As::Caller);
        give(p.path(), 0);
        let out = a
            .cmd(&["spawn", "c", "--from-dir", p.path().to_str().unwrap(), "--", "sh", "-c", EDITS])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("the workspace is a copy of"), "{}", text(&out.stderr));
        a.screen_until("c", "edited");
        assert!(!a.dir("c").join("layers").exists());
        assert_eq!(std::fs::read_to_string(a.dir("c").join("workspace/a.txt")).unwrap(), "two\n");
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "one\n");
        let diff = a.ok(&["diff", "c", "--no-git"]);
        assert!(diff.contains("R old.txt -> new.txt") && diff.contains("D del.txt"), "{diff}");
        // A directory removed in a copy is one step (its files go with it), applied whole.
        a.ok(&["exec", "c", "rm", "-r", "src"]);
        let out = a.run(&["apply", "c"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!p.path().join("src").exists());
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "two\n");
    }
}

/// `diff`'s git status of an overlay workspace runs in a sandbox that mounts the same overlay.
#[test]
fn git_status_sees_the_overlay() {
    require!("git");
    for who in modes() {
        let a = Agents::new(who);
        let p = project(who);
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "safe.directory=*"])
                .args(args)
                .current_dir(p.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        };
        git(&["init", "-q"]);
        git(&["add", "."]);
        git(&["commit", "-qm", "init"]);
        give(p.path(), agent_host_id(who));
        a.ok(&["spawn", "g", "--from-dir", p.path().to_str().unwrap(), "--", "sh", "-c", EDITS]);
        a.screen_until("g", "edited");
        let out = a.ok(&["diff", "g"]);
        assert!(
            out.contains("git status (run in a sandbox)") && out.contains(" M a.txt"),
            "as {who:?}: {out}"
        );
        assert!(out.contains(" D del.txt"), "as {who:?}: {out}");
        // The agent plants an fsmonitor in the repository's config: apply brings its work over,
        // never its .git (the person's next git command would run it).
        let plant = "printf '[core]\\n\\tfsmonitor = touch /tmp/planted\\n' >> .git/config";
        a.ok(&["exec", "g", "sh", "-c", plant]);
        let config = std::fs::read_to_string(p.path().join(".git/config")).unwrap();
        let out = a.run(&["apply", "g", "--force"]);
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("never applied"), "as {who:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(p.path().join(".git/config")).unwrap(), config, "as {who:?}");
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "two\n", "as {who:?}");
    }
}

#[test]
fn apply_writes_back_refuses_what_the_person_changed_and_undoes() {
    for who in modes() {
        let a = Agents::new(who);
        let p = project(who);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("target"), "host file\n").unwrap();
        // The person's own links, to files outside the project.
        std::os::unix::fs::symlink(outside.path().join("target"), p.path().join("cfg")).unwrap();
        std::os::unix::fs::symlink(outside.path(), p.path().join("linked")).unwrap();
        give(p.path(), agent_host_id(who));
        // The agent replaces both links (a file where one was, a directory where the other
        // was), plants a FIFO and a link of its own, and makes ordinary changes.
        let script = "echo two > a.txt; echo new > b.txt; rm del.txt; rm cfg; echo agent > cfg; rm -r src; \
                      rm linked; mkdir linked; echo agent > linked/target; mkfifo pipe; \
                      ln -s /etc/shadow evil; mkdir -p deep/er; echo x > deep/er/f; echo edited; sleep 1000";
        a.ok(&["spawn", "w", "--from-dir", p.path().to_str().unwrap(), "--", "sh", "-c", script]);
        a.screen_until("w", "edited");
        let before = listing(p.path());
        // A dry run writes nothing.
        let out = a.run(&["apply", "w", "--dry-run"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("M a.txt") && text(&out.stderr).contains("would be written"));
        assert_eq!(listing(p.path()), before);
        // The person edits a.txt, and a file inside the directory the agent removed, meanwhile:
        // refused, naming both, and nothing is written.
        std::fs::write(p.path().join("a.txt"), "mine\n").unwrap();
        std::fs::write(p.path().join("src/k.rs"), "fn mine() {}\n").unwrap();
        let out = a.run(&["apply", "w"]);
        assert!(!out.status.success(), "as {who:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("a.txt") && err.contains("src") && err.contains("--force") && !err.contains("b.txt"),
            "{err}"
        );
        assert!(!p.path().join("b.txt").exists(), "as {who:?}: a refused apply wrote");
        // Only some paths.
        a.ok(&["apply", "w", "b.txt"]);
        assert_eq!(std::fs::read_to_string(p.path().join("b.txt")).unwrap(), "new\n");
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "mine\n");
        // Forced: everything, and nothing through a link.
        let out = a.run(&["apply", "w", "--force"]);
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("pipe") && text(&out.stderr).contains("FIFO"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "two\n");
        assert!(!p.path().join("del.txt").exists() && !p.path().join("pipe").exists());
        assert_eq!(std::fs::read_link(p.path().join("evil")).unwrap(), Path::new("/etc/shadow"));
        assert_eq!(std::fs::read_to_string(p.path().join("deep/er/f")).unwrap(), "x\n");
        assert!(std::fs::symlink_metadata(p.path().join("cfg")).unwrap().is_file());
        assert!(std::fs::symlink_metadata(p.path().join("linked")).unwrap().is_dir());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("target")).unwrap(),
            "host file\n",
            "as {who:?}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1, "as {who:?}");
        let modes = listing(p.path()).len();
        assert!(modes > 0);
        for e in walk(p.path()) {
            let m = std::fs::symlink_metadata(&e).unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::mode(&m) & 0o6000, 0, "{}", e.display());
        }
        // Undo puts back what the forced apply overwrote, then the one before it.
        a.ok(&["apply", "--undo", "w"]);
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "mine\n");
        assert_eq!(std::fs::read_to_string(p.path().join("del.txt")).unwrap(), "gone\n");
        assert_eq!(std::fs::read_to_string(p.path().join("src/k.rs")).unwrap(), "fn mine() {}\n");
        assert_eq!(std::fs::read_link(p.path().join("cfg")).unwrap(), outside.path().join("target"));
        assert_eq!(std::fs::read_link(p.path().join("linked")).unwrap(), outside.path());
        assert!(!p.path().join("evil").exists() && !p.path().join("deep").exists());
        assert!(p.path().join("b.txt").exists());
        a.ok(&["apply", "--undo", "w"]);
        assert!(!p.path().join("b.txt").exists());
        let out = a.run(&["apply", "--undo", "w"]);
        assert!(text(&out.stderr).contains("no apply to undo"), "{}", text(&out.stderr));
        // Into another directory: a path there with other content is a conflict.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("b.txt"), "theirs\n").unwrap();
        give(other.path(), agent_host_id(who));
        std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let to = other.path().to_str().unwrap();
        let out = a.run(&["apply", "w", "--to", to]);
        assert!(text(&out.stderr).contains("b.txt"), "{}", text(&out.stderr));
        a.ok(&["apply", "w", "--to", to, "--force", "a.txt", "b.txt"]);
        assert_eq!(std::fs::read_to_string(other.path().join("b.txt")).unwrap(), "new\n");
        // Bad input is named.
        for (args, says) in [
            (&["apply", "w", "../x"][..], "without '..'"),
            (&["apply", "w", "--to", "/nonexistent"][..], "not a directory"),
            (&["apply", "nope"][..], "no agent named"),
        ] {
            let out = a.run(args);
            assert!(
                !out.status.success() && text(&out.stderr).contains(says),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn checkpoints_roll_back_and_fork() {
    for who in modes() {
        let a = Agents::new(who);
        let p = project(who);
        let script = "echo v1 > state; echo started; sleep 1000";
        a.ok(&["spawn", "w", "--from-dir", p.path().to_str().unwrap(), "--", "sh", "-c", script]);
        a.screen_until("w", "started");
        assert_eq!(a.ok(&["checkpoint", "w", "-m", "first"]), "1\n");
        a.ok(&["exec", "w", "sh", "-c", "echo v2 > state; echo more > extra"]);
        assert_eq!(a.ok(&["checkpoint", "w"]), "2\n");
        // Nothing changed since: the third writes no data, all its files shared with the second.
        assert_eq!(a.ok(&["checkpoint", "w", "-m", "same"]), "3\n");
        let list: serde_json::Value = serde_json::from_str(&a.ok(&["checkpoints", "w", "--json"])).unwrap();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["message"], "first");
        assert_eq!(list[2]["bytes"], 0, "{list:?}");
        assert!(list[2]["shared"].as_u64().unwrap() >= 2, "{list:?}");
        let info = a.ok(&["info", "w"]);
        assert!(info.contains("checkpoints: 3 (last: 3,") && info.contains(", same)"), "{info}");
        // Rollback: the agent restarts on the first state (its command writes v1 again; extra is
        // gone).
        a.ok(&["exec", "w", "sh", "-c", "echo v3 > state"]);
        a.ok(&["rollback", "w", "1"]);
        a.screen_until("w", "started");
        assert_eq!(a.state("w"), "running");
        assert_eq!(
            a.ok(&["exec", "w", "sh", "-c", "cat state; ls"]),
            "v1\na.txt\ndel.txt\nold.txt\nsrc\nstate\n"
        );
        // Fork at a checkpoint runs; a fork --stopped waits.
        assert_eq!(a.ok(&["fork", "w", "w2", "--at", "2"]), "w2\n");
        assert_eq!(a.state("w2"), "running");
        assert_eq!(a.ok(&["exec", "w2", "cat", "extra"]), "more\n");
        a.ok(&["fork", "w", "w3", "--stopped"]);
        assert_eq!(a.state("w3"), "created");
        // Checkpoints taken at one instant get one id each.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (b, mut cmd) = (barrier.clone(), a.cmd(&["checkpoint", "w"]));
                std::thread::spawn(move || {
                    b.wait();
                    cmd.output().unwrap()
                })
            })
            .collect();
        let mut ids: Vec<u32> = handles
            .into_iter()
            .map(|h| {
                let out = h.join().unwrap();
                assert!(out.status.success(), "{}", text(&out.stderr));
                text(&out.stdout).trim().parse().unwrap()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, (4..=9).collect::<Vec<_>>(), "as {who:?}");
        a.ok(&["checkpoint", "rm", "w", "1", "4"]);
        let left: Vec<String> = a
            .ok(&["checkpoints", "w"])
            .lines()
            .skip(1)
            .map(|l| l.split(' ').next().unwrap().into())
            .collect();
        assert_eq!(left, ["2", "3", "5", "6", "7", "8", "9"]);
        // Bad input is named.
        for (args, says) in [
            (&["rollback", "w", "1"][..], "no checkpoint 1"),
            (&["rollback", "w", "abc"][..], "not a checkpoint id"),
            (&["checkpoint", "nope"][..], "no agent named"),
            (&["fork", "w", "w2"][..], "already exists"),
            (&["fork", "w", "Bad_Name"][..], "invalid"),
            (&["fork", "w", "w4", "--at", "77"][..], "no checkpoint 77"),
        ] {
            let out = a.run(args);
            assert!(
                !out.status.success() && text(&out.stderr).contains(says),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
        assert!(!a.dir("w4").exists());
        // An agent's checkpoints go with it.
        a.ok(&["rm", "-f", "w", "w2", "w3"]);
        assert!(!a.dir("w").exists());
    }
}

#[test]
fn workspaces_through_a_server() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    let p = project(As::Caller);
    a.ok(&["spawn", "far", "--from-dir", p.path().to_str().unwrap(), "--", "sh", "-c", EDITS]);
    a.screen_until("far", "edited");
    let client = Agents::new(As::Caller);
    let out = srv.remote(&client, &["checkpoint", "far", "-m", "remote"]);
    assert_eq!(text(&out.stdout), "1\n", "{}", text(&out.stderr));
    let list = srv.ok("GET", "/api/v1/agents/far/checkpoints", None);
    assert_eq!(list[0]["message"], "remote");
    let changes = srv.ok("GET", "/api/v1/agents/far/changes", None);
    assert!(
        changes.as_array().unwrap().iter().any(|c| c["change"] == "M" && c["path"] == "a.txt"),
        "{changes}"
    );
    let dry = srv.ok("POST", "/api/v1/agents/far/apply", Some(r#"{"dry_run":true}"#));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "one\n");
    let out = srv.remote(&client, &["apply", "far", "a.txt"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "two\n");
    srv.ok("POST", "/api/v1/agents/far/apply/undo", Some("{}"));
    assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "one\n");
    let out = srv.remote(&client, &["fork", "far", "near", "--at", "1", "--stopped"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(srv.ok("GET", "/api/v1/agents/near", None)["state"], "created");
    let rolled = srv.ok("POST", "/api/v1/agents/far/checkpoints/1/rollback", None);
    assert_eq!(rolled["state"], "running");
    let (status, _) = srv.call("DELETE", "/api/v1/agents/far/checkpoints/1", None);
    assert_eq!(status, 204);
    for (method, path, body, want) in [
        ("DELETE", "/api/v1/agents/far/checkpoints/1", None, 404),
        ("POST", "/api/v1/agents/far/checkpoints/x/rollback", None, 400),
        ("POST", "/api/v1/agents/nope/checkpoints", Some("{}"), 404),
        ("POST", "/api/v1/agents/far/fork", Some(r#"{"name":"Bad"}"#), 400),
        ("POST", "/api/v1/agents/far/apply", Some(r#"{"paths":["../x"]}"#), 400),
        ("POST", "/api/v1/agents/far/apply", Some(r#"{"bogus":1}"#), 400),
        ("GET", "/api/v1/agents/far/patch", None, 400),
        ("POST", "/api/v1/agents/far/branch", Some(r#"{"branch":"x"}"#), 400),
        ("POST", "/api/v1/agents/far/branch", Some(r#"{"bogus":1}"#), 400),
        ("GET", "/api/v1/agents/nope/patch", None, 404),
    ] {
        let (status, body) = srv.call(method, path, body);
        assert_eq!(status, want, "{method} {path}: {body}");
    }
}

/// `git` on the person's side, in `dir` (their own repository: a trusted one).
fn person_git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=p", "-c", "user.email=p@p"])
        .args(args)
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// What the agent does in a clone: a commit of its own, then uncommitted work (an edit, a new
/// file, a deletion, binary content); and it plants an fsmonitor in its repository's config,
/// which would run on the host if host git touched its repository.
const GIT_WORK: &str = "git config user.email a@a; git config user.name A; echo two > a.txt; \
    git commit -qam 'agent edit'; echo new > n.txt; rm del.txt; head -c 3000 /dev/urandom > blob.bin; \
    printf '[core]\\n\\tfsmonitor = touch MARKER\\n' >> .git/config; echo worked; sleep 1000";

/// A `--from-git` agent's work comes back as git: `apply --patch` (a patch `git apply` takes,
/// binary files too) and `apply --branch` (one commit on a new branch of the repository it was
/// cloned from, on the commit it was cloned at; the person's checkout untouched). The agent's
/// repository never runs host code; a taken branch name is refused unless --force.
#[test]
fn from_git_work_comes_back_as_a_patch_or_a_branch() {
    require!("git");
    for who in modes() {
        let a = Agents::new(who);
        let p = project(who);
        person_git(p.path(), &["init", "-q", "-b", "main"]);
        person_git(p.path(), &["add", "."]);
        person_git(p.path(), &["commit", "-qm", "init"]);
        // The person's own repository: theirs, whoever runs agentbox.
        give(p.path(), if who == As::Nobody { NOBODY } else { nix::unistd::geteuid().as_raw() });
        let base = person_git(p.path(), &["rev-parse", "HEAD"]).trim().to_string();
        let marker = p.path().join("fsmonitor-ran");
        let work = GIT_WORK.replace("MARKER", marker.to_str().unwrap());
        a.ok(&["spawn", "g", "--from-git", p.path().to_str().unwrap(), "--", "sh", "-c", &work]);
        a.screen_until("g", "worked");

        // The patch: applied to a fresh clone at the base, it gives the agent's files.
        let patch = a.run(&["apply", "g", "--patch"]);
        assert!(patch.status.success(), "as {who:?}: {}", text(&patch.stderr));
        let patch_text = String::from_utf8_lossy(&patch.stdout).to_string();
        assert!(patch_text.contains("GIT binary patch") && patch_text.contains("+new"), "{patch_text}");
        // (A copy of the repository, the test's own: git refuses to clone one owned by another.)
        let check = tempfile::tempdir().unwrap();
        let clone = check.path().join("c");
        let cp = std::process::Command::new("cp").arg("-r").arg(p.path()).arg(&clone).status().unwrap();
        assert!(cp.success());
        person_git(&clone, &["reset", "-q", "--hard", &base]);
        std::fs::write(check.path().join("p.diff"), &patch.stdout).unwrap();
        person_git(&clone, &["apply", "--binary", check.path().join("p.diff").to_str().unwrap()]);
        let agent_ws = a.dir("g").join("workspace");
        for f in ["a.txt", "n.txt", "blob.bin"] {
            assert_eq!(
                std::fs::read(clone.join(f)).unwrap(),
                std::fs::read(agent_ws.join(f)).unwrap(),
                "{f}"
            );
        }
        assert!(!clone.join("del.txt").exists());

        // The branch: in the person's repository, their checkout as it was.
        let before = person_git(p.path(), &["status", "--porcelain"]);
        let out = a.run(&["apply", "g", "--branch", "agent/work"]);
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        let commit = text(&out.stdout).trim().to_string();
        assert_eq!(person_git(p.path(), &["rev-parse", "agent/work"]).trim(), commit);
        assert_eq!(person_git(p.path(), &["rev-parse", "agent/work^"]).trim(), base);
        let files = person_git(p.path(), &["ls-tree", "-r", "--name-only", "agent/work"]);
        assert!(
            files.contains("n.txt") && files.contains("blob.bin") && !files.contains("del.txt"),
            "{files}"
        );
        assert_eq!(person_git(p.path(), &["show", "agent/work:a.txt"]), "two\n");
        assert!(person_git(p.path(), &["log", "-1", "--format=%B", "agent/work"]).contains("agent edit"));
        assert_eq!(person_git(p.path(), &["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main");
        assert_eq!(person_git(p.path(), &["status", "--porcelain"]), before);
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "one\n");
        assert!(!marker.exists(), "as {who:?}: the agent's fsmonitor ran on the host");

        // A branch name taken, or not one git accepts; --force replaces.
        let again = a.run(&["apply", "g", "--branch", "agent/work"]);
        assert!(!again.status.success() && text(&again.stderr).contains("exists"), "{}", text(&again.stderr));
        let bad = a.run(&["apply", "g", "--branch", "no..pe"]);
        assert!(
            !bad.status.success() && text(&bad.stderr).contains("not a branch name"),
            "{}",
            text(&bad.stderr)
        );
        a.ok(&["apply", "g", "--branch", "agent/work", "--force"]);
        // An agent not cloned from git has no commit to compare with.
        a.ok(&["spawn", "plain", "--", "true"]);
        let not_git = a.run(&["apply", "plain", "--patch"]);
        assert!(
            !not_git.status.success() && text(&not_git.stderr).contains("--from-git"),
            "{}",
            text(&not_git.stderr)
        );
    }
}

/// A person in their project (a git work tree) who spawns an agent with a profile and names no
/// workspace gets a copy-on-write view of it, said on stderr; `--empty` and plain commands keep
/// a fresh directory; their directory is never written.
#[test]
fn a_profile_spawned_in_a_project_works_on_a_view_of_it() {
    for who in modes() {
        let a = Agents::new(who);
        let p = project(who);
        std::fs::create_dir(p.path().join(".git")).unwrap();
        give(p.path(), agent_host_id(who));
        let profiles = a.home.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(
            profiles.join("lister.toml"),
            "command = [\"sh\", \"-c\", \"ls; echo changed > a.txt; echo listed\"]\nnetwork = \"none\"\n",
        )
        .unwrap();
        if who == As::Nobody {
            give(&a.home.join("profiles"), NOBODY);
        }
        let spawn = |name: &str, extra: &[&str]| {
            let mut args = vec!["spawn", name, "-p", "lister"];
            args.extend_from_slice(extra);
            let out = a.cmd(&args).current_dir(p.path()).output().unwrap();
            assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
            a.ok(&["wait", name]);
            (text(&out.stderr), a.ok(&["logs", name]))
        };
        let (said, logs) = spawn("here", &[]);
        assert!(said.contains("copy-on-write view of") && said.contains("--empty"), "as {who:?}: {said}");
        assert!(
            logs.contains("a.txt") && logs.contains("src") && logs.contains("listed"),
            "as {who:?}: {logs}"
        );
        assert!(a.ok(&["diff", "here"]).contains("a.txt"), "as {who:?}");
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt")).unwrap(), "one\n");
        let (said, logs) = spawn("fresh", &["--empty"]);
        assert!(!said.contains("copy-on-write") && !logs.contains("src"), "as {who:?}: {said}{logs}");
        // Outside a work tree: a fresh directory, as before.
        std::fs::remove_dir(p.path().join(".git")).unwrap();
        let (said, logs) = spawn("elsewhere", &[]);
        assert!(!said.contains("copy-on-write") && !logs.contains("src"), "as {who:?}: {said}{logs}");
    }
}

/// An agent that turns a file into a directory (and a directory into a file): apply writes the
/// new shape with everything below it, and undo puts the old one back.
#[test]
fn apply_changes_a_files_kind_both_ways() {
    for who in modes() {
        let a = Agents::new(who);
        let p = project(who);
        let script = "rm a.txt; mkdir -p a.txt/d; echo in > a.txt/f; echo deep > a.txt/d/g; \
                      rm -r src; echo now-a-file > src; echo reshaped; sleep 1000";
        a.ok(&["spawn", "k", "--from-dir", p.path().to_str().unwrap(), "--", "sh", "-c", script]);
        a.screen_until("k", "reshaped");
        let before = listing(p.path());
        let out = a.run(&["apply", "k"]);
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("skipped"), "as {who:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt/f")).unwrap(), "in\n", "as {who:?}");
        assert_eq!(std::fs::read_to_string(p.path().join("a.txt/d/g")).unwrap(), "deep\n", "as {who:?}");
        assert_eq!(std::fs::read_to_string(p.path().join("src")).unwrap(), "now-a-file\n", "as {who:?}");
        a.ok(&["apply", "--undo", "k"]);
        assert_eq!(listing(p.path()), before, "as {who:?}");
    }
}
