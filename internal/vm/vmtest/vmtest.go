// Package vmtest starts QEMU machines from Go tests with the rules of this
// project: the tools must be there (under CI a missing tool fails the test),
// every process is killed when the test ends, and the console is logged when
// the test fails.
package vmtest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
)

// DefaultTimeout bounds a whole machine's life unless Options say otherwise.
const DefaultTimeout = 5 * time.Minute

// Start boots cfg for the test t. The machine's scratch files live in a
// test temp dir (so VarsPath stays readable until the test ends) and the
// console is copied to console.log there.
func Start(t testing.TB, cfg vm.Config) *vm.Machine {
	t.Helper()
	tools := []string{"qemu-system-x86_64"}
	if cfg.TPM {
		tools = append(tools, "swtpm")
		if cfg.TPMCA != "" {
			tools = append(tools, "swtpm_setup", "swtpm_localca")
		}
	}
	testutil.NeedTool(t, tools...)
	if cfg.UEFI {
		testutil.NeedFile(t, vm.OVMFCode)
		testutil.NeedFile(t, vm.OVMFVars)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.ConsoleLog == "" {
		cfg.ConsoleLog = filepath.Join(cfg.Dir, "console.log")
	}
	if os.Getenv("OSGUARD_VM_CONSOLE") == "1" {
		cfg.Console = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	m, err := vm.Start(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start VM: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("VM console (last 60 lines):\n%s", Tail(m.Console(), 60))
		}
		m.Close()
		cancel()
	})
	return m
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r", ""), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WriteCPIO writes records as a reproducible newc archive (the form the
// kernel unpacks as an initramfs) to path, with the parent directories the
// records need.
func WriteCPIO(t testing.TB, path string, recs []cpio.Record) {
	t.Helper()
	cpio.MakeAllReproducible(recs)
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// BuildStatic compiles the Go main package pkg (an import path or a
// directory) as a static binary and returns its content; guests have no C
// library.
func BuildStatic(t testing.TB, pkg string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bin")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
