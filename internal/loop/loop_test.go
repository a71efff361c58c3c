package loop

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/testutil"
)

// TestAttachReadOnly attaches a file and reads it back through the block
// device; the device is read-only and clears itself once closed.
func TestAttachReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Missing(t, "root (loop devices)")
	}
	data := bytes.Repeat([]byte("osguard loop\n"), 4096/13*4+1)[:16384]
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := AttachReadOnly(p)
	if err != nil {
		testutil.Missing(t, "a usable loop device: %v", err)
	}
	got, err := os.ReadFile(d.Path)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("read %d bytes through %s, not the file's %d", len(got), d.Path, len(data))
	}
	if f, err := os.OpenFile(d.Path, os.O_WRONLY, 0); err == nil {
		_, werr := f.Write([]byte("x"))
		f.Close()
		if werr == nil {
			t.Errorf("%s accepted a write", d.Path)
		}
	}
	if d.DevNum() == "0:0" {
		t.Errorf("DevNum = %s", d.DevNum())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// LO_FLAGS_AUTOCLEAR: the kernel detaches the device after the last close.
	sys := filepath.Join("/sys/block", filepath.Base(d.Path), "loop", "backing_file")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sys); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still has a backing file after close", d.Path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
