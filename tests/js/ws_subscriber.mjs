// ethers v6, a real JavaScript client, subscribed over a WebSocket; for tests/harness/ethers.py.
//
//   node tests/js/ws_subscriber.mjs '{"url": "ws://127.0.0.1:8545/devnet", "chainId": 31337,
//     "blocks": true, "logs": {"address": "0x...", "topics": ["0x..."]}, "events": 20,
//     "seconds": 30}'
//
// Subscribes through ethers' public API only: provider.on("block") (eth_subscribe newHeads),
// provider.on(filter) (eth_subscribe logs) and, for each log received, provider.once(
// log.removedEvent()) (ethers' way to hear that a log was dropped by a reorg; ethers 6.17
// never calls it: the tag it files the listener under is not the one it emits a removed
// log under; a removed log goes to neither listener). Prints one JSON object per line on
// stdout:
//   {"kind": "ready", "subscriptions": [id, ...]}  every eth_subscribe was answered
//   {"kind": "block", "number": n}                 ethers' block event (a number only)
//   {"kind": "log", ...log}                        ethers' Log, as its toJSON gives it
//   {"kind": "orphan", ...log}                     a log ethers says was removed
//   {"kind": "frame", "subscription": id, "result": {...}}  each eth_subscription message
//                                                  as it came over the socket (header hashes)
//   {"kind": "error", "message": "..."}            a failed eth_subscribe, a socket error
//   {"kind": "done", "reason": "..."}              last line: events, seconds, stdin, closed
// It stops after `events` block/log/orphan events, after `seconds`, or when stdin closes.
// ethers comes from $RPCGATE_JS_MODULES (default: .tools/js/node_modules, where
// scripts/test installs tests/js/package.json). DEBUG_ETHERS=1 prints ethers' debug events
// (each request and answer) on stderr.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules =
  process.env.RPCGATE_JS_MODULES ?? path.join(here, "..", "..", ".tools", "js", "node_modules");
const { WebSocketProvider } = createRequire(path.join(modules, "noop.js"))("ethers");

const options = JSON.parse(process.argv[2] ?? "{}");
const maxEvents = options.events ?? Infinity;
const seconds = options.seconds ?? 30;

function print(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

// The chain id is given, not detected: ethers v6 crashes ("network is not available yet")
// on a log that arrives in the same socket read as the answer to its eth_chainId.
const provider = new WebSocketProvider(options.url, options.chainId);
let events = 0;
let finished = false;

async function finish(reason) {
  if (finished) return;
  finished = true;
  print({ kind: "done", reason });
  try {
    await provider.destroy();
  } catch {
    // already closed
  }
  process.exit(0);
}

function counted(line) {
  print(line);
  events += 1;
  if (events >= maxEvents) finish("events");
}

// The raw socket, beside ethers' own handlers: ethers' block event carries a number only,
// and the test compares hashes. Outgoing eth_subscribe ids are noted to know when every
// subscription is in place ("ready").
const socket = provider.websocket;
const subscribeIds = new Set();
const subscriptions = [];
const wanted = (options.blocks ? 1 : 0) + (options.logs ? 1 : 0);
const send = socket.send.bind(socket);
socket.send = (data, ...rest) => {
  const request = JSON.parse(data);
  if (request.method === "eth_subscribe") subscribeIds.add(request.id);
  return send(data, ...rest);
};
socket.addEventListener("message", (message) => {
  const body = JSON.parse(message.data);
  for (const item of Array.isArray(body) ? body : [body]) {
    if (item.method === "eth_subscription") {
      print({ kind: "frame", subscription: item.params.subscription, result: item.params.result });
    } else if (subscribeIds.has(item.id)) {
      if (item.error) {
        print({ kind: "error", message: `eth_subscribe: ${JSON.stringify(item.error)}` });
      } else {
        subscriptions.push(item.result);
        if (subscriptions.length === wanted) print({ kind: "ready", subscriptions });
      }
    }
  }
});
socket.addEventListener("close", () => finish("closed"));
const printError = (error) => print({ kind: "error", message: String(error.message ?? error) });
socket.addEventListener("error", printError);
provider.on("error", printError);
if (process.env.DEBUG_ETHERS) {
  const bigints = (_key, value) => (typeof value === "bigint" ? value.toString() : value);
  provider.on("debug", (event) => process.stderr.write(JSON.stringify(event, bigints) + "\n"));
}

if (options.blocks) {
  await provider.on("block", (number) => counted({ kind: "block", number }));
}
if (options.logs) {
  await provider.on(options.logs, (log) => {
    counted({ kind: "log", ...log.toJSON() });
    const orphan = (removed) => counted({ kind: "orphan", ...removed.toJSON() });
    provider.once(log.removedEvent(), orphan);
  });
}

setTimeout(() => finish("seconds"), seconds * 1000);
process.stdin.on("end", () => finish("stdin"));
process.stdin.resume();
