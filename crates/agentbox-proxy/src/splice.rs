//! A tunnel's bytes relayed by the kernel: `splice(2)` from one socket into a pipe and from the
//! pipe into the other socket, so a tunnelled download is never copied into the proxy's memory.
//! (An intercepted connection is decrypted and re-encrypted, and cannot be relayed this way.)
//!
//! Each direction has its own pipe. A direction ends when its source says end-of-file: the
//! other socket's write side is shut down, as `copy_bidirectional` does; an error in either
//! direction ends both. The bytes are counted into the connection's counters for the audit.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use nix::fcntl::{splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::counting::Counting;

/// How much one splice moves at most (and the pipe's size, where the kernel grants it).
const CHUNK: usize = 1 << 20;

/// Relays between the sandbox's `client` (with `early`, the bytes it sent after its CONNECT that
/// were read already) and `upstream` until both directions have ended.
pub(crate) async fn relay(
    client: Counting<TcpStream>,
    early: Bytes,
    mut upstream: TcpStream,
) -> io::Result<()> {
    let Counting { inner: client, counters } = client;
    if !early.is_empty() {
        upstream.write_all(&early).await?;
        counters.up.fetch_add(early.len() as u64, Ordering::Relaxed);
    }
    let up = one_way(&client, &upstream, &counters.up);
    let down = one_way(&upstream, &client, &counters.down);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => { r?; up_done = true; }
            r = &mut down, if !down_done => { r?; down_done = true; }
        }
    }
    Ok(())
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Moves bytes from `from` to `to` until `from` ends; then shuts down `to`'s write side.
async fn one_way(from: &TcpStream, to: &TcpStream, count: &AtomicU64) -> io::Result<()> {
    let (pipe_out, pipe_in) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // A bigger pipe moves more per call; the default (64 KiB) still works.
    let _ = nix::fcntl::fcntl(&pipe_in, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || Ok(splice(from, None, &pipe_in, None, CHUNK, flags())?))
            {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || Ok(splice(&pipe_out, None, to, None, left, flags())?)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
