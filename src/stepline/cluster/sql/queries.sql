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

-- name: write_batch
-- A writer's batch in one statement (one round trip, its own transaction): the events it
-- forwards and the fenced outcomes of the jobs it ran, with their `finished` for other nodes.
-- Fencing: an outcome counts only while the job is still running under the attempt that
-- reports it. A node whose lease ran out (its job rescued, claimed again, or failed) finds no
-- row here: its outcome and its `finished` event are dropped, never contradicting the one that
-- counts. Its events are dropped too, and so is all of its batch once its lease has expired,
-- rescued yet or not: a node paused past its lease (SIGSTOP, a starved machine) wakes up
-- believing it holds its jobs, and before its renewal tells it otherwise its worker may start
-- one the rescue gave to another node; that `started` reached the submitter after the rerun's
-- `finished` (tests/cluster/test_schedules.py, once in 19 runs at load 6-8). Every event bound for one node goes into one row, in the order the node emitted them
-- (forwarded events first, then the `finished` of the outcomes that counted): one row per
-- submitter per batch to write, deliver and delete, however many jobs. The rows returned: the
-- jobs whose outcome counted, then one 0 per node notified (which makes the notify run).
WITH alive AS (
    SELECT 1 FROM stepline_nodes WHERE id = %(node)s AND expires > now()
),
outcome AS (
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
      AND j.owner = %(node)s AND EXISTS (SELECT 1 FROM alive)
    RETURNING j.id, j.submitter, o.event, o.k
),
mail AS (
    SELECT s AS submitter, b AS body, k
    FROM unnest(%(submitters)s::bigint[], %(bodies)s::bytea[]) WITH ORDINALITY AS f(s, b, k)
    WHERE EXISTS (SELECT 1 FROM alive)
    UNION ALL
    SELECT submitter, event, cardinality(%(bodies)s::bytea[]) + k
    FROM done WHERE submitter <> %(node)s
),
sent AS (
    INSERT INTO stepline_events (submitter, body)
    SELECT submitter, string_agg(body, ''::bytea ORDER BY k) FROM mail GROUP BY submitter
    RETURNING submitter
),
woken AS (
    SELECT pg_notify('stepline_n' || submitter, 'events') FROM sent
)
SELECT id FROM done
UNION ALL
SELECT 0 FROM woken;

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
RETURNING submitter, request;

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
SELECT id, submitter, owner, rescues, extract(epoch FROM now() - started), request
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

-- name: database_time
SELECT extract(epoch FROM clock_timestamp())::float8;

-- name: add_schedule
INSERT INTO stepline_schedules (id, owner, spec, anchor)
VALUES (nextval('stepline_schedule_ids'), %(node)s, %(spec)s, extract(epoch FROM now()))
RETURNING id, anchor;

-- name: remove_schedule
DELETE FROM stepline_schedules WHERE id = %(schedule)s RETURNING owner;

-- name: remove_own_schedules
DELETE FROM stepline_schedules WHERE owner = %(node)s;

-- name: live_schedules
-- Schedules whose owner still holds its lease (a dead owner's stop firing at once; its row
-- goes, and its schedules with it, when the node is forgotten).
SELECT s.id, s.owner, s.spec, s.anchor, s.fired, s.last_job
FROM stepline_schedules AS s JOIN stepline_nodes AS n ON n.id = s.owner AND n.expires > now()
ORDER BY s.id;

-- name: claim_slot
-- A slot fires once across the cluster: it goes to the first node whose row goes in; the
-- others find it there, or wait for the winner's transaction (a winner that dies before its
-- commit leaves the slot to them). Fenced: only a node whose own lease holds may fire, and only
-- while the schedule's owner lives. Returns the owner and the state of the previous firing's job.
WITH won AS (
    INSERT INTO stepline_firings (schedule, slot, node)
    SELECT s.id, %(slot)s, %(node)s FROM stepline_schedules AS s
    WHERE s.id = %(schedule)s
      AND EXISTS (SELECT 1 FROM stepline_nodes WHERE id = %(node)s AND expires > now())
      AND EXISTS (SELECT 1 FROM stepline_nodes WHERE id = s.owner AND expires > now())
    ON CONFLICT DO NOTHING
    RETURNING schedule
)
SELECT s.owner, s.last_job, j.state
FROM won JOIN stepline_schedules AS s ON s.id = won.schedule
LEFT JOIN stepline_jobs AS j ON j.id = s.last_job;

-- name: record_firing
WITH f AS (
    UPDATE stepline_firings SET job = %(job)s WHERE schedule = %(schedule)s AND slot = %(slot)s
)
UPDATE stepline_schedules SET fired = fired + 1, last_job = %(job)s WHERE id = %(schedule)s;

-- name: forget_old_firings
-- The newest 100 firings of each schedule are kept (for operators, and for the tests).
DELETE FROM stepline_firings AS f
USING (
    SELECT schedule, slot, row_number() OVER (PARTITION BY schedule ORDER BY slot DESC) AS r
    FROM stepline_firings
) AS old
WHERE f.schedule = old.schedule AND f.slot = old.slot AND old.r > 100;

-- name: reserve_alert_ids
SELECT nextval('stepline_alert_ids');

-- name: submitters_of
SELECT id, submitter FROM stepline_jobs WHERE id = ANY(%(ids)s::bigint[]);

-- name: open_alerts
INSERT INTO stepline_alerts (id, job, submitter, body, opened, every, due)
SELECT id, job, submitter, body, opened, %(every)s, now() + make_interval(secs => %(every)s)
FROM unnest(%(ids)s::bigint[], %(jobs)s::bigint[], %(submitters)s::bigint[], %(bodies)s::bytea[],
            %(opened)s::float8[]) AS t(id, job, submitter, body, opened);

-- name: repeat_alerts
-- Each due repeat is announced once across the cluster: a node updating a row another node
-- is updating waits, then finds it no longer due.
UPDATE stepline_alerts
SET repeats = repeats + 1, due = now() + make_interval(secs => every)
WHERE NOT acked AND due <= now()
RETURNING submitter, body, repeats;

-- name: open_alert_records
SELECT body, opened, repeats FROM stepline_alerts WHERE NOT acked ORDER BY id;

-- name: ack_alert
UPDATE stepline_alerts SET acked = true WHERE id = %(alert)s AND NOT acked RETURNING job;

-- name: alert_acked
SELECT acked FROM stepline_alerts WHERE id = %(alert)s;

-- name: forget_acked_alerts
-- Acked alerts are kept a day, so that a second ack is told `already_acked`.
DELETE FROM stepline_alerts
WHERE acked AND opened < extract(epoch FROM now()) - 86400;

-- name: submit_jobs
-- Submits in one statement (one round trip, its own transaction): ids from the sequence in
-- submit order (generate_series is scanned in order), the rows, and the wake-up.
WITH ids AS (
    SELECT nextval('stepline_job_ids') AS id, k
    FROM generate_series(1, cardinality(%(names)s::text[])) AS k
),
new AS (
    INSERT INTO stepline_jobs (id, name, request, state, submitter)
    SELECT ids.id, t.name, t.request, 'queued', %(node)s
    FROM unnest(%(names)s::text[], %(requests)s::bytea[]) WITH ORDINALITY AS t(name, request, k)
    JOIN ids USING (k)
    RETURNING id
)
SELECT new.id FROM new CROSS JOIN pg_notify('stepline_jobs', '') ORDER BY new.id;
