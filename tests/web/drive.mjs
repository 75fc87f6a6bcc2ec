// drive.mjs: open the mnist-edge demo in headless Chromium (playwright-core), draw known digits with the
// mouse, read what the page shows under fp32 and int8, save a screenshot; print one JSON document.
//
//   node tests/web/drive.mjs --url http://127.0.0.1:PORT/ --screenshot out.png [--chromium /usr/bin/chromium]
//
// playwright-core is a devDependency of examples/web (npm ci there); Playwright's own browser download is
// not used: Debian's chromium is launched from its path. Run by tests/test_web_demo.py.

import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(join(ROOT, "examples/web/package.json"));
const { chromium } = require("playwright-core");

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    screenshot: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    timeout: { type: "string", default: "45000" },
  },
});
if (!args.url || !args.screenshot) {
  console.error("usage: node drive.mjs --url URL --screenshot PATH [--chromium PATH]");
  process.exit(2);
}

// Strokes in pad coordinates (0..1 each way), drawn the way a person writes these digits.
const line = (...points) => points;
const ellipse = (cx, cy, rx, ry, from = -100, to = 275, n = 48) =>
  Array.from({ length: n + 1 }, (_, i) => {
    const a = ((from + ((to - from) * i) / n) * Math.PI) / 180;
    return [cx + rx * Math.cos(a), cy + ry * Math.sin(a)];
  });
const DIGITS = [
  { digit: 1, strokes: [line([0.47, 0.17], [0.53, 0.15], [0.51, 0.5], [0.49, 0.86])] },
  { digit: 0, strokes: [ellipse(0.5, 0.5, 0.21, 0.33)] },
  { digit: 7, strokes: [line([0.27, 0.2], [0.73, 0.19], [0.58, 0.45], [0.45, 0.86])] },
  { digit: 4, strokes: [line([0.58, 0.14], [0.26, 0.6], [0.76, 0.6]), line([0.62, 0.38], [0.6, 0.88])] },
];

async function drawStrokes(page, strokes) {
  const box = await page.locator("#pad").boundingBox();
  const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
  for (const stroke of strokes) {
    const [x0, y0] = at(stroke[0]);
    await page.mouse.move(x0, y0);
    await page.mouse.down();
    for (const p of stroke.slice(1)) {
      const [x, y] = at(p);
      await page.mouse.move(x, y, { steps: stroke.length > 8 ? 2 : 12 });
    }
    await page.mouse.up();
  }
}

// What a person sees: the label, the bars, the latency cards; plus the page's own state for cross-checks.
async function readPage(page) {
  await page.evaluate(() => window.mnistEdge.idle());
  return page.evaluate(() => {
    const text = (sel) => document.querySelector(sel)?.textContent.trim();
    const lat = (p) => ({
      text: text(`#lat-${p} .lat-ms`),
      median_ms: Number(document.getElementById(`lat-${p}`).dataset.medianMs),
      note: text(`#lat-${p} .lat-note`),
    });
    const s = window.mnistEdge.state;
    return {
      label: text("#label"),
      confidence: text("#confidence"),
      bars: Array.from(document.querySelectorAll(".bar"), (b) => Number(b.dataset.probability)),
      top_bar: Array.from(document.querySelectorAll(".bar")).findIndex((b) => b.classList.contains("best")),
      precision_checked: document.querySelector('.switch [aria-checked="true"]')?.dataset.precision,
      state_label: s.result?.label ?? null,
      state_precision: s.result?.precision ?? null,
      runs: s.runs,
      latency: { fp32: lat("fp32"), int8: lat("int8") },
    };
  });
}

const profile = mkdtempSync(join(tmpdir(), "mnist-edge-chromium-"));
const result = { url: args.url, requests: [], console_errors: [], page_errors: [], digits: [] };
let browser;
try {
  // Playwright starts Chromium with its own fresh profile directory; the flags keep Chromium off the
  // network (this machine's is closed) and out of first-run work.
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    timeout: Number(args.timeout),
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
    env: { ...process.env, HOME: profile, XDG_CONFIG_HOME: profile, XDG_CACHE_HOME: profile },
  });
  result.browser = browser.version();
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(Number(args.timeout));
  page.on("request", (r) => result.requests.push(r.url()));
  page.on("console", (m) => { if (m.type() === "error") result.console_errors.push(m.text()); });
  page.on("pageerror", (e) => result.page_errors.push(String(e)));

  await page.goto(args.url);
  await page.waitForFunction(() => window.mnistEdge?.state.ready || window.mnistEdge?.state.error);
  result.page_error = await page.evaluate(() => window.mnistEdge.state.error);
  if (result.page_error) throw new Error(`the page reports: ${result.page_error}`);
  result.cross_origin_isolated = await page.evaluate(() => window.crossOriginIsolated);
  result.initial = await readPage(page);
  result.about = await page.locator("#about").textContent();
  result.status = await page.locator("#status").textContent();

  for (const { digit, strokes } of DIGITS) {
    await page.click("#use-fp32");
    await page.click("#clear");
    const before = await readPage(page);
    await drawStrokes(page, strokes);
    const fp32 = await readPage(page);
    await page.click("#use-int8");
    const int8 = await readPage(page);
    await page.click("#use-fp32");
    result.digits.push({ digit, fp32, int8, inferences_while_drawing: fp32.runs - before.runs });
  }
  // Both models side by side on the last drawing (the page's compare button), then the screenshot:
  // the last digit, fp32 selected, both latencies measured alike.
  await page.click("#compare");
  await page.waitForFunction(() => !document.getElementById("compare").disabled);
  await page.mouse.move(0, 0); // no hover effects in the picture
  result.final = await readPage(page);
  await page.screenshot({ path: args.screenshot, fullPage: true });
  result.screenshot = args.screenshot;
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result, null, 2) + "\n");
process.exit(result.error ? 1 : 0);
