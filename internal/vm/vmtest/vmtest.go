// Package vmtest starts QEMU machines from Go tests with the rules of this
// project: the tools must be there (under CI a missing tool fails the test),
// every process is killed when the test ends, and the console is logged when
// the test fails.
package vmtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
