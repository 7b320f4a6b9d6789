//! `agentbox __vmfwd PORT`: what QEMU runs for each guest connection to the proxy address. Its
//! stdin/stdout are the guest's TCP connection; it dials the supervisor's proxy on the loopback
//! of QEMU's sandbox and copies both ways until either side closes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

pub fn run_forward(port: u16) -> i32 {
    let upstream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agentbox: the egress proxy is unreachable: {e}");
            return 1;
        }
    };
    let Ok(mut up_read) = upstream.try_clone() else { return 1 };
    let down = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        let mut buf = [0u8; 65536];
        while let Ok(n) = up_read.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    let mut up_write = upstream;
    let mut input = std::io::stdin().lock();
    let mut buf = [0u8; 65536];
    while let Ok(n) = input.read(&mut buf) {
        if n == 0 || up_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = up_write.shutdown(Shutdown::Write);
    let _ = down.join();
    0
}
