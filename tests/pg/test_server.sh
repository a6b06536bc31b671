#!/usr/bin/env bash
# Starts or stops the throwaway PostgreSQL server that the db tests use.
#
#   test_server.sh start STATE_DIR   writes STATE_DIR/url (a libpq conninfo)
#   test_server.sh stop  STATE_DIR   stops the server and deletes its files
#
# Fault injection, for a server this script started:
#   test_server.sh freeze STATE_DIR  SIGSTOP the postmaster and all its children
#   test_server.sh thaw   STATE_DIR  SIGCONT them
#   test_server.sh down   STATE_DIR [fast|immediate]  stop it, keeping its data
#   test_server.sh up     STATE_DIR  start it again on the same port
#
# Other servers in front of it or beside it (stopped with it):
#   test_server.sh replica   STATE_DIR  a hot standby streaming from it;
#                                       writes STATE_DIR/replica_url
#   test_server.sh pgbouncer STATE_DIR MODE  PgBouncer in pool_mode MODE
#                                       (session, transaction) in front of it;
#                                       writes STATE_DIR/pgbouncer_url
#
# When SYNCBUS_TEST_DATABASE_URL is set, that server is used and nothing is
# started. Otherwise a cluster is created in a fresh /tmp directory (initdb
# --auth=trust --no-sync), run as the postgres user when we are root (the
# server refuses to run as root), listening on 127.0.0.1 at a free port with
# its unix socket in that private directory.
set -euo pipefail

action=${1:?usage: test_server.sh start|stop STATE_DIR}
state=${2:?usage: test_server.sh start|stop STATE_DIR}
mkdir -p "$state"

find_bindir() {
  if [[ -n "${SYNCBUS_PG_BINDIR:-}" ]]; then echo "$SYNCBUS_PG_BINDIR"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
    echo "test_server.sh: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin;" \
         "install them (apt-get install postgresql-15) or set SYNCBUS_TEST_DATABASE_URL" >&2
    exit 1
  fi
  echo "$dir"
}

as_server_user() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

server_start() {
  local bindir=$1 dir=$2 port=$3
  as_server_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c max_connections=300" \
    start > /dev/null
}

local_cluster() {
  if [[ ! -f "$state/cluster" ]]; then
    echo "test_server.sh: no server started by this script in $state" >&2
    exit 1
  fi
  cat "$state/cluster"
}

postmaster_pid() {
  head -n 1 "$(local_cluster)/data/postmaster.pid"
}

signal_all() {
  local pid
  pid=$(postmaster_pid)
  kill "-$1" "$pid"
  pkill "-$1" -P "$pid" || true
}

start() {
  if [[ -n "${SYNCBUS_TEST_DATABASE_URL:-}" ]]; then
    echo "$SYNCBUS_TEST_DATABASE_URL" > "$state/url"
    echo "test_server.sh: using the server in SYNCBUS_TEST_DATABASE_URL"
    return
  fi
  if [[ -f "$state/cluster" ]]; then stop; fi
  local bindir dir port
  bindir=$(find_bindir)
  dir=$(mktemp -d /tmp/syncbus-pg.XXXXXX)
  chmod 755 "$dir"
  echo "$dir" > "$state/cluster"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
  as_server_user "$bindir/initdb" -D "$dir/data" --auth=trust --no-sync \
    --encoding=UTF8 --locale=C --username=postgres > "$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2; exit 1; }
  for _ in $(seq 1 20); do
    port=$(random_port)
    if server_start "$bindir" "$dir" "$port"; then
      echo "host=127.0.0.1 port=$port dbname=postgres user=postgres" > "$state/url"
      echo "$port" > "$state/port"
      echo "test_server.sh: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
      return
    fi
  done
  echo "test_server.sh: could not start PostgreSQL; its log:" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
}

# A port for a server to listen on, below the kernel's range of local ports
# for outgoing connections (ip_local_port_range: 32768 and up by default),
# which a client connection of a test running beside this one may hold.
random_port() {
  local low=32768 rest
  read -r low rest < /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || true
  [[ "$low" -gt 11000 ]] || low=32768
  echo $((10000 + RANDOM % (low - 10000)))
}

free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$(random_port)
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  echo "test_server.sh: no free port found" >&2
  exit 1
}

replica() {
  local dir bindir port
  dir=$(local_cluster)
  bindir=$(find_bindir)
  port=$(free_port)
  as_server_user "$bindir/pg_basebackup" -h 127.0.0.1 -p "$(cat "$state/port")" -U postgres \
    -D "$dir/replica" -R -X stream > "$dir/replica-basebackup.log" 2>&1 || {
      cat "$dir/replica-basebackup.log" >&2; exit 1; }
  as_server_user "$bindir/pg_ctl" -D "$dir/replica" -l "$dir/replica.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c hot_standby=on -c max_connections=300" \
    start > /dev/null || { cat "$dir/replica.log" >&2; exit 1; }
  echo "host=127.0.0.1 port=$port dbname=postgres user=postgres" > "$state/replica_url"
}

pgbouncer() {
  local mode=${1:?usage: test_server.sh pgbouncer STATE_DIR session|transaction} dir port
  dir=$(local_cluster)
  if ! command -v pgbouncer > /dev/null; then
    echo "test_server.sh: pgbouncer is not installed (apt-get install pgbouncer)" >&2
    exit 1
  fi
  echo '"postgres" ""' > "$dir/pgbouncer-users.txt"
  # Another test may take the port between the probe and pgbouncer's bind:
  # then try another.
  for _ in $(seq 1 5); do
    port=$(free_port)
    cat > "$dir/pgbouncer-$mode.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$(cat "$state/port") dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/pgbouncer-users.txt
pool_mode = $mode
logfile = $dir/pgbouncer-$mode.log
pidfile = $dir/pgbouncer-$mode.pid
INI
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir/pgbouncer-$mode.ini" "$dir/pgbouncer-users.txt"; fi
    rm -f "$dir/pgbouncer-$mode.log"  # so that what it says is about this attempt
    as_server_user pgbouncer -d -q "$dir/pgbouncer-$mode.ini" || {
      cat "$dir/pgbouncer-$mode.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "host=127.0.0.1 port=$port dbname=postgres user=postgres" > "$state/pgbouncer_url"
        return
      fi
      sleep 0.05
    done
    grep -q "Address already in use" "$dir/pgbouncer-$mode.log" 2> /dev/null || break
  done
  echo "test_server.sh: pgbouncer did not start; its log:" >&2
  cat "$dir/pgbouncer-$mode.log" >&2 || true
  exit 1
}

stop() {
  if [[ -f "$state/cluster" ]]; then
    local dir bindir
    dir=$(cat "$state/cluster")
    bindir=$(find_bindir)
    for pidfile in "$dir"/pgbouncer-*.pid; do
      [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2> /dev/null || true
    done
    if [[ -d "$dir/replica" ]]; then
      as_server_user "$bindir/pg_ctl" -D "$dir/replica" -m immediate -w stop > /dev/null 2>&1 || true
    fi
    if [[ -d "$dir/data" ]]; then
      as_server_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop > /dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    rm -f "$state/cluster"
  fi
  rm -f "$state/url" "$state/port" "$state/replica_url" "$state/pgbouncer_url"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  freeze) signal_all STOP ;;
  thaw) signal_all CONT ;;
  down) as_server_user "$(find_bindir)/pg_ctl" -D "$(local_cluster)/data" -m "${3:-fast}" -w stop > /dev/null ;;
  up) server_start "$(find_bindir)" "$(local_cluster)" "$(cat "$state/port")" ;;
  replica) replica ;;
  pgbouncer) pgbouncer "${3:-}" ;;
  *) echo "usage: test_server.sh start|stop|freeze|thaw|down|up|replica|pgbouncer STATE_DIR" >&2; exit 2 ;;
esac
