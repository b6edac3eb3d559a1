-- Every statement a node runs, by name (cluster/_sql.py reads them). Parameters are psycopg's
-- %(name)s placeholders. Ids, counts and bytes travel as arrays so that one statement carries a
-- whole batch: one round trip per batch, whatever its size.

-- name: register_node
INSERT INTO stepline_nodes (host, pid, expires)
VALUES (%(host)s, %(pid)s, now() + make_interval(secs => %(lease)s))
RETURNING id;

-- name: renew_node
-- An expired row is not renewed: a node that lost its lease stays dead (its jobs were rescued).
UPDATE stepline_nodes SET expires = now() + make_interval(secs => %(lease)s)
WHERE id = %(node)s AND expires > now()
RETURNING id;

-- name: leave_node
DELETE FROM stepline_nodes WHERE id = %(node)s;

-- name: next_ids
SELECT nextval('stepline_job_ids') FROM generate_series(1, %(n)s);

-- name: insert_jobs
INSERT INTO stepline_jobs (id, name, request, state, submitter)
SELECT id, name, request, 'queued', %(node)s
FROM unnest(%(ids)s::bigint[], %(names)s::text[], %(requests)s::bytea[]) AS t(id, name, request);

-- name: notify
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: notify_nodes
SELECT pg_notify('stepline_n' || n, %(payload)s) FROM unnest(%(nodes)s::bigint[]) AS t(n);

-- name: claim
-- Up to `n` queued jobs, oldest first, skipping rows another node is claiming right now; only
-- while this node's lease holds.
WITH picked AS (
    SELECT id FROM stepline_jobs
    WHERE state = 'queued'
      AND EXISTS (SELECT 1 FROM stepline_nodes WHERE id = %(node)s AND expires > now())
    ORDER BY id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
)
UPDATE stepline_jobs AS j
SET state = 'running', owner = %(node)s, attempt = j.attempt + 1, started = now()
FROM picked WHERE j.id = picked.id
RETURNING j.id, j.name, j.request, j.submitter, j.attempt, j.rescues;

-- name: forward_events
INSERT INTO stepline_events (submitter, body)
SELECT s, b FROM unnest(%(submitters)s::bigint[], %(bodies)s::bytea[]) WITH ORDINALITY AS t(s, b, k)
ORDER BY k;

-- name: finish_jobs
-- Fencing: an outcome counts only while the job is still running under the attempt that
-- reports it. A node whose lease ran out (its job rescued, claimed again, or failed) finds no
-- row here: its outcome and its `finished` event are dropped, never contradicting the one that
-- counts. The `finished` event of a job submitted elsewhere is written in the same transaction.
WITH outcome AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::int[], %(states)s::text[], %(elapsed)s::float8[],
        %(results)s::bytea[], %(events)s::bytea[]
    ) WITH ORDINALITY AS t(id, attempt, state, elapsed, result, event, k)
),
done AS (
    UPDATE stepline_jobs AS j
    SET state = o.state, elapsed = o.elapsed, result = o.result, ended = now(), owner = NULL,
        fin = nextval('stepline_fin')
    FROM outcome AS o
    WHERE j.id = o.id AND j.attempt = o.attempt AND j.state = 'running'
      AND j.owner = %(node)s
    RETURNING j.id, j.submitter, o.event, o.k
),
sent AS (
    INSERT INTO stepline_events (submitter, body)
    SELECT submitter, event FROM done WHERE submitter <> %(node)s ORDER BY k
)
SELECT id, submitter FROM done;

-- name: take_events
DELETE FROM stepline_events
WHERE seq IN (
    SELECT seq FROM stepline_events WHERE submitter = %(node)s ORDER BY seq LIMIT %(limit)s
)
RETURNING seq, body;

-- name: cancel_queued
UPDATE stepline_jobs
SET state = 'cancelled', elapsed = 0, result = %(error)s, ended = now(),
    fin = nextval('stepline_fin')
WHERE id = %(job)s AND state = 'queued'
RETURNING submitter;

-- name: cancel_running
UPDATE stepline_jobs SET cancel_requested = true
WHERE id = %(job)s AND state = 'running'
RETURNING owner;

-- name: job_state
SELECT state FROM stepline_jobs WHERE id = %(job)s;

-- name: cancels_for
SELECT id, attempt FROM stepline_jobs
WHERE owner = %(node)s AND state = 'running' AND cancel_requested;

-- name: stuck_jobs
-- Running jobs whose owner is gone or whose lease expired. SKIP LOCKED: two rescuers never take
-- the same job, and a job whose outcome is being written right now is left to that write.
SELECT id, submitter, owner, rescues, extract(epoch FROM now() - started)
FROM stepline_jobs AS j
WHERE state = 'running'
  AND NOT EXISTS (SELECT 1 FROM stepline_nodes AS n WHERE n.id = j.owner AND n.expires > now())
ORDER BY id
LIMIT 1000
FOR UPDATE SKIP LOCKED;

-- name: requeue_jobs
UPDATE stepline_jobs SET state = 'queued', owner = NULL, rescues = rescues + 1,
    cancel_requested = false
WHERE id = ANY(%(ids)s::bigint[]);

-- name: fail_jobs
UPDATE stepline_jobs AS j
SET state = 'failed', owner = NULL, rescues = j.rescues + 1, elapsed = f.elapsed,
    result = f.error, ended = now(), fin = nextval('stepline_fin')
FROM unnest(%(ids)s::bigint[], %(elapsed)s::float8[], %(errors)s::bytea[]) AS f(id, elapsed, error)
WHERE j.id = f.id;

-- name: forget_dead_nodes
DELETE FROM stepline_nodes WHERE expires < now() - make_interval(secs => %(grace)s);

-- name: forget_orphan_events
-- Events for a submitter that is gone: nobody will read them.
DELETE FROM stepline_events AS e
WHERE NOT EXISTS (SELECT 1 FROM stepline_nodes AS n WHERE n.id = e.submitter);

-- name: prune
-- Finished jobs beyond the newest --keep, counted by state into stepline_pruned.
WITH gone AS (
    DELETE FROM stepline_jobs
    WHERE fin <= (SELECT max(fin) FROM stepline_jobs) - %(keep)s
    RETURNING state
)
INSERT INTO stepline_pruned (state, count)
SELECT state, count(*) FROM gone GROUP BY state
ON CONFLICT (state) DO UPDATE SET count = stepline_pruned.count + excluded.count;

-- name: status
SELECT id, name, state, extract(epoch FROM created), extract(epoch FROM started),
       extract(epoch FROM ended), elapsed, extract(epoch FROM now() - started), result,
       cancel_requested
FROM stepline_jobs
WHERE %(job)s::bigint IS NULL OR id = %(job)s::bigint
ORDER BY id;

-- name: counts
SELECT state, count(*) FROM stepline_jobs GROUP BY state
UNION ALL
SELECT 'pruned:' || state, count FROM stepline_pruned;

-- name: live_nodes
SELECT count(*) FROM stepline_nodes WHERE expires > now();

-- name: put_template
INSERT INTO stepline_templates (name, job, version)
VALUES (%(name)s, %(job)s, nextval('stepline_template_versions'))
ON CONFLICT (name) DO UPDATE SET job = excluded.job, version = excluded.version;

-- name: templates_since
SELECT name, job, version FROM stepline_templates WHERE version > %(since)s ORDER BY version;
