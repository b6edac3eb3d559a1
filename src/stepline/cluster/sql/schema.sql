-- The cluster's tables. Created once, in one transaction, under an advisory lock so that nodes
-- starting together do not race; stepline_meta.version names this format.

CREATE TABLE IF NOT EXISTS stepline_meta (
    key text PRIMARY KEY,
    value bigint NOT NULL
);

-- One row per live node. A node renews `expires` every lease/4; a node whose row expired is
-- dead to the others: its running jobs are rescued and its row deleted (it may not claim again
-- under that id: claims and outcomes check the row).
CREATE TABLE IF NOT EXISTS stepline_nodes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started timestamptz NOT NULL DEFAULT now(),
    expires timestamptz NOT NULL
);

-- Every job. request: the submit as JSON bytes (job, params, templates used), validated again by
-- the node that claims it. attempt: +1 per claim; an outcome counts only for the attempt that
-- holds the job (fencing). rescues: times a dead node's claim was taken back. fin: finish
-- order, for pruning to --keep.
CREATE TABLE IF NOT EXISTS stepline_jobs (
    id bigint PRIMARY KEY,
    name text,
    request bytea NOT NULL,
    state text NOT NULL,
    submitter bigint NOT NULL,
    owner bigint,
    attempt integer NOT NULL DEFAULT 0,
    rescues integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL DEFAULT now(),
    started timestamptz,
    ended timestamptz,
    elapsed double precision,
    result bytea,
    fin bigint
);
CREATE SEQUENCE IF NOT EXISTS stepline_job_ids;
CREATE SEQUENCE IF NOT EXISTS stepline_fin;
-- The claim scans queued jobs in id order: a partial index stays as small as the queue.
CREATE INDEX IF NOT EXISTS stepline_jobs_queued ON stepline_jobs (id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS stepline_jobs_running ON stepline_jobs (owner) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS stepline_jobs_fin ON stepline_jobs (fin) WHERE fin IS NOT NULL;

-- Events on their way to the node that submitted the job (its driver reads that node's stdout).
-- Written in the same transaction as the state change they announce; deleted once delivered.
CREATE TABLE IF NOT EXISTS stepline_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    submitter bigint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS stepline_events_submitter ON stepline_events (submitter, seq);

CREATE TABLE IF NOT EXISTS stepline_templates (
    name text PRIMARY KEY,
    job bytea NOT NULL,
    version bigint NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS stepline_template_versions;

-- Finished jobs pruned beyond --keep, counted by state, so that `stats` stays all-time.
CREATE TABLE IF NOT EXISTS stepline_pruned (
    state text PRIMARY KEY,
    count bigint NOT NULL
);

-- Schedules belong to the cluster: every live node waits for each slot and tries to fire it.
-- owner: the node whose driver made it (the firings are its submits, their events go there);
-- the schedule ends with that node (deleted with its row). anchor: the database's clock when
-- it was made, in seconds since the epoch: `every` slots are counted from it.
CREATE SEQUENCE IF NOT EXISTS stepline_schedule_ids;
CREATE TABLE IF NOT EXISTS stepline_schedules (
    id bigint PRIMARY KEY,
    owner bigint NOT NULL REFERENCES stepline_nodes (id) ON DELETE CASCADE,
    spec bytea NOT NULL,
    anchor double precision NOT NULL,
    fired integer NOT NULL DEFAULT 0,
    last_job bigint
);

-- One row per slot fired (or skipped), written by the node that won it: the primary key is
-- what makes a slot fire once across the cluster, whatever the nodes' clocks or leases say.
-- slot: the slot's time in milliseconds since the epoch. job: NULL when the slot was skipped.
CREATE TABLE IF NOT EXISTS stepline_firings (
    schedule bigint NOT NULL REFERENCES stepline_schedules (id) ON DELETE CASCADE,
    slot bigint NOT NULL,
    node bigint NOT NULL,
    job bigint,
    fired timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, slot)
);

-- Alerts of the cluster: opened by the node that ran the job's alert callback, announced to the
-- job's submitter, announced again every `every` seconds by whichever node finds one due, and
-- acked from any node. Ids come from a sequence in blocks of 1000, reserved by each node.
CREATE SEQUENCE IF NOT EXISTS stepline_alert_ids INCREMENT BY 1000;
CREATE TABLE IF NOT EXISTS stepline_alerts (
    id bigint PRIMARY KEY,
    job bigint NOT NULL,
    submitter bigint NOT NULL,
    body bytea NOT NULL,
    opened double precision NOT NULL,
    every double precision,
    due timestamptz,
    repeats integer NOT NULL DEFAULT 0,
    acked boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS stepline_alerts_open ON stepline_alerts (id) WHERE NOT acked;
