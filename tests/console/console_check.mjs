// Drives the finstream web console in Debian's headless Chromium, as a person would:
// reads what is rendered on each page, uses the topic browser's form, checks that
// hostile values show as text and never run, and takes screenshots.
//
// usage: node console_check.mjs BASE_URL SCREENSHOT_DIR TOPIC GROUP
// Exits non-zero with the failed check on stderr.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, shots, topic, group] = process.argv.slice(2);
if (!base || !shots || !topic || !group) {
  console.error("usage: node console_check.mjs BASE_URL SCREENSHOT_DIR TOPIC GROUP");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const offSite = [];
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("request", (r) => {
    if (!r.url().startsWith(base)) offSite.push(r.url());
  });
  page.on("pageerror", (e) => errors.push(String(e)));

  // Overview: the charts draw from /api/series and fill as samples arrive.
  await page.goto(`${base}/`);
  check((await page.textContent("nav")).includes("Dead letters"), "navigation bar");
  await page.waitForSelector("#chart-produced canvas", { timeout: 15000 });
  await page.waitForFunction(
    () => Number(document.getElementById("chart-lag").dataset.points) >= 3,
    null,
    { timeout: 30000 }
  );
  for (const id of ["chart-produced", "chart-loaded", "chart-lag", "chart-latency"]) {
    check((await page.locator(`#${id} canvas`).count()) === 1, `${id} has a uPlot canvas`);
  }
  check((await page.textContent("#topics")).includes(topic), "overview lists the topic");
  await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });

  // Topic browser: newest records; hostile values show as text and never run.
  await page.click(`#topics a[href="/topics/${topic}"]`);
  await page.waitForSelector("#messages");
  const messages = await page.textContent("#messages");
  check(messages.includes("<script>window.__xss=1</script>"), "a <script> description shows as text");
  check(messages.includes('<img src=x onerror="window.__xss=2">'), "an <img> key shows as text");
  check((await page.locator("#messages script, #messages img").count()) === 0, "no element was injected");
  check((await page.evaluate(() => window.__xss)) === undefined, "no injected code ran");
  check(/"description": /.test(messages), "JSON values are pretty-printed");
  check(messages.includes("source_line="), "headers are shown");
  await page.screenshot({ path: join(shots, "topic.png"), fullPage: true });

  // The form: partition 0 from offset 1, two records.
  await page.fill("#browse input[name=offset]", "1");
  await page.fill("#browse input[name=limit]", "2");
  await Promise.all([page.waitForNavigation(), page.click("#browse button")]);
  check(page.url().includes("offset=1"), "the form asks for offset 1");
  const offsets = await page.$$eval("#messages tr td:first-child", (tds) => tds.map((t) => t.textContent));
  check(JSON.stringify(offsets) === JSON.stringify(["1", "2"]), `offsets 1 and 2 shown (${offsets})`);

  // Dead letters of both sides in one view.
  await page.goto(`${base}/dead-letters`);
  const dead = await page.textContent("#dead-letters");
  check(dead.includes("producer") && dead.includes("consumer"), "dead letters of the producer and the consumer");
  check(/\.csv:\d+/.test(dead), "a bad row's file:line");
  check(dead.includes(`${topic}/0/`), "a poison message's topic/partition/offset");
  check(dead.includes("<svg onload=window.__xss=3>"), "a poison message's raw value shows as text");
  check((await page.evaluate(() => window.__xss)) === undefined, "no injected code ran on the dead letters");
  await page.screenshot({ path: join(shots, "dead-letters.png"), fullPage: true });

  // Consumer groups with lag per partition.
  await page.goto(`${base}/groups`);
  const groups = await page.textContent("#groups");
  check(groups.includes(group), `group ${group} is listed`);
  check((await page.locator("#groups td.lag").count()) >= 1, "lag per partition");
  await page.screenshot({ path: join(shots, "groups.png"), fullPage: true });

  check(offSite.length === 0, `nothing loaded from elsewhere (${offSite})`);
  check(errors.length === 0, `no script errors (${errors})`);
} finally {
  await browser.close();
}
