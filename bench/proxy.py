#!/usr/bin/env python3
"""Egress proxy benchmarks: the same client in a sandbox, direct vs through the proxy, in one run.

1. added latency per HTTPS request (new connection and TLS handshake each time, as most clients
   do): direct (--network full, straight to the server) vs tunnelled (an allowed host, CONNECT
   relayed untouched) vs intercepted (a host a secret is bound to: TLS terminated with the local
   CA, the placeholder swapped, a new TLS connection to the server).
2. bulk throughput of one large download, same three paths, and through `splice_relay.py` (a
   minimal relay: splice(2) on two threads, no policy or sandbox), the reference for the tunnel:
   what a second loopback hop costs on this machine whoever relays.

Rounds are interleaved so machine noise hits all paths alike; medians are reported.

Usage: bench/proxy.py [--requests 200] [--bytes 500000000] [--rounds 3]
Needs: python3, openssl, a release build (the script builds it).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BIN = os.path.join(ROOT, "target", TARGET, "release", "agentbox")
UPSTREAM = os.path.join(ROOT, "crates", "agentbox", "tests", "it", "upstream.py")
CLIENT = os.path.join(ROOT, "bench", "proxy_client.py")


def certs(work):
    """A test CA and a certificate for the two benchmark host names."""
    def ssl_(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True)
    ca_key, ca, key, csr, crt = (os.path.join(work, f) for f in ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem"))
    ssl_("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key,
         "-out", ca, "-days", "2", "-subj", "/CN=bench CA")
    ssl_("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=bench")
    ext = os.path.join(work, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:api.anthropic.com,DNS:tunnel.test\n")
    ssl_("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "2",
         "-extfile", ext)
    for p in (ca, crt, key):
        os.chmod(p, 0o644)
    return ca, crt, key


RELAY = os.path.join(ROOT, "bench", "splice_relay.py")


def client(mode, env, flags, host, port, args, cafile, work, binary=BIN):
    cmd = [binary, "run", "--mount", f"{CLIENT}:/run/client.py:ro", "--mount", f"{work}:/run/bench:ro",
           *flags, "--", "python3", "/run/client.py", mode, host, str(port), str(args.requests), str(args.bytes),
           cafile]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--bytes", type=int, default=500_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prev", help="another agentbox binary: its tunnelled and intercepted paths are measured in the same rounds")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "agentbox"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="abx-bench-proxy-")
    os.chmod(work, 0o755)
    ca, crt, key = certs(work)
    server = subprocess.Popen([sys.executable, UPSTREAM, "--cert", crt, "--key", key], stdout=subprocess.PIPE, text=True)
    relay = None
    try:
        port = int(server.stdout.readline())
        relay = subprocess.Popen([sys.executable, RELAY, str(port)], stdout=subprocess.PIPE, text=True)
        relay_port = int(relay.stdout.readline())
    except Exception:
        server.kill()
        if relay:
            relay.kill()
        raise
    home = os.path.join(work, "home")
    os.makedirs(home, mode=0o700)
    # The provider's host and the tunnel's point at the local upstream (an operator's pin).
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f'[network.resolve]\n"api.anthropic.com" = "127.0.0.1:{port}"\n"tunnel.test" = "127.0.0.1:{port}"\n'
                # The client sends the key as x-api-key, the only header it is swapped in.
                '[secrets.BENCH_KEY]\nhosts = ["api.anthropic.com"]\nheaders = ["x-api-key"]\n')
    env = dict(os.environ, AGENTBOX_HOME=home, SSL_CERT_FILE=ca, BENCH_KEY="real-key")
    inside_ca = "/run/bench/ca.pem"
    paths = {
        "direct": ("direct", ["--network", "full", "-e", "BENCH_KEY=none"], "api.anthropic.com", inside_ca),
        "relay": ("direct", ["--network", "full", "-e", "BENCH_KEY=none"], "api.anthropic.com", inside_ca),
        "tunnel": ("proxy", ["--allow", "tunnel.test"], "tunnel.test", inside_ca),
        "intercept": ("proxy", ["--secret", "BENCH_KEY"], "api.anthropic.com",
                      "/run/agentbox/ca-bundle.crt"),
    }
    binaries = {k: BIN for k in paths}
    if args.prev:
        # Builds before [network.resolve] read their pins from the environment.
        paths["previous"] = ("proxy", ["--secret", "BENCH_KEY=api.anthropic.com"], "api.anthropic.com",
                             "/run/agentbox/ca-bundle.crt")
        binaries["previous"] = args.prev
        paths["prev-tunnel"] = ("proxy", ["--allow", "tunnel.test"], "tunnel.test", inside_ca)
        binaries["prev-tunnel"] = args.prev
    # Later builds read their pins from config.toml, as this one does.
    os.makedirs(home + "-prev", mode=0o700)
    shutil.copy(os.path.join(home, "config.toml"), os.path.join(home + "-prev", "config.toml"))
    prev_env = dict(env, AGENTBOX_HOME=home + "-prev",
                    AGENTBOX_PROXY_RESOLVE=f"api.anthropic.com=127.0.0.1:{port},tunnel.test=127.0.0.1:{port}")
    results = {k: [] for k in paths}
    try:
        for _ in range(args.rounds):
            for name, (mode, flags, host, cafile) in paths.items():
                e = prev_env if name in ("previous", "prev-tunnel") else env
                p = relay_port if name == "relay" else port
                results[name].append(client(mode, e, flags, host, p, args, cafile, work, binaries[name]))
    finally:
        server.kill()
        relay.kill()
    med = lambda name: statistics.median(statistics.median(r["lat"]) for r in results[name]) * 1e3
    p90 = lambda name: statistics.median(sorted(r["lat"])[int(len(r["lat"]) * 0.9)] for r in results[name]) * 1e3
    mbps = lambda name: statistics.median(r["mbps"] for r in results[name])
    print(f"HTTPS request, new connection each ({args.requests} requests x {args.rounds} rounds, median of round medians)")
    for name in paths:
        print(f"  {name:<10} median {med(name):6.2f} ms  p90 {p90(name):6.2f} ms  added {med(name) - med('direct'):+.2f} ms")
    print(f"Bulk download of {args.bytes / 1e6:.0f} MB (median of {args.rounds})")
    for name in paths:
        rounds = " ".join(f"{r['mbps']:.0f}" for r in results[name])
        print(f"  {name:<10} {mbps(name):7.0f} MB/s  ratio to direct {mbps(name) / mbps('direct'):.2f}"
              f"  to relay {mbps(name) / mbps('relay'):.2f}  (rounds: {rounds})")


if __name__ == "__main__":
    main()
