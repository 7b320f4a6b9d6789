// Drives the dashboard in headless chromium the way a person would: sign in, create an agent
// from the form, watch its output in the terminal, type into it, use the grid, kill it.
// Then, with an agent ASKER that waits on a y/N question: the list says it waits for you, the
// navigation counts it, the question is answered with its Yes button; an exited agent offers
// Restart and Remove (not Kill) and is removed; a missing agent is an HTML page; the pages fit a
// phone's width. Screenshots of each page at desktop and phone widths go to SHOTS (a directory).
// Usage: node dashboard.mjs URL TOKEN NAME ASKER   (CHROMIUM: the browser binary, default /usr/bin/chromium)
// Prints one line per step; exits non-zero on the first failure.
import { chromium } from "playwright-core";

const [url, token, name, asker] = process.argv.slice(2);
const shots = process.env.SHOTS;
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
  await page.fill("form#spawn input[name=tags]", "team=web");
  await page.fill("form#spawn textarea[name=prompt]", "echo $((5*5))-prompted");
  await page.click("form#spawn button[type=submit]");
  await page.waitForURL(url + "/agents/" + name, { timeout: 20000 });
  step("created " + name);

  await page.waitForFunction(() => window.agentboxTerminal !== undefined);
  await page.waitForSelector("#terminal-status:has-text('connected')");
  await waitTerminal(page, "25-prompted");
  step("the prompt from the form was typed in");
  // Opening the page did not resize the agent: the terminal is drawn at the agent's size.
  await page.fill("form.send input[name=text]", "stty size");
  await page.click("form.send button[type=submit]");
  await waitTerminal(page, "24 80");
  const before = await page.evaluate(() => [window.agentboxTerminal.rows, window.agentboxTerminal.cols]);
  if (before.join(" ") !== "24 80") throw new Error("the page drew the agent at " + before);
  step("opening the page left the agent's size alone");
  await page.click("#terminal");
  await page.waitForSelector("#terminal[data-holding]");
  await page.keyboard.type("echo $((6*7))-typed; stty size");
  await page.keyboard.press("Enter");
  await waitTerminal(page, "42-typed");
  const mine = await page.evaluate(() => window.agentboxTerminal.rows + " " + window.agentboxTerminal.cols);
  if (mine === "24 80") throw new Error("the terminal kept the agent's size after taking the keyboard");
  await waitTerminal(page, mine);
  step("typed into the terminal and saw the output; taking the keyboard gave the agent this size (" + mine + ")");

  await page.fill("form.send input[name=text]", "echo $((40+2))-sent");
  await page.click("form.send button[type=submit]");
  await waitTerminal(page, "42-sent");
  step("sent text with the form");

  await page.waitForSelector("pre.logs:has-text('42-typed')", { timeout: 20000 });
  step("logs show the output");

  // The workspace panel of an agent spawned from a directory (WORKSPACE): its changes are shown
  // before an apply; a checkpoint lists; apply writes; a fork from the checkpoint opens.
  const wsAgent = process.env.WORKSPACE;
  if (wsAgent) {
    const ws = await context.newPage();
    ws.on("dialog", (d) => d.accept());
    await ws.goto(url + "/agents/" + wsAgent);
    await ws.waitForSelector("#workspace li[data-change=M]:has-text('a.txt')", { timeout: 20000 });
    await ws.fill("form.checkpoint input[name=message]", "from the browser");
    await ws.click("form.checkpoint button[type=submit]");
    await ws.waitForSelector("table.checkpoints tr[data-checkpoint='1']:has-text('from the browser')", { timeout: 20000 });
    step("the workspace panel lists the changes and a new checkpoint");
    await ws.click("form.apply button[type=submit]");
    await ws.waitForSelector("#apply-result:has-text('written to')", { timeout: 20000 });
    step("apply from the panel wrote the changes");
    await ws.fill("tr[data-checkpoint='1'] input[name=name]", wsAgent + "-fork");
    await ws.click("tr[data-checkpoint='1'] form.inline button[type=submit]");
    await ws.waitForURL(url + "/agents/" + wsAgent + "-fork", { timeout: 20000 });
    step("forked from the checkpoint's row");
    await ws.close();
  }

  // An agent's web app (WEBAPP, listening on 3000): the Ports panel lists the port, and Open
  // shows the app in a new tab on an origin of its own, where the dashboard's session is not.
  const webApp = process.env.WEBAPP;
  if (webApp) {
    const wp = await context.newPage();
    await wp.goto(url + "/agents/" + webApp);
    await wp.waitForSelector("#ports li[data-port='3000'] button[data-open-port]", { timeout: 20000 });
    step("the ports panel lists the port the agent listens on");
    const [tab] = await Promise.all([
      context.waitForEvent("page", { timeout: 20000 }),
      wp.click("#ports li[data-port='3000'] button[data-open-port]"),
    ]);
    await tab.waitForSelector("h1:has-text('made by the agent')", { timeout: 20000 });
    const seen = await tab.evaluate(() => ({
      origin: location.origin,
      session: localStorage.getItem("agentbox_session"),
      cookie: document.cookie,
    }));
    const port = new URL(url).port;
    if (seen.origin !== "http://3000-" + webApp + ".localhost:" + port) throw new Error("opened at " + seen.origin);
    if (seen.session !== null) throw new Error("the app's origin holds the dashboard's session");
    if (seen.cookie.includes("agentbox")) throw new Error("the app's scripts read the grant: " + seen.cookie);
    step("Open showed the app on its own origin, without the dashboard's session");
    await tab.close();
    await wp.close();
  }

  const list = await context.newPage();
  await list.goto(url + "/");
  await list.waitForSelector(`tr[data-agent='${name}'] td.state[data-state=running]`, { timeout: 20000 });
  await list.waitForSelector(`tr[data-agent='${name}'] span.tag:has-text('team=web')`);
  step("listed as running, with its tag");
  // Search and the state filter narrow the list (and keep doing so as it refreshes).
  await list.fill("#filters input[name=q]", asker);
  await list.waitForFunction((n) => !document.querySelector(`tr[data-agent='${n}']`), name, { timeout: 10000 });
  await list.waitForSelector(`tr[data-agent='${asker}']`);
  await list.fill("#filters input[name=q]", "");
  await list.selectOption("#filters select[name=state]", "waiting");
  await list.waitForFunction((n) => !document.querySelector(`tr[data-agent='${n}']`), name, { timeout: 10000 });
  await list.waitForSelector(`tr[data-agent='${asker}'] td.state[data-state=waiting]`, { timeout: 30000 });
  await list.waitForTimeout(2500);
  if (await list.locator(`tr[data-agent='${name}']`).count()) throw new Error("the filter was lost on refresh");
  await list.selectOption("#filters select[name=state]", "");
  step("search and the state filter narrow the list");
  list.on("dialog", (d) => d.accept());
  // Bulk actions on ticked agents; the ticks survive the list's refresh.
  const bulk = (process.env.BULK || "").split(" ").filter(Boolean);
  if (bulk.length) {
    for (const b of bulk) await list.check(`tr[data-agent='${b}'] input.sel`);
    await list.waitForTimeout(2500);
    for (const b of bulk) {
      if (!(await list.isChecked(`tr[data-agent='${b}'] input.sel`))) throw new Error(b + " lost its tick on refresh");
    }
    // Pause from the bulk bar, resume from the row.
    await list.click("button.bulk-action[value=pause]");
    for (const b of bulk) {
      await list.waitForSelector(`tr[data-agent='${b}'] td.state[data-state=paused]`, { timeout: 20000 });
    }
    await list.click(`tr[data-agent='${bulk[0]}'] button:has-text('Resume')`);
    await list.waitForSelector(`tr[data-agent='${bulk[0]}'] td.state[data-state=running]`, { timeout: 20000 });
    step("paused from the bulk bar and resumed from the row");
    for (const b of bulk) await list.check(`tr[data-agent='${b}'] input.sel`);
    await list.click("button.bulk-action[value=stop]");
    await list.waitForSelector(`#bulk-result li[data-agent='${bulk[1]}']`, { timeout: 20000 });
    for (const b of bulk) {
      await list.waitForSelector(`tr[data-agent='${b}'] button:has-text('Remove')`, { timeout: 30000 });
    }
    await list.check("#sel-all");
    await list.click("button.bulk-action[value=remove]");
    await list.waitForSelector(`#bulk-result li.error`, { timeout: 20000 });
    for (const b of bulk) {
      await list.waitForFunction((n) => !document.querySelector(`tr[data-agent='${n}']`), b, { timeout: 20000 });
    }
    if (await list.locator(`tr[data-agent='${name}']`).count() !== 1) throw new Error("a running agent was removed");
    step("bulk stop and remove on ticked agents");
  }
  await list.goto(url + "/grid");
  await list.waitForSelector(`figure.thumb pre.screen:has-text('42-sent')`, { timeout: 20000 });
  await list.waitForSelector(`figure.thumb pre.screen span[style*='color:#']:has-text('Ship it?')`, { timeout: 20000 });
  step("grid thumbnail shows the screen, in colour");

  page.on("dialog", (d) => d.accept());
  await page.click("button:has-text('Kill')");
  await page.waitForSelector("#terminal-status:has-text('exited')", { timeout: 20000 });
  step("killed; the terminal says it exited");
  await list.goto(url + "/");
  await list.waitForSelector(`tr[data-agent='${name}'] td.state[data-state=killed]`, { timeout: 20000 });
  step("listed as killed");
  const shown = await terminalText(page);

  // An exited agent: Restart and Remove, no Kill or Send.
  const row = `tr[data-agent='${name}']`;
  await list.waitForSelector(`${row} button:has-text('Remove')`);
  if (await list.locator(`${row} button:has-text('Kill')`).count()) throw new Error("an exited agent offers Kill");
  await page.goto(url + "/agents/" + name);
  await page.waitForSelector(".actions button:has-text('Restart')");
  if (await page.locator("form.send").count()) throw new Error("an exited agent offers Send");
  step("an exited agent offers Restart and Remove only");

  // The agent that asks: waiting for you in the list, counted in the navigation.
  await list.goto(url + "/");
  await list.waitForSelector(`tr[data-agent='${asker}'] td.state[data-state=waiting]`, { timeout: 30000 });
  await list.waitForSelector("nav .count:has-text('1')", { timeout: 10000 });
  step("the asking agent is shown waiting for you, and counted");
  for (const [w, h, tag] of [[1280, 800, "desktop"], [390, 844, "phone"]]) {
    await list.setViewportSize({ width: w, height: h });
    for (const path of ["/", "/hitl", "/agents/" + asker, "/tasks", "/grid"]) {
      await list.goto(url + path);
      await list.waitForLoadState("networkidle");
      const over = await list.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (over > 1) throw new Error(`${path} is ${over}px wider than a ${w}px screen`);
      if (shots) await list.screenshot({ path: `${shots}/${tag}${path.replaceAll("/", "_") || "_"}.png`, fullPage: true });
    }
  }
  step("every page fits desktop and phone widths");
  await list.setViewportSize({ width: 1280, height: 800 });
  await list.goto(url + "/hitl");
  await list.click(`section.hitl button.choice:has-text('Yes')`);
  await list.waitForSelector("p.answered", { timeout: 20000 });
  step("answered with the Yes button");

  await list.goto(url + "/");
  await list.click(`${row} button:has-text('Remove')`);
  await list.waitForFunction((r) => !document.querySelector(r), row, { timeout: 20000 });
  step("removed from the list");
  await list.goto(url + "/agents/nope");
  await list.waitForSelector("h1:has-text('Not here')");
  // Opened by URL the page is the shell that loads it with the session; asked with the session
  // (as the shell does), it is a 404 in HTML.
  const session = await list.evaluate(() => localStorage.getItem("agentbox_session"));
  const missing = await list.request.get(url + "/agents/nope", { headers: { Authorization: "Bearer " + session } });
  const kind = missing.headers()["content-type"] || "";
  if (missing.status() !== 404 || !kind.startsWith("text/html")) {
    throw new Error(`a missing agent answered ${missing.status()} ${kind}`);
  }
  step("a missing agent is an HTML page");
  if (errors.length) throw new Error("browser errors: " + errors.join("; "));
  console.log("terminal:\n" + shown);
  console.log("ok");
} catch (e) {
  console.log("FAILED: " + (e && e.stack ? e.stack : e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
