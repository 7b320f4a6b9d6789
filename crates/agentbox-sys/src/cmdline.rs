//! What `/proc/PID/cmdline` shows for this process: its argument area, rewritten in place.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

/// The start and end of this process's argument area (fields 48 and 49 of `/proc/self/stat`).
fn argument_area() -> nix::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    // Fields after the command name, which may hold spaces: from the last ')'. Field 3 is first.
    let fields: Vec<&str> = stat.rsplit_once(')').ok_or(Errno::EINVAL)?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok()).ok_or(Errno::EINVAL);
    let (start, end) = (field(48)?, field(49)?);
    if start == 0 || end <= start {
        return Err(Errno::EINVAL);
    }
    Ok((start, end))
}

fn encoded(args: &[&OsStr]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in args {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out
}

/// Whether [`set_cmdline`] can show `args`: they fit in the area the process started with.
pub fn cmdline_fits(args: &[&OsStr]) -> bool {
    argument_area().is_ok_and(|(start, end)| encoded(args).len() <= end - start)
}

/// Makes `/proc/self/cmdline` (and `ps`) show `args`, by writing them over the argument strings
/// this process started with (the rest of the area is zeroed). `ENOSPC` if they do not fit.
///
/// For a process forked to take another role without exec'ing: tools and people find an
/// agentbox role by its command line.
pub fn set_cmdline(args: &[&OsStr]) -> nix::Result<()> {
    let (start, end) = argument_area()?;
    let bytes = encoded(args);
    if bytes.len() > end - start {
        return Err(Errno::ENOSPC);
    }
    // SAFETY: [start, end) is this process's own argument area, as the kernel reports it: the
    // argv strings on the initial stack, mapped readable and writable for the process's whole
    // life. Nothing in this process holds a Rust reference into it (std copies arguments on
    // demand; the C runtime's argv pointers point at these bytes, which stay NUL-terminated).
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    area[..bytes.len()].copy_from_slice(&bytes);
    area[bytes.len()..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_area_is_found_and_a_long_title_does_not_fit() {
        let (start, end) = argument_area().unwrap();
        assert!(end > start);
        let long = "x".repeat(end - start + 1);
        assert!(!cmdline_fits(&[OsStr::new(&long)]));
        assert!(cmdline_fits(&[OsStr::new("a")]));
    }
}
