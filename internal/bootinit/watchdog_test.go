package bootinit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWatchdogTimeout(t *testing.T) {
	for _, c := range []struct {
		name    string
		cmdline string
		want    time.Duration
	}{
		{"default timeout", "console=ttyS0", 2*time.Minute + 30*time.Second},
		{"short timeout", "osguard.update.timeout=10s", 40 * time.Second},
		{"long timeout", "osguard.update.timeout=10m", 10*time.Minute + 30*time.Second},
		{"fraction rounds up", "osguard.update.timeout=1500ms", 32 * time.Second},
		{"sub-second", "osguard.update.timeout=1ns", 31 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := ParseCmdline(c.cmdline)
			if err != nil {
				t.Fatal(err)
			}
			if got := WatchdogTimeout(cl.UpdateTimeout); got != c.want {
				t.Errorf("WatchdogTimeout(%v) = %v, want %v", cl.UpdateTimeout, got, c.want)
			}
		})
	}
}

func TestWatchdogMarker(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		want time.Duration
		err  string
	}{
		{"round trip", EncodeWatchdogMarker(150 * time.Second), 150 * time.Second, ""},
		{"little-endian", []byte{0x2c, 0x01, 0, 0}, 300 * time.Second, ""},
		{"short", []byte{1, 2}, 0, "2 bytes, want 4"},
		{"long", make([]byte, 8), 0, "8 bytes, want 4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeWatchdogMarker(c.data)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

// TestWatchdogNotADevice: Arm and Disarm name the device and keep the
// cause. The real device is exercised in the VM (update's
// TestUpdateHungTrial); the host's watchdog is not to be touched.
func TestWatchdogNotADevice(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "watchdog")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := Watchdog{Dev: filepath.Join(dir, "missing")}
	if _, _, err := missing.Arm(time.Minute); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Arm of a missing device: %v, want ErrNotExist", err)
	}
	if err := missing.Disarm(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Disarm of a missing device: %v, want ErrNotExist", err)
	}
	// A regular file takes no watchdog ioctl.
	if _, _, err := (Watchdog{Dev: file}).Arm(time.Minute); err == nil || !strings.Contains(err.Error(), "set timeout 60s") {
		t.Errorf("Arm of a regular file: %v", err)
	}
}
