//! The `newc` cpio format the kernel unpacks an initramfs from (see the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst).

use std::io::{self, Write};

#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, ino: 0, written: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4)) % 4;
        self.put(&[0u8; 3][..n as usize])
    }

    fn entry(&mut self, name: &str, mode: u32, size: u64) -> io::Result<()> {
        self.entry_dev(name, mode, size, (0, 0))
    }

    fn entry_dev(&mut self, name: &str, mode: u32, size: u64, rdev: (u32, u32)) -> io::Result<()> {
        if size > u64::from(u32::MAX) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is too large for cpio")));
        }
        self.ino += 1;
        let name_len = name.len() + 1;
        let fields = [self.ino, mode, 0, 0, 1, 0, size as u32, 0, 0, rdev.0, rdev.1, name_len as u32, 0];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// A character device node (`/dev/console`, which the kernel opens for init's stdio before
    /// any filesystem is mounted).
    pub fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry_dev(name, 0o020_000 | (mode & 0o7777), 0, (major, minor))
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, 0o040_755, 0)
    }

    /// A regular file whose content is read from `content` (exactly `size` bytes).
    pub fn file(&mut self, name: &str, mode: u32, size: u64, content: &mut dyn io::Read) -> io::Result<()> {
        self.entry(name, 0o100_000 | (mode & 0o7777), size)?;
        let copied = io::copy(&mut io::Read::take(content, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name} changed while copied")));
        }
        self.written += size;
        self.pad()
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev").unwrap();
        w.file("init", 0o755, 5, &mut &b"hello"[..]).unwrap();
        let out = w.finish().unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("070701"));
        assert_eq!(text.matches("070701").count(), 3);
        assert!(text.contains("init\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(out.len() % 4, 0);
        // The file's header: mode 0100755 and size 5.
        assert!(text.contains("000081ED") && text.contains("00000005"), "{text}");
    }

    #[test]
    fn a_short_file_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("x", 0o644, 10, &mut &b"abc"[..]).is_err());
    }
}
