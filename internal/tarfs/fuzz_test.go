package tarfs_test

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/tarfs"
)

// FuzzClean checks that a cleaned name never leaves the root: no "..",
// "." or empty component, no leading slash, no NUL.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"a/b", "/etc/passwd", "./a//b/./c/", "..", "a/../b", "a..b/..c", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := tarfs.Clean(name)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tarfs: ") {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		if got == "" {
			return
		}
		if strings.HasPrefix(got, "/") || strings.IndexByte(got, 0) >= 0 {
			t.Fatalf("Clean(%q) = %q", name, got)
		}
		for _, c := range strings.Split(got, "/") {
			if c == "" || c == "." || c == ".." {
				t.Fatalf("Clean(%q) = %q: component %q", name, got, c)
			}
		}
	})
}

// FuzzDecompress feeds arbitrary bytes (mostly with a compression magic in
// front) to Decompress and reads a bounded amount of the result: it must
// give data or an error, never panic.
func FuzzDecompress(f *testing.F) {
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x05, 0x29, 0x00, 0x00, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4, 0xe6, 0xd6, 0xb4, 0x46})
	f.Add([]byte("BZh91AY&SY"))
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, c, release, err := tarfs.Decompress(bytes.NewReader(b))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tarfs: ") {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		defer release()
		n, err := io.Copy(io.Discard, io.LimitReader(r, 16<<20))
		if c == tarfs.None && (err != nil || n != int64(len(b))) {
			t.Fatalf("plain stream: read %d of %d bytes, %v", n, len(b), err)
		}
	})
}
