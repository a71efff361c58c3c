// Command osguard builds, signs, boots and inspects hardened, immutable
// container-host images: dm-verity /usr, IPE, SELinux, Secure Boot with the
// user's own keys, and measured boot.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// subcommands is filled by the init functions of the files in this folder,
// one file per command group, so that adding a group never touches main.go.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

// exitError carries a specific process exit status. Verification commands
// use 1 for "checked, and it is bad"; other failures also use 1 unless a
// command says otherwise. Usage errors use 2.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// failWith wraps err so that main exits with code.
func failWith(code int, err error) error { return &exitError{code: code, err: err} }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "osguard",
		Short: "Build and prove hardened, immutable container-host images",
		Long: `osguard builds OS images whose /usr is a read-only EROFS volume protected by
dm-verity with a signed root hash, whose code execution is restricted by the
IPE LSM, whose files carry SELinux labels, and whose boot is measured into a
TPM and checked by UEFI Secure Boot with your own keys. It boots them under
QEMU and inspects their security state on the node.

No root privileges are needed on the build host.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return failWith(2, fmt.Errorf("%w\nRun '%s --help' for usage.", err, c.CommandPath()))
	})
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	return root
}

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(os.Stderr, "osguard:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "osguard:", err)
	if isUsageError(err) {
		fmt.Fprintln(os.Stderr, "Run 'osguard --help' for usage.")
		os.Exit(2)
	}
	os.Exit(1)
}

// isUsageError recognizes the usage errors cobra returns without passing
// them through the flag error function: missing required flags, unknown
// commands, and wrong argument counts.
func isUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"required flag(s)", "unknown command", "accepts ", "requires at least", "requires at most", "received "} {
		if strings.HasPrefix(msg, p) || strings.Contains(msg, " arg(s), received ") {
			return true
		}
	}
	return false
}
