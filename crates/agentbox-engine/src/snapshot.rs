//! What a workspace held when its agent was spawned, to tell later what changed (`diff`).
//!
//! The manifest records every entry below the workspace (never following symlinks): its kind,
//! size, modification time and, for files up to `HASH_LIMIT`, a hash of the content; a symlink
//! records its target. It lives in the agent's state directory, outside the sandbox.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use crate::tree::{self, Kind, Limits};

use crate::error::{Context, Result};

const HASH_LIMIT: u64 = 4 << 20;
/// Entries recorded at most (a workspace of millions of files is not diffed in full).
const MAX_ENTRIES: u64 = 2_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    kind: char,
    size: u64,
    mtime_ns: i64,
    hash: u64,
}

impl Entry {
    /// A regular file's size and content hash, when its content was hashed.
    pub fn content(&self) -> Option<(u64, u64)> {
        (self.kind == 'f' && self.size <= HASH_LIMIT).then_some((self.size, self.hash))
    }
}

pub type Manifest = BTreeMap<PathBuf, Entry>;

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Records every entry below `workspace` through descriptors (the agent may swap names for
/// links or FIFOs while this runs: nothing is followed, nothing blocks). Entries past the bound
/// are left out of the manifest.
pub fn take(workspace: &Path) -> Manifest {
    let mut m = Manifest::new();
    let limits = Limits { max_bytes: u64::MAX, max_entries: MAX_ENTRIES };
    let _ = tree::walk(workspace, limits, &mut |e| {
        let (kind, hash) = match e.kind {
            Kind::Symlink => ('l', e.link_target()?.map(|t| hash_bytes(t.as_encoded_bytes())).unwrap_or(0)),
            Kind::Dir => ('d', 0),
            Kind::File if (e.stat.st_size as u64) <= HASH_LIMIT => {
                let mut bytes = Vec::new();
                let h = match e.open()? {
                    Some(f) => {
                        f.take(HASH_LIMIT).read_to_end(&mut bytes).map(|_| hash_bytes(&bytes)).unwrap_or(0)
                    }
                    None => 0,
                };
                ('f', h)
            }
            Kind::File => ('f', 0),
            Kind::Other => ('o', 0),
        };
        let mtime_ns = e.stat.st_mtime * 1_000_000_000 + e.stat.st_mtime_nsec;
        let size = if kind == 'd' { 0 } else { e.stat.st_size as u64 };
        m.insert(e.rel.clone(), Entry { kind, size, mtime_ns, hash });
        Ok(())
    });
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
            crate::bail!("{}: malformed line", file.display());
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
