-- hookpost schema: the one source of truth for tables, indexes and functions.
-- Applied by `hookpost migrate` (and at start-up); every statement is idempotent.

CREATE OR REPLACE FUNCTION new_id(prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT prefix || '_'
        || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
        || substr(replace(gen_random_uuid()::text, '-', ''), 1, 16)
$$;

-- Whom events are for: one customer of the producers'. Every subscription, event, delivery
-- and attempt belongs to one tenant, and an event fans out only to its own tenant's
-- subscriptions. The tenant `default` takes whatever names none.
CREATE TABLE IF NOT EXISTS tenants (
    id         text PRIMARY KEY DEFAULT new_id('ten'),
    name       text NOT NULL,
    uid        text,  -- the producer's own id for this customer, accepted in place of id
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS tenants_uid ON tenants (uid) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS tenants_listing
    ON tenants (created_at DESC, id DESC) WHERE status = 'active';
INSERT INTO tenants (id, name, uid) VALUES ('ten_default', 'default', 'default')
ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS api_keys (
    id          text PRIMARY KEY DEFAULT new_id('key'),
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'producer', 'subscriber')),
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_listing ON api_keys (created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS subscriptions (
    id           text PRIMARY KEY DEFAULT new_id('sub'),
    owner_key_id text NOT NULL REFERENCES api_keys (id),
    url          text NOT NULL,
    event_types  text[] NOT NULL,
    description  text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'paused', 'disabled', 'deleted')),
    secret       text NOT NULL,
    -- During a rotation the old secret keeps signing, beside the new one, until it expires.
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    -- Health, kept up to date as attempts are recorded.
    last_success_at timestamptz,
    last_failure_at timestamptz,
    failing_since   timestamptz,
    -- Why and when hookpost disabled it (410 Gone, or failing for too long).
    disabled_reason text,
    disabled_at     timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Limits the receiver asked for, honoured by every dispatcher together: attempts out at
-- once, and attempts started per second (paced: rate_next_at is when the next may start).
-- (Checked first: ALTER TABLE takes the table's strongest lock even when it changes nothing,
-- and this file runs at every start.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'subscriptions'
                     AND column_name = 'rate_next_at') THEN
        ALTER TABLE subscriptions
            ADD COLUMN IF NOT EXISTS max_concurrency integer CHECK (max_concurrency > 0),
            ADD COLUMN IF NOT EXISTS rate_limit double precision CHECK (rate_limit > 0),
            ADD COLUMN IF NOT EXISTS rate_next_at timestamptz;
    END IF;
END
$$;

-- How attempts are signed: v1 (HMAC-SHA256 with the secret), v1a (Ed25519 with
-- signing_key, a private key never shown; receivers verify with public_key), or both while
-- receivers move from one to the other. A subscription made before these has no key pair
-- until its scheme first leaves v1.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'subscriptions'
                     AND column_name = 'signature_scheme') THEN
        ALTER TABLE subscriptions
            ADD COLUMN IF NOT EXISTS signing_key text,
            ADD COLUMN IF NOT EXISTS public_key text,
            ADD COLUMN IF NOT EXISTS signature_scheme text NOT NULL DEFAULT 'v1'
                CONSTRAINT subscriptions_signature_scheme_check
                CHECK (signature_scheme IN ('v1', 'v1a', 'both')),
            ADD CONSTRAINT subscriptions_signing_key_check
                CHECK (signature_scheme = 'v1' OR signing_key IS NOT NULL);
    END IF;
END
$$;

-- A delivery policy of the subscriber's own (headers, retry schedule, status rules), as
-- the API validated it; NULL: the defaults. (Checked first, as above.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'subscriptions'
                     AND column_name = 'policy') THEN
        ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS policy jsonb;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS subscriptions_listing
    ON subscriptions (created_at DESC, id DESC) WHERE status <> 'deleted';
-- Fan-out goes through subscription_patterns (below) instead of this.
DROP INDEX IF EXISTS subscriptions_fan_out;
CREATE INDEX IF NOT EXISTS subscriptions_failing
    ON subscriptions (failing_since) WHERE status = 'active' AND failing_since IS NOT NULL;

CREATE TABLE IF NOT EXISTS events (
    id               text PRIMARY KEY,
    type             text NOT NULL,
    -- The exact bytes that are signed and sent, serialized once at ingest.
    payload          bytea NOT NULL,
    -- The key that posted it. No foreign key: the API has just authenticated that key,
    -- keys are never removed (only revoked), and the check cost every event a lookup
    -- and a lock on its producer's row, every event of one producer locking the same row.
    producer_key_id  text NOT NULL,
    idempotency_key  text,
    created_at       timestamptz NOT NULL,
    UNIQUE (producer_key_id, idempotency_key)
);

-- An event's id begins with the millisecond it was made (its created_at), so the primary
-- key orders events by time as well: retention reads it. The index by time it had before
-- cost every event one more entry to write.
DO $$
BEGIN
    IF to_regclass('events_by_time') IS NOT NULL THEN
        DROP INDEX events_by_time;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS deliveries (
    id               text PRIMARY KEY DEFAULT new_id('dlv'),
    event_id         text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    subscription_id  text NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- 'test' for deliveries made by POST /v1/subscriptions/{id}/test.
    origin           text NOT NULL DEFAULT 'event' CHECK (origin IN ('event', 'test')),
    attempt_count    integer NOT NULL DEFAULT 0,
    -- Attempts made on the automatic schedule; manual redeliveries do not move it.
    scheduled_attempts integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    -- A manual redelivery asked for, due at this time, whatever the status.
    manual_due_at    timestamptz,
    -- A delivery being sent is leased to one dispatcher until the lease expires; its
    -- status stays as it was. No index covers these columns, so a claim rewrites the row
    -- in place on its page (a HOT update) instead of adding an entry to every index.
    lease_expires_at timestamptz,
    lease_token      text,
    last_response_status integer,
    last_error_kind  text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
-- Room on each page for the claim's new version of every row on it (see the lease).
) WITH (fillfactor = 40);

-- The claim's hot index: only pending rows, by subscription and then by when they are
-- due, so the claim goes round the subscriptions with work and one subscription's backlog
-- never stands in front of another's fresh event. (It replaces deliveries_due, a single
-- time-ordered queue whose head every claim had to read past.)
CREATE INDEX IF NOT EXISTS deliveries_pending_by_subscription
    ON deliveries (subscription_id, next_attempt_at) WHERE status = 'pending';
DO $$
BEGIN
    IF to_regclass('deliveries_due') IS NOT NULL THEN
        DROP INDEX deliveries_due;
    END IF;
END
$$;

-- Every subscription with a pending delivery and the earliest next attempt among them (leased
-- or not), one probe of deliveries_pending_by_subscription each (a skip scan, read from the
-- index alone), however many deliveries each has.
CREATE OR REPLACE VIEW pending_subscriptions AS
WITH RECURSIVE walk AS (
    (SELECT subscription_id, next_attempt_at FROM deliveries WHERE status = 'pending'
     ORDER BY subscription_id, next_attempt_at LIMIT 1)
    UNION ALL
    SELECT next.subscription_id, next.next_attempt_at
    FROM walk CROSS JOIN LATERAL (
        SELECT d.subscription_id, d.next_attempt_at FROM deliveries d
        WHERE d.status = 'pending' AND d.subscription_id > walk.subscription_id
        ORDER BY d.subscription_id, d.next_attempt_at
        LIMIT 1
    ) AS next
)
SELECT subscription_id, next_attempt_at AS first_pending_at FROM walk;

CREATE INDEX IF NOT EXISTS deliveries_manual
    ON deliveries (manual_due_at) WHERE manual_due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (event_id);
-- The delivery logs, newest first, are read backwards from ascending indexes: a new
-- delivery goes at the right-hand end, where a full page splits leaving the old page full.
-- In a descending index each new one went at the left-hand end, where every split leaves
-- two half-empty pages: twice the splits, and their WAL, on every ingest. Those indexes, of
-- an earlier schema, are replaced.
DO $$
BEGIN
    IF to_regclass('deliveries_listing') IS NOT NULL THEN
        DROP INDEX deliveries_listing;
    END IF;
    IF to_regclass('deliveries_by_subscription') IS NOT NULL THEN
        DROP INDEX deliveries_by_subscription;
    END IF;
    IF to_regclass('deliveries_of_tenant') IS NOT NULL THEN
        DROP INDEX deliveries_of_tenant;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_by_subscription_and_time
    ON deliveries (subscription_id, created_at, id);

-- The attempts out now to subscriptions with a max_concurrency, one row per lease, so every
-- dispatcher counts what all of them hold. A row whose lease expired counts no more.
CREATE TABLE IF NOT EXISTS sends_in_flight (
    subscription_id  text NOT NULL,
    delivery_id      text NOT NULL,
    lease_expires_at timestamptz NOT NULL,
    PRIMARY KEY (subscription_id, delivery_id)
);

-- How many sends to a subscription are out now, across every dispatcher. VOLATILE (and
-- plpgsql, so never inlined): it reads with a snapshot of its own, taken when it is called,
-- so a claim that has just locked the subscription counts the sends of the claim that held
-- the lock before it, which committed after the claim's own statement began.
CREATE OR REPLACE FUNCTION sends_in_flight_now(subscription text, at timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT count(*) FROM sends_in_flight f
            WHERE f.subscription_id = subscription AND f.lease_expires_at > at);
END
$$;

-- A database made when a claim set the status 'in_flight' (keeping the one before in
-- prior_status) gets its statuses back; its leases stay until they expire.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'deliveries'
                 AND column_name = 'prior_status') THEN
        UPDATE deliveries SET status = coalesce(prior_status, 'pending')
        WHERE status = 'in_flight';
        ALTER TABLE deliveries DROP COLUMN prior_status;
        ALTER TABLE deliveries SET (fillfactor = 40);
        DROP INDEX IF EXISTS deliveries_leases;
    END IF;
END
$$;

-- Attempts are the largest table, so they are partitioned by day: retention drops whole
-- partitions instead of deleting rows. Rows outside every day partition (far past or
-- future) land in the default one and are moved out when their day's partition is made.
CREATE TABLE IF NOT EXISTS attempts (
    id               text NOT NULL DEFAULT new_id('att'),
    delivery_id      text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt_number   integer NOT NULL,
    trigger          text NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'test')),
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    response_status  integer,
    response_headers jsonb,
    response_body    text,
    error_kind       text CONSTRAINT attempts_error_kind_check CHECK (error_kind IN
                     ('timeout', 'connect', 'dns', 'refused', 'tls', 'http', 'cut_off',
                      'unknown', 'proxy')),
    error_message    text,
    -- Sent a second time on a fresh connection: the kept-alive one closed unanswered.
    resent           boolean NOT NULL DEFAULT false,
    outcome          text NOT NULL CHECK (outcome IN ('succeeded', 'retry', 'failed')),
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);

CREATE TABLE IF NOT EXISTS attempts_default PARTITION OF attempts DEFAULT;

-- A database made before sends cut off, sends of unknown outcome, refused destinations and
-- failed egress proxies were told apart: the resent column, and the wider list of error
-- kinds on every partition (a partition made with LIKE holds its own copy of the check).
DO $$
DECLARE
    partition record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'attempts'
                     AND column_name = 'resent') THEN
        ALTER TABLE attempts ADD COLUMN resent boolean NOT NULL DEFAULT false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'attempts'::regclass
                     AND conname = 'attempts_error_kind_check'
                     AND pg_get_constraintdef(oid) LIKE '%proxy%') THEN
        ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_error_kind_check;
        FOR partition IN
            SELECT inhrelid::regclass AS name FROM pg_inherits
            WHERE inhparent = 'attempts'::regclass
        LOOP
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS attempts_error_kind_check',
                           partition.name);
        END LOOP;
        ALTER TABLE attempts ADD CONSTRAINT attempts_error_kind_check CHECK (error_kind IN
            ('timeout', 'connect', 'dns', 'refused', 'tls', 'http', 'cut_off', 'unknown',
             'proxy'));
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS attempts_by_delivery ON attempts (delivery_id, started_at);

-- The partition of attempts for one UTC day, made if missing. Rows of that day waiting in
-- the default partition are moved into it.
CREATE OR REPLACE FUNCTION ensure_attempts_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'attempts_' || to_char(day, 'YYYYMMDD');
    day_start timestamptz := day::timestamp AT TIME ZONE 'UTC';
    day_end timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    -- Several dispatchers may keep partitions at once; one at a time does the work.
    PERFORM pg_advisory_xact_lock(hashtext('hookpost attempts partitions'));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   name);
    EXECUTE format('WITH moved AS (DELETE FROM attempts_default WHERE started_at >= %L'
                   ' AND started_at < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                   day_start, day_end, name);
    EXECUTE format('ALTER TABLE attempts ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, day_start, day_end);
END
$$;

-- Drops every day partition of attempts that ends at or before `cutoff`; returns how many.
CREATE OR REPLACE FUNCTION drop_attempts_partitions(cutoff timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    partition record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hookpost attempts partitions'));
    FOR partition IN
        SELECT child.relname AS name
        FROM pg_inherits
        JOIN pg_class child ON child.oid = pg_inherits.inhrelid
        JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
        WHERE parent.relname = 'attempts' AND child.relname ~ '^attempts_[0-9]{8}$'
          AND (to_date(substr(child.relname, 10), 'YYYYMMDD') + 1)::timestamp
              AT TIME ZONE 'UTC' <= cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', partition.name);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- One attempt as the dispatcher decided it, passed to record_attempts as an array: one
-- value per attempt instead of parallel arrays whose order must match. A new shape gets a
-- new name (_v2), so processes of the old and new code can run side by side.
DO $$
BEGIN
    IF to_regtype('attempt_record_v1') IS NULL THEN
        CREATE TYPE attempt_record_v1 AS (
            delivery_id        text,
            subscription_id    text,
            lease_token        text,
            attempt_number     integer,
            trigger            text,
            started_at         timestamptz,
            duration_ms        integer,
            response_status    integer,
            response_headers   text,
            response_body      text,
            error_kind         text,
            error_message      text,
            resent             boolean,
            outcome            text,
            moves_delivery     boolean,
            status             text,
            next_attempt_at    timestamptz,
            scheduled_attempts integer,
            manual_done        boolean,
            health             text,
            disable_reason     text
        );
    END IF;
END
$$;

-- Every table holding a tenant's rows carries its tenant, so they could be distributed by
-- tenant. A database made before tenants has every row in the default tenant: the column
-- is added with that default, which rewrites no table. The default stays for now, so that
-- processes of the code before tenants, which name none, keep working beside new ones
-- during an upgrade; hookpost's own queries always name the tenant. (Checked first: ALTER
-- TABLE takes the table's strongest lock, held until the migration commits; the checks of
-- the new foreign keys read the whole of subscriptions and events meanwhile.)
DO $$
DECLARE
    tenant_table text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'api_keys'
                     AND column_name = 'tenant_id') THEN
        ALTER TABLE api_keys ADD COLUMN tenant_id text REFERENCES tenants (id);
    END IF;
    FOREACH tenant_table IN ARRAY
        ARRAY['subscriptions', 'events', 'deliveries', 'attempts', 'sends_in_flight']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = current_schema() AND table_name = tenant_table
                         AND column_name = 'tenant_id') THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN tenant_id text NOT NULL DEFAULT %L',
                           tenant_table, 'ten_default');
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'subscriptions_tenant_fkey') THEN
        ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_tenant_fkey
            FOREIGN KEY (tenant_id) REFERENCES tenants (id);
    END IF;
    -- Events have no foreign key to their tenant, as to their producer (see events): the
    -- API has resolved the tenant before it writes, and tenants are never removed. A
    -- database made with either key loses it here.
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'events_tenant_fkey') THEN
        ALTER TABLE events DROP CONSTRAINT events_tenant_fkey;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'events_producer_key_id_fkey') THEN
        ALTER TABLE events DROP CONSTRAINT events_producer_key_id_fkey;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS subscriptions_of_tenant
    ON subscriptions (tenant_id, created_at DESC, id DESC) WHERE status <> 'deleted';
CREATE INDEX IF NOT EXISTS deliveries_by_tenant_and_time
    ON deliveries (tenant_id, created_at, id);

-- Fan-out by index: one row per event type pattern of each subscription not deleted, so
-- an event finds the subscriptions it matches by looking up the few patterns that can
-- match its type (type_patterns), however many other subscriptions there are.
CREATE TABLE IF NOT EXISTS subscription_patterns (
    tenant_id       text NOT NULL,
    pattern         text NOT NULL,
    subscription_id text NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, pattern, subscription_id)
);
CREATE INDEX IF NOT EXISTS subscription_patterns_of_subscription
    ON subscription_patterns (subscription_id);

-- Kept by the database itself, whatever writes subscriptions. A deleted subscription has
-- none (it never comes back); paused and disabled ones keep theirs, and the fan-out checks
-- the status.
CREATE OR REPLACE FUNCTION keep_subscription_patterns() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.event_types = OLD.event_types AND NEW.tenant_id = OLD.tenant_id
           AND (NEW.status = 'deleted') = (OLD.status = 'deleted') THEN
            RETURN NULL;
        END IF;
        DELETE FROM subscription_patterns WHERE subscription_id = OLD.id;
    END IF;
    IF NEW.status <> 'deleted' THEN
        INSERT INTO subscription_patterns (tenant_id, pattern, subscription_id)
        SELECT DISTINCT NEW.tenant_id, pattern, NEW.id FROM unnest(NEW.event_types) AS pattern;
    END IF;
    RETURN NULL;
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'subscriptions_keep_patterns') THEN
        CREATE TRIGGER subscriptions_keep_patterns
            AFTER INSERT OR UPDATE OF event_types, tenant_id, status ON subscriptions
            FOR EACH ROW EXECUTE FUNCTION keep_subscription_patterns();
        -- A database made before: the patterns of the subscriptions it has.
        INSERT INTO subscription_patterns (tenant_id, pattern, subscription_id)
        SELECT DISTINCT s.tenant_id, pattern, s.id
        FROM subscriptions s CROSS JOIN LATERAL unnest(s.event_types) AS pattern
        WHERE s.status <> 'deleted'
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- The patterns a subscription can hold that match events of `type`: '*', the type itself,
-- and 'prefix.*' for every prefix that ends at a dot ('a.*' and 'a.b.*' for 'a.b.c').
-- A set-returning SQL function of one query, neither strict nor volatile, so the planner
-- writes it into the query that calls it instead of calling it once per event.
CREATE OR REPLACE FUNCTION type_patterns(type text) RETURNS SETOF text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '*'
    UNION ALL SELECT type
    UNION ALL SELECT left(type, dot) || '*' FROM generate_series(1, length(type)) AS dot
              WHERE substr(type, dot, 1) = '.'
$$;
-- The same as an array, for processes of the previous release while an upgrade runs.
CREATE OR REPLACE FUNCTION event_type_patterns(type text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY(SELECT type_patterns(type))
$$;

-- Which schema.sql was applied last, so /ready can tell a process and its database apart.
CREATE TABLE IF NOT EXISTS schema_version (
    single     boolean PRIMARY KEY DEFAULT true CHECK (single),
    digest     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Dashboard sessions: signing in at /ui/login with an API key makes one. Only the hash of
-- the cookie's token is kept, as for keys; a session works while its key is valid and
-- until it expires (sessions of revoked keys stop working at once, as the lookup checks
-- the key). The CSRF token goes into every form the session's pages hold.
CREATE TABLE IF NOT EXISTS ui_sessions (
    token_hash bytea PRIMARY KEY,
    api_key_id text NOT NULL REFERENCES api_keys (id),
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ui_sessions_expiry ON ui_sessions (expires_at);

-- Portal links: POST /v1/tenants/{id}/portal-link makes one, for a tenant's customers to
-- open its portal (the dashboard, narrowed to that tenant) without a key. Only the hash of
-- its token is kept; it opens once (used_at) and not after expires_at. Links are dropped
-- once expired, as sessions are: a portal session keeps what it needs of its link itself.
CREATE TABLE IF NOT EXISTS portal_links (
    id                text PRIMARY KEY DEFAULT new_id('prt'),
    token_hash        bytea NOT NULL UNIQUE,
    tenant_id         text NOT NULL REFERENCES tenants (id),
    created_by_key_id text NOT NULL REFERENCES api_keys (id),
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    used_at           timestamptz
);
CREATE INDEX IF NOT EXISTS portal_links_expiry ON portal_links (expires_at);

-- A portal session: the link that opened it (no foreign key: the link is dropped once it
-- expires, the session lasts longer) and the tenant it is narrowed to. Its api_key_id is
-- the key that made the link, so revoking that key ends the session as it ends the key's
-- own. (Checked first: ALTER TABLE locks the table even when it changes nothing.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'ui_sessions'
                     AND column_name = 'portal_link_id') THEN
        ALTER TABLE ui_sessions
            ADD COLUMN portal_link_id text,
            ADD COLUMN tenant_id text REFERENCES tenants (id),
            ADD CONSTRAINT ui_sessions_portal_of_a_tenant
                CHECK ((portal_link_id IS NULL) = (tenant_id IS NULL));
    END IF;
END
$$;

-- Delivery statistics, kept up to date by record_attempts as attempts are recorded, so
-- reading them never scans attempts: per scope (a subscription's id, a tenant's id, or '*'
-- for everything) and per minute or hour, the attempts by outcome and by latency bucket
-- (latency[i] counts the attempts in bucket i of latency_bucket(); trailing empty buckets
-- are left out). Each connection that records adds to rows of its own (writer, its backend
-- pid), so the '*' and tenant rows every record batch touches never make two dispatchers
-- wait on each other's row lock; readers sum a period's rows. Retention deletes minute rows
-- after 2 days and hour rows after 8 (hookpost/stats.py KEPT).
CREATE TABLE IF NOT EXISTS attempt_stats (
    scope        text NOT NULL,
    grain        text NOT NULL CHECK (grain IN ('minute', 'hour')),
    period_start timestamptz NOT NULL,
    writer       integer NOT NULL,
    succeeded    integer NOT NULL,
    retried      integer NOT NULL,
    failed       integer NOT NULL,
    latency      integer[] NOT NULL,
    PRIMARY KEY (scope, grain, period_start, writer)
);
CREATE INDEX IF NOT EXISTS attempt_stats_by_age ON attempt_stats (grain, period_start);

-- The minutes of an hour that has ended, folded by maintenance (fold_attempt_stats) out of
-- that hour's minute rows of every writer into one row per scope, so that a day's series
-- per minute reads about 24 rows instead of 1,440 or more. Only minutes with attempts are
-- there: element i of `minutes` (0-59, rising) names the minute of element i of the
-- counts, and its latency buckets are latency[latency_ends[i-1] + 1 .. latency_ends[i]].
-- A minute row written after its hour was folded (an attempt recorded late) is folded
-- later into a row of its own `fold`; readers sum an hour's rows.
CREATE SEQUENCE IF NOT EXISTS attempt_stats_folds;
CREATE TABLE IF NOT EXISTS attempt_stats_folded (
    scope        text NOT NULL,
    hour_start   timestamptz NOT NULL,
    fold         bigint NOT NULL,
    minutes      integer[] NOT NULL,
    succeeded    integer[] NOT NULL,
    retried      integer[] NOT NULL,
    failed       integer[] NOT NULL,
    latency_ends integer[] NOT NULL,
    latency      integer[] NOT NULL,
    PRIMARY KEY (scope, hour_start, fold)
);
CREATE INDEX IF NOT EXISTS attempt_stats_folded_by_age ON attempt_stats_folded (hour_start);

-- Latency histograms added bucket by bucket, and laid end to end, as folding needs them.
-- (record_attempts writes the same addition out inline: there a function call per row cost
-- the statement a quarter of its time; a fold runs once an hour.)
CREATE OR REPLACE FUNCTION add_latency(total integer[], more integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN total IS NULL THEN more
                ELSE ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0)
                           FROM unnest(total, more) WITH ORDINALITY AS b (x, y, n)
                           ORDER BY n) END
$$;
CREATE OR REPLACE AGGREGATE sum_latency(integer[]) (SFUNC = add_latency, STYPE = integer[]);
CREATE OR REPLACE AGGREGATE concat_latency(integer[]) (
    SFUNC = array_cat, STYPE = integer[], INITCOND = '{}');

-- The latency bucket (from 1) of an attempt of `duration_ms`: bucket i holds durations from
-- the i-th lower bound up to the next. The bounds are hookpost/stats.py LATENCY_BOUNDS.
CREATE OR REPLACE FUNCTION latency_bucket(duration_ms integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT width_bucket(greatest(duration_ms, 0), ARRAY[
        0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 25, 35, 50, 70, 100, 150, 200, 250, 350, 500, 700,
        1000, 1500, 2000, 2500, 3500, 5000, 7000, 10000, 15000, 20000, 25000, 35000, 50000,
        70000])
$$;

-- Operational events: hookpost tells admins about trouble (hookpost.subscription.disabled,
-- .failing, .recovered; hookpost.delivery.exhausted) as events of the system tenant, made
-- in the statement that changes the state they report, and delivered to its subscriptions
-- like any other event. Only admins (and keys an admin binds to it) reach this tenant; its
-- own subscriptions' trouble is never reported, so reporting never feeds on itself.
INSERT INTO tenants (id, name) VALUES ('ten_system', 'system') ON CONFLICT (id) DO NOTHING;

-- When admins were last told a subscription is failing (at most once an hour) and that it
-- recovered (after a failing told of, at its first success). (Checked first: ALTER TABLE
-- locks the table even when it changes nothing.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'subscriptions'
                     AND column_name = 'recovery_notified_at') THEN
        ALTER TABLE subscriptions
            ADD COLUMN IF NOT EXISTS failing_notified_at timestamptz,
            ADD COLUMN IF NOT EXISTS recovery_notified_at timestamptz;
    END IF;
END
$$;

-- An id made in SQL for a row made at `at`, as hookpost/ids.py new_id(prefix, at) makes it,
-- so that an event's id begins with its created_at (retention reads it).
CREATE OR REPLACE FUNCTION new_id(prefix text, at timestamptz) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT prefix || '_'
        || lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
        || substr(replace(gen_random_uuid()::text, '-', ''), 1, 16)
$$;

-- A time as event payloads write it (RFC 3339 in UTC, microseconds only when there are
-- some), the same text as api/routes.py event_payload writes.
CREATE OR REPLACE FUNCTION rfc3339(at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM at)::bigint % 1000000 <> 0
                THEN to_char(at AT TIME ZONE 'UTC', '.US') ELSE '' END
        || 'Z'
$$;

-- `value` written without spaces, its keys in their order: the bytes Python's compact
-- encoder writes for the same value (strings are escaped alike by both).
CREATE OR REPLACE FUNCTION compact_json(value json) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    CASE json_typeof(value)
        WHEN 'object' THEN
            RETURN '{' || coalesce((SELECT string_agg(to_json(key)::text || ':'
                                                      || compact_json(item), ',' ORDER BY n)
                                    FROM json_each(value) WITH ORDINALITY AS e (key, item, n)),
                                   '') || '}';
        WHEN 'array' THEN
            RETURN '[' || coalesce((SELECT string_agg(compact_json(item), ',' ORDER BY n)
                                    FROM json_array_elements(value) WITH ORDINALITY
                                         AS e (item, n)), '') || ']';
        ELSE
            RETURN value::text;
    END CASE;
END
$$;

-- The exact bytes signed and sent for an event, as api/routes.py event_payload makes
-- them for events posted to the API.
CREATE OR REPLACE FUNCTION event_payload(id text, type text, at timestamptz, data json)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT convert_to('{"id":' || to_json(id)::text || ',"type":' || to_json(type)::text
                      || ',"timestamp":' || to_json(rfc3339(at))::text
                      || ',"data":' || compact_json(data) || '}', 'UTF8')
$$;

-- The subscriptions of the system tenant that an operational event of `type` goes to
-- (paused ones queue it), found as ingest_events finds a posted event's.
CREATE OR REPLACE FUNCTION operational_listeners(type text) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT p.subscription_id
    FROM type_patterns(type) AS candidate (pattern)
    JOIN subscription_patterns p ON p.tenant_id = 'ten_system' AND p.pattern = candidate.pattern
    JOIN subscriptions s ON s.id = p.subscription_id AND s.status IN ('active', 'paused')
$$;

-- The data of an operational event: the same fields for every type, null where they do not
-- apply (reason: why it was disabled; failing_since: when its failures began).
CREATE OR REPLACE FUNCTION operational_data(
    subscription_id text, tenant_id text, url text, delivery_id text, event_id text,
    event_type text, attempts integer, reason text, failing_since timestamptz,
    status integer, error_kind text, error_message text, attempted_at timestamptz)
RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'subscription_id', subscription_id, 'tenant_id', tenant_id, 'url', url,
        'delivery_id', delivery_id, 'event_id', event_id, 'event_type', event_type,
        'attempts', attempts, 'reason', reason, 'failing_since', rfc3339(failing_since),
        'last_attempt', CASE WHEN attempted_at IS NOT NULL THEN json_build_object(
            'status', status, 'error_kind', error_kind, 'error_message', error_message,
            'at', rfc3339(attempted_at)) END)
$$;
