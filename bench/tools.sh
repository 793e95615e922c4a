# Sourced by the bench scripts: installs nginx, HAProxy, wrk, h2load, Redis (cache.sh, limits.sh)
# valgrind (instructions.py) and gdb (moves.py) from Debian's packages
# when missing, and builds Portico in release mode.
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v redis-server >/dev/null || need+=(redis-server)
command -v valgrind >/dev/null || need+=(valgrind)
command -v gdb >/dev/null || need+=(gdb)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y "${need[@]}" || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y "${need[@]}"; }
  # Debian starts the packaged nginx, HAProxy and Redis; the benchmarks run their own.
  $sudo_cmd systemctl stop nginx haproxy redis-server 2>/dev/null || { $sudo_cmd pkill -x nginx; $sudo_cmd pkill -x redis-server; } || true
fi
# PORTICO_FEATURES (for example `crs`) builds with those cargo features.
cargo build --release --locked ${PORTICO_FEATURES:+--features "$PORTICO_FEATURES"}
