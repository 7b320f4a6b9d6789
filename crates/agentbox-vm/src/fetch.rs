//! `agentbox vm setup`: the distribution's kernel package, fetched by its package manager.
//!
//! apt resolves the current kernel behind the `linux-image-ARCH` meta-package and downloads it
//! with the machine's own sources, proxies and signatures; `dpkg-deb` unpacks it. Progress is the
//! size of the partial download against the size the package index gives.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::image::GuestImage;
use crate::VmError;

/// Where setup is, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Resolved { package: String, version: String, size: u64 },
    Downloaded(u64),
    Unpacking,
}

fn output(cmd: &mut Command, what: &str) -> Result<String, VmError> {
    let out = cmd.output().map_err(|e| VmError::Setup(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return Err(VmError::Setup(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A field of the first record in `apt-cache show` output.
pub fn field<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// The versioned kernel package a meta-package depends on (`linux-image-6.1.0-28-amd64`).
pub fn kernel_dependency(depends: &str) -> Option<String> {
    depends
        .split(',')
        .flat_map(|alt| alt.split('|'))
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|n| n.starts_with("linux-image-") && n.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_string)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Fetches the distribution kernel (or `package`) and installs it as the guest image in `dir`.
pub fn setup_from_package(
    dir: &Path,
    package: Option<&str>,
    progress: &mut dyn FnMut(Progress),
) -> Result<GuestImage, VmError> {
    let package = match package {
        Some(p) => p.to_string(),
        None => {
            let arch = output(Command::new("dpkg").arg("--print-architecture"), "dpkg --print-architecture")?;
            let meta = format!("linux-image-{}", arch.trim());
            let show = output(
                Command::new("apt-cache").args(["show", "--no-all-versions", &meta]),
                "apt-cache show",
            )?;
            field(&show, "Depends").and_then(kernel_dependency).ok_or_else(|| {
                VmError::Setup(format!("{meta} names no kernel package; give one with --package"))
            })?
        }
    };
    let show =
        output(Command::new("apt-cache").args(["show", "--no-all-versions", &package]), "apt-cache show")?;
    let version = field(&show, "Version").unwrap_or("?").to_string();
    let size = field(&show, "Size").and_then(|s| s.parse().ok()).unwrap_or(0);
    progress(Progress::Resolved { package: package.clone(), version: version.clone(), size });

    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(VmError::io("creating", parent))?;
    let work = parent.join(format!(".vm-download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(VmError::io("creating", &work))?;
    let result = (|| {
        let mut child = Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| VmError::Setup(format!("cannot run apt-get: {e}")))?;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| VmError::Setup(format!("apt-get: {e}")))? {
                break s;
            }
            progress(Progress::Downloaded(dir_size(&work)));
            std::thread::sleep(Duration::from_millis(100));
        };
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(VmError::Setup(format!("apt-get download {package} failed: {}", err.trim())));
        }
        progress(Progress::Downloaded(dir_size(&work)));
        let deb = std::fs::read_dir(&work)
            .map_err(VmError::io("listing", &work))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .ok_or_else(|| VmError::Setup(format!("apt-get download {package} left no .deb")))?;
        progress(Progress::Unpacking);
        let root = work.join("root");
        output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), "dpkg-deb -x")?;
        let (kernel, modules) = find_kernel(&root)?;
        GuestImage::install(dir, &kernel, modules.as_deref(), format!("{package} {version}"))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// The kernel image and modules directory inside an unpacked kernel package.
fn find_kernel(root: &Path) -> Result<(PathBuf, Option<PathBuf>), VmError> {
    let boot = root.join("boot");
    let kernel = std::fs::read_dir(&boot)
        .map_err(VmError::io("listing", &boot))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| VmError::Setup("the package has no boot/vmlinuz-*".into()))?;
    let release = kernel
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_string())
        .unwrap_or_default();
    let modules =
        ["lib/modules", "usr/lib/modules"].iter().map(|d| root.join(d).join(&release)).find(|d| d.is_dir());
    Ok((kernel, modules))
}

/// Installs a kernel the user gives; its modules default to `/lib/modules/RELEASE` when the
/// kernel is `/boot/vmlinuz-RELEASE`.
pub fn setup_from_path(dir: &Path, kernel: &Path, modules: Option<&Path>) -> Result<GuestImage, VmError> {
    if !kernel.is_file() {
        return Err(VmError::Setup(format!("{} is not a kernel image file", kernel.display())));
    }
    let default_modules = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(|rel| PathBuf::from("/lib/modules").join(rel))
        .filter(|d| d.is_dir());
    let modules = modules.map(Path::to_path_buf).or(default_modules);
    if let Some(m) = &modules {
        if !m.is_dir() {
            return Err(VmError::Setup(format!("{} is not a modules directory", m.display())));
        }
    }
    GuestImage::install(dir, kernel, modules.as_deref(), kernel.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_behind_the_meta_package() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.119-1\nDepends: linux-image-6.1.0-28-amd64 (= 6.1.119-1)\nSize: 1480\n\nPackage: other\n";
        assert_eq!(field(show, "Version"), Some("6.1.119-1"));
        assert_eq!(field(show, "Size"), Some("1480"));
        assert_eq!(
            kernel_dependency(field(show, "Depends").unwrap()).as_deref(),
            Some("linux-image-6.1.0-28-amd64")
        );
        assert_eq!(kernel_dependency("linux-base, initramfs-tools | linux-initramfs-tool"), None);
    }

    #[test]
    fn a_missing_kernel_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = setup_from_path(&dir.path().join("vm"), &dir.path().join("none"), None).unwrap_err();
        assert!(e.to_string().contains("is not a kernel image file"), "{e}");
    }
}
