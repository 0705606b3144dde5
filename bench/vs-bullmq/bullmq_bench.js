// BullMQ side of bench/vs-bullmq: one workload per run, figures as one JSON line on stdout.
// Usage: node bullmq_bench.js PORT add|process|chain [CONCURRENCY]
'use strict';
const { FlowProducer, Worker } = require('bullmq');

const port = Number(process.argv[2]);
const phase = process.argv[3];
const concurrency = Number(process.argv[4] || 100);
const connection = { host: '127.0.0.1', port };
const QUEUE = 'bench';
const WIDTH = 10000;
const CHAINS = 1000;
const CHAIN_LENGTH = 4;
const ADDERS = 50; // chain flows being added at once

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

function worker(onDone) {
  // No-op processor; `onDone` sees every completed job.
  const w = new Worker(QUEUE, async () => 1, { connection, concurrency, autorun: true });
  w.on('completed', onDone);
  w.on('error', (err) => { console.error(err); process.exit(1); });
  return w;
}

async function main() {
  const producer = new FlowProducer({ connection });
  let out;
  if (phase === 'add') {
    const t0 = performance.now();
    await producer.add(fanOut());
    out = { add_s: (performance.now() - t0) / 1000, nodes: WIDTH + 1 };
  } else if (phase === 'process') {
    const t0 = performance.now();
    let done = 0;
    let w;
    await new Promise((resolve) => {
      w = worker((job) => { done++; if (job.name === 'sum') resolve(); });
    });
    const s = (performance.now() - t0) / 1000;
    await w.close();
    out = { process_s: s, nodes: done, nodes_per_s: done / s };
  } else if (phase === 'chain') {
    let roots = 0;
    let w;
    const t0 = performance.now();
    const finished = new Promise((resolve) => {
      w = worker((job) => { if (job.name === 'root' && ++roots === CHAINS) resolve(); });
    });
    let next = 0;
    const adders = [];
    for (let a = 0; a < ADDERS; a++) {
      adders.push((async () => { while (next < CHAINS) { const k = next++; await producer.add(chain(k)); } })());
    }
    await Promise.all(adders);
    await finished;
    const s = (performance.now() - t0) / 1000;
    await w.close();
    out = { chain_s: s, flows: CHAINS, flows_per_s: CHAINS / s };
  } else {
    throw new Error(`unknown phase ${phase}`);
  }
  await producer.close();
  console.log(JSON.stringify(out));
}

setTimeout(() => { console.error(`${phase}: gave up after 300 s`); process.exit(3); }, 300000).unref();
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
