package initrd

import (
	"bytes"
	"testing"
)

// FuzzReadDeb feeds arbitrary bytes to the .deb reader: it must return an
// error or a kernel, never panic.
func FuzzReadDeb(f *testing.F) {
	f.Add([]byte("!<arch>\n"))
	f.Add([]byte("!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n"))
	f.Add([]byte("!<arch>\ndata.tar        0           0     0     100644  1024      `\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		readDeb(bytes.NewReader(b))
	})
}

// FuzzParseModInfo checks the ELF .modinfo reader on arbitrary bytes.
func FuzzParseModInfo(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseModInfo(b)
		mi := parseModInfoStrings(b)
		for _, d := range mi.Depends {
			if d == "" {
				t.Fatal("empty dependency name")
			}
		}
	})
}
