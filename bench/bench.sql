-- Queries the benchmark runs to set up its data, by name (loaded by bench/__main__.py).

-- name: preload_events --
-- $1 events of type bench.event, ids evt_bench_1.., each with a ~1 KB payload, by key $2.
INSERT INTO events (id, tenant_id, type, payload, producer_key_id, created_at)
SELECT 'evt_bench_' || n, 'ten_default', 'bench.event',
       convert_to('{"id":"evt_bench_' || n || '","type":"bench.event",'
                  || '"timestamp":"2026-01-01T00:00:00Z","data":{"pad":"'
                  || repeat('x', 1000) || '"}}', 'UTF8'),
       $2, now()
FROM generate_series(1, $1) AS n;

-- name: preload_deliveries --
-- $1 due deliveries: event n mod $2 (of the preloaded ones), spread over subscriptions $3.
INSERT INTO deliveries
    (tenant_id, event_id, subscription_id, next_attempt_at, created_at, updated_at)
SELECT 'ten_default', 'evt_bench_' || (1 + n % $2), ($3::text[])[1 + n % array_length($3::text[], 1)],
       now(), now(), now()
FROM generate_series(1, $1) AS n;

-- name: preload_finished_deliveries --
-- $1 deliveries of event evt_bench_1 that succeeded long ago, the bulk of a busy table.
INSERT INTO deliveries
    (tenant_id, event_id, subscription_id, status, attempt_count, scheduled_attempts,
     created_at, updated_at)
SELECT 'ten_default', 'evt_bench_1', $2, 'succeeded', 1, 1, now() - interval '1 day', now() - interval '1 day'
FROM generate_series(1, $1);

-- name: unfinished_deliveries --
SELECT count(*) FROM deliveries WHERE status = 'pending';

-- name: attempts_recorded --
SELECT count(*) FROM attempts;

-- name: preload_deliveries_each --
-- For each subscription of $2, one due delivery of each of events evt_bench_1..$1.
INSERT INTO deliveries
    (tenant_id, event_id, subscription_id, next_attempt_at, created_at, updated_at)
SELECT 'ten_default', 'evt_bench_' || n, subscription_id, now(), now(), now()
FROM unnest($2::text[]) AS subscription_id, generate_series(1, $1) AS n;

-- name: pgqueuer_tables --
-- The pgqueuer sender's own tables: where it sends, and every attempt it made.
CREATE TABLE webhook_endpoints (
    id     text PRIMARY KEY,
    url    text NOT NULL,
    secret text NOT NULL
);
CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    message_id   text NOT NULL,
    endpoint_id  text NOT NULL REFERENCES webhook_endpoints (id),
    attempt      integer NOT NULL,
    status       integer,
    error        text,
    duration_ms  integer NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now()
);

-- name: pgqueuer_add_endpoint --
INSERT INTO webhook_endpoints (id, url, secret) VALUES ($1, $2, $3);

-- name: pgqueuer_endpoints --
SELECT id, url, secret FROM webhook_endpoints;

-- name: pgqueuer_record_attempt --
INSERT INTO webhook_attempts (message_id, endpoint_id, attempt, status, error, duration_ms)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: pgqueuer_unfinished --
-- Jobs still queued or picked; pgqueuer deletes a job once it finished.
SELECT count(*) FROM pgqueuer;

-- name: pgqueuer_attempts_recorded --
SELECT count(*) FROM webhook_attempts;

-- name: bench_tenants --
-- $1 tenants, ids ten_bench_0.., uids bench_0.. (a uid never starts with ten_).
INSERT INTO tenants (id, name, uid)
SELECT 'ten_bench_' || n, 'bench ' || n, 'bench_' || n
FROM generate_series(0, $1 - 1) AS n;

-- name: bench_tenant_subscriptions --
-- $2 subscriptions in each of the tenants ten_bench_0..($1 - 1), owned by key $3, to the
-- receiver at $4, all with secret $5. Each tenant's first listens to bench.event, its others
-- to bench.event_1, bench.event_2, ..., so an event of type bench.event matches exactly one
-- subscription of its tenant. The trigger on subscriptions fills subscription_patterns.
INSERT INTO subscriptions (tenant_id, owner_key_id, url, event_types, secret)
SELECT 'ten_bench_' || t, $3, $4 || '/t' || t || '/s' || k,
       ARRAY[CASE WHEN k = 0 THEN 'bench.event' ELSE 'bench.event_' || k END], $5
FROM generate_series(0, $1 - 1) AS t, generate_series(0, $2 - 1) AS k;

-- name: bench_tenant_loaded --
SELECT (SELECT count(*) FROM subscriptions) AS subscriptions,
       (SELECT count(*) FROM subscription_patterns) AS patterns;

-- name: bench_tenant_fan_out --
SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM deliveries) AS deliveries;

-- name: stats_tenants_and_subscriptions --
-- $1 tenants ten_stats_0.. and $2 subscriptions sub_stats_0.. (subscription s in tenant
-- s mod $1), owned by key $3, to the receiver at $4, each with one event evt_stats_<tenant>
-- and $5 deliveries dlv_stats_<s>_0.. of it, finished long ago.
WITH tenants AS (
    INSERT INTO tenants (id, name, uid)
    SELECT 'ten_stats_' || t, 'stats ' || t, 'stats_' || t FROM generate_series(0, $1 - 1) AS t
), subscriptions AS (
    INSERT INTO subscriptions (id, tenant_id, owner_key_id, url, event_types, secret)
    SELECT 'sub_stats_' || s, 'ten_stats_' || s % $1, $3, $4 || '/stats/s' || s,
           ARRAY['bench.stats'], 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
    FROM generate_series(0, $2 - 1) AS s
), events AS (
    INSERT INTO events (id, tenant_id, type, payload, producer_key_id, created_at)
    SELECT 'evt_stats_' || t, 'ten_stats_' || t, 'bench.stats', '\x7b7d', $3, now()
    FROM generate_series(0, $1 - 1) AS t
)
INSERT INTO deliveries
    (id, tenant_id, event_id, subscription_id, status, attempt_count, scheduled_attempts,
     created_at, updated_at)
SELECT 'dlv_stats_' || s || '_' || k, 'ten_stats_' || s % $1, 'evt_stats_' || s % $1,
       'sub_stats_' || s, 'succeeded', 1, 1, now(), now()
FROM generate_series(0, $2 - 1) AS s, generate_series(0, $5 - 1) AS k;

-- name: stats_record_function --
-- Records attempts first .. first + count - 1 of `total` spread evenly over the week before
-- `week_end`, through hookpost's own record statement (`record`, the text of record_attempts
-- in queries.sql): attempt n goes to subscription sub_stats_<n mod subscriptions>, to one
-- of its deliveries, 90% succeed, 7% are retried and 3% fail, taking 1 ms to 3 s
-- (log-uniform).
CREATE FUNCTION bench_record_attempts(record text, first bigint, count bigint, total bigint,
                                      subscriptions integer, deliveries integer,
                                      week_end timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    records attempt_record_v1[];
BEGIN
    SELECT array_agg(ROW(
        'dlv_stats_' || n % subscriptions || '_' || (n / subscriptions) % deliveries,
        'sub_stats_' || n % subscriptions, 'lease_bench', 1, 'scheduled',
        week_end - interval '7 days' + (n::float8 / total) * interval '7 days',
        floor(exp(random() * ln(3000)))::integer,
        CASE WHEN chance < 0.90 THEN 200 WHEN chance < 0.97 THEN 500 ELSE 400 END,
        NULL, NULL, CASE WHEN chance < 0.90 THEN NULL ELSE 'http' END, NULL, false,
        CASE WHEN chance < 0.90 THEN 'succeeded' WHEN chance < 0.97 THEN 'retry'
             ELSE 'failed' END,
        false, 'succeeded', NULL, 1, false, NULL, NULL)::attempt_record_v1)
    INTO records
    FROM (SELECT n, random() AS chance FROM generate_series(first, first + count - 1) AS n)
         AS roll;
    EXECUTE record USING records, now();
END
$$;

-- name: stats_record_attempts --
SELECT bench_record_attempts($1, $2, $3, $4, $5, $6, $7);

-- name: autovacuum_workers --
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker';

-- name: stats_loaded --
SELECT (SELECT count(*) FROM attempts) AS attempts,
       (SELECT count(*) FROM attempt_stats) + (SELECT count(*) FROM attempt_stats_folded)
           AS rollups,
       (SELECT avg(pg_column_size(s.*)) FROM attempt_stats s) AS rollup_row_bytes,
       pg_total_relation_size('attempt_stats') + pg_total_relation_size('attempt_stats_folded')
           AS rollup_bytes;
