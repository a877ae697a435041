// Captures Prometheus's own graph page with roomcast's key queries, in headless Chromium (the
// system's, through playwright-core). Run by scripts/metrics-screenshot, which starts the nodes,
// Prometheus and a load, and passes:
//   PROMETHEUS_URL       Prometheus (http://127.0.0.1:port)
//   ROOMCAST_CHROMIUM    the browser executable (/usr/bin/chromium)
//   ROOMCAST_SCREENSHOT  where to save the PNG
// Exits 0 once the page is saved with every graph drawn.

import { chromium } from "playwright-core";

const PROMETHEUS = need("PROMETHEUS_URL");
const CHROMIUM = need("ROOMCAST_CHROMIUM");
const SCREENSHOT = need("ROOMCAST_SCREENSHOT");

// The graphs, as in deploy/grafana/roomcast.json (rate windows of 10 s: scrapes every second).
const GRAPHS = [
  "sum by (node) (rate(roomcast_deliveries_total[10s]))",
  'histogram_quantile(0.99, sum by (le) (rate(roomcast_delivery_seconds_bucket[10s])))',
  "sum by (node) (roomcast_connections)",
  "sum by (recovered) (rate(roomcast_resumes_total[10s]))",
];

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set: run this through scripts/metrics-screenshot`);
    process.exit(2);
  }
  return value;
}

setTimeout(() => {
  console.error("metrics-screenshot.mjs: no end within 60 s");
  process.exit(1);
}, 60_000).unref();

const params = new URLSearchParams();
GRAPHS.forEach((expr, i) => {
  params.set(`g${i}.expr`, expr);
  params.set(`g${i}.tab`, "0");
  params.set(`g${i}.stacked`, "0");
  params.set(`g${i}.range_input`, "90s");
});

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${PROMETHEUS}/graph?${params}`);
  // One chart per query, each with a legend once its data arrived (Debian's prometheus serves
  // the classic UI, /classic/graph, whose charts are Rickshaw's).
  await page.waitForFunction(
    (n) => document.querySelectorAll(".rickshaw_legend li.line").length >= n,
    GRAPHS.length,
    { timeout: 30_000 },
  );
  // The page's navigation bar is fixed: in a full-page capture it would cover a chart.
  await page.addStyleTag({ content: ".navbar-fixed-top, .navbar { position: static !important; }" });
  await page.waitForTimeout(1000);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  console.log(`saved ${SCREENSHOT}`);
} finally {
  await browser.close();
}
