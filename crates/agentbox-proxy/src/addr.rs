//! Which destination addresses are public. Everything else (loopback, private ranges, link-local
//! and its cloud-metadata endpoints, multicast, reserved) is refused unless the policy names the
//! address itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public destination; `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if a == 0 {
        Some("'this network' (0.0.0.0/8)")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata lives here)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (100.64.0.0/10)")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments (192.0.0.0/24)")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking (198.18.0.0/15)")
    } else if matches!(ip.octets()[..3], [192, 0, 2] | [198, 51, 100] | [203, 0, 113]) {
        Some("documentation")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let seg = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("unique local (private)")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("site-local (fec0::/10, private)")
    } else if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        Some("local-use NAT64 (64:ff9b:1::/48, private)")
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        Some("Teredo (2001::/32)")
    } else if seg[0] == 0x2001 && seg[1] == 0xdb8 {
        Some("documentation (2001:db8::/32)")
    } else if seg[0] == 0x100 && seg[1] == 0 && seg[2] == 0 && seg[3] == 0 {
        Some("discard-only (100::/64)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if seg[0] == 0x64 && seg[1] == 0xff9b {
        // NAT64: judge the IPv4 address inside.
        let v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
        non_public_v4(v4)
    } else if seg[0] == 0x2002 {
        // 6to4: the IPv4 address is in segments 1 and 2.
        let v4 = Ipv4Addr::new((seg[1] >> 8) as u8, seg[1] as u8, (seg[2] >> 8) as u8, seg[2] as u8);
        non_public_v4(v4)
    } else if seg[0] == 0 {
        Some("reserved (::/16, including IPv4-compatible addresses)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_public() {
        for bad in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "ff02::1",
            "fec0::1",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::1",
            "2001::1",
            "2001:db8::1",
            "100::1",
            "198.18.0.1",
            "192.0.2.1",
        ] {
            assert!(non_public(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for ok in
            ["1.1.1.1", "140.82.112.3", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "64:ff9b::101:101"]
        {
            assert_eq!(non_public(ok.parse().unwrap()), None, "{ok}");
        }
    }
}
