#!/bin/sh
# Regenerates the FuzzParseSuperblock seed corpus from superblocks written
# by veritysetup (cryptsetup-bin), the oracle, over a few parameter sets.
# Usage: verity/testdata/gen-fuzz-seeds.sh   (from anywhere; needs veritysetup, python3)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$here/fuzz/FuzzParseSuperblock
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
head -c 65536 /dev/zero > "$tmp/data"
n=0
for args in "--hash sha256 --salt 00112233" \
            "--hash sha1 --format 0 --data-block-size 512 --hash-block-size 1024 --salt -" \
            "--hash sha512 --data-block-size 1024 --salt $(printf '%0512d' 7)" \
            "--hash sha384 --hash-block-size 512 --salt abcdef"; do
	n=$((n + 1))
	rm -f "$tmp/hash"
	# shellcheck disable=SC2086 # word splitting of $args is intended
	veritysetup format "$tmp/data" "$tmp/hash" $args --uuid 00000000-1111-2222-3333-44444444444$n >/dev/null
	python3 - "$tmp/hash" "$out/veritysetup-$n" <<'PY'
import sys
b = open(sys.argv[1], 'rb').read(512)
s = ''.join(chr(c) if 32 <= c < 127 and c not in (34, 92) else '\\x%02x' % c for c in b)
open(sys.argv[2], 'w').write('go test fuzz v1\n[]byte("%s")\n' % s)
PY
done
echo "wrote $n seeds to $out"
