-- Run once by the postgres image when its volume is first initialised
-- (/docker-entrypoint-initdb.d), as the superuser, in the POSTGRES_DB database.
--
-- One login role per service, each owning the schema its migrations fill (ARCHITECTURE §1:
-- "own migrations, own DB role"). Neither can read the other's schema: USAGE on a schema is
-- not granted to PUBLIC. The passwords come from the postgres container's environment
-- (psql's \getenv), so none is written here; URL-safe characters only, since each is also
-- put into its service's postgresql:// URL.

\set ON_ERROR_STOP on
\getenv session_password SESSION_DB_PASSWORD
\getenv reputation_password REPUTATION_DB_PASSWORD
\if :{?session_password}
\else
  \set session_password ''
\endif
\if :{?reputation_password}
\else
  \set reputation_password ''
\endif
SELECT :'session_password' <> '' AND :'reputation_password' <> '' AS passwords_set \gset
\if :passwords_set
\else
  DO $$ BEGIN RAISE EXCEPTION 'SESSION_DB_PASSWORD and REPUTATION_DB_PASSWORD must be set'; END $$;
\endif

CREATE ROLE sessions_svc LOGIN PASSWORD :'session_password';
CREATE ROLE reputation_svc LOGIN PASSWORD :'reputation_password';

-- Made here, owned by their service, so neither name can be taken by the other role.
CREATE SCHEMA sessions AUTHORIZATION sessions_svc;
CREATE SCHEMA reputation AUTHORIZATION reputation_svc;
-- The migrations run `CREATE SCHEMA IF NOT EXISTS`, which PostgreSQL checks against the
-- database's CREATE privilege even when the schema is already there.
GRANT CREATE ON DATABASE :"DBNAME" TO sessions_svc, reputation_svc;
