# Sourced by bench/serve_bench.sh and bench/serve_soak.sh: what both need around `cnn serve`.
#   serve_lib_init NAME     checks hey and $CNN, makes $work (removed on exit) and $pids (stopped on exit)
#   serve_stop_servers      stops the processes in $pids
#   serve_make_requests N   $work/tiny/list.csv (ten made-up 28x28 PNGs, one per class: the data of one training
#                           step) and the request bodies $work/json.body, png.body (one image) and batch.body (N)
#   serve_wait_port LOG     prints the port `cnn serve` announced in LOG (up to 30 s), or fails showing LOG

serve_lib_init() {
  command -v hey >/dev/null || { echo "$1: hey is missing: apt-get install hey" >&2; exit 1; }
  [ -x "$CNN" ] || { echo "$1: $CNN is missing: build first" >&2; exit 1; }
  work=$(mktemp -d)
  pids=()
  trap 'serve_stop_servers; rm -rf "$work"' EXIT
}

serve_stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

serve_make_requests() {
  mkdir -p "$work/tiny"
  python3 - "$work" "$1" <<'PY'
import base64, json, struct, sys, zlib
work, batch = sys.argv[1], int(sys.argv[2])
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
def png_of(px):
    raw = b"".join(b"\x00" + bytes(row) for row in px)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", len(px[0]), len(px), 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
with open(f"{work}/tiny/list.csv", "w") as f:
    for i in range(10):
        open(f"{work}/tiny/{i}.png", "wb").write(png_of([[(x * (i + 3) + y * 7) % 256 for x in range(28)] for y in range(28)]))
        f.write(f"{i}.png,{i}\n")
def image(salt): return [[(x * 9 + y * 5 + (x * y + salt) % 7) % 256 for x in range(28)] for y in range(28)]
px = image(0)  # a 28x28 gray image
json.dump({"instances": [[[v / 255.0 for v in row] for row in px]]}, open(f"{work}/json.body", "w"))
json.dump({"instances": [{"b64": base64.b64encode(png_of(px)).decode()}]}, open(f"{work}/png.body", "w"))
json.dump({"instances": [[[v / 255.0 for v in row] for row in image(s)] for s in range(batch)]},
          open(f"{work}/batch.body", "w"))
PY
}

serve_wait_port() {
  local port=""
  for _ in $(seq 1 300); do
    port=$(sed -n 's/.*listening on 127.0.0.1 port \([0-9]*\).*/\1/p' "$1")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$1" >&2; echo "cnn serve did not start" >&2; return 1; }
  echo "$port"
}
