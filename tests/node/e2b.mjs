// E2B's own JS SDK (`e2b` from npm, unchanged) against `agentbox serve`.
// Run with E2B_API_URL, E2B_SANDBOX_URL (both the server's URL) and E2B_API_KEY (its token).
// Prints one line per step, then `ok`; exits non-zero on the first failure.
import { Sandbox, CommandExitError } from "e2b";

const step = (s) => console.log("step: " + s);
const check = (cond, what) => {
  if (!cond) throw new Error(what);
};
const run = process.env.RUN || "js";

try {
  const sbx = await Sandbox.create({ metadata: { run }, envs: { GREETING: "hi" }, timeoutMs: 120000 });
  step("created " + sbx.sandboxId);
  const r = await sbx.commands.run('echo "$GREETING $(pwd)"; echo err >&2');
  check(r.stdout === "hi /home/user\n" && r.stderr === "err\n" && r.exitCode === 0, JSON.stringify(r));
  try {
    await sbx.commands.run("exit 7");
    check(false, "exit 7 threw nothing");
  } catch (e) {
    check(e instanceof CommandExitError && e.exitCode === 7, String(e));
  }
  step("commands.run, and CommandExitError for a failure");
  const bytes = new Uint8Array(1024).map((_, i) => i % 256);
  await sbx.files.write("/home/user/data.bin", bytes.buffer);
  const back = await sbx.files.read("/home/user/data.bin", { format: "bytes" });
  check(back.length === 1024 && back.every((b, i) => b === i % 256), "binary content changed");
  await sbx.files.write("t.txt", "text");
  check((await sbx.files.read("/home/user/t.txt")) === "text", "relative paths are from /home/user");
  const names = (await sbx.files.list("/home/user")).map((e) => e.name).sort();
  check(JSON.stringify(names) === JSON.stringify(["data.bin", "t.txt"]), JSON.stringify(names));
  check((await sbx.files.exists("t.txt")) && !(await sbx.files.exists("nope")), "exists");
  await sbx.files.makeDir("/home/user/d");
  await sbx.files.rename("/home/user/t.txt", "/home/user/d/t.txt");
  await sbx.files.remove("/home/user/d");
  check(!(await sbx.files.exists("/home/user/d")), "remove");
  step("files: write, read (text, binary), list, exists, makeDir, rename, remove");
  const seen = [];
  const watcher = await sbx.files.watchDir("/home/user", (e) => seen.push(e));
  await sbx.files.write("/home/user/watched.txt", "x");
  for (let i = 0; i < 50 && !seen.some((e) => e.name === "watched.txt"); i++) await new Promise((r) => setTimeout(r, 100));
  check(seen.some((e) => e.name === "watched.txt" && e.type === "create"), JSON.stringify(seen));
  await watcher.stop();
  step("watchDir streams a create event");
  const cat = await sbx.commands.run("cat", { background: true, stdin: true });
  await sbx.commands.sendStdin(cat.pid, "one\n");
  await sbx.commands.closeStdin(cat.pid);
  check((await cat.wait()).stdout === "one\n", "stdin did not arrive");
  const bg = await sbx.commands.run("sleep 600", { background: true });
  check(await bg.kill(), "kill said no");
  step("a background command with stdin; another, killed");
  const big = new Uint8Array(50 << 20);
  for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) % 251;
  await sbx.files.write("/home/user/big.bin", big.buffer);
  const bigBack = await sbx.files.read("/home/user/big.bin", { format: "bytes" });
  check(bigBack.length === big.length && bigBack.every((b, i) => b === big[i]), "the 50 MB file changed");
  step("a 50 MB file both ways");
  let shown = "";
  const term = await sbx.pty.create({ rows: 24, cols: 80, onData: (d) => (shown += new TextDecoder().decode(d)) });
  await sbx.pty.resize(term.pid, { rows: 30, cols: 100 });
  await sbx.pty.sendInput(term.pid, new TextEncoder().encode("stty size; echo pty-$((6*7)); exit\n"));
  await term.wait();
  check(shown.includes("30 100") && shown.includes("pty-42"), JSON.stringify(shown.slice(-300)));
  step("pty: create, send, resize");
  const counter = await sbx.commands.run("i=0; while :; do i=$((i+1)); echo $i > count; sleep 0.1; done", { background: true });
  await new Promise((r) => setTimeout(r, 500));
  await sbx.pause();
  check((await sbx.getInfo()).state === "paused", "not paused");
  const again = await Sandbox.connect(sbx.sandboxId);
  check((await again.getInfo()).state === "running", "not resumed");
  const before = Number(await again.files.read("count"));
  await new Promise((r) => setTimeout(r, 500));
  check(Number(await again.files.read("count")) > before, "the counter did not go on");
  await counter.kill();
  step("pause and connect: files and a running process survive");
  await again.files.write("/home/user/forked.txt", "before");
  const forks = await again.fork({ count: 2 });
  check(forks.length === 2 && forks.every((f) => f.sandboxId && f.sandboxId !== again.sandboxId), String(forks));
  await forks[0].files.write("/home/user/forked.txt", "changed in a fork");
  check((await forks[1].files.read("/home/user/forked.txt")) === "before", "a fork's write reached another");
  check((await again.files.read("/home/user/forked.txt")) === "before", "a fork's write reached its source");
  const snap = await again.createSnapshot({ name: "js-snapshot" });
  const fromSnap = await Sandbox.create(snap.snapshotId);
  check((await fromSnap.files.read("/home/user/forked.txt")) === "before", "a sandbox from the snapshot without its files");
  const metrics = await again.getMetrics();
  check(metrics.length === 1 && metrics[0].memUsed > 0 && metrics[0].cpuCount >= 1, JSON.stringify(metrics));
  check(await Sandbox.deleteSnapshot(snap.snapshotId), "deleteSnapshot");
  for (const f of [...forks, fromSnap]) await f.kill();
  step("fork, createSnapshot, a sandbox from it, getMetrics");
  const listed = await Sandbox.list({ query: { metadata: { run } } }).nextItems();
  check(listed.length === 1 && listed[0].sandboxId === sbx.sandboxId, JSON.stringify(listed));
  const info = await sbx.getInfo();
  check(info.metadata.run === run && info.state === "running", JSON.stringify(info));
  step("Sandbox.list with a metadata filter, getInfo");
  check(await sbx.kill(), "kill");
  check((await Sandbox.list({ query: { metadata: { run } } }).nextItems()).length === 0, "still listed after kill");
  const short = await Sandbox.create({ metadata: { run: run + "-short" } });
  await short.setTimeout(1000);
  const deadline = Date.now() + 15000;
  while ((await Sandbox.list({ query: { metadata: { run: run + "-short" } } }).nextItems()).length) {
    check(Date.now() < deadline, "the sandbox outlived its timeout");
    await new Promise((r) => setTimeout(r, 500));
  }
  step("kill; setTimeout: the sandbox is gone when it expires");
  console.log("ok");
} catch (e) {
  console.log("FAILED: " + (e && e.stack ? e.stack : e));
  process.exit(1);
}
