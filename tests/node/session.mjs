// The dashboard's session stays with its server: sign in on one loopback port, then visit a
// server on another port of the same host (a dev server an agent started); it must receive no
// credential. Usage: node session.mjs URL TOKEN OTHER_URL   (prints one line per step)
import { chromium } from "playwright-core";

const [url, token, other] = process.argv.slice(2);
const step = (s) => console.log("step: " + s);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const urls = [];
  page.on("request", (r) => urls.push(r.url()));
  await page.goto(url + "/login");
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForURL(url + "/");
  await page.waitForSelector("table#agents");
  step("signed in");
  await page.goto(url + "/grid");
  await page.waitForSelector("h1:has-text('Running agents')");
  await page.reload();
  await page.waitForSelector("h1:has-text('Running agents')");
  step("pages load by URL and on reload");
  const cookies = await context.cookies();
  if (cookies.length) throw new Error("the server set cookies: " + JSON.stringify(cookies));
  step("no cookie was set");
  // The other server: a page there, and requests from it to itself.
  await page.goto(other + "/page");
  await page.evaluate(async () => { await fetch("/fetched", { credentials: "include" }); });
  const theirs = await page.evaluate(() => JSON.stringify(localStorage));
  if (theirs.includes("abs1.")) throw new Error("the other origin sees the session: " + theirs);
  step("visited the other port");
  for (const u of urls) if (u.includes(token) || u.includes("abs1.")) throw new Error("a credential in a URL: " + u);
  step("no credential in any URL");
  console.log("ok");
} catch (e) {
  console.log("FAILED: " + (e && e.stack ? e.stack : e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
