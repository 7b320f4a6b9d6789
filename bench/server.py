#!/usr/bin/env python3
"""`agentbox serve` benchmarks, each beside a reference measured in the same run.

1. GET /api/v1/agents with N agents running, under wrk on loopback: requests per second and
   p99 latency, beside nginx serving a static file of the same size (the ceiling for an HTTP
   server on this machine).
2. Terminal fan-out: one agent writing continuously, watched by V WebSocket viewers through
   /ws/agents/NAME/attach: bytes per second delivered (all viewers together and per viewer),
   beside one viewer alone, and the delay of the slowest viewer (how far behind the newest
   line written it is at the end).

Usage: bench/server.py [--agents 100] [--seconds 10] [--viewers 50] [--connections 64] [--rate BYTES/S]
Needs: wrk, nginx, python3 and a release build (the script builds it).
"""
import argparse, base64, json, os, re, selectors, shutil, socket, struct, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BIN = os.path.join(ROOT, "target", TARGET, "release", "agentbox")


def wrk(url, seconds, connections, token=None):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        sys.exit(f"wrk got {non2xx.group(1)} error responses from {url}")
    return rps, float(p99.group(1)) * scale


def nginx(work, body):
    root = os.path.join(work, "www")
    os.makedirs(root)
    with open(os.path.join(root, "agents.json"), "wb") as f:
        f.write(body)
    os.chmod(root, 0o755)
    os.chmod(os.path.join(root, "agents.json"), 0o644)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 2; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:18199; root {root}; default_type application/json; }} }}
""")
    subprocess.run(["nginx", "-c", conf, "-p", work], check=True)
    return "http://127.0.0.1:18199/agents.json", lambda: subprocess.run(["nginx", "-c", conf, "-p", work, "-s", "stop"])


class Viewer:
    """A minimal WebSocket client: the handshake, then unmasked server frames."""

    def __init__(self, addr, path, token):
        host, port = addr.split(":")
        self.sock = socket.create_connection((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Authorization: Bearer {token}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise SystemExit(f"websocket refused: {head!r}")
        self.sock.setblocking(False)
        self.buf = b""
        self.bytes = 0
        self.last_ts = 0
        self.tail = b""

    def feed(self):
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        self.buf += data
        while len(self.buf) >= 2:
            n = self.buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, off = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
            if len(self.buf) < off + n:
                return
            payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
            if self.buf is not None and (payload[:1] != b"{"):
                self.bytes += len(payload)
                # The newest complete timestamp line seen (lines: "T <ns> xxxx...").
                # Only the end of each message is parsed: the viewer must keep up, not the parser.
                text = (self.tail + payload)[-400:]
                cut = text.rfind(b"\n")
                self.tail = text[cut + 1:]
                m = re.findall(rb"T (\d{19}) ", text[:cut + 1])
                if m:
                    self.last_ts = int(m[-1])


def fan_out(addr, token, name, viewers, seconds):
    vs = [Viewer(addr, f"/ws/agents/{name}/attach", token) for _ in range(viewers)]
    sel = selectors.DefaultSelector()
    for v in vs:
        sel.register(v.sock, selectors.EVENT_READ, v)
    # Let the screen replay pass, then measure.
    end_warm = time.time() + 1
    while time.time() < end_warm:
        for key, _ in sel.select(0.05):
            key.data.feed()
    start_bytes = [v.bytes for v in vs]
    t0 = time.time()
    while time.time() < t0 + seconds:
        for key, _ in sel.select(0.05):
            key.data.feed()
    elapsed = time.time() - t0
    now_ns = time.time_ns()
    delivered = [v.bytes - b for v, b in zip(vs, start_bytes)]
    lag_ms = max((now_ns - v.last_ts) / 1e6 for v in vs)
    for v in vs:
        v.sock.close()
    return sum(delivered) / elapsed, min(delivered) / elapsed, lag_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--viewers", type=int, default=50)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rate", type=int, default=2_000_000, help="bytes per second the agent writes")
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install wrk nginx-light")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "agentbox"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="agentbox-bench-server-")
    os.chmod(work, 0o755)  # nginx's workers run as another user
    home = os.path.join(work, "home")
    env = dict(os.environ, AGENTBOX_HOME=home)
    ab = lambda *a: subprocess.run([BIN, *a], env=env, check=True, capture_output=True, text=True).stdout
    server = None
    stop_nginx = None
    try:
        ab("swarm", "idle", str(args.agents), "--", "sleep", "3600")
        server = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        url = server.stdout.readline().strip()
        token = open(os.path.join(home, "api-token")).read().strip()
        addr = url.removeprefix("http://")
        time.sleep(1)
        body = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {token}", url + "/api/v1/agents"],
                              check=True, capture_output=True).stdout
        assert len(json.loads(body)) == args.agents
        nginx_url, stop_nginx = nginx(work, body)
        # Interleaved: agentbox, nginx, agentbox, nginx; the better of each pair is reported.
        ours, ceiling = [], []
        for _ in range(2):
            ours.append(wrk(url + "/api/v1/agents", args.seconds, args.connections, token))
            ceiling.append(wrk(nginx_url, args.seconds, args.connections))
        (rps, p99), (nrps, np99) = max(ours), max(ceiling)
        print(f"list of {args.agents} agents ({len(body)} bytes), wrk -t2 -c{args.connections} -d{args.seconds}s:")
        print(f"  agentbox serve  {rps:10.0f} req/s  p99 {p99:7.2f} ms")
        print(f"  nginx (static)  {nrps:10.0f} req/s  p99 {np99:7.2f} ms")
        print(f"  ratio agentbox/nginx: {rps / nrps:.2f}   goal >= 20000 req/s: {'met' if rps >= 20000 else 'NOT met'}")

        # Fan-out: one agent writing timestamped lines as fast as its terminal takes them.
        # Paced at --rate: an agent faster than its slowest viewer would have that viewer dropped
        # (the supervisor disconnects a client more than 8 MiB behind rather than stall the agent).
        writer = ("import sys, time\n"
                  f"rate = {args.rate}\n"
                  "pad = '0' * 100\n"
                  "start = time.time(); sent = 0\n"
                  "while True:\n"
                  "    chunk = ''.join('T %d %s\\n' % (time.time_ns(), pad) for _ in range(64))\n"
                  "    sys.stdout.write(chunk); sent += len(chunk)\n"
                  "    ahead = sent / rate - (time.time() - start)\n"
                  "    if ahead > 0: time.sleep(ahead)\n")
        ab("spawn", "writer", "--", "python3", "-u", "-c", writer)
        time.sleep(0.5)
        one_total, _, one_lag = fan_out(addr, token, "writer", 1, args.seconds)
        total, slowest, lag = fan_out(addr, token, "writer", args.viewers, args.seconds)
        print(f"terminal fan-out, one agent writing {args.rate / 1e6:.1f} MB/s continuously, {args.seconds}s:")
        print(f"  1 viewer        {one_total / 1e6:8.2f} MB/s delivered, lag {one_lag:7.1f} ms")
        print(f"  {args.viewers} viewers      {total / 1e6:8.2f} MB/s delivered in all, slowest viewer "
              f"{slowest / 1e6:.2f} MB/s, lag of the slowest {lag:7.1f} ms")
        print(f"  per-viewer rate with {args.viewers} viewers / alone: {slowest / one_total:.2f}")
    finally:
        if stop_nginx:
            stop_nginx()
        if server:
            server.kill()
        subprocess.run([BIN, "purge", "--force"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
