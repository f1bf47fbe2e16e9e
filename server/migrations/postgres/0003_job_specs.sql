-- A job's spec in a table of its own. The jobs row is rewritten on every counter change (each
-- claim, start and completion); with a 1 MiB spec inside it, SQLite read and compared the whole
-- overflow chain each time, so a claim cost more the larger the job's spec.
CREATE TABLE job_specs (
    job_id   TEXT PRIMARY KEY REFERENCES jobs (id),
    job_spec TEXT NOT NULL
);
INSERT INTO job_specs (job_id, job_spec) SELECT id, job_spec FROM jobs;
ALTER TABLE jobs DROP COLUMN job_spec;
