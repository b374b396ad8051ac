#!/usr/bin/env bash
# A throwaway local PostgreSQL for tests and for trying sync without Supabase.
#   tools/pg.sh start DIR [PORT]   -> prints the connection URL (postgresql://postgres@127.0.0.1:PORT/postgres)
#   tools/pg.sh stop DIR
# Uses Debian's server binaries; as root the server runs as the postgres user (it refuses to run as root).
set -euo pipefail
cmd=${1:?usage: tools/pg.sh start|stop DIR [PORT]}; dir=${2:?usage: tools/pg.sh start|stop DIR [PORT]}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ]; then
  echo "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin); install them: apt-get install -y postgresql" >&2; exit 3
fi
as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
case "$cmd" in
  start)
    port=${3:-$(python3 -c 'import socket
for p in range(15432, 16000):
    s = socket.socket()
    try: s.bind(("127.0.0.1", p)); s.close(); print(p); break
    except OSError: pass')}
    if python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then :; else
      echo "port $port on 127.0.0.1 is in use; choose another (make db PORT=N, or tools/pg.sh start DIR N)" >&2; exit 1; fi
    mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then  # initialised once; a later start reuses the data
      "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { echo "initdb failed, see $dir/initdb.log" >&2; exit 1; }
    fi
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" start >/dev/null \
      || { echo "PostgreSQL did not start, see $dir/server.log" >&2; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port/postgres" ;;
  stop)
    [ -d "$dir/data" ] && "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true ;;
  *) echo "usage: tools/pg.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
