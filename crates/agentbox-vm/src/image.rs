//! The guest image in agentbox's cache: a kernel and the modules the guest agent loads, written
//! by `agentbox vm setup`; and the initramfs built from them and the running agentbox binary.

use std::collections::BTreeSet;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::BufWriter;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpio::CpioWriter;
use crate::modules;
use crate::qemu::GUEST_MODULES;
use crate::VmError;

const MANIFEST: &str = "image.json";

/// A set-up guest image, as recorded in `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestImage {
    /// Where the image lives (not stored; the directory it was read from).
    #[serde(skip)]
    pub dir: PathBuf,
    /// What the kernel came from (`linux-image-6.1.0-28-amd64 6.1.119-1`, or a path).
    pub source: String,
    /// File names inside `dir`.
    pub kernel: String,
    /// Module files inside `dir`, in load order.
    pub modules: Vec<String>,
    /// Every module carries a signature: the guest kernel then boots locked down
    /// ([`crate::qemu::LOCKDOWN_PARAM`]), which loads no unsigned module. Recorded by `install`;
    /// for an image set up before it was, read from its module files when loaded. (A trailer
    /// is not proof that this kernel's key made the signature: modules signed for another
    /// build are refused all the same, and the guest's console says so.)
    #[serde(default)]
    pub signed_modules: Option<bool>,
}

/// The trailer the kernel's `sign-file` appends to a signed module.
const SIGNATURE_TRAILER: &[u8] = b"~Module signature appended~\n";

/// Whether the module file at `path` ends with a signature.
pub fn module_is_signed(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut tail = [0u8; SIGNATURE_TRAILER.len()];
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-(SIGNATURE_TRAILER.len() as i64)))?;
            f.read_exact(&mut tail)
        })
        .is_ok_and(|()| tail == SIGNATURE_TRAILER)
}

impl GuestImage {
    pub fn load(dir: &Path) -> Result<Self, VmError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(VmError::NotSetUp(dir.into())),
            Err(e) => return Err(VmError::io("reading", &path)(e)),
        };
        let mut image: Self = serde_json::from_str(&text)
            .map_err(|e| VmError::Manifest { path: path.clone(), message: e.to_string() })?;
        image.dir = dir.to_path_buf();
        for f in std::iter::once(&image.kernel).chain(&image.modules) {
            if f.contains('/') && !f.starts_with("modules/") || f.contains("..") {
                return Err(VmError::Manifest { path, message: format!("bad file name {f}") });
            }
        }
        if image.signed_modules.is_none() {
            image.signed_modules = Some(image.modules.iter().all(|m| module_is_signed(&dir.join(m))));
        }
        Ok(image)
    }

    /// Whether every module is signed (see [`GuestImage::signed_modules`]).
    pub fn modules_signed(&self) -> bool {
        self.signed_modules.unwrap_or(false)
    }

    pub fn kernel_path(&self) -> PathBuf {
        self.dir.join(&self.kernel)
    }

    /// Copies `kernel` and the modules the guest needs from `modules_dir` into `dir` (replacing
    /// whatever image was there). Nothing in `dir` changes unless every step succeeds.
    pub fn install(
        dir: &Path,
        kernel: &Path,
        modules_dir: Option<&Path>,
        source: String,
    ) -> Result<Self, VmError> {
        let order = match modules_dir {
            Some(m) => {
                let available = modules::index(m)?;
                let builtin = std::fs::read_to_string(m.join("modules.builtin")).unwrap_or_default();
                modules::resolve(GUEST_MODULES, &available, &modules::builtin(&builtin), &modules::depends)?
            }
            None => Vec::new(),
        };
        let parent =
            dir.parent().ok_or_else(|| VmError::Setup(format!("{} has no parent", dir.display())))?;
        std::fs::create_dir_all(parent).map_err(VmError::io("creating", parent))?;
        let staging = parent.join(format!(".vm-staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("modules")).map_err(VmError::io("creating", &staging))?;
        let result = (|| {
            std::fs::copy(kernel, staging.join("vmlinuz")).map_err(VmError::io("copying", kernel))?;
            let mut names = Vec::new();
            for (i, m) in order.iter().enumerate() {
                let file = m.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                let name = format!("modules/{i:02}-{file}");
                std::fs::copy(m, staging.join(&name)).map_err(VmError::io("copying", m))?;
                names.push(name);
            }
            let signed_modules = Some(order.iter().all(|m| module_is_signed(m)));
            let image = Self {
                dir: dir.to_path_buf(),
                source,
                kernel: "vmlinuz".into(),
                modules: names,
                signed_modules,
            };
            let json = serde_json::to_string_pretty(&image).unwrap_or_default();
            std::fs::write(staging.join(MANIFEST), json).map_err(VmError::io("writing", &staging))?;
            Ok(image)
        })();
        match result {
            Ok(image) => {
                let old = parent.join(format!(".vm-old-{}", std::process::id()));
                let had_old = std::fs::rename(dir, &old).is_ok();
                std::fs::rename(&staging, dir).map_err(VmError::io("installing", dir))?;
                if had_old {
                    let _ = std::fs::remove_dir_all(&old);
                }
                Ok(image)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// The initramfs for this image and the binary at `exe`, built once into `out_dir` and reused
    /// while neither changes.
    pub fn initramfs(&self, exe: &Path, out_dir: &Path) -> Result<PathBuf, VmError> {
        let meta = std::fs::metadata(exe).map_err(VmError::io("reading", exe))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut h);
        (&self.source, &self.kernel, &self.modules, &self.dir).hash(&mut h);
        let path = out_dir.join(format!("initramfs-{:016x}.cpio", h.finish()));
        if path.is_file() {
            return Ok(path);
        }
        std::fs::create_dir_all(out_dir).map_err(VmError::io("creating", out_dir))?;
        let tmp = out_dir.join(format!(".initramfs-{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut w = CpioWriter::new(BufWriter::new(File::create(&tmp)?));
            let mut dirs = BTreeSet::new();
            for d in ["dev", "proc", "sys", "sysroot", "host", "modules"] {
                w.dir(d)?;
                dirs.insert(d);
            }
            w.char_device("dev/console", 0o600, 5, 1)?;
            let mut bin = File::open(exe)?;
            let len = bin.metadata()?.len();
            w.file("init", 0o755, len, &mut bin)?;
            for m in &self.modules {
                let mut f = File::open(self.dir.join(m))?;
                let len = f.metadata()?.len();
                w.file(m, 0o644, len, &mut f)?;
            }
            w.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        if let Err(e) = write().and_then(|_| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(VmError::io("building the initramfs", &path)(e));
        }
        // Older builds of the same image are of no further use.
        if let Ok(entries) = std::fs::read_dir(out_dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("initramfs-") && e.path() != path {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_image_says_how_to_set_it_up() {
        let dir = tempfile::tempdir().unwrap();
        let e = GuestImage::load(&dir.path().join("vm")).unwrap_err();
        assert!(e.to_string().contains("agentbox vm setup"), "{e}");
    }

    #[test]
    fn install_without_modules_and_build_an_initramfs() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        std::fs::write(&kernel, b"kernel").unwrap();
        let vm = dir.path().join("cache/vm");
        let image = GuestImage::install(&vm, &kernel, None, "test".into()).unwrap();
        assert_eq!(GuestImage::load(&vm).unwrap(), image);
        assert_eq!(std::fs::read(image.kernel_path()).unwrap(), b"kernel");
        let exe = dir.path().join("init");
        std::fs::write(&exe, b"#!binary").unwrap();
        let a = image.initramfs(&exe, &dir.path().join("out")).unwrap();
        assert_eq!(image.initramfs(&exe, &dir.path().join("out")).unwrap(), a);
        let bytes = std::fs::read(&a).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("init\0"));
        // A missing kernel leaves the installed image as it was.
        assert!(GuestImage::install(&vm, &dir.path().join("nope"), None, "x".into()).is_err());
        assert_eq!(GuestImage::load(&vm).unwrap().source, "test");
    }

    #[test]
    fn signed_modules_are_told_from_unsigned_ones() {
        let dir = tempfile::tempdir().unwrap();
        let signed = dir.path().join("a.ko");
        std::fs::write(&signed, [b"\x7fELF module".as_slice(), b"signature", SIGNATURE_TRAILER].concat())
            .unwrap();
        let unsigned = dir.path().join("b.ko");
        std::fs::write(&unsigned, b"\x7fELF module without a signature").unwrap();
        let short = dir.path().join("c.ko");
        std::fs::write(&short, b"x").unwrap();
        assert!(module_is_signed(&signed));
        assert!(!module_is_signed(&unsigned));
        assert!(!module_is_signed(&short));
        // A manifest written before the flag was: read from its module files.
        let image = dir.path().join("image");
        std::fs::create_dir_all(image.join("modules")).unwrap();
        std::fs::copy(&signed, image.join("modules/00-a.ko")).unwrap();
        let manifest = |modules: &str| {
            let json = format!(r#"{{"source":"x","kernel":"vmlinuz","modules":[{modules}]}}"#);
            std::fs::write(image.join(MANIFEST), json).unwrap();
            GuestImage::load(&image).unwrap().modules_signed()
        };
        assert!(manifest(r#""modules/00-a.ko""#));
        std::fs::copy(&unsigned, image.join("modules/01-b.ko")).unwrap();
        assert!(!manifest(r#""modules/00-a.ko","modules/01-b.ko""#));
    }

    #[test]
    fn a_tampered_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST),
            r#"{"source":"x","kernel":"../../etc/passwd","modules":[]}"#,
        )
        .unwrap();
        assert!(GuestImage::load(dir.path()).unwrap_err().to_string().contains("bad file name"));
    }
}
