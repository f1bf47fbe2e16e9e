// BullMQ throughput on this machine's Redis, for comparison with `agora-bench --only throughput`.
// For each worker count N: the queue is emptied (only its own keys: obliterate, never FLUSHALL),
// the jobs are added in bulk, then ONE Worker with concurrency N runs them with a processor that
// returns at once; the time is from the worker's start to the last `completed` event.
// Usage: node bullmq.mjs [--workers 1,16,64] [--jobs 20000] [--redis-url redis://127.0.0.1:6379]
import { Queue, Worker } from "bullmq";
import { jobsFor, parseArgs, report, withTimeout } from "./args.mjs";

const QUEUE = "agora-peer-bench";
const CHUNK = 1000; // jobs per addBulk call

const opts = parseArgs();
const connection = redisOptions(opts.redisUrl);

function redisOptions(url) {
  const u = new URL(url);
  if (u.protocol !== "redis:") throw new Error(`--redis-url: only redis:// URLs, not ${url}`);
  const db = u.pathname.replace(/^\//, "");
  return {
    host: u.hostname || "127.0.0.1",
    port: Number(u.port || 6379),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(db ? { db: Number(db) } : {}),
    maxRetriesPerRequest: null, // BullMQ requires this for workers
  };
}

async function runOnce(queue, workers, total) {
  // A clean queue: removes this queue's keys only.
  await queue.obliterate({ force: true });
  for (let i = 0; i < total; i += CHUNK) {
    const n = Math.min(CHUNK, total - i);
    await queue.addBulk(
      Array.from({ length: n }, (_, k) => ({
        name: "bench",
        data: { i: i + k },
        opts: { removeOnComplete: true, removeOnFail: true },
      })),
    );
  }
  const waiting = await queue.getWaitingCount();
  if (waiting !== total) throw new Error(`expected ${total} waiting jobs, found ${waiting}`);

  let completed = 0;
  let resolveDone, rejectDone;
  const done = new Promise((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  const worker = new Worker(QUEUE, async () => ({ ok: true }), {
    connection,
    concurrency: workers,
    autorun: false,
  });
  worker.on("completed", () => {
    if (++completed === total) resolveDone(performance.now());
  });
  worker.on("failed", (job, err) => rejectDone(new Error(`job ${job?.id} failed: ${err?.message}`)));
  worker.on("error", (err) => console.error(`worker error: ${err?.message ?? err}`));

  const started = performance.now();
  const running = worker.run();
  running.catch(rejectDone);
  try {
    const finished = await withTimeout(done, opts.timeout, `bullmq ${workers} workers`);
    report(workers, total, (finished - started) / 1000);
  } finally {
    await worker.close();
    await running.catch(() => {});
  }
}

const queue = new Queue(QUEUE, { connection });
queue.on("error", (err) => console.error(`queue error: ${err?.message ?? err}`));
let failed = false;
try {
  console.log(`BullMQ (one Worker, concurrency N, Redis at ${connection.host}:${connection.port}, queue ${QUEUE}):`);
  for (const workers of opts.workers) {
    await runOnce(queue, workers, jobsFor(workers, opts.jobs));
  }
} catch (err) {
  failed = true;
  console.error(`bullmq: ${err?.stack ?? err}`);
} finally {
  await queue.obliterate({ force: true }).catch(() => {});
  await queue.close();
}
process.exitCode = failed ? 1 : 0;
