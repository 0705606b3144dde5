// BullMQ side of bench/vs-bullmq: one workload per process, driven by run.py.
// Usage: node bullmq_bench.js PORT add|process|chain|serve|check [CONCURRENCY] [IO_MS]
// Same protocol as kflow_bench.py: print `ready`, wait for a line on stdin, run, print the
// figures as one JSON line; wait for another line, clean up, print a second JSON line, exit.
// `serve` prints {"completed": N} at most every 5 ms while N grows, and stops at the next line.
'use strict';
const readline = require('readline');
const { FlowProducer, Queue, Worker } = require('bullmq');

const port = Number(process.argv[2]);
const phase = process.argv[3];
const concurrency = Number(process.argv[4] || 100);
const ioMs = Number(process.argv[5] || 0);
const connection = { host: '127.0.0.1', port };
const QUEUE = 'bench';
const WIDTH = 10000;
const CHAINS = 1000;
const CHAIN_LENGTH = 4;
const ADDERS = 50; // chain flows being added at once
const PROGRESS_MS = 5;

const lines = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (waiting.length) waiting.shift()(l); else lines.push(l);
}).on('close', () => { while (waiting.length) waiting.shift()(''); });
function line() {
  return lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiting.push(r));
}
function say(obj) { process.stdout.write((typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n'); }

function fanOut() {
  const children = [];
  for (let i = 0; i < WIDTH; i++) children.push({ name: 'leaf', queueName: QUEUE, data: { i } });
  return { name: 'sum', queueName: QUEUE, data: {}, children };
}

function chain(k) {
  // A chain is nested children: the root runs last, the deepest child first.
  let node = { name: 'step-1', queueName: QUEUE, data: { k } };
  for (let s = 2; s <= CHAIN_LENGTH; s++) {
    node = { name: s === CHAIN_LENGTH ? 'root' : `step-${s}`, queueName: QUEUE, data: { k },
             children: [node] };
  }
  return node;
}

async function worker(onDone) {
  // A no-op processor (or one that waits IO_MS); `onDone` sees every completed job.
  const processor = ioMs ? () => new Promise((r) => setTimeout(() => r(1), ioMs)) : async () => 1;
  const w = new Worker(QUEUE, processor, { connection, concurrency, autorun: false });
  w.on('completed', onDone);
  w.on('error', (err) => { console.error(err); process.exit(1); });
  await w.waitUntilReady();
  return w;
}

async function main() {
  const producer = new FlowProducer({ connection });
  await producer.waitUntilReady();
  let out;
  let w;
  if (phase === 'add') {
    const flow = fanOut();
    say('ready');
    await line();
    const t0 = performance.now();
    await producer.add(flow);
    const s = (performance.now() - t0) / 1000;
    out = { add_s: s, nodes: WIDTH + 1, nodes_per_s: (WIDTH + 1) / s };
  } else if (phase === 'process') {
    let done = 0;
    let finish;
    const finished = new Promise((resolve) => { finish = resolve; });
    w = await worker(() => { if (++done === WIDTH + 1) finish(); });
    say('ready');
    await line();
    const t0 = performance.now();
    w.run();
    await finished;
    const s = (performance.now() - t0) / 1000;
    out = { process_s: s, nodes: done, nodes_per_s: done / s };
  } else if (phase === 'chain') {
    let roots = 0;
    let finish;
    const finished = new Promise((resolve) => { finish = resolve; });
    w = await worker((job) => { if (job.name === 'root' && ++roots === CHAINS) finish(); });
    const flows = [];
    for (let k = 0; k < CHAINS; k++) flows.push(chain(k));
    say('ready');
    await line();
    const t0 = performance.now();
    w.run();
    let next = 0;
    const adders = [];
    for (let a = 0; a < ADDERS; a++) {
      adders.push((async () => { while (next < CHAINS) { const k = next++; await producer.add(flows[k]); } })());
    }
    await Promise.all(adders);
    await finished;
    const s = (performance.now() - t0) / 1000;
    out = { chain_s: s, flows: CHAINS, flows_per_s: CHAINS / s, nodes: CHAINS * CHAIN_LENGTH,
            nodes_per_s: CHAINS * CHAIN_LENGTH / s };
  } else if (phase === 'serve') {
    let done = 0;
    let told = -1;
    w = await worker(() => { done++; });
    say('ready');
    await line();
    w.run();
    const timer = setInterval(() => { if (done !== told) { told = done; say({ completed: done }); } },
                              PROGRESS_MS);
    await line();
    clearInterval(timer);
    await w.close();
    say({ completed: done });
    await producer.close();
    return;
  } else if (phase === 'check') {
    const queue = new Queue(QUEUE, { connection });
    say({ counts: await queue.getJobCounts('completed', 'waiting', 'active', 'waiting-children') });
    await queue.close();
    await producer.close();
    return;
  } else {
    throw new Error(`unknown phase ${phase}`);
  }
  say(out);
  await line();
  if (w) await w.close();
  await producer.close();
  say({});
}

setTimeout(() => { console.error(`${phase}: gave up after 300 s`); process.exit(3); }, 300000).unref();
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
