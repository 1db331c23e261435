-- cardgate schema, version 5: a role for the ops dashboards.
--
-- cardgate_dashboard (NOLOGIN) may read the six dashboard views and nothing
-- else of cardgate's: no table (so never card_requests.response_body,
-- request_hash, lock_token or sealed), no sequence, no column. Dashboards
-- log in as a role of their own that is granted cardgate_dashboard.
--
-- The views are ordinary views (no security_invoker): they read the tables
-- with their owner's rights, so SELECT on a view is all the role needs.
--
-- Roles belong to the cluster, migrations to one database: the role is
-- created once, by whichever database's migration gets there first (several
-- may race), and every database grants it its own views. A migrating user
-- that may not create roles leaves the role to an admin (see the NOTICE);
-- cardgate_dashboard_grant() then gives the grants, called by the owner of
-- cardgate's tables or a superuser, as often as wanted.

-- The views the role may read; nothing more. SECURITY INVOKER: it grants
-- with its caller's rights (the owner of cardgate's objects, or a
-- superuser).
CREATE FUNCTION cardgate_dashboard_grant() RETURNS void
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    views constant text[] := ARRAY['cards_opened_per_day', 'gateway_failures_per_hour',
                                   'gateway_calls_per_hour', 'card_requests_by_state',
                                   'card_changes_per_day', 'stale_requests'];
    s text := current_schema(); -- the function's own (its search_path is pinned below)
    ns oid := (SELECT oid FROM pg_namespace WHERE nspname = current_schema());
    owner_id oid;
    rel regclass;
    v text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cardgate_dashboard') THEN
        RAISE EXCEPTION 'role cardgate_dashboard does not exist'
            USING HINT = 'an admin must run CREATE ROLE cardgate_dashboard NOLOGIN first';
    END IF;
    SELECT c.relowner INTO owner_id
      FROM pg_class c WHERE c.oid = format('%I.%I', s, views[1])::regclass;
    IF NOT pg_has_role(current_user, owner_id, 'MEMBER') THEN
        RAISE EXCEPTION 'cardgate_dashboard_grant() must run as % (the owner of cardgate''s '
                        'tables) or a superuser, not as %', pg_get_userbyid(owner_id), current_user;
    END IF;

    -- Whatever the role or PUBLIC was given on cardgate's tables, sequences
    -- and views goes (PUBLIC: stock PostgreSQL gives it nothing there).
    -- Revoking on a table revokes its column privileges too.
    FOR rel IN SELECT c.oid FROM pg_class c
                WHERE c.relnamespace = ns AND c.relowner = owner_id
                  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                  AND c.relacl IS NOT NULL -- NULL: the defaults, nothing for either
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, cardgate_dashboard', rel);
    END LOOP;
    -- Nor on the tables and sequences cardgate's owner creates later.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE ALL ON TABLES '
                   'FROM PUBLIC, cardgate_dashboard', pg_get_userbyid(owner_id));
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE ALL ON SEQUENCES '
                   'FROM PUBLIC, cardgate_dashboard', pg_get_userbyid(owner_id));
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I REVOKE ALL ON TABLES '
                   'FROM PUBLIC, cardgate_dashboard', pg_get_userbyid(owner_id), s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I REVOKE ALL ON SEQUENCES '
                   'FROM PUBLIC, cardgate_dashboard', pg_get_userbyid(owner_id), s);

    -- The schema: USAGE only, when the caller may give it (PostgreSQL 15's
    -- public schema belongs to the database owner; PUBLIC has USAGE there).
    IF pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE oid = ns), 'MEMBER') THEN
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM cardgate_dashboard', s);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO cardgate_dashboard', s);
    END IF;
    IF NOT has_schema_privilege('cardgate_dashboard', s, 'USAGE') THEN
        RAISE WARNING 'cardgate_dashboard has no USAGE on schema %: the owner of the schema must '
                      'GRANT USAGE ON SCHEMA % TO cardgate_dashboard', s, s;
    END IF;
    IF has_schema_privilege('cardgate_dashboard', s, 'CREATE') THEN
        RAISE WARNING 'cardgate_dashboard may create objects in schema % (PUBLIC may, as before '
                      'PostgreSQL 15): REVOKE CREATE ON SCHEMA % FROM PUBLIC', s, s;
    END IF;

    FOREACH v IN ARRAY views LOOP
        EXECUTE format('GRANT SELECT ON %I.%I TO cardgate_dashboard', s, v);
    END LOOP;

    -- What is left must be the views alone (a membership in another role, a
    -- grant the caller could not revoke, a superuser role would show here).
    FOR rel IN SELECT c.oid FROM pg_class c
                WHERE c.relnamespace = ns AND c.relowner = owner_id
                  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                  AND (has_table_privilege('cardgate_dashboard', c.oid,
                                           'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                       OR has_any_column_privilege('cardgate_dashboard', c.oid,
                                                   'INSERT, UPDATE, REFERENCES')
                       OR (NOT (c.relkind = 'v' AND c.relname = ANY (views))
                           AND (has_table_privilege('cardgate_dashboard', c.oid, 'SELECT')
                                OR has_any_column_privilege('cardgate_dashboard', c.oid,
                                                            'SELECT'))))
    LOOP
        RAISE WARNING 'cardgate_dashboard can still use %: it must only read the dashboard views',
                      rel;
    END LOOP;
END
$$;
-- Only an admin calls it.
REVOKE ALL ON FUNCTION cardgate_dashboard_grant() FROM PUBLIC;

DO $$
BEGIN
    -- Pinned to this schema, whoever calls it later with whatever search_path
    -- (pg_catalog, not in the path, is searched first).
    EXECUTE format('ALTER FUNCTION cardgate_dashboard_grant() SET search_path = %I',
                   current_schema());

    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cardgate_dashboard') THEN
        BEGIN
            CREATE ROLE cardgate_dashboard NOLOGIN;
        EXCEPTION
            -- Another database's migration created it meanwhile (committed
            -- before: duplicate_object; while we waited: unique_violation).
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cardgate: % may not create roles, so the dashboards'' role is not '
                             'made: an admin must run CREATE ROLE cardgate_dashboard NOLOGIN, then '
                             'SELECT cardgate_dashboard_grant(); in database % (as % or a '
                             'superuser)', current_user, current_database(), current_user;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cardgate_dashboard') THEN
        PERFORM cardgate_dashboard_grant();
    END IF;
END
$$;
