// Drives the bot sandbox of a running dev runner in headless Chromium, as a
// person would: /start -> promo code -> buy -> pay on the mock checkout ->
// the notification and the balance -> a spend through the API -> the
// balance drops. Run by tests/browser.rs, which starts the runner and reads
// the exit code; screenshots of each step go to SCREENSHOT_DIR.
//
// Env: BASE_URL, SERVICE_KEY, PROMO, SCREENSHOT_DIR, CHROMIUM (optional).

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.BASE_URL;
const serviceKey = process.env.SERVICE_KEY;
const promo = process.env.PROMO;
const shots = process.env.SCREENSHOT_DIR;
const USER = 1001;
const STEP_TIMEOUT = 15_000;

if (!base || !serviceKey || !promo || !shots) {
  console.error("BASE_URL, SERVICE_KEY, PROMO and SCREENSHOT_DIR must be set");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Without the background-networking flags Chromium tries to reach
  // Google's services, and on a closed network its connections are refused.
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let step = 0;
let page;

async function shot(target, name) {
  step += 1;
  const file = join(shots, `${String(step).padStart(2, "0")}-${name}.png`);
  await target.screenshot({ path: file });
  console.log(`screenshot ${file}`);
}

// The newest bot message containing `text`.
function botMessage(text) {
  return page.locator(".message.bot", { hasText: text }).last();
}

async function send(text) {
  await page.fill("#text", text);
  await page.click("#send");
}

async function press(message, label) {
  await message.getByRole("button", { name: label }).click();
}

async function spend(tokens) {
  const response = await fetch(`${base}/v1/spend`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${serviceKey}`,
      "Idempotency-Key": `browser-test-${Date.now()}`,
      "Content-Type": "application/json",
    },
    body: JSON.stringify({ user_id: USER, tokens, description: "browser test" }),
  });
  const body = await response.json();
  if (response.status !== 200) throw new Error(`spend answered ${response.status}: ${JSON.stringify(body)}`);
  return body;
}

try {
  const context = await browser.newContext({ viewport: { width: 900, height: 1000 } });
  context.setDefaultTimeout(STEP_TIMEOUT);
  page = await context.newPage();
  page.on("pageerror", (err) => console.error(`page error: ${err}`));
  await page.goto(`${base}/sandbox?user=${USER}&name=Ann`);
  await page.waitForSelector("text=No messages yet");

  await send("/start");
  const menu = botMessage("Hello, Ann");
  await menu.waitFor();
  await shot(page, "start");

  await press(menu, "Enter promo code");
  await botMessage("Send the promo code").waitFor();
  await send(promo);
  const accepted = botMessage(`Promo code ${promo} accepted`);
  await accepted.waitFor();
  await shot(page, "promo");

  await press(accepted, "Menu");
  await press(botMessage("Hello, Ann"), "Buy tokens");
  const catalog = botMessage("Choose a pack");
  await press(catalog, "100 tokens");
  const tariff = botMessage(`Promo code ${promo}`);
  await tariff.waitFor();
  await shot(page, "tariff");
  await press(tariff, "Pay by card");
  const invoice = botMessage("79.20 ₽");
  await invoice.waitFor();
  await shot(page, "invoice");

  // "Go to payment" opens the mock provider's checkout in a new tab.
  const [checkout] = await Promise.all([
    context.waitForEvent("page"),
    invoice.getByRole("link", { name: /Go to payment/ }).click(),
  ]);
  await checkout.waitForLoadState();
  const amount = await checkout.textContent("#amount");
  if (!amount.includes("79.2")) throw new Error(`the checkout asks for ${amount}`);
  await shot(checkout, "checkout");
  await checkout.click("#pay");
  await checkout.waitForSelector("text=Payment succeeded");
  await shot(checkout, "paid");
  await checkout.close();

  // The notifier's message arrives through SQS.
  await botMessage("Payment received").waitFor();
  await send("/balance");
  await page.locator(".message.bot", { hasText: "Available: 100" }).last().waitFor();
  await shot(page, "notified");

  const spent = await spend(30);
  console.log(`spent 30 tokens: ${JSON.stringify(spent)}`);
  if (spent.balance_after !== null && spent.balance_after !== 70) {
    throw new Error(`balance after the spend is ${spent.balance_after}, not 70`);
  }
  await send("/balance");
  await page.locator(".message.bot", { hasText: "Available: 70" }).last().waitFor();
  await shot(page, "after-spend");
  console.log("sandbox purchase: ok");
} catch (err) {
  console.error(`sandbox purchase failed at step ${step + 1}: ${err.stack || err}`);
  if (page) await page.screenshot({ path: join(shots, "failure.png") }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
