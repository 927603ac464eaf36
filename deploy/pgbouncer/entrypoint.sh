#!/bin/sh
# Writes pgbouncer.ini and its user list from the environment, then runs PgBouncer in the
# foreground (PID 1, so `docker stop` reaches it):
#   PGBOUNCER_DATABASE   the database name clients ask for, served by DB_HOST:DB_PORT
#   PGBOUNCER_USERS      "name:password name:password" (URL-safe passwords)
set -eu
conf=/tmp/pgbouncer
mkdir -p "$conf"
umask 077
: > "$conf/userlist.txt"
for pair in $PGBOUNCER_USERS; do
  printf '"%s" "%s"\n' "${pair%%:*}" "${pair#*:}" >> "$conf/userlist.txt"
done
cat > "$conf/pgbouncer.ini" <<INI
[databases]
${PGBOUNCER_DATABASE} = host=${DB_HOST} port=${DB_PORT:-5432} dbname=${PGBOUNCER_DATABASE}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $conf/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = ${PGBOUNCER_POOL_SIZE:-20}
server_reset_query =
server_check_delay = 5
# After PostgreSQL restarts, log in again within a second (the default waits 15 s), and answer a
# client waiting for a server connection with an error after a few seconds instead of holding it
# past its deadline: the services turn that error into UNAVAILABLE, "retry".
server_login_retry = 1
server_connect_timeout = 3
query_wait_timeout = ${PGBOUNCER_QUERY_WAIT_TIMEOUT:-3}
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
INI
exec pgbouncer "$conf/pgbouncer.ini"
