-- Queries the benchmark runs to set up its data, by name (loaded by bench/__main__.py).

-- name: preload_events --
-- $1 events of type bench.event, ids evt_bench_1.., each with a ~1 KB payload, by key $2.
INSERT INTO events (id, type, payload, producer_key_id, created_at)
SELECT 'evt_bench_' || n, 'bench.event',
       convert_to('{"id":"evt_bench_' || n || '","type":"bench.event",'
                  || '"timestamp":"2026-01-01T00:00:00Z","data":{"pad":"'
                  || repeat('x', 1000) || '"}}', 'UTF8'),
       $2, now()
FROM generate_series(1, $1) AS n;

-- name: preload_deliveries --
-- $1 due deliveries: event n mod $2 (of the preloaded ones), spread over subscriptions $3.
INSERT INTO deliveries (event_id, subscription_id, next_attempt_at, created_at, updated_at)
SELECT 'evt_bench_' || (1 + n % $2), ($3::text[])[1 + n % array_length($3::text[], 1)],
       now(), now(), now()
FROM generate_series(1, $1) AS n;

-- name: preload_finished_deliveries --
-- $1 deliveries of event evt_bench_1 that succeeded long ago, the bulk of a busy table.
INSERT INTO deliveries
    (event_id, subscription_id, status, attempt_count, scheduled_attempts, created_at,
     updated_at)
SELECT 'evt_bench_1', $2, 'succeeded', 1, 1, now() - interval '1 day', now() - interval '1 day'
FROM generate_series(1, $1);

-- name: unfinished_deliveries --
SELECT count(*) FROM deliveries WHERE status = 'pending';

-- name: attempts_recorded --
SELECT count(*) FROM attempts;
