package tarfs_test

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"testing"

	"github.com/osguard/osguard/internal/tarfs"
	"github.com/osguard/osguard/internal/testutil"
)

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"a/b", "a/b", nil},
		{"/etc/passwd", "etc/passwd", nil},
		{"./a//b/./c/", "a/b/c", nil},
		{"./", "", nil},
		{"/", "", nil},
		{"..", "", tarfs.ErrInsecurePath},
		{"a/../b", "", tarfs.ErrInsecurePath},
		{"/../../etc", "", tarfs.ErrInsecurePath},
		{"a\x00b", "", errors.New("NUL")},
		{"a..b/..c", "a..b/..c", nil},
	} {
		got, err := tarfs.Clean(tc.in)
		if (err != nil) != (tc.err != nil) || got != tc.want || (tc.err == tarfs.ErrInsecurePath && !errors.Is(err, tc.err)) {
			t.Errorf("Clean(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestDecompress round-trips data compressed by the reference tools.
func TestDecompress(t *testing.T) {
	data := bytes.Repeat([]byte("osguard tar stream\n"), 10000)
	for _, tc := range []struct {
		tool string
		args []string
		want tarfs.Compression
	}{
		{"gzip", []string{"-c"}, tarfs.Gzip},
		{"zstd", []string{"-q", "-c", "--long=27"}, tarfs.Zstd},
		{"xz", []string{"-c"}, tarfs.Xz},
		{"bzip2", []string{"-c"}, tarfs.Bzip2},
		{"cat", nil, tarfs.None},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			tool := testutil.NeedTool(t, tc.tool)[0]
			cmd := exec.Command(tool, tc.args...)
			cmd.Stdin = bytes.NewReader(data)
			packed, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			r, c, release, err := tarfs.Decompress(bytes.NewReader(packed))
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			if c != tc.want {
				t.Errorf("detected %s, want %s", c, tc.want)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round trip: %v (%d bytes)", err, len(got))
			}
		})
	}
}
