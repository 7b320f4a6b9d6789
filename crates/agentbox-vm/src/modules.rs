//! Which kernel module files a guest needs, in the order to load them.
//!
//! A distribution kernel package ships its modules without `modules.dep` (depmod writes it at
//! install time), so the dependencies come from each module's own `.modinfo` section
//! (`depends=a,b`), as depmod reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::VmError;

/// A module's name as the kernel spells it (`-` and `_` are the same).
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` list of a module file.
pub fn depends(path: &Path) -> Result<Vec<String>, VmError> {
    let bytes = std::fs::read(path).map_err(VmError::io("reading", path))?;
    let bad = |message: String| VmError::Module { path: path.to_path_buf(), message };
    let file = object::File::parse(&*bytes).map_err(|e| bad(format!("not an ELF module: {e}")))?;
    let section = file.section_by_name(".modinfo").ok_or_else(|| bad("no .modinfo section".into()))?;
    let data = section.data().map_err(|e| bad(e.to_string()))?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| String::from_utf8_lossy(v).split(',').map(canonical).collect::<Vec<_>>())
        .filter(|d| !d.is_empty())
        .collect())
}

/// Every `.ko` under `dir`, by canonical name. Compressed modules are refused by name so the
/// error can say so.
pub fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>, VmError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(VmError::io("listing", &d))?;
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".ko") {
                out.insert(canonical(stem), p);
            } else if [".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|s| name.ends_with(s)) {
                let stem = name.split(".ko").next().unwrap_or(&name);
                out.entry(canonical(stem)).or_insert(p);
            }
        }
    }
    Ok(out)
}

/// Module names listed in `modules.builtin` (paths such as `kernel/fs/9p/9p.ko`).
pub fn builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter_map(|f| f.strip_suffix(".ko"))
        .map(canonical)
        .collect()
}

/// The files to load for `wanted`, dependencies first; `deps` answers a file's dependencies.
pub fn resolve(
    wanted: &[&str],
    available: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    deps: &dyn Fn(&Path) -> Result<Vec<String>, VmError>,
) -> Result<Vec<PathBuf>, VmError> {
    fn visit(
        name: &str,
        available: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        deps: &dyn Fn(&Path) -> Result<Vec<String>, VmError>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<(), VmError> {
        let name = canonical(name);
        if builtin.contains(&name) || !seen.insert(name.clone()) {
            return Ok(());
        }
        let path = available.get(&name).ok_or_else(|| VmError::MissingModule(name.clone()))?;
        if path.extension().is_none_or(|e| e != "ko") {
            return Err(VmError::Module {
                path: path.clone(),
                message: "compressed modules are not supported: give a directory of uncompressed .ko files"
                    .into(),
            });
        }
        for d in deps(path)? {
            visit(&d, available, builtin, deps, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for w in wanted {
        visit(w, available, builtin, deps, &mut seen, &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_builtins_are_skipped() {
        let available: BTreeMap<String, PathBuf> =
            ["9p", "9pnet", "9pnet_virtio", "netfs", "fscache", "virtio_ring"]
                .iter()
                .map(|n| (n.to_string(), PathBuf::from(format!("/m/{n}.ko"))))
                .collect();
        let builtin = builtin("kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n");
        let deps = |p: &Path| -> Result<Vec<String>, VmError> {
            Ok(match p.file_stem().and_then(|s| s.to_str()) {
                Some("9p") => vec!["9pnet".into(), "netfs".into()],
                Some("netfs") => vec!["fscache".into()],
                Some("9pnet_virtio") => vec!["9pnet".into(), "virtio".into(), "virtio_ring".into()],
                _ => vec![],
            })
        };
        let order = resolve(&["9pnet-virtio", "9p"], &available, &builtin, &deps).unwrap();
        let names: Vec<_> =
            order.iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["9pnet", "9pnet_virtio", "fscache", "netfs", "9p"]);
        let e = resolve(&["virtio_net"], &available, &builtin, &deps).unwrap_err();
        assert!(e.to_string().contains("'virtio_net'"), "{e}");
    }
}
