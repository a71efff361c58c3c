package initrd

import (
	"archive/tar"
	"bytes"
	"fmt"
	"runtime"
	"testing"
)

// A data.tar header may claim a size the archive does not hold: the reader
// must fail on the short data without first allocating the claimed size.
func TestReadDebTruncatedMemberNoBigAlloc(t *testing.T) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "boot/vmlinuz-1", Mode: 0o644, Size: 200 << 20, Typeflag: tar.TypeReg})
	tw.Write(make([]byte, 1024)) // then the archive ends
	data := tb.Bytes()
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	fmt.Fprintf(&deb, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", "data.tar", 0, 0, 0, "100644", len(data))
	deb.Write(data)

	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, err := readDeb(bytes.NewReader(deb.Bytes()))
	runtime.ReadMemStats(&m1)
	if err == nil {
		t.Fatal("truncated data.tar accepted")
	}
	if got := m1.TotalAlloc - m0.TotalAlloc; got > 32<<20 {
		t.Fatalf("allocated %d MB for a %d-byte package: %v", got>>20, deb.Len(), err)
	}
}
