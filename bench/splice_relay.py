#!/usr/bin/env python3
"""The reference for the tunnelled path in bench/proxy.py: the least a relay can do. It accepts
on 127.0.0.1, connects to 127.0.0.1:UPSTREAM_PORT, and moves each direction's bytes with
splice(2) through a 1 MiB pipe on a thread of its own, blocking, with no policy, no audit and no
sandbox. What it costs against the direct path is what a second loopback hop costs on this
machine; the proxy's tunnel is measured against it in the same rounds.

Usage: bench/splice_relay.py UPSTREAM_PORT      Prints the port it listens on.
"""
import fcntl, os, socket, sys, threading


F_SETPIPE_SZ = 1031


def pump(src, dst):
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # the default 64 KiB pipe still works
    try:
        while True:
            n = os.splice(src.fileno(), w, 1 << 20)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dst.fileno(), n)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    upstream = int(sys.argv[1])
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        try:
            up = socket.create_connection(("127.0.0.1", upstream))
        except OSError:
            client.close()
            continue
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, client), daemon=True).start()


if __name__ == "__main__":
    main()
