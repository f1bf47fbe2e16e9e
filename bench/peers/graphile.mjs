// graphile-worker throughput on this machine's PostgreSQL, for comparison with
// `agora-bench --only throughput`. It creates a database of its own (peer_bench_<pid>), runs
// graphile-worker's migrations, and for each worker count N: adds the jobs in bulk (the
// graphile_worker.add_jobs SQL function, in batches), then starts `run({concurrency: N})` with a
// task that returns at once; the time is from the start of `run` until the `job:complete` event
// of the last job. The database is dropped at the end.
// Usage: node graphile.mjs [--workers 1,16,64] [--jobs 20000]
//                          [--database-url postgres://postgres@127.0.0.1:5432/] [--pool N]
import { EventEmitter } from "node:events";
import pg from "pg";
import { Logger, run, runMigrations } from "graphile-worker";
import { jobsFor, parseArgs, report, withTimeout } from "./args.mjs";

const BATCH = 5000; // jobs per add_jobs call

const opts = parseArgs();
const dbName = `peer_bench_${process.pid}`;
const serverUrl = new URL(opts.databaseUrl);
const adminUrl = new URL(serverUrl);
if (adminUrl.pathname === "" || adminUrl.pathname === "/") adminUrl.pathname = "/postgres";
const benchUrl = new URL(serverUrl);
benchUrl.pathname = `/${dbName}`;
const connectionString = benchUrl.toString();

// graphile-worker logs every completed job at info level; keep only warnings and errors.
const logger = new Logger(() => (level, message) => {
  if (level === "warning" || level === "error") console.error(`graphile-worker ${level}: ${message}`);
});

async function withClient(url, fn) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function runOnce(workers, total) {
  await withClient(connectionString, async (db) => {
    await db.query("delete from graphile_worker._private_jobs");
    for (let i = 0; i < total; i += BATCH) {
      const n = Math.min(BATCH, total - i);
      await db.query(
        `select count(*) from graphile_worker.add_jobs(array(
           select row('bench', json_build_object('i', g), null, null, null, null, null, null)::graphile_worker.job_spec
           from generate_series($1::int, $2::int) g))`,
        [i, i + n - 1],
      );
    }
    // Outside the timed part: fresh statistics, and no dead rows left from the previous run.
    await db.query("vacuum analyze graphile_worker._private_jobs");
    const { rows } = await db.query("select count(*)::int as n from graphile_worker.jobs");
    if (rows[0].n !== total) throw new Error(`expected ${total} jobs, found ${rows[0].n}`);
  });

  const events = new EventEmitter();
  let completed = 0;
  let resolveDone, rejectDone;
  const done = new Promise((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  events.on("job:complete", ({ job, error }) => {
    if (error) rejectDone(new Error(`job ${job?.id} failed: ${error?.message ?? error}`));
    else if (++completed === total) resolveDone(performance.now());
  });

  const started = performance.now();
  const runner = await run({
    connectionString,
    concurrency: workers,
    maxPoolSize: opts.pool ?? Math.max(10, workers),
    noHandleSignals: true,
    pollInterval: 1000,
    taskList: { bench: async () => {} },
    logger,
    events,
  });
  runner.promise.catch(rejectDone);
  try {
    const finished = await withTimeout(done, opts.timeout, `graphile-worker ${workers} workers`);
    report(workers, total, (finished - started) / 1000);
  } finally {
    await runner.stop();
    await runner.promise.catch(() => {});
  }
  const left = await withClient(connectionString, async (db) =>
    (await db.query("select count(*)::int as n from graphile_worker.jobs")).rows[0].n,
  );
  if (left !== 0) throw new Error(`${left} jobs left in the queue after the run`);
}

let failed = false;
let created = false;
try {
  await withClient(adminUrl.toString(), (db) => db.query(`create database ${dbName}`));
  created = true;
  await runMigrations({ connectionString, logger });
  console.log(`graphile-worker (one run(), concurrency N, PostgreSQL at ${serverUrl.host}, database ${dbName}):`);
  for (const workers of opts.workers) {
    await runOnce(workers, jobsFor(workers, opts.jobs));
  }
} catch (err) {
  failed = true;
  console.error(`graphile: ${err?.stack ?? err}`);
} finally {
  if (created) {
    await withClient(adminUrl.toString(), (db) => db.query(`drop database if exists ${dbName} with (force)`)).catch(
      (err) => {
        failed = true;
        console.error(`graphile: could not drop database ${dbName}: ${err?.message ?? err}`);
      },
    );
  }
}
process.exitCode = failed ? 1 : 0;
