#!/usr/bin/env bash
# make-fuzz-seeds.sh: regenerate the seed corpus of FuzzTreeFromTar from
# archives made by GNU tar (the oracle format producer): GNU long names,
# PAX xattrs, sparse files, hard links, symlinks, devices and fifos.
# Run as root from anywhere; writes testdata/fuzz/FuzzTreeFromTar/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/fuzz/FuzzTreeFromTar
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src/d/$(printf 'n%.0s' {1..120})" "$out"
printf 'hello\n' > "$src/a"
head -c 5000 /dev/zero | tr '\0' 'x' > "$src/d/tail"
ln "$src/a" "$src/d/hard"
ln -s ../a "$src/d/sym"
truncate -s 65536 "$src/sparse"; printf end >> "$src/sparse"
mkfifo "$src/fifo"
mknod "$src/null" c 1 3 2>/dev/null || true
setfattr -n user.k -v v "$src/a" 2>/dev/null || true
setfattr -n security.selinux -v system_u:object_r:bin_t:s0 "$src/d/tail" 2>/dev/null || true
tar --format=gnu -S -C "$src" -cf "$work/gnu.tar" .
tar --format=posix --xattrs --xattrs-include='*' -S -C "$src" -cf "$work/pax.tar" .
tar --format=ustar -C "$src" -cf "$work/ustar.tar" a d/tail d/sym
gzip -9 -k "$work/ustar.tar"
for f in gnu.tar pax.tar ustar.tar ustar.tar.gz; do
  python3 - "$work/$f" "$out/seed-${f//./-}" <<'PY'
import sys
b = open(sys.argv[1], 'rb').read()
q = ''.join(chr(c) if 32 <= c < 127 and chr(c) not in '"\\' else '\\x%02x' % c for c in b)
open(sys.argv[2], 'w').write('go test fuzz v1\n[]byte("%s")\n' % q)
PY
done
ls -l "$out"
