// Command-line options shared by bullmq.mjs and graphile.mjs, so that run.sh can pass the same
// arguments to both. Each script reads the options it needs and ignores the others.
//   --workers 1,16,64        worker counts (concurrency) to measure, in order
//   --jobs 20000             jobs per run with more than one worker (a quarter with 1 worker)
//   --redis-url URL          BullMQ's Redis (default redis://127.0.0.1:6379, or $REDIS_URL)
//   --database-url URL       graphile-worker's PostgreSQL server, without a database name
//                            (default postgres://postgres@127.0.0.1:5432/, or $DATABASE_URL)
//   --pool N                 graphile-worker's maxPoolSize (default max(10, workers))
//   --timeout SECONDS        give up on a run that takes longer than this (default 300)

const USAGE =
  "usage: node <script> [--workers 1,16,64] [--jobs 20000] [--redis-url URL] " +
  "[--database-url URL] [--pool N] [--timeout SECONDS]";

export function parseArgs(argv = process.argv.slice(2)) {
  const opts = {
    workers: [1, 16, 64],
    jobs: 20000,
    redisUrl: process.env.REDIS_URL || "redis://127.0.0.1:6379",
    databaseUrl: process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/",
    pool: null,
    timeout: 300,
  };
  const positiveInt = (name, s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) fail(`${name} wants a positive integer, not ${JSON.stringify(s)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s, 2);
    const next = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) fail(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case "--workers":
        opts.workers = next().split(",").filter((s) => s !== "").map((s) => positiveInt("--workers", s));
        if (opts.workers.length === 0) fail("--workers needs at least one count");
        break;
      case "--jobs":
        opts.jobs = positiveInt("--jobs", next());
        break;
      case "--redis-url":
        opts.redisUrl = next();
        break;
      case "--database-url":
        opts.databaseUrl = next();
        break;
      case "--pool":
        opts.pool = positiveInt("--pool", next());
        break;
      case "--timeout":
        opts.timeout = positiveInt("--timeout", next());
        break;
      case "-h":
      case "--help":
        console.log(USAGE);
        process.exit(0);
      default:
        fail(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  return opts;
}

function fail(message) {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

/** Jobs for a run with this many workers: a quarter with 1 worker, as agora-bench does. */
export function jobsFor(workers, jobs) {
  return workers === 1 ? Math.max(1, Math.floor(jobs / 4)) : jobs;
}

/** The result line, in the shape of agora-bench's throughput lines. */
export function report(workers, jobs, seconds) {
  const w = String(workers).padStart(3);
  const j = String(jobs).padStart(6);
  const s = seconds.toFixed(3).padStart(7);
  const rate = Math.round(jobs / seconds).toString().padStart(8);
  console.log(`  ${w} workers: ${j} jobs in ${s} s = ${rate} jobs/s`);
}

/** Resolves with `promise`, or rejects once `seconds` have passed. */
export function withTimeout(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done after ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
