package deb

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func ar(members ...string) []byte {
	var b bytes.Buffer
	b.WriteString(ArMagic)
	for i := 0; i+1 < len(members); i += 2 {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", members[i], 0, 0, 0, "100644", len(members[i+1]))
		b.WriteString(members[i+1])
		if len(members[i+1])%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func TestReader(t *testing.T) {
	good := ar("debian-binary", "2.0\n", "control.tar", "odd", "data.tar", "payload")
	for _, tc := range []struct {
		name  string
		in    []byte
		names []string
		err   string
	}{
		{"members in order, odd sizes padded", good, []string{"debian-binary", "control.tar", "data.tar"}, ""},
		{"no magic", []byte("PK\x03\x04"), nil, "not a Debian package"},
		{"truncated member", good[:len(good)-3], []string{"debian-binary", "control.tar", "data.tar"}, "unexpected EOF"},
		{"bad terminator", bytes.Replace(ar("x", "y"), []byte("`\n"), []byte("!!"), 1), nil, "bad terminator"},
		{"negative size", bytes.Replace(ar("x", "y"), []byte("1         `"), []byte("-1        `"), 1), nil, "bad size"},
		{"huge size", bytes.Replace(ar("x", "y"), []byte("1         `"), []byte("9999999999`"), 1), nil, "bad size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(tc.in))
			var names []string
			for err == nil {
				var name string
				var body io.Reader
				if name, body, err = r.Next(); err == nil {
					names = append(names, name)
					_, err = io.ReadAll(body)
				}
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			if fmt.Sprint(names) != fmt.Sprint(tc.names) {
				t.Errorf("members %v, want %v", names, tc.names)
			}
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// FuzzReader: any input walks to an error or EOF, never a panic, and never
// yields more member bytes than the input holds.
func FuzzReader(f *testing.F) {
	f.Add(ar("debian-binary", "2.0\n", "data.tar.xz", "\xfd7zXZ\x00"))
	f.Add(ar("control.tar.zst", "\x28\xb5\x2f\xfd"))
	f.Add([]byte(ArMagic + "short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		total := 0
		for err == nil {
			var name string
			var body io.Reader
			if name, body, err = r.Next(); err != nil {
				break
			}
			n, _ := io.Copy(io.Discard, body)
			total += int(n)
			if rc, derr := Decompress(name, bytes.NewReader(nil)); derr == nil {
				rc.Close()
			}
		}
		if total > len(b) {
			t.Fatalf("read %d member bytes from %d input bytes", total, len(b))
		}
	})
}
