-- Every query hookpost runs, by name. Loaded once by hookpost/store.py.

-- name: insert_api_key --
INSERT INTO api_keys (name, role, key_hash, tenant_id) VALUES ($1, $2, $3, $4)
RETURNING id, name, role, tenant_id, created_at;

-- name: api_key_by_hash --
SELECT id, name, role, tenant_id, created_at FROM api_keys
WHERE key_hash = $1 AND revoked_at IS NULL;

-- name: count_admin_keys --
SELECT count(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL;

-- name: list_api_keys --
-- Newest first, revoked ones too; ($2, $3) is the (created_at, id) of the last row of the
-- previous page. Never the hash.
SELECT id, name, role, tenant_id, created_at, revoked_at FROM api_keys
WHERE ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::text))
ORDER BY created_at DESC, id DESC
LIMIT $1;

-- name: revoke_api_key --
-- Revokes the valid key $1 at $2, unless it is the last valid admin key: no row if there is
-- no such valid key, else whether it was kept as the last admin. The key and every valid
-- admin key are locked in one order, so two revocations at once wait for each other (and
-- see each other's revocation) instead of each leaving the other's key as the last one.
WITH valid AS (
    SELECT id, role FROM api_keys
    WHERE revoked_at IS NULL AND (id = $1 OR role = 'admin')
    ORDER BY id
    FOR UPDATE
), verdict AS (
    SELECT id, role = 'admin' AND (SELECT count(*) FROM valid WHERE role = 'admin') = 1
           AS last_admin
    FROM valid WHERE id = $1
), revoked AS (
    UPDATE api_keys k SET revoked_at = $2
    FROM verdict WHERE k.id = verdict.id AND NOT verdict.last_admin
)
SELECT last_admin FROM verdict;

-- name: insert_ui_session --
-- A dashboard session for key $2 until $5; expired sessions go at the same time, so the
-- table holds no more than the sessions that still work (and those of revoked keys, until
-- they expire).
WITH expired AS (
    DELETE FROM ui_sessions WHERE expires_at <= $4
)
INSERT INTO ui_sessions (token_hash, api_key_id, csrf_token, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5);

-- name: ui_session_by_hash --
-- The session's key and CSRF token, while the session has not expired and its key is
-- valid: revoking a key ends its sessions at once. A portal session also names its link
-- and tenant, and ends with its tenant too.
SELECT k.id, k.name, k.role, k.tenant_id, k.created_at, s.csrf_token, s.portal_link_id,
       s.tenant_id AS portal_tenant_id, s.created_at AS opened_at
FROM ui_sessions s
JOIN api_keys k ON k.id = s.api_key_id
WHERE s.token_hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL
  AND (s.tenant_id IS NULL
       OR EXISTS (SELECT 1 FROM tenants t WHERE t.id = s.tenant_id AND t.status = 'active'));

-- name: delete_ui_session --
DELETE FROM ui_sessions WHERE token_hash = $1;

-- name: insert_portal_link --
-- A link to the portal of tenant $2, made by key $3 at $4, that opens until $5; links
-- expired by $4 go at the same time, so the table holds no more than those still to open.
WITH expired AS (
    DELETE FROM portal_links WHERE expires_at <= $4
)
INSERT INTO portal_links (token_hash, tenant_id, created_by_key_id, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, tenant_id, created_by_key_id, created_at, expires_at, used_at;

-- name: open_portal_link --
-- Uses the link whose token hashes to $1 at $2 and starts its portal session (token hash
-- $3, CSRF token $4, until $5) in one statement: a link opens once, even when two tabs
-- open it at the same moment (the second waits for the first, then finds it used), and a
-- link is never used up without its session. Nothing if the link is used, expired, or its
-- tenant or the key that made it is gone.
WITH opened AS (
    UPDATE portal_links l SET used_at = $2
    WHERE l.token_hash = $1 AND l.used_at IS NULL AND l.expires_at > $2
      AND EXISTS (SELECT 1 FROM tenants t WHERE t.id = l.tenant_id AND t.status = 'active')
      AND EXISTS (SELECT 1 FROM api_keys k
                  WHERE k.id = l.created_by_key_id AND k.revoked_at IS NULL)
    RETURNING l.id, l.tenant_id, l.created_by_key_id, l.created_at, l.expires_at, l.used_at
), session AS (
    INSERT INTO ui_sessions
        (token_hash, api_key_id, csrf_token, created_at, expires_at, portal_link_id, tenant_id)
    SELECT $3, created_by_key_id, $4, $2, $5, id, tenant_id FROM opened
)
SELECT id, tenant_id, created_by_key_id, created_at, expires_at, used_at FROM opened;

-- name: insert_tenant --
INSERT INTO tenants (name, uid, created_at, updated_at) VALUES ($1, $2, $3, $3)
RETURNING id, name, uid, created_at, updated_at;

-- name: resolve_tenant --
-- The active tenant named $1, by id or by uid.
SELECT id, name, uid, created_at, updated_at FROM tenants
WHERE status = 'active' AND (id = $1 OR uid = $1)
ORDER BY id = $1 DESC
LIMIT 1;

-- name: list_tenants --
-- Newest first; ($2, $3) is the (created_at, id) of the last row of the previous page.
SELECT id, name, uid, created_at, updated_at FROM tenants
WHERE status = 'active'
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::text))
ORDER BY created_at DESC, id DESC
LIMIT $1;

-- name: update_tenant --
-- NULL leaves a field as it is; the uid is set (NULL: removed) when $4 is true.
UPDATE tenants SET
    name = coalesce($2, name),
    uid = CASE WHEN $4 THEN $3::text ELSE uid END,
    updated_at = $5
WHERE id = $1 AND status = 'active'
RETURNING id, name, uid, created_at, updated_at;

-- name: delete_tenant --
-- Kept as 'deleted' (its uid free again) so its delivery log stays readable until
-- retention; its subscriptions are deleted, their pending deliveries end as failed, and
-- the keys bound to it are revoked.
WITH deleted AS (
    UPDATE tenants SET status = 'deleted', updated_at = $2
    WHERE id = $1 AND status = 'active' AND id <> 'ten_default'
    RETURNING id
), subscriptions_gone AS (
    UPDATE subscriptions s SET status = 'deleted', updated_at = $2
    FROM deleted WHERE s.tenant_id = deleted.id AND s.status <> 'deleted'
    RETURNING s.id
), abandoned AS (
    UPDATE deliveries d SET status = 'failed', next_attempt_at = NULL, updated_at = $2
    FROM subscriptions_gone WHERE d.subscription_id = subscriptions_gone.id
      AND d.status = 'pending'
), revoked AS (
    UPDATE api_keys k SET revoked_at = $2
    FROM deleted WHERE k.tenant_id = deleted.id AND k.revoked_at IS NULL
    RETURNING k.id
)
SELECT (SELECT count(*) FROM deleted) AS deleted,
       coalesce((SELECT array_agg(id) FROM revoked), '{}') AS revoked_keys;

-- name: tenant_subscriptions_by_status --
SELECT status, count(*) AS count FROM subscriptions
WHERE tenant_id = $1 AND status <> 'deleted'
GROUP BY status;

-- name: tenant_counts --
-- For each tenant of $1 (a page of the listing): its subscriptions not deleted, and their
-- pending deliveries, as tenant_backlog counts them.
SELECT t.id,
       (SELECT count(*) FROM subscriptions s
        WHERE s.tenant_id = t.id AND s.status <> 'deleted') AS subscriptions,
       (SELECT count(*) FROM deliveries d
        JOIN subscriptions s ON s.id = d.subscription_id
        WHERE s.tenant_id = t.id AND s.status <> 'deleted' AND d.status = 'pending') AS pending
FROM unnest($1::text[]) AS t(id);

-- name: tenant_backlog --
-- Pending deliveries of the tenant's subscriptions, one index probe per subscription.
SELECT count(*) FROM deliveries d
JOIN subscriptions s ON s.id = d.subscription_id
WHERE s.tenant_id = $1 AND s.status <> 'deleted' AND d.status = 'pending';

-- name: insert_subscription --
-- Nothing, if tenant $10 has been deleted (a key of it may still be cached for a moment).
INSERT INTO subscriptions
    (owner_key_id, url, event_types, description, status, secret, created_at, updated_at,
     max_concurrency, rate_limit, tenant_id, signature_scheme, signing_key, public_key, policy)
SELECT $1, $2, $3, $4, $5, $6, $7, $7, $8, $9, id, $11, $12, $13, $14::jsonb
FROM tenants WHERE id = $10 AND status = 'active'
RETURNING *;

-- name: get_subscription --
-- In a scope: $2 the owner's key id, $3 the tenant (NULL: any).
SELECT * FROM subscriptions
WHERE id = $1 AND status <> 'deleted' AND ($2::text IS NULL OR owner_key_id = $2)
  AND ($3::text IS NULL OR tenant_id = $3);

-- name: list_subscriptions --
-- Newest first; ($3, $4) is the (created_at, id) of the last row of the previous page.
SELECT * FROM subscriptions
WHERE status <> 'deleted'
  AND ($1::text IS NULL OR owner_key_id = $1) AND ($5::text IS NULL OR tenant_id = $5)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::text))
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: update_subscription --
-- NULL leaves a field as it is; a limit is set (NULL: removed) when its flag ($8, $10) is,
-- and the policy (NULL: the defaults) when $16 is.
-- Leaving 'disabled' forgets why it was disabled and starts its health afresh. The key pair
-- ($14, $15) is taken only by a subscription that has none: an existing one is kept.
UPDATE subscriptions SET
    url = coalesce($3, url),
    event_types = coalesce($4, event_types),
    description = coalesce($5, description),
    status = coalesce($6, status),
    disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason END,
    disabled_at = CASE WHEN $6 IS NULL THEN disabled_at END,
    failing_since = CASE WHEN status = 'disabled' AND $6 IS NOT NULL THEN NULL
                         ELSE failing_since END,
    max_concurrency = CASE WHEN $8 THEN $9::integer ELSE max_concurrency END,
    rate_limit = CASE WHEN $10 THEN $11::float8 ELSE rate_limit END,
    signature_scheme = coalesce($13, signature_scheme),
    signing_key = coalesce(signing_key, $14),
    public_key = coalesce(public_key, $15),
    policy = CASE WHEN $16 THEN $17::jsonb ELSE policy END,
    updated_at = $7
WHERE id = $1 AND status <> 'deleted' AND ($2::text IS NULL OR owner_key_id = $2)
  AND ($12::text IS NULL OR tenant_id = $12)
RETURNING *;

-- name: delete_subscription --
-- Kept as 'deleted' so its delivery log stays readable until retention; its pending
-- deliveries will never be sent, so they end as failed.
WITH deleted AS (
    UPDATE subscriptions SET status = 'deleted', updated_at = $3
    WHERE id = $1 AND status <> 'deleted' AND ($2::text IS NULL OR owner_key_id = $2)
      AND ($4::text IS NULL OR tenant_id = $4)
    RETURNING id
), abandoned AS (
    UPDATE deliveries d SET status = 'failed', next_attempt_at = NULL, updated_at = $3
    FROM deleted WHERE d.subscription_id = deleted.id AND d.status = 'pending'
)
SELECT count(*) FROM deleted;

-- name: insert_event --
-- Returns nothing when the producer already used this idempotency key.
INSERT INTO events (id, type, payload, producer_key_id, idempotency_key, created_at, tenant_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (producer_key_id, idempotency_key) DO NOTHING
RETURNING id, tenant_id, type, payload, producer_key_id, idempotency_key, created_at;

-- name: event_by_idempotency_key --
SELECT id, tenant_id, type, payload, producer_key_id, idempotency_key, created_at FROM events
WHERE producer_key_id = $1 AND idempotency_key = $2;

-- name: ingest_events --
-- Stores a batch of events and, in the same statement, one delivery per subscription of the
-- event's tenant whose event types match the event's type ('*', 'prefix.*' or exact),
-- then wakes the dispatchers. The subscriptions are found once for each tenant and type
-- in the batch, by looking up the patterns that can match the type: the cost follows the
-- matches, not the number of subscriptions, nor the number of events of one kind. Paused
-- subscriptions queue their deliveries; they go out when resumed.
-- Returns the events created, with their delivery counts; an event whose producer already
-- used its idempotency key is not created and not returned.
WITH incoming AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::timestamptz[],
        $7::text[]
    ) AS i(id, type, payload, producer_key_id, idempotency_key, created_at, tenant_id)
), event AS (
    INSERT INTO events (id, tenant_id, type, payload, producer_key_id, idempotency_key,
                        created_at)
    SELECT id, tenant_id, type, payload, producer_key_id, idempotency_key, created_at
    FROM incoming
    ON CONFLICT (producer_key_id, idempotency_key) DO NOTHING
    RETURNING id, tenant_id, type, created_at
), kinds AS (
    SELECT DISTINCT tenant_id, type FROM event
), matched AS (
    SELECT DISTINCT kinds.tenant_id, kinds.type, p.subscription_id
    FROM kinds
    CROSS JOIN LATERAL type_patterns(kinds.type) AS candidate(pattern)
    JOIN subscription_patterns p
      ON p.tenant_id = kinds.tenant_id AND p.pattern = candidate.pattern
), created AS (
    INSERT INTO deliveries
        (tenant_id, event_id, subscription_id, next_attempt_at, created_at, updated_at)
    SELECT event.tenant_id, event.id, m.subscription_id, event.created_at, event.created_at,
           event.created_at
    FROM event
    JOIN matched m ON m.tenant_id = event.tenant_id AND m.type = event.type
    JOIN subscriptions s ON s.id = m.subscription_id AND s.status IN ('active', 'paused')
    RETURNING event_id
), counts AS (
    SELECT event_id, count(*) AS deliveries FROM created GROUP BY event_id
)
SELECT event.id, coalesce(counts.deliveries, 0) AS deliveries,
       (SELECT pg_notify('hookpost_deliveries', '') WHERE EXISTS (SELECT 1 FROM created))
           AS notified
FROM event
LEFT JOIN counts ON counts.event_id = event.id;

-- name: get_event --
-- $2: the producer's key id, or NULL to see every producer's. $3: a subscriber's key id,
-- who sees only events delivered to one of their subscriptions, or NULL. $4: the tenant,
-- or NULL for any.
SELECT id, tenant_id, type, payload, producer_key_id, idempotency_key, created_at
FROM events e
WHERE id = $1 AND ($2::text IS NULL OR producer_key_id = $2)
  AND ($4::text IS NULL OR tenant_id = $4)
  AND ($3::text IS NULL OR EXISTS (
      SELECT 1 FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
      WHERE d.event_id = e.id AND s.owner_key_id = $3));

-- name: count_event_deliveries --
SELECT count(*) FROM deliveries WHERE event_id = $1;

-- name: deliveries_of_event --
-- $2: the subscription owner's key id, or NULL for every owner's; $3 the tenant, or NULL.
SELECT d.*, e.type AS event_type
FROM deliveries d
JOIN events e ON e.id = d.event_id
JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.event_id = $1 AND ($2::text IS NULL OR s.owner_key_id = $2)
  AND ($3::text IS NULL OR d.tenant_id = $3)
ORDER BY d.created_at, d.id;

-- name: get_delivery --
-- $2: the subscription owner's key id, or NULL to see every owner's; $3 the tenant, or NULL.
SELECT d.*, e.type AS event_type
FROM deliveries d
JOIN events e ON e.id = d.event_id
JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.id = $1 AND ($2::text IS NULL OR s.owner_key_id = $2)
  AND ($3::text IS NULL OR d.tenant_id = $3);

-- name: attempts_of_delivery --
SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY started_at, attempt_number, id;

-- name: claim_due --
-- Takes up to $2 due deliveries of active subscriptions and leases them to $4 until $3.
-- Due means a manual redelivery asked for by $1, or a pending delivery whose next attempt is
-- due by $1, and not leased, or leased by a lease that expired by $1 (its dispatcher died
-- or stalled; taken_over says so).
-- Fair across subscriptions: each subscription with due work is considered by its oldest
-- due delivery, and each claim takes an equal share from every one of them, so one fresh
-- event never waits behind another subscription's backlog.
-- This dispatcher may take $7[i] more of subscription $5[i], and $6 of any other. A
-- subscription's max_concurrency bounds what every dispatcher holds together, and its
-- rate_limit paces when each attempt may start (send_at); one dispatcher at a time claims
-- a limited subscription (the others pass it over for that round).
WITH commit_mode AS (
    -- The claim does not wait for its WAL to reach the disk. A lease lost in a crash only
    -- makes its delivery due again (delivery is at least once), and the record of what was
    -- sent commits synchronously, which flushes every claim before it too.
    SELECT set_config('synchronous_commit', 'off', true)
), room AS (
    SELECT * FROM unnest($5::text[], $7::int[]) AS r(subscription_id, room)
), ready AS (
    -- Those with due work that this dispatcher may take more of.
    SELECT s.id AS subscription_id, coalesce(r.room, $6) AS room, s.max_concurrency,
           s.rate_limit, p.first_pending_at AS at
    FROM pending_subscriptions p
    JOIN subscriptions s ON s.id = p.subscription_id
    LEFT JOIN room r ON r.subscription_id = p.subscription_id
    WHERE p.first_pending_at <= $1 AND s.status = 'active' AND coalesce(r.room, $6) > 0
), limited AS (
    SELECT s.id, s.rate_next_at
    FROM subscriptions s
    WHERE s.id IN (SELECT subscription_id FROM ready
                   WHERE max_concurrency IS NOT NULL OR rate_limit IS NOT NULL)
    FOR NO KEY UPDATE SKIP LOCKED
), allowed AS (
    SELECT r.subscription_id, r.at, r.rate_limit, r.max_concurrency,
           greatest(l.rate_next_at, $1) AS rate_from,
           CASE
               WHEN (r.max_concurrency IS NOT NULL OR r.rate_limit IS NOT NULL)
                    AND l.id IS NULL THEN 0  -- locked by another claim, or a record of it
               ELSE least(
                   r.room,
                   CASE WHEN r.max_concurrency IS NOT NULL THEN
                       r.max_concurrency - sends_in_flight_now(r.subscription_id, $1) END,
                   -- As many as may start within the next second.
                   ceil(r.rate_limit * (1 - extract(epoch FROM
                       greatest(l.rate_next_at, $1) - $1)::float8)))::int
           END AS take
    FROM ready r LEFT JOIN limited l ON l.id = r.subscription_id
), taking AS (
    SELECT * FROM allowed WHERE take > 0
), share AS (
    SELECT greatest(1, ceil($2::float8 / greatest(count(*), 1)))::int AS each FROM taking
), scheduled AS (
    -- The longest waiting first, by their earliest pending delivery (one being sent may
    -- stand for the oldest due), until $2 are found: those whose due deliveries are all
    -- being sent (by another dispatcher, say) find none and leave their share to the rest.
    SELECT d.id, d.subscription_id, d.next_attempt_at AS due_at, d.taken_over,
           d.expired_lease, false AS manual_row
    FROM (SELECT * FROM taking ORDER BY at) a CROSS JOIN share
    CROSS JOIN LATERAL (
        -- No more rows are locked than the claim may take: a row locked and not taken is
        -- hidden from other dispatchers until this commits, and its lock is written to
        -- the WAL. Deliveries being sent keep their place in the index: passed over here,
        -- at most the ones in flight, instead of an index entry written and removed per
        -- send.
        SELECT d.id, d.subscription_id, d.next_attempt_at, d.lease_token IS NOT NULL
            AS taken_over, d.lease_expires_at AS expired_lease
        FROM deliveries d
        WHERE d.subscription_id = a.subscription_id AND d.status = 'pending'
          AND d.next_attempt_at <= $1
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $1)
        ORDER BY d.subscription_id, d.next_attempt_at
        LIMIT greatest(least(a.take, share.each), 0)
        FOR UPDATE OF d SKIP LOCKED
    ) d
    LIMIT $2
), manual AS (
    -- Redeliveries asked for keep to this dispatcher's room and to their own spacing
    -- (redeliver-failed), not to a subscription's max_concurrency or rate_limit.
    SELECT d.id, d.subscription_id, d.manual_due_at AS due_at, d.lease_token IS NOT NULL
        AS taken_over, d.lease_expires_at AS expired_lease, true AS manual_row
    FROM deliveries d
    JOIN subscriptions s ON s.id = d.subscription_id
    LEFT JOIN room r ON r.subscription_id = d.subscription_id
    WHERE d.manual_due_at <= $1
      AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $1)
      AND s.status = 'active'
      AND coalesce(r.room, $6) > 0
    ORDER BY d.manual_due_at
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
), candidates AS (
    SELECT DISTINCT ON (id) id, subscription_id, due_at, taken_over, expired_lease, manual_row
    FROM (SELECT * FROM manual UNION ALL SELECT * FROM scheduled) AS due
    ORDER BY id, due_at
), paced AS (
    -- A paced subscription's k-th delivery of this claim may start (k - 1) / rate_limit
    -- seconds after the next free start (the chosen ones of each are its first places).
    SELECT ranked.id, ranked.subscription_id, ranked.due_at, ranked.taken_over,
           ranked.expired_lease, limits.rate_limit, limits.rate_from,
           limits.max_concurrency,
           CASE WHEN limits.rate_limit IS NOT NULL THEN limits.rate_from + make_interval(
               secs => (ranked.paced_place - 1) / limits.rate_limit) END AS send_at
    FROM (
        SELECT c.*,
               row_number() OVER (PARTITION BY c.subscription_id ORDER BY c.due_at) AS place,
               row_number() OVER (PARTITION BY c.subscription_id, c.manual_row
                                  ORDER BY c.due_at) AS paced_place
        FROM candidates c
    ) AS ranked
    LEFT JOIN room r ON r.subscription_id = ranked.subscription_id
    -- The limits apply to the scheduled deliveries of the subscriptions this claim locked.
    LEFT JOIN taking limits
        ON limits.subscription_id = ranked.subscription_id AND NOT ranked.manual_row
    WHERE ranked.place <= coalesce(r.room, $6)
    -- Round robin: every subscription's first, then every subscription's second, ...
    ORDER BY ranked.place, ranked.due_at
    LIMIT $2
), claimed AS (
    UPDATE deliveries d
    SET lease_expires_at = $3, lease_token = $4, updated_at = $1
    FROM paced
    WHERE d.id = paced.id
    RETURNING d.id, d.tenant_id, d.event_id, d.subscription_id, d.attempt_count,
              d.scheduled_attempts,
              d.status, d.next_attempt_at, d.origin,
              coalesce(d.manual_due_at <= $1, false) AS manual, paced.taken_over,
              d.lease_token, d.lease_expires_at, paced.send_at, paced.rate_limit,
              paced.rate_from, paced.max_concurrency,
              CASE WHEN paced.taken_over THEN paced.expired_lease END AS expired_lease,
              d.created_at
), paced_on AS (
    UPDATE subscriptions s
    SET rate_next_at = c.rate_from + make_interval(secs => c.taken / c.rate_limit)
    FROM (SELECT subscription_id, min(rate_from) AS rate_from, min(rate_limit) AS rate_limit,
                 count(*) AS taken
          FROM claimed WHERE rate_limit IS NOT NULL GROUP BY subscription_id) c
    WHERE s.id = c.subscription_id
), counted AS (
    INSERT INTO sends_in_flight (tenant_id, subscription_id, delivery_id, lease_expires_at)
    SELECT tenant_id, subscription_id, id, $3 FROM claimed WHERE max_concurrency IS NOT NULL
    ON CONFLICT (subscription_id, delivery_id)
        DO UPDATE SET lease_expires_at = excluded.lease_expires_at
)
SELECT c.id, c.event_id, c.subscription_id, c.attempt_count, c.scheduled_attempts,
       c.status, c.next_attempt_at, c.origin, c.manual, c.taken_over, e.type AS event_type,
       e.payload, s.url, s.secret,
       CASE WHEN s.previous_secret_expires_at > $1 THEN s.previous_secret END
           AS previous_secret,
       c.lease_token, c.lease_expires_at, c.send_at, c.max_concurrency, c.expired_lease,
       s.signature_scheme, s.signing_key, c.created_at, s.policy::text AS policy
FROM claimed c
JOIN events e ON e.id = c.event_id
JOIN subscriptions s ON s.id = c.subscription_id
CROSS JOIN commit_mode;

-- name: next_due_at --
-- The earliest time anything not leased at $1 becomes due: a pending delivery or a manual
-- redelivery. (Leases that expire are found by the dispatchers' polling.)
SELECT least(
    (SELECT min(first_due.at)
     FROM pending_subscriptions p
     JOIN subscriptions s ON s.id = p.subscription_id
     CROSS JOIN LATERAL (
         SELECT d.next_attempt_at AS at FROM deliveries d
         WHERE d.subscription_id = p.subscription_id AND d.status = 'pending'
           AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $1)
         ORDER BY d.subscription_id, d.next_attempt_at
         LIMIT 1
     ) first_due
     WHERE s.status = 'active'),
    (SELECT d.manual_due_at
     FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
     WHERE d.manual_due_at IS NOT NULL AND s.status = 'active'
       AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $1)
     ORDER BY d.manual_due_at
     LIMIT 1)
);

-- name: record_attempts --
-- Stores a batch of attempts as the dispatcher decided them ($1, one attempt_record_v1
-- each) and applies what each decided: the delivery moves to its next state, but only while
-- the lease that sent it is still held (the attempt row is written either way); the
-- subscription's health moves with it, and it is disabled where an attempt said so; the
-- statistics (attempt_stats) count it; the operational events it gives rise to are made
-- and fanned out to the system tenant's subscriptions. Returns the subscriptions this batch
-- disabled, with the reason.
WITH results AS (
    SELECT * FROM unnest($1::attempt_record_v1[])
), moved AS (
    UPDATE deliveries d
    SET status = r.status,
        attempt_count = r.attempt_number,
        scheduled_attempts = r.scheduled_attempts,
        next_attempt_at = r.next_attempt_at,
        manual_due_at = CASE WHEN r.manual_done THEN NULL ELSE d.manual_due_at END,
        lease_expires_at = NULL,
        lease_token = NULL,
        last_response_status = r.response_status,
        last_error_kind = r.error_kind,
        updated_at = $2
    FROM results r
    -- The token is still there only while the lease that sent it is held: recording and
    -- handing back clear it, and a claim that takes over an expired lease replaces it.
    WHERE r.moves_delivery AND d.id = r.delivery_id AND d.lease_token = r.lease_token
    RETURNING d.id, d.subscription_id, d.tenant_id, d.event_id
), by_subscription AS (
    SELECT r.subscription_id,
           max(r.started_at) FILTER (WHERE r.health = 'success') AS last_success_at,
           max(r.started_at) FILTER (WHERE r.health = 'failure') AS last_failure_at,
           min(r.started_at) FILTER (WHERE r.health = 'failure') AS first_failure_at,
           min(r.disable_reason) AS disable_reason
    FROM results r
    WHERE r.health IS NOT NULL OR r.disable_reason IS NOT NULL
    GROUP BY r.subscription_id
), health AS (
    UPDATE subscriptions s
    SET last_success_at = greatest(s.last_success_at, h.last_success_at),
        last_failure_at = greatest(s.last_failure_at, h.last_failure_at),
        failing_since = CASE
            WHEN h.last_failure_at IS NULL OR h.last_success_at > h.last_failure_at THEN NULL
            WHEN h.last_success_at IS NULL THEN coalesce(s.failing_since, h.first_failure_at)
            ELSE h.last_failure_at
        END,
        status = CASE WHEN h.disable_reason IS NOT NULL AND s.status IN ('active', 'paused')
                      THEN 'disabled' ELSE s.status END,
        disabled_reason = CASE WHEN h.disable_reason IS NOT NULL
                                    AND s.status IN ('active', 'paused')
                               THEN h.disable_reason ELSE s.disabled_reason END,
        disabled_at = CASE WHEN h.disable_reason IS NOT NULL AND s.status IN ('active', 'paused')
                           THEN $2 ELSE s.disabled_at END,
        -- Admins are told (operational_notices) when it fails, at most once an hour, and at
        -- its first success after a failing they were told of; never of the system tenant's.
        failing_notified_at = CASE
            WHEN s.tenant_id <> 'ten_system' AND s.status = 'active'
                 AND h.disable_reason IS NULL AND h.last_failure_at IS NOT NULL
                 AND NOT coalesce(h.last_success_at > h.last_failure_at, false)
                 AND (s.failing_notified_at IS NULL
                      OR s.failing_notified_at <= $2 - interval '1 hour')
            THEN $2 ELSE s.failing_notified_at END,
        recovery_notified_at = CASE
            WHEN s.tenant_id <> 'ten_system' AND s.failing_since IS NOT NULL
                 AND (h.last_failure_at IS NULL OR h.last_success_at > h.last_failure_at)
                 -- Told it was failing, and not yet told it recovered since: failing_since
                 -- may have moved on after the notice (a success then a failure).
                 AND s.failing_notified_at IS NOT NULL
                 AND (s.recovery_notified_at IS NULL
                      OR s.recovery_notified_at < s.failing_notified_at)
            THEN $2 ELSE s.recovery_notified_at END
    FROM by_subscription h
    WHERE s.id = h.subscription_id
      -- While all goes well, last_success_at moves on at most once a second: every record
      -- batch of every dispatcher touches these few rows, and each update would wait on
      -- the row lock of another dispatcher's batch until that one commits.
      AND (h.disable_reason IS NOT NULL OR h.last_failure_at IS NOT NULL
           OR s.failing_since IS NOT NULL OR s.last_success_at IS NULL
           OR s.last_success_at < h.last_success_at - interval '1 second')
    RETURNING s.id, s.tenant_id, s.url, s.status, s.disabled_reason, s.disabled_at,
              s.failing_since, s.failing_notified_at, s.recovery_notified_at
), given_up AS MATERIALIZED (
    -- Found among the batch first: joined to every row moved, the batch's attempts were
    -- read once per row moved.
    SELECT * FROM results r
    WHERE r.status = 'failed' AND r.trigger <> 'manual' AND r.moves_delivery
), operational_notices AS (
    -- What admins are told of this batch. Decided on the row as the update found it (after
    -- any other batch's update of it committed), so two dispatchers never both report one
    -- change: each change is marked with this batch's time, and reported only where the
    -- statement's snapshot did not have it yet. Nearly always no rows, and nothing to do.
    SELECT n.type, h.id AS subscription_id, h.tenant_id, h.url, last.delivery_id,
           last.attempt_number, h.disabled_reason, h.failing_since, last.response_status,
           last.error_kind, last.error_message, last.started_at
    FROM health h
    JOIN subscriptions was ON was.id = h.id
    CROSS JOIN LATERAL (
        SELECT r.* FROM results r WHERE r.subscription_id = h.id AND r.health IS NOT NULL
        ORDER BY r.started_at DESC LIMIT 1
    ) AS last
    CROSS JOIN LATERAL (VALUES
        ('hookpost.subscription.disabled',
         h.disabled_at = $2 AND was.status IN ('active', 'paused')),
        ('hookpost.subscription.failing',
         h.failing_notified_at = $2 AND was.failing_notified_at IS DISTINCT FROM $2),
        ('hookpost.subscription.recovered',
         h.recovery_notified_at = $2 AND was.recovery_notified_at IS DISTINCT FROM $2)
    ) AS n (type, told)
    WHERE (h.disabled_at = $2 OR h.failing_notified_at = $2 OR h.recovery_notified_at = $2)
      AND h.tenant_id <> 'ten_system' AND n.told
    UNION ALL
    -- A delivery given up on: its last scheduled attempt failed, or a 4xx ended it.
    SELECT 'hookpost.delivery.exhausted', r.subscription_id, m.tenant_id, s.url,
           r.delivery_id, r.attempt_number, NULL, NULL, r.response_status, r.error_kind,
           r.error_message, r.started_at
    FROM given_up r
    JOIN moved m ON m.id = r.delivery_id
    JOIN subscriptions s ON s.id = m.subscription_id
    WHERE m.tenant_id <> 'ten_system'
), operational_events AS (
    -- Stored only where a subscription of the system tenant wants them.
    INSERT INTO events (id, tenant_id, type, payload, producer_key_id, created_at)
    SELECT n.id, 'ten_system', n.type, event_payload(n.id, n.type, $2, operational_data(
               n.subscription_id, n.tenant_id, n.url, n.delivery_id, d.event_id, e.type,
               n.attempt_number, n.disabled_reason, n.failing_since, n.response_status,
               n.error_kind, n.error_message, n.started_at)),
           'hookpost', $2
    FROM (SELECT *, new_id('evt', $2) AS id FROM operational_notices) AS n
    LEFT JOIN deliveries d ON d.id = n.delivery_id
    LEFT JOIN events e ON e.id = d.event_id
    WHERE EXISTS (SELECT 1 FROM operational_listeners(n.type))
    RETURNING id, type
), operational_deliveries AS (
    INSERT INTO deliveries
        (tenant_id, event_id, subscription_id, next_attempt_at, created_at, updated_at)
    SELECT 'ten_system', e.id, l.subscription_id, $2, $2, $2
    FROM operational_events e
    CROSS JOIN LATERAL operational_listeners(e.type) AS l (subscription_id)
    -- Repeated in one transaction, a notification is sent once.
    RETURNING pg_notify('hookpost_deliveries', '')
), finished AS (
    -- Only a send whose lease was still held stops counting: a late record of a lease
    -- another dispatcher took over leaves that dispatcher's send counted.
    DELETE FROM sends_in_flight f
    USING moved
    WHERE f.subscription_id = moved.subscription_id AND f.delivery_id = moved.id
), attempted AS (
    SELECT r.*, d.tenant_id FROM results r JOIN deliveries d ON d.id = r.delivery_id
), recorded AS (
    INSERT INTO attempts
        (tenant_id, delivery_id, attempt_number, trigger, started_at, duration_ms,
         response_status, response_headers, response_body, error_kind, error_message, resent,
         outcome)
    SELECT r.tenant_id, r.delivery_id, r.attempt_number, r.trigger, r.started_at,
           r.duration_ms, r.response_status, r.response_headers::jsonb, r.response_body,
           r.error_kind, r.error_message, r.resent, r.outcome
    FROM attempted r
), by_latency AS (
    -- Every attempt written counts in its subscription, its tenant and everything ('*'),
    -- in its minute and its hour (UTC).
    SELECT scope, grain, date_trunc(grain, r.started_at, 'UTC') AS period_start,
           latency_bucket(r.duration_ms) AS bucket,
           count(*) FILTER (WHERE r.outcome = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE r.outcome = 'retry') AS retried,
           count(*) FILTER (WHERE r.outcome = 'failed') AS failed,
           count(*) AS attempts
    FROM attempted r
    CROSS JOIN LATERAL (VALUES (r.subscription_id), (r.tenant_id), ('*')) AS scopes (scope)
    CROSS JOIN (VALUES ('minute'), ('hour')) AS grains (grain)
    GROUP BY 1, 2, 3, 4
), by_period AS (
    SELECT scope, grain, period_start, sum(succeeded) AS succeeded,
           sum(retried) AS retried, sum(failed) AS failed,
           array_agg(bucket) AS buckets, array_agg(attempts) AS attempts
    FROM by_latency
    GROUP BY scope, grain, period_start
), histograms AS (
    -- One latency element per bucket up to the slowest counted. (Written out here: as an
    -- SQL function, called per period, it made the whole statement a quarter slower.)
    SELECT scope, grain, period_start, succeeded, retried, failed,
           ARRAY(SELECT coalesce(c.attempts, 0)::integer
                 FROM generate_series(1, (SELECT max(b) FROM unnest(p.buckets) AS b)) AS bucket
                 LEFT JOIN unnest(p.buckets, p.attempts) AS c (bucket, attempts) USING (bucket)
                 ORDER BY bucket) AS latency
    FROM by_period p
), counted AS (
    -- Rows of this connection's own (writer), which no other record statement waits on;
    -- grouped, so each appears once in the statement.
    INSERT INTO attempt_stats AS s
        (scope, grain, period_start, writer, succeeded, retried, failed, latency)
    SELECT scope, grain, period_start, pg_backend_pid(), succeeded, retried, failed, latency
    FROM histograms
    ON CONFLICT (scope, grain, period_start, writer) DO UPDATE
    SET succeeded = s.succeeded + excluded.succeeded,
        retried = s.retried + excluded.retried,
        failed = s.failed + excluded.failed,
        latency = ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0)
                        FROM unnest(s.latency, excluded.latency) WITH ORDINALITY AS b (x, y, n)
                        ORDER BY n)
)
-- The ones this batch disables, and why; subscriptions read as the statement began, before
-- it did.
SELECT s.id, h.disable_reason
FROM subscriptions s JOIN by_subscription h ON h.subscription_id = s.id
WHERE h.disable_reason IS NOT NULL AND s.status IN ('active', 'paused');

-- name: release_leases --
-- Hands back deliveries $1[i] still leased by $3[i] and not sent, so another dispatcher
-- takes them now.
WITH released AS (
    UPDATE deliveries d
    SET lease_expires_at = NULL, lease_token = NULL, updated_at = $2
    FROM unnest($1::text[], $3::text[]) AS l(id, lease_token)
    WHERE d.id = l.id AND d.lease_token = l.lease_token
    RETURNING d.id, d.subscription_id
)
DELETE FROM sends_in_flight f
USING released
WHERE f.subscription_id = released.subscription_id AND f.delivery_id = released.id;

-- name: forget_expired_sends --
-- Sends in flight whose lease expired by $1 count no more; their rows go.
DELETE FROM sends_in_flight WHERE lease_expires_at <= $1;

-- name: list_deliveries --
-- Newest first. $1: the subscription owner's key id, or NULL for every owner's; $11 the
-- tenant, or NULL for any. Filters $2..$7 are ignored when NULL; ($8, $9) is the
-- (created_at, id) of the previous page's last row.
SELECT d.*, e.type AS event_type
FROM deliveries d
JOIN events e ON e.id = d.event_id
JOIN subscriptions s ON s.id = d.subscription_id
WHERE ($1::text IS NULL OR s.owner_key_id = $1) AND ($11::text IS NULL OR d.tenant_id = $11)
  AND ($2::text IS NULL OR d.subscription_id = $2)
  AND ($3::text IS NULL OR d.event_id = $3)
  AND ($4::text IS NULL OR d.status = $4)
  AND ($5::text IS NULL OR e.type = $5)
  AND ($6::timestamptz IS NULL OR d.created_at >= $6)
  AND ($7::timestamptz IS NULL OR d.created_at < $7)
  AND ($8::timestamptz IS NULL OR (d.created_at, d.id) < ($8, $9::text))
ORDER BY d.created_at DESC, d.id DESC
LIMIT $10;

-- name: subscription_backlog --
-- Deliveries of a subscription still to be sent: pending (being sent or not) or asked for
-- again.
SELECT count(*) FROM deliveries
WHERE subscription_id = $1 AND (status = 'pending' OR manual_due_at IS NOT NULL);

-- name: request_redelivery --
-- One more attempt of delivery $1 as soon as a dispatcher is free, whatever its status.
-- $3: the subscription owner's key id, or NULL for every owner's; $4 the tenant, or NULL.
WITH asked AS (
    UPDATE deliveries d SET manual_due_at = $2, updated_at = $2
    FROM subscriptions s
    WHERE d.id = $1 AND s.id = d.subscription_id AND s.status <> 'deleted'
      AND ($3::text IS NULL OR s.owner_key_id = $3) AND ($4::text IS NULL OR d.tenant_id = $4)
    RETURNING d.id
)
SELECT id, pg_notify('hookpost_deliveries', '') FROM asked;

-- name: redeliver_failed --
-- Failed deliveries of subscription $1 created in [$2, $3) of event type $4 (NULL: any),
-- not already queued, are asked for again, one every $6 seconds after the last one queued
-- for this subscription (or from $5, now). With $7 (a dry run) nothing changes.
WITH failed AS (
    SELECT d.id, row_number() OVER (ORDER BY d.created_at, d.id) AS place
    FROM deliveries d
    JOIN events e ON e.id = d.event_id
    WHERE d.subscription_id = $1
      AND d.status = 'failed'
      AND d.manual_due_at IS NULL
      AND d.created_at >= $2
      AND ($3::timestamptz IS NULL OR d.created_at < $3)
      AND ($4::text IS NULL OR e.type = $4)
), start AS (
    SELECT greatest(max(manual_due_at), $5::timestamptz - make_interval(secs => $6))
        AS after
    FROM deliveries
    WHERE subscription_id = $1 AND manual_due_at IS NOT NULL
), queued AS (
    UPDATE deliveries d
    SET manual_due_at = start.after + f.place * make_interval(secs => $6),
        updated_at = $5
    FROM failed f, start
    WHERE d.id = f.id AND NOT $7 AND d.status = 'failed' AND d.manual_due_at IS NULL
    RETURNING d.id
)
SELECT (SELECT count(*) FROM failed) AS matched,
       (SELECT count(*) FROM queued) AS queued,
       (SELECT pg_notify('hookpost_deliveries', '')
        WHERE EXISTS (SELECT 1 FROM queued)) AS notified;

-- name: insert_test_delivery --
-- A delivery of test event $1 to subscription $2 (of tenant $4) only, due at once.
WITH created AS (
    INSERT INTO deliveries
        (tenant_id, event_id, subscription_id, origin, next_attempt_at, created_at, updated_at)
    VALUES ($4, $1, $2, 'test', $3, $3, $3)
    RETURNING id
)
SELECT id, pg_notify('hookpost_deliveries', '') FROM created;

-- name: rotate_secret --
-- The current secret becomes the previous one, signing beside $3 until $4.
UPDATE subscriptions
SET previous_secret = secret, previous_secret_expires_at = $4, secret = $3, updated_at = $5
WHERE id = $1 AND status <> 'deleted' AND ($2::text IS NULL OR owner_key_id = $2)
  AND ($6::text IS NULL OR tenant_id = $6)
RETURNING *;

-- name: ensure_attempts_partitions --
-- Day partitions of attempts for every day from $1 to $2.
SELECT ensure_attempts_partition(day::date)
FROM generate_series($1::date, $2::date, interval '1 day') AS day;

-- name: drop_attempts_partitions --
SELECT drop_attempts_partitions($1);

-- name: delete_old_default_attempts --
-- Up to $2 attempts older than $1 that sit in the default partition.
DELETE FROM attempts_default
WHERE ctid IN (SELECT ctid FROM attempts_default WHERE started_at < $1 LIMIT $2);

-- name: delete_old_events --
-- Up to $2 events made before the one whose id would be $1 (an id begins with the time
-- it was made, so the primary key finds them oldest first), whose deliveries are all
-- finished, with their deliveries (and any attempts left of them).
WITH old AS (
    SELECT e.id FROM events e
    WHERE e.id < $1
      AND NOT EXISTS (
          SELECT 1 FROM deliveries d
          WHERE d.event_id = e.id
            AND (d.status = 'pending' OR d.manual_due_at IS NOT NULL))
    ORDER BY e.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM events WHERE id IN (SELECT id FROM old) RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: attempt_stats --
-- The rollup rows of scope $1 (a subscription's or tenant's id, or '*') per minute from $2
-- on and per hour from $3 on, every writer's; and, as rows of grain 'fold', the folds of its
-- hours from the one holding $2 on (attempt_stats_folded). One statement, one snapshot: an
-- hour folded meanwhile is read as its minute rows or as its fold, never as both.
SELECT grain, period_start, succeeded, retried, failed, latency, NULL::bigint AS fold
FROM attempt_stats
WHERE scope = $1
  AND ((grain = 'minute' AND period_start >= $2) OR (grain = 'hour' AND period_start >= $3))
UNION ALL
SELECT 'fold', hour_start, NULL, NULL, NULL, NULL, fold
FROM attempt_stats_folded
WHERE scope = $1 AND hour_start >= date_trunc('hour', $2::timestamptz, 'UTC');

-- name: attempt_stats_folded --
-- The folded minutes of scope $1 in folds $2 (a fold never changes once made).
SELECT fold, hour_start, minutes, succeeded, retried, failed, latency_ends, latency
FROM attempt_stats_folded
WHERE scope = $1 AND fold = ANY($2::bigint[]);

-- name: delete_old_attempt_stats --
-- Up to $3 rollup rows of grain $1 of periods that began before $2.
DELETE FROM attempt_stats
WHERE ctid IN (SELECT ctid FROM attempt_stats WHERE grain = $1 AND period_start < $2 LIMIT $3);

-- name: delete_old_folded_attempt_stats --
-- Up to $2 folded rows of hours that began before $1.
DELETE FROM attempt_stats_folded
WHERE ctid IN (SELECT ctid FROM attempt_stats_folded WHERE hour_start < $1 LIMIT $2);

-- name: next_loose_minute --
-- The first minute from $1 on that has minute rows, or NULL.
SELECT min(period_start) FROM attempt_stats WHERE grain = 'minute' AND period_start >= $1;

-- name: fold_attempt_stats --
-- Folds the minute rows of every scope and writer in the hour beginning at $1 into one
-- attempt_stats_folded row per scope, taking them out of attempt_stats; rows a record
-- statement holds locked are skipped, for the next fold. Returns how many rows it folded.
WITH loose AS (
    DELETE FROM attempt_stats
    WHERE ctid IN (SELECT ctid FROM attempt_stats
                   WHERE grain = 'minute' AND period_start >= $1
                     AND period_start < $1 + interval '1 hour'
                   FOR UPDATE SKIP LOCKED)
    RETURNING scope, period_start, succeeded, retried, failed, latency
), minutes AS (
    -- Each minute of a scope, summed over its writers, and where its buckets end.
    SELECT scope, period_start, succeeded, retried, failed, latency,
           sum(cardinality(latency)) OVER (PARTITION BY scope ORDER BY period_start)::integer
               AS latency_end
    FROM (SELECT scope, period_start, sum(succeeded)::integer AS succeeded,
                 sum(retried)::integer AS retried, sum(failed)::integer AS failed,
                 sum_latency(latency) AS latency
          FROM loose
          GROUP BY scope, period_start) AS summed
), folded AS (
    INSERT INTO attempt_stats_folded
        (scope, hour_start, fold, minutes, succeeded, retried, failed, latency_ends, latency)
    SELECT scope, $1, (SELECT nextval('attempt_stats_folds')),
           array_agg((extract(epoch FROM period_start - $1) / 60)::integer
                     ORDER BY period_start),
           array_agg(succeeded ORDER BY period_start), array_agg(retried ORDER BY period_start),
           array_agg(failed ORDER BY period_start), array_agg(latency_end ORDER BY period_start),
           concat_latency(latency ORDER BY period_start)
    FROM minutes
    GROUP BY scope
)
SELECT count(*) FROM loose;

-- name: disable_failing_subscriptions --
-- Active subscriptions failing continuously since $2 or earlier become disabled, and admins
-- are told (hookpost.subscription.disabled, with the last attempt of its latest delivery
-- tried), as record_attempts tells them.
WITH disabled AS (
    UPDATE subscriptions
    SET status = 'disabled', disabled_reason = $3, disabled_at = $1, updated_at = $1
    WHERE status = 'active' AND failing_since <= $2
    RETURNING id, tenant_id, url, failing_since
), operational_events AS (
    INSERT INTO events (id, tenant_id, type, payload, producer_key_id, created_at)
    SELECT s.event_id, 'ten_system', 'hookpost.subscription.disabled',
           event_payload(s.event_id, 'hookpost.subscription.disabled', $1, operational_data(
               s.id, s.tenant_id, s.url, d.id, d.event_id, e.type, a.attempt_number, $3,
               s.failing_since, a.response_status, a.error_kind, a.error_message,
               a.started_at)),
           'hookpost', $1
    FROM (SELECT *, new_id('evt', $1) AS event_id FROM disabled) AS s
    LEFT JOIN LATERAL (
        SELECT d.id, d.event_id FROM deliveries d
        WHERE d.subscription_id = s.id AND d.attempt_count > 0
        ORDER BY d.created_at DESC, d.id DESC LIMIT 1
    ) AS d ON true
    LEFT JOIN events e ON e.id = d.event_id
    LEFT JOIN LATERAL (
        SELECT * FROM attempts a WHERE a.delivery_id = d.id
        ORDER BY a.started_at DESC, a.attempt_number DESC LIMIT 1
    ) AS a ON true
    WHERE s.tenant_id <> 'ten_system'
      AND EXISTS (SELECT 1 FROM operational_listeners('hookpost.subscription.disabled'))
    RETURNING id, type
), operational_deliveries AS (
    INSERT INTO deliveries
        (tenant_id, event_id, subscription_id, next_attempt_at, created_at, updated_at)
    SELECT 'ten_system', e.id, l.subscription_id, $1, $1, $1
    FROM operational_events e
    CROSS JOIN LATERAL operational_listeners(e.type) AS l (subscription_id)
    RETURNING pg_notify('hookpost_deliveries', '')
)
SELECT id FROM disabled;

-- name: delivery_gauges --
-- Deliveries still to send that reach $2 (the owner's key id, or NULL for any owner's) and
-- $3 (the tenant, or NULL for any): pending ones, the due ones not being sent, and how long
-- by $1 the oldest of those has waited.
SELECT count(*) AS pending,
       count(*) FILTER (WHERE waiting) AS due,
       coalesce(extract(epoch FROM $1 - min(next_attempt_at) FILTER (WHERE waiting)), 0)
           AS oldest_due_seconds
FROM (
    SELECT d.next_attempt_at,
           d.next_attempt_at <= $1 AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $1)
               AS waiting
    FROM deliveries d
    WHERE d.status = 'pending' AND ($3::text IS NULL OR d.tenant_id = $3)
      AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM subscriptions s
                                       WHERE s.id = d.subscription_id AND s.owner_key_id = $2))
) AS pending;

-- name: subscriptions_needing_attention --
-- Subscriptions that reach $1 (owner's key id) and $2 (tenant), either NULL for any, that
-- are failing, disabled or paused, in that order, the longest so first; at most $3.
SELECT * FROM subscriptions
WHERE (status IN ('paused', 'disabled') OR (status = 'active' AND failing_since IS NOT NULL))
  AND ($1::text IS NULL OR owner_key_id = $1) AND ($2::text IS NULL OR tenant_id = $2)
ORDER BY CASE status WHEN 'active' THEN 0 WHEN 'disabled' THEN 1 ELSE 2 END,
         coalesce(failing_since, disabled_at, updated_at), id
LIMIT $3;

-- name: subscriptions_by_status --
SELECT status, count(*) AS count FROM subscriptions GROUP BY status;

-- name: largest_backlogs --
-- The $1 subscriptions with the most deliveries still to send.
SELECT subscription_id, count(*) AS backlog
FROM deliveries
WHERE status = 'pending'
GROUP BY subscription_id
ORDER BY backlog DESC, subscription_id
LIMIT $1;

-- name: ping --
SELECT 1;

-- name: record_schema_digest --
INSERT INTO schema_version (digest) VALUES ($1)
ON CONFLICT (single) DO UPDATE SET digest = excluded.digest, applied_at = now();

-- name: schema_digest --
SELECT digest FROM schema_version;
