// Drives the dashboard in headless chromium the way a person would: sign in, create an agent
// from the form, watch its output in the terminal, type into it, use the grid, kill it.
// Usage: node dashboard.mjs URL TOKEN NAME   (CHROMIUM: the browser binary, default /usr/bin/chromium)
// Prints one line per step; exits non-zero on the first failure.
import { chromium } from "playwright-core";

const [url, token, name] = process.argv.slice(2);
const step = (s) => console.log("step: " + s);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Chromium's own sandbox needs user namespaces it is not given as root in CI.
  args: ["--no-sandbox"],
});
const terminalText = (page) =>
  page.evaluate(() => {
    const b = window.agentboxTerminal.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines.join("\n");
  });
const waitTerminal = (page, needle) =>
  page.waitForFunction(
    (n) => {
      const t = window.agentboxTerminal;
      if (!t) return false;
      const b = t.buffer.active;
      for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true).includes(n)) return true;
      return false;
    },
    needle,
    { timeout: 20000 },
  );
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(url + "/");
  await page.waitForURL(url + "/login");
  step("login page");
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForURL(url + "/");
  step("signed in");

  await page.fill("form#spawn input[name=name]", name);
  await page.fill("form#spawn input[name=memory]", "512M");
  await page.click("form#spawn button[type=submit]");
  await page.waitForURL(url + "/agents/" + name, { timeout: 20000 });
  step("created " + name);

  await page.waitForFunction(() => window.agentboxTerminal !== undefined);
  await page.waitForSelector("#terminal-status:has-text('connected')");
  await page.click("#terminal");
  await page.keyboard.type("echo $((6*7))-typed");
  await page.keyboard.press("Enter");
  await waitTerminal(page, "42-typed");
  step("typed into the terminal and saw the output");

  await page.fill("form.send input[name=text]", "echo $((40+2))-sent");
  await page.click("form.send button[type=submit]");
  await waitTerminal(page, "42-sent");
  step("sent text with the form");

  await page.waitForSelector("pre.logs:has-text('42-typed')", { timeout: 20000 });
  step("logs show the output");

  const list = await context.newPage();
  await list.goto(url + "/");
  await list.waitForSelector(`tr[data-agent='${name}'] td.state[data-state=running]`, { timeout: 20000 });
  step("listed as running");
  await list.goto(url + "/grid");
  await list.waitForSelector(`figure.thumb pre.screen:has-text('42-sent')`, { timeout: 20000 });
  step("grid thumbnail shows the screen");

  page.on("dialog", (d) => d.accept());
  await page.click("button:has-text('Kill')");
  await page.waitForSelector("#terminal-status:has-text('exited')", { timeout: 20000 });
  step("killed; the terminal says it exited");
  await list.goto(url + "/");
  await list.waitForSelector(`tr[data-agent='${name}'] td.state[data-state=killed]`, { timeout: 20000 });
  step("listed as killed");
  if (errors.length) throw new Error("browser errors: " + errors.join("; "));
  console.log("terminal:\n" + (await terminalText(page)));
  console.log("ok");
} catch (e) {
  console.log("FAILED: " + (e && e.stack ? e.stack : e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
