//! envd's `filesystem.Filesystem` service and `/health`. Each call runs a short command in the
//! sandbox (find, mkdir, mv, rm: the sandbox's own view of its files, as its user).

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::connect;
use super::error::RpcError;
use super::helper::{self, absolute};
use super::sandboxes::Current;
use crate::state::Shared;
use agentbox_engine::Home;

/// `GET /health`: the sandbox runs (its token was checked on the way in).
pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// What `find -printf` says of each entry: type, size, mode, permissions, owner, group, mtime,
/// link target, path; NUL-terminated, the path last (it may hold tabs).
const FORMAT: &str = "%y\\t%s\\t%m\\t%M\\t%u\\t%g\\t%T@\\t%l\\t%p\\0";

/// One entry as envd's `EntryInfo` (`None` for sockets, FIFOs and devices, which the SDK drops).
fn entry(line: &str) -> Option<Value> {
    let f: Vec<&str> = line.splitn(9, '\t').collect();
    let [kind, size, mode, perms, owner, group, mtime, target, path] = f.as_slice() else { return None };
    let kind = match *kind {
        "f" => "FILE_TYPE_FILE",
        "d" => "FILE_TYPE_DIRECTORY",
        "l" => "FILE_TYPE_SYMLINK",
        _ => return None,
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    let ms = mtime.parse::<f64>().map(|s| (s * 1000.0) as i64).unwrap_or(0);
    let mut e = json!({
        "name": name,
        "type": kind,
        "path": path,
        "size": size.parse::<u64>().unwrap_or(0).to_string(),
        "mode": u32::from_str_radix(mode, 8).unwrap_or(0),
        "permissions": perms,
        "owner": owner,
        "group": group,
        "modifiedTime": super::control::utc(ms),
    });
    if kind == "FILE_TYPE_SYMLINK" {
        e["symlinkTarget"] = json!(target);
        e["isSymlink"] = json!(true);
    }
    Some(e)
}

fn entries(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out).split('\0').filter(|l| !l.is_empty()).filter_map(entry).collect()
}

fn path_field(msg: &Value, field: &str) -> Result<String, RpcError> {
    match msg.get(field).and_then(Value::as_str) {
        Some(p) => absolute(p),
        None => Err(RpcError::new("invalid_argument", format!("{field}: a path is needed"))),
    }
}

fn one_entry(out: &std::process::Output, path: &str) -> Result<Value, RpcError> {
    entries(&out.stdout)
        .into_iter()
        .next()
        .ok_or_else(|| RpcError::new("not_found", format!("{path}: no such file or directory")))
}

/// A directory watched by `files.watch_dir`: what it held when last looked at.
#[derive(Debug, Clone)]
pub struct Watcher {
    sandbox: String,
    path: String,
    recursive: bool,
    seen: Seen,
}

impl Watcher {
    pub fn sandbox(&self) -> &str {
        &self.sandbox
    }
}

/// Each entry below a watched directory (relative name) with its type, size and mtime.
type Seen = std::collections::BTreeMap<String, (String, String, String)>;

/// Looks at what is below `path` now (one level, or all with `recursive`).
fn snapshot(home: &Home, id: &str, path: &str, recursive: bool) -> Result<Seen, RpcError> {
    let depth = if recursive { "64" } else { "1" };
    let out = helper::script(
        home,
        id,
        r#"[ -e "$1" ] || exit 44; [ -d "$1" ] || exit 45; exec find -H "$1" -mindepth 1 -maxdepth "$2" -printf '%y\t%s\t%T@\t%P\0'"#,
        &[path, depth],
    )?;
    if !out.status.success() {
        return Err(helper::failure(&out, path));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            match f.as_slice() {
                [k, s, t, name] => Some((name.to_string(), (k.to_string(), s.to_string(), t.to_string()))),
                _ => None,
            }
        })
        .collect())
}

/// The events between two looks: created, written (size or mtime changed), removed. A rename
/// is a removal and a creation.
fn changes(old: &Seen, now: &Seen) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, meta) in now {
        match old.get(name) {
            None => out.push(json!({ "name": name, "type": "EVENT_TYPE_CREATE" })),
            Some(m) if m != meta => out.push(json!({ "name": name, "type": "EVENT_TYPE_WRITE" })),
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|n| !now.contains_key(*n)) {
        out.push(json!({ "name": name, "type": "EVENT_TYPE_REMOVE" }));
    }
    out
}

/// How often a `WatchDir` stream looks again.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// `WatchDir`: `start`, then the changes found every quarter second, until the client goes.
async fn watch(state: Shared, current: Current, msg: Value, stream: connect::Stream) {
    let path = match path_field(&msg, "path") {
        Ok(p) => p,
        Err(e) => return stream.end(Some(e)).await,
    };
    let recursive = msg.get("recursive").and_then(Value::as_bool).unwrap_or(false);
    let look = |home: Home, id: String, path: String| {
        tokio::task::spawn_blocking(move || snapshot(&home, &id, &path, recursive))
    };
    let mut seen = match look(state.home.clone(), current.id.clone(), path.clone()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return stream.end(Some(e)).await,
        Err(e) => return stream.end(Some(e.into())).await,
    };
    if !stream.send(&json!({ "start": {} })).await {
        return;
    }
    let mut quiet = std::time::Instant::now();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let now = match look(state.home.clone(), current.id.clone(), path.clone()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return stream.end(Some(e)).await,
            Err(e) => return stream.end(Some(e.into())).await,
        };
        for event in changes(&seen, &now) {
            if !stream.send(&json!({ "filesystem": event })).await {
                return;
            }
            quiet = std::time::Instant::now();
        }
        seen = now;
        if quiet.elapsed() > std::time::Duration::from_secs(30) {
            if !stream.send(&json!({ "keepalive": {} })).await {
                return;
            }
            quiet = std::time::Instant::now();
        }
    }
}

fn call(
    home: &Home,
    watchers: &std::sync::Mutex<std::collections::HashMap<String, Watcher>>,
    id: &str,
    method: &str,
    msg: &Value,
) -> Result<Value, RpcError> {
    let run = |script: &str, args: &[&str], path: &str| {
        let out = helper::script(home, id, script, args)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(helper::failure(&out, path))
        }
    };
    match method {
        "Stat" => {
            let p = path_field(msg, "path")?;
            let out = run(
                r#"[ -e "$1" ] || [ -L "$1" ] || exit 44; exec find "$1" -maxdepth 0 -printf "$2""#,
                &[&p, FORMAT],
                &p,
            )?;
            Ok(json!({ "entry": one_entry(&out, &p)? }))
        }
        "ListDir" => {
            let p = path_field(msg, "path")?;
            let depth = msg.get("depth").and_then(Value::as_u64).unwrap_or(1).clamp(1, 64).to_string();
            let out = run(
                r#"[ -e "$1" ] || exit 44; [ -d "$1" ] || exit 45; exec find -H "$1" -mindepth 1 -maxdepth "$2" -printf "$3""#,
                &[&p, &depth, FORMAT],
                &p,
            )?;
            Ok(json!({ "entries": entries(&out.stdout) }))
        }
        "MakeDir" => {
            let p = path_field(msg, "path")?;
            let out = run(
                r#"{ [ -e "$1" ] || [ -L "$1" ]; } && exit 46; mkdir -p -- "$1" && exec find "$1" -maxdepth 0 -printf "$2""#,
                &[&p, FORMAT],
                &p,
            )?;
            Ok(json!({ "entry": one_entry(&out, &p)? }))
        }
        "Move" => {
            let (from, to) = (path_field(msg, "source")?, path_field(msg, "destination")?);
            let out = run(
                r#"[ -e "$1" ] || [ -L "$1" ] || exit 44; mkdir -p -- "$(dirname -- "$2")" && mv -T -- "$1" "$2" && exec find "$2" -maxdepth 0 -printf "$3""#,
                &[&from, &to, FORMAT],
                &from,
            )?;
            Ok(json!({ "entry": one_entry(&out, &to)? }))
        }
        "Remove" => {
            let p = path_field(msg, "path")?;
            run(r#"[ -e "$1" ] || [ -L "$1" ] || exit 44; exec rm -rf -- "$1""#, &[&p], &p)?;
            Ok(json!({}))
        }
        "CreateWatcher" => {
            let p = path_field(msg, "path")?;
            let recursive = msg.get("recursive").and_then(Value::as_bool).unwrap_or(false);
            let seen = snapshot(home, id, &p, recursive)?;
            let watcher_id = super::sandboxes::new_token();
            let w = Watcher { sandbox: id.to_string(), path: p, recursive, seen };
            watchers.lock().unwrap_or_else(|e| e.into_inner()).insert(watcher_id.clone(), w);
            Ok(json!({ "watcherId": watcher_id }))
        }
        "GetWatcherEvents" => {
            let wid = msg.get("watcherId").and_then(Value::as_str).unwrap_or_default().to_string();
            let (path, recursive, old) = {
                let all = watchers.lock().unwrap_or_else(|e| e.into_inner());
                let w = all
                    .get(&wid)
                    .filter(|w| w.sandbox == id)
                    .ok_or_else(|| RpcError::new("not_found", format!("watcher {wid} not found")))?;
                (w.path.clone(), w.recursive, w.seen.clone())
            };
            let now = snapshot(home, id, &path, recursive)?;
            let events = changes(&old, &now);
            if let Some(w) = watchers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&wid) {
                w.seen = now;
            }
            Ok(json!({ "events": events }))
        }
        "RemoveWatcher" => {
            let wid = msg.get("watcherId").and_then(Value::as_str).unwrap_or_default();
            watchers.lock().unwrap_or_else(|e| e.into_inner()).remove(wid);
            Ok(json!({}))
        }
        other => {
            Err(RpcError::new("unimplemented", format!("filesystem.Filesystem/{other} is not a method")))
        }
    }
}

/// `POST /filesystem.Filesystem/{method}` (unary, JSON).
pub async fn rpc(
    State(state): State<Shared>,
    Path(method): Path<String>,
    Extension(current): Extension<Current>,
    body: axum::body::Bytes,
) -> Response {
    if method == "WatchDir" {
        let msg = match connect::first_message(&body) {
            Ok(m) => m,
            Err(e) => return connect::failed_stream(e),
        };
        let (stream, response) = connect::stream();
        tokio::spawn(watch(state, current, msg, stream));
        return response;
    }
    let msg = match connect::unary(&body) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let home = state.home.clone();
    let table = state.e2b.clone();
    let answer =
        tokio::task::spawn_blocking(move || call(&home, &table.watchers, &current.id, &method, &msg)).await;
    connect::reply(answer.unwrap_or_else(|e| Err(RpcError::from(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_lines_become_entries() {
        let out = b"f\t5\t644\t-rw-r--r--\tagent\tagent\t1700000000.5\t\t/home/user/a\tb.txt\0d\t4096\t755\tdrwxr-xr-x\tagent\tagent\t1700000000\t\t/home/user/d\0l\t3\t777\tlrwxrwxrwx\tagent\tagent\t0\t/etc\t/home/user/l\0p\t0\t644\tprw-r--r--\ta\ta\t0\t\t/home/user/fifo\0";
        let e = entries(out);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0]["name"], "a\tb.txt");
        assert_eq!(e[0]["type"], "FILE_TYPE_FILE");
        assert_eq!(e[0]["mode"], 0o644);
        assert_eq!(e[0]["modifiedTime"], "2023-11-14T22:13:20.500Z");
        assert_eq!(e[1]["type"], "FILE_TYPE_DIRECTORY");
        assert_eq!(e[2]["symlinkTarget"], "/etc");
        assert!(entry("garbage").is_none());
    }
}
