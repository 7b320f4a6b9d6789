"""E2B's own Python SDK (`e2b` from PyPI, unchanged) against `agentbox serve`.

Run with E2B_API_URL, E2B_SANDBOX_URL (both the server's URL) and E2B_API_KEY (its token).
Prints one line per step, then `ok`; exits non-zero on the first failure. Leaves one sandbox
running, tagged, with metadata run=<RUN>, whose id it prints as `kept: ID`.
"""
import hashlib
import os
import sys
import time

from e2b import CommandExitException, PtySize, Sandbox, SandboxQuery
from e2b.exceptions import FileNotFoundException, SandboxException

RUN = os.environ.get("RUN", "x")


def step(s):
    print("step:", s, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


sb = Sandbox.create(metadata={"run": RUN, "team": "web x"}, envs={"GREETING": "hello"}, timeout=120)
step("created " + sb.sandbox_id)

r = sb.commands.run('echo "$GREETING from $(pwd) as $(id -un)"; echo oops >&2')
check(r.stdout == "hello from /home/user as agent\n" and r.stderr == "oops\n" and r.exit_code == 0, repr(r))
r = sb.commands.run("echo $LOCAL; pwd", envs={"LOCAL": "only-here"}, cwd="/tmp")
check(r.stdout == "only-here\n/tmp\n", repr(r.stdout))
step("commands.run: stdout, stderr, env, cwd")
try:
    sb.commands.run("echo partial; exit 3")
    check(False, "exit 3 raised nothing")
except CommandExitException as e:
    check(e.exit_code == 3 and e.stdout == "partial\n", repr(e))
step("a failing command raises CommandExitException with its exit code")

h = sb.commands.run("cat", background=True, stdin=True)
sb.commands.send_stdin(h.pid, "one\n")
h.send_stdin("two\n")
check(any(p.pid == h.pid for p in sb.commands.list()), "the background command is not listed")
sb.commands.close_stdin(h.pid)
check(h.wait().stdout == "one\ntwo\n", "stdin did not arrive")
sleeper = sb.commands.run("sleep 600", background=True)
check(sleeper.kill(), "kill said no")
try:
    sleeper.wait()
    check(False, "a killed command ended well")
except CommandExitException as e:
    check(e.exit_code != 0, repr(e))
check(sb.commands.kill(999999) is False, "killing a missing process")
step("background command with stdin, then killed")

sb.files.write("notes/a.txt", "text")
check(sb.files.read("/home/user/notes/a.txt") == "text", "relative paths are from /home/user")
blob = bytes(range(256)) * 4
sb.files.write("/home/user/blob.bin", blob)
check(bytes(sb.files.read("/home/user/blob.bin", format="bytes")) == blob, "binary content changed")
big = os.urandom(50 << 20)
sb.files.write("/home/user/big.bin", big)
got = bytes(sb.files.read("/home/user/big.bin", format="bytes"))
check(hashlib.sha256(got).digest() == hashlib.sha256(big).digest(), "the 50 MB file changed")
names = sorted(e.name for e in sb.files.list("/home/user"))
check(names == ["big.bin", "blob.bin", "notes"], repr(names))
check(sb.files.exists("/home/user/blob.bin") and not sb.files.exists("/home/user/nope"), "exists")
check(sb.files.make_dir("/home/user/d/e") and not sb.files.make_dir("/home/user/d/e"), "make_dir")
check(sb.files.rename("/home/user/notes/a.txt", "/home/user/d/e/b.txt").path == "/home/user/d/e/b.txt", "rename")
sb.files.remove("/home/user/d")
check(not sb.files.exists("/home/user/d/e/b.txt"), "remove")
try:
    sb.files.read("/home/user/d/e/b.txt")
    check(False, "reading a removed file")
except FileNotFoundException:
    pass
step("files: write, read (text, binary, 50 MB), list, exists, make_dir, rename, remove")

w = sb.files.watch_dir("/home/user")
sb.files.write("/home/user/watched.txt", "x")
sb.files.remove("/home/user/blob.bin")
events = {(e.name, e.type.value) for e in w.get_new_events()}
check(("watched.txt", "create") in events and ("blob.bin", "remove") in events, repr(events))
sb.files.write("/home/user/watched.txt", "longer")
check(("watched.txt", "write") in {(e.name, e.type.value) for e in w.get_new_events()}, "no write event")
w.stop()
sb.files.write("/home/user/blob.bin", blob)
step("watch_dir: create, write and remove events")

# The code-interpreter flow agent frameworks use: write a program, run it, read what it wrote.
sb.files.write("/home/user/job.py", "import json\njson.dump({'sum': sum(range(10))}, open('out.json', 'w'))\nprint('done')\n")
r = sb.commands.run("python3 job.py")
check(r.stdout == "done\n", repr(r.stdout))
check(sb.files.read("out.json") == '{"sum": 45}', "the program's output file")
step("code interpreter: write a program, run it, read its output")

pty = sb.pty.create(size=PtySize(rows=24, cols=80))
sb.pty.resize(pty.pid, PtySize(rows=30, cols=100))
sb.pty.send_stdin(pty.pid, b"stty size; echo pty-$((6*7)); exit\n")
seen = []
check(pty.wait(on_pty=lambda d: seen.append(d)).exit_code == 0, "the terminal's shell failed")
shown = b"".join(seen)
check(b"30 100" in shown and b"pty-42" in shown, repr(shown[-300:]))
step("pty: create, send, resize")

listed = Sandbox.list(query=SandboxQuery(metadata={"run": RUN, "team": "web x"})).next_items()
check([s.sandbox_id for s in listed] == [sb.sandbox_id], repr(listed))
check(Sandbox.list(query=SandboxQuery(metadata={"run": "other"})).next_items() == [], "a filter that matches none")
info = sb.get_info()
check(info.metadata == {"run": RUN, "team": "web x"} and info.state.value == "running", repr(info))
step("Sandbox.list with a metadata filter, get_info")

counter = sb.commands.run("i=0; while :; do i=$((i+1)); echo $i > count; sleep 0.1; done", background=True)
time.sleep(0.5)
check(sb.pause(), "pause said no")
check(sb.pause() is False, "pausing a paused sandbox")
check(Sandbox.get_info(sb.sandbox_id).state.value == "paused", "not paused")
sb2 = Sandbox.connect(sb.sandbox_id)
check(sb2.get_info().state.value == "running", "not resumed")
check(sb2.files.read("/home/user/blob.bin", format="bytes") == blob, "files after resume")
before = int(sb2.files.read("count"))
time.sleep(0.5)
check(int(sb2.files.read("count")) > before, "the counter did not go on after resume")
check(any(p.pid == counter.pid for p in sb2.commands.list()), "the running process did not survive")
counter.kill()
step("pause and connect (resume): files and a running process survive")

sb2.files.write("/home/user/forked.txt", "before")
forks = sb2.fork(count=2, timeout=120)
check(len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks), repr(forks))
for f in forks:
    check(f.sandbox_id != sb2.sandbox_id, "a fork with its source's id")
    check(f.files.read("/home/user/forked.txt") == "before", "a fork without its source's files")
    check(f.commands.run("echo in-$((40+2))").stdout == "in-42\n", "a fork that runs nothing")
forks[0].files.write("/home/user/forked.txt", "changed in a fork")
check(sb2.files.read("/home/user/forked.txt") == "before", "a fork's write reached its source")
check(forks[1].files.read("/home/user/forked.txt") == "before", "a fork's write reached another fork")
check(sb2.get_info().state.value == "running", "the source was left paused")
step("fork: copies with the source's files, each its own")

snap = sb2.create_snapshot(name="my-snapshot")
check("my-snapshot" in snap.names, repr(snap))
check([s.snapshot_id for s in Sandbox.list_snapshots(sandbox_id=sb2.sandbox_id).next_items()] == [snap.snapshot_id], "the snapshot is not listed")
sb2.files.write("/home/user/forked.txt", "after the snapshot")
restored = Sandbox.create(snap.snapshot_id, metadata={"run": RUN + "-restored"})
check(restored.files.read("/home/user/forked.txt") == "before", "a sandbox from the snapshot without its files")
check(restored.get_info().metadata == {"run": RUN + "-restored"}, "metadata")
check(Sandbox.delete_snapshot(snap.snapshot_id) and not Sandbox.delete_snapshot(snap.snapshot_id), "delete, then again")
check(restored.files.read("/home/user/forked.txt") == "before", "deleting the snapshot took its sandbox's files")
step("snapshots: create, list, a sandbox from one, delete")

m = sb2.get_metrics()
check(len(m) == 1 and m[0].mem_used > 0 and m[0].mem_total >= m[0].mem_used and m[0].cpu_count >= 1 and m[0].disk_used > 0, repr(m))
step("get_metrics: a sample of CPU, memory and disk")
for f in forks + [restored]:
    f.kill()

short = Sandbox.create(metadata={"run": RUN + "-short"}, timeout=60)
short.set_timeout(1)
deadline = time.time() + 15
while Sandbox.list(query=SandboxQuery(metadata={"run": RUN + "-short"})).next_items():
    check(time.time() < deadline, "the sandbox outlived its timeout")
    time.sleep(0.5)
try:
    short.commands.run("true")
    check(False, "a command ran in an expired sandbox")
except SandboxException:
    pass
step("set_timeout: the sandbox is gone when it expires")

gone = Sandbox.create()
check(gone.kill() and gone.kill() is False, "kill, then kill again")
step("kill")
print("kept:", sb.sandbox_id)
print("ok")
