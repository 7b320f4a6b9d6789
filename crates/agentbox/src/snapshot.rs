//! What a workspace held when its agent was spawned, to tell later what changed (`diff`).
//!
//! The manifest records every entry below the workspace (never following symlinks): its kind,
//! size, modification time and, for files up to `HASH_LIMIT`, a hash of the content; a symlink
//! records its target. It lives in the agent's state directory, outside the sandbox.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const HASH_LIMIT: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    kind: char,
    size: u64,
    mtime_ns: i64,
    hash: u64,
}

pub type Manifest = BTreeMap<PathBuf, Entry>;

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn walk(root: &Path, rel: &Path, out: &mut Manifest) {
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else { return };
    for e in rd.flatten() {
        let rel_path = rel.join(e.file_name());
        let full = root.join(&rel_path);
        let Ok(meta) = std::fs::symlink_metadata(&full) else { continue };
        let ft = meta.file_type();
        let (kind, hash) = if ft.is_symlink() {
            (
                'l',
                std::fs::read_link(&full).map(|t| hash_bytes(t.as_os_str().as_encoded_bytes())).unwrap_or(0),
            )
        } else if ft.is_dir() {
            ('d', 0)
        } else if ft.is_file() {
            let h = if meta.len() <= HASH_LIMIT {
                std::fs::read(&full).map(|b| hash_bytes(&b)).unwrap_or(0)
            } else {
                0
            };
            ('f', h)
        } else {
            ('o', 0)
        };
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let size = if kind == 'd' { 0 } else { meta.len() };
        out.insert(rel_path.clone(), Entry { kind, size, mtime_ns, hash });
        if kind == 'd' {
            walk(root, &rel_path, out);
        }
    }
}

pub fn take(workspace: &Path) -> Manifest {
    let mut m = Manifest::new();
    walk(workspace, Path::new(""), &mut m);
    m
}

pub fn save(m: &Manifest, file: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(file).with_context(|| format!("writing {}", file.display()))?,
    );
    for (p, e) in m {
        // Paths are written with their bytes escaped so tabs and newlines in names survive.
        writeln!(out, "{}\t{}\t{}\t{}\t{}", e.kind, e.size, e.mtime_ns, e.hash, escape(p))?;
    }
    out.flush()?;
    Ok(())
}

pub fn escape(p: &Path) -> String {
    p.as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|b| match b {
            b'\\' => "\\\\".to_string(),
            b'\t' => "\\t".to_string(),
            b'\n' => "\\n".to_string(),
            b if b.is_ascii_graphic() || *b == b' ' => (*b as char).to_string(),
            b => format!("\\x{b:02x}"),
        })
        .collect()
}

fn unescape(s: &str) -> PathBuf {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2
            }
            (b'\\', Some(b't')) => {
                out.push(b'\t');
                i += 2
            }
            (b'\\', Some(b'n')) => {
                out.push(b'\n');
                i += 2
            }
            (b'\\', Some(b'x')) if i + 3 < b.len() + 1 => {
                let v = std::str::from_utf8(&b[i + 2..(i + 4).min(b.len())])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(v.unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from(String::from_utf8_lossy(&out).into_owned()))
}

pub fn load(file: &Path) -> Result<Manifest> {
    let f = std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let mut m = Manifest::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let mut it = line.splitn(5, '\t');
        let (Some(k), Some(size), Some(mtime), Some(hash), Some(path)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            anyhow::bail!("{}: malformed line", file.display());
        };
        m.insert(
            unescape(path),
            Entry {
                kind: k.chars().next().unwrap_or('o'),
                size: size.parse()?,
                mtime_ns: mtime.parse()?,
                hash: hash.parse()?,
            },
        );
    }
    Ok(m)
}

/// `(A|M|D, path)` for every entry added, changed or deleted from `before` to `after`.
pub fn compare(before: &Manifest, after: &Manifest) -> Vec<(char, PathBuf)> {
    let mut out = Vec::new();
    for (p, e) in after {
        match before.get(p) {
            None => out.push(('A', p.clone())),
            Some(b) if b.kind != e.kind || b.size != e.size || b.hash != e.hash => out.push(('M', p.clone())),
            // Content beyond the hash limit: the modification time decides.
            Some(b) if e.kind == 'f' && e.size > HASH_LIMIT && b.mtime_ns != e.mtime_ns => {
                out.push(('M', p.clone()))
            }
            _ => {}
        }
    }
    for p in before.keys() {
        if !after.contains_key(p) {
            out.push(('D', p.clone()));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any path survives escape/unescape, and a corrupted manifest is an error, not a panic.
    #[test]
    fn fuzz_manifest() {
        let mut rng = agentbox_core::testing::XorShift::new(0x0bad_5eed_1234_4321);
        let d = tempfile::tempdir().unwrap();
        for _ in 0..3000 {
            let n = 1 + rng.below(10);
            let name: String = (0..n).map(|_| char::from(rng.pick(b"a\\\t\n x\x1b/7"))).collect();
            assert_eq!(unescape(&escape(Path::new(&name))), PathBuf::from(&name));
            let j = rng.below(30);
            let junk: String = (0..j).map(|_| char::from(rng.pick(b"f\t12\\x\n-"))).collect();
            std::fs::write(d.path().join("m"), junk).unwrap();
            let _ = load(&d.path().join("m"));
        }
    }

    #[test]
    fn detects_changes_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::write(ws.join("keep"), "1").unwrap();
        std::fs::write(ws.join("edit"), "1").unwrap();
        std::fs::write(ws.join("gone"), "1").unwrap();
        std::fs::write(ws.join("sub/odd\tname\n"), "1").unwrap();
        let before = take(&ws);
        save(&before, &d.path().join("m")).unwrap();
        assert_eq!(load(&d.path().join("m")).unwrap(), before);
        std::fs::write(ws.join("edit"), "2").unwrap();
        std::fs::remove_file(ws.join("gone")).unwrap();
        std::fs::write(ws.join("sub/new"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", ws.join("link")).unwrap();
        let changes = compare(&before, &take(&ws));
        let got: Vec<(char, &str)> = changes.iter().map(|(c, p)| (*c, p.to_str().unwrap())).collect();
        assert_eq!(got, vec![('M', "edit"), ('D', "gone"), ('A', "link"), ('A', "sub/new")]);
    }
}
