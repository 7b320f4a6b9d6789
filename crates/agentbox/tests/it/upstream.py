#!/usr/bin/env python3
"""A stand-in for the servers agents talk to (a model provider, a git host), for the egress
tests and benchmarks. It serves HTTPS (or HTTP with --plain) on 127.0.0.1 and prints its port.

  GET|POST /echo      answers {"ok": true} and appends the request's headers to --log (the
                      sandbox never sees them: a real provider does not echo keys back)
  GET /bytes/N        N bytes of data
  POST /v1/responses  a minimal streamed OpenAI Responses API reply (for agent CLIs)
  POST /v1/oauth/token an OAuth token endpoint: a refresh with the current refresh token
                      (real-refresh-0 at first) gets real-access-N and real-refresh-N; the
                      request's body is logged
  /git/...            git http-backend over --git-root; with --token, Basic auth whose password
                      must equal the token (what a git host does with a personal access token)
"""
import argparse
import base64
import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
LOG_LOCK = threading.Lock()
# The OAuth stand-in's state: the refresh token it accepts now, and how many it issued.
OAUTH = {"refresh": "real-refresh-0", "n": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Like production servers: a response written in several pieces is not held back by Nagle.
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def record(self, body_len, body=None):
        if not ARGS.log:
            return
        entry = {
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host", ""),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": body_len,
        }
        if body is not None:
            entry["body"] = body.decode(errors="replace")
        with LOG_LOCK, open(ARGS.log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, code, data, ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def route(self):
        if self.path.startswith("/git/"):
            return self.git()
        data = self.body()
        if self.path.startswith("/v1/oauth/token"):
            self.record(len(data), data)
            return self.oauth_token(data)
        self.record(len(data))
        if self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[: min(n, len(chunk))])
                n -= len(chunk)
            return
        if self.path.startswith("/v1/responses"):
            return self.openai_responses()
        self.send(200, b'{"ok": true}\n')

    def oauth_token(self, data):
        try:
            given = json.loads(data).get("refresh_token", "")
        except ValueError:
            given = ""
        with LOG_LOCK:
            if given != OAUTH["refresh"]:
                body = {"error": "invalid_grant", "error_description": f"refresh token {given} is not valid"}
                return self.send(400, json.dumps(body).encode())
            OAUTH["n"] += 1
            n = OAUTH["n"]
            OAUTH["refresh"] = f"real-refresh-{n}"
        body = {"access_token": f"real-access-{n}", "refresh_token": f"real-refresh-{n}",
                "expires_in": 3600, "token_type": "Bearer"}
        self.send(200, json.dumps(body).encode())

    def openai_responses(self):
        events = [
            ("response.created", {"type": "response.created", "response": {"id": "resp_1"}}),
            ("response.output_item.done", {"type": "response.output_item.done", "item": {
                "type": "message", "role": "assistant", "id": "msg_1",
                "content": [{"type": "output_text", "text": "hello from the local provider"}]}}),
            ("response.completed", {"type": "response.completed", "response": {
                "id": "resp_1", "usage": {"input_tokens": 1, "input_tokens_details": None,
                "output_tokens": 1, "output_tokens_details": None, "total_tokens": 2}}}),
        ]
        out = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()
        self.send(200, out, "text/event-stream")

    def git(self):
        if ARGS.token:
            auth = self.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                user_pass = base64.b64decode(auth[6:]).decode(errors="replace")
                ok = user_pass.split(":", 1)[-1] == ARGS.token
            self.record(0)
            if not ok:
                return self.send(401, b"bad credentials\n", "text/plain",
                                 [("WWW-Authenticate", 'Basic realm="git"')])
        path, _, query = self.path[len("/git"):].partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=ARGS.git_root, GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD=self.command,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), REMOTE_USER="agent",
                   REMOTE_ADDR="127.0.0.1")
        data = self.body()
        if self.headers.get("Content-Length"):
            env["CONTENT_LENGTH"] = str(len(data))
        out = subprocess.run(["git", "http-backend"], input=data, env=env, capture_output=True).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        code, headers = 200, []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            if k.lower() == "status":
                code = int(v.strip().split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--plain", action="store_true")
    p.add_argument("--log")
    p.add_argument("--git-root", default="/nonexistent")
    p.add_argument("--token")
    ARGS = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if not ARGS.plain:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
