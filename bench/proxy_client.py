"""Runs inside a sandbox for bench/proxy.py: N HTTPS requests, each on a new connection, then one
bulk download; prints JSON. Mode `direct` connects to the server itself; `proxy` goes through the
sandbox's egress proxy with CONNECT (whether the proxy tunnels or intercepts is its decision)."""
import json, os, socket, ssl, sys, time

mode, host, port, n, size, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ctx = ssl.create_default_context(cafile=cafile)
key = os.environ.get("BENCH_KEY", "none")


def open_tls():
    if mode == "direct":
        sock = socket.create_connection(("127.0.0.1", port))
    else:
        sock = socket.create_connection(("127.0.0.1", 3128))
        sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit("proxy closed the connection")
            head += chunk
        if b" 200 " not in head.split(b"\r\n")[0]:
            raise SystemExit(head.decode(errors="replace"))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(sock, server_hostname=host)


def get(path):
    s = open_tls()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n".encode())
    total = 0
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    s.close()
    return total


lat = []
for _ in range(n):
    t = time.perf_counter()
    get("/echo")
    lat.append(time.perf_counter() - t)
t = time.perf_counter()
got = get(f"/bytes/{size}")
secs = time.perf_counter() - t
print(json.dumps({"lat": lat, "mbps": got / secs / 1e6, "bytes": got}))
