// Tasks and the HITL queue in headless chromium: submit a task from the form, see it wait for a
// person, answer it in the queue, see it complete with its artifact; cancel another task.
// Usage: node tasks.mjs URL TOKEN   (CHROMIUM: the browser binary, default /usr/bin/chromium)
// Prints one line per step; exits non-zero on the first failure.
import { chromium } from "playwright-core";

const [url, token] = process.argv.slice(2);
const step = (s) => console.log("step: " + s);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const asking = `version: "1"
metadata: {name: asks first}
agent:
  command: [sh, -c, 'printf "Ship it? [y/N] "; read a; echo "got $a" > /task/output/answer.txt']
lifecycle: {timeout: 5m}
`;
const forever = `version: "1"
metadata: {name: runs forever}
agent: {command: [sleep, "600"]}
`;
let page;
try {
  const context = await browser.newContext();
  page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url + "/login");
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForURL(url + "/");
  step("signed in");

  await page.click("nav a[href='/tasks']");
  await page.waitForURL(url + "/tasks");
  await page.fill("form#submit textarea[name=manifest]", "version: '1'\nagent: {command: [sh], promt: x}\n");
  await page.click("form#submit button[type=submit]");
  await page.waitForSelector("#submit-result p.error:has-text('agent.promt')");
  step("a bad manifest is refused with the field's path");
  await page.fill("form#submit textarea[name=manifest]", asking);
  await page.click("form#submit button[type=submit]");
  await page.waitForURL(/\/tasks\/[0-9a-f]{12}$/, { timeout: 20000 });
  const id = page.url().split("/").pop();
  await page.waitForSelector("b.state[data-state=running]", { timeout: 20000 });
  step("submitted " + id + " and it runs");

  const queue = await context.newPage();
  await queue.goto(url + "/hitl");
  await queue.waitForSelector("section.hitl p.prompt:has-text('Ship it? [y/N]')", { timeout: 20000 });
  step("the question is in the queue");
  await queue.fill("section.hitl form.answer input[name=text]", "y");
  await queue.click("section.hitl form.answer button[type=submit]");
  await queue.waitForSelector("p.answered", { timeout: 20000 });
  step("answered from the queue");

  await page.waitForSelector("b.state[data-state=completed]", { timeout: 30000 });
  const link = await page.waitForSelector("ul.artifacts a:has-text('answer.txt')");
  const href = await link.getAttribute("href");
  // The session lives in this origin's storage and travels in a header, never in a cookie.
  const session = await page.evaluate(() => localStorage.getItem("agentbox_session"));
  const body = await (await page.request.get(url + href, { headers: { Authorization: "Bearer " + session } })).text();
  if (body.trim() !== "got y") throw new Error("artifact says " + JSON.stringify(body));
  step("completed; the artifact holds the answer");

  await page.goto(url + "/tasks");
  await page.fill("form#submit textarea[name=manifest]", forever);
  await page.click("form#submit button[type=submit]");
  await page.waitForURL(/\/tasks\/[0-9a-f]{12}$/, { timeout: 20000 });
  await page.waitForSelector("b.state[data-state=running]", { timeout: 20000 });
  page.on("dialog", (d) => d.accept());
  await page.click("button:has-text('Cancel')");
  await page.waitForSelector("b.state[data-state=cancelled]", { timeout: 20000 });
  step("cancelled from the task page");
  await page.goto(url + "/tasks");
  await page.waitForSelector(`tr[data-task='${id}'] td.state[data-state=completed]`, { timeout: 20000 });
  step("listed as completed");
  if (errors.length) throw new Error("browser errors: " + errors.join("; "));
  console.log("ok");
} catch (e) {
  console.log("FAILED: " + (e && e.stack ? e.stack : e));
  // What the page showed: the task's state, reason and journal say why it did not move on.
  const shown = page && (await page.locator("main").innerText().catch(() => ""));
  if (shown) console.log("page " + page.url() + ":\n" + shown);
  process.exitCode = 1;
} finally {
  await browser.close();
}
