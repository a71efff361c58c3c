// Command osguard builds, signs, boots and inspects hardened, immutable
// container-host images: dm-verity /usr, IPE, SELinux, Secure Boot with the
// user's own keys, and measured boot.
package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
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
	for _, c := range root.Commands() {
		rejectUnknownSubcommands(c)
	}
	return root
}

// rejectUnknownSubcommands makes a command group (sb, verity, ...) fail
// with a usage error on an unknown subcommand; cobra would print the
// group's help and exit 0, which hides typos from scripts.
func rejectUnknownSubcommands(c *cobra.Command) {
	if !c.HasSubCommands() {
		return
	}
	if c.Run == nil && c.RunE == nil {
		c.Args = cobra.ArbitraryArgs
		c.DisableFlagsInUseLine = true
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return failWith(2, fmt.Errorf("unknown command %q for %q\nRun '%s --help' for usage.", args[0], c.CommandPath(), c.CommandPath()))
			}
			return c.Help()
		}
	}
	for _, sub := range c.Commands() {
		rejectUnknownSubcommands(sub)
	}
}

func main() {
	cmd, err := newRootCmd().ExecuteC()
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
		path := "osguard"
		if cmd != nil && !strings.HasPrefix(err.Error(), "unknown command") {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(os.Stderr, "Run '%s --help' for usage.\n", path)
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

// readInput reads the file a command was given and says which one failed,
// in words a user understands: "--template x: is a directory" rather than
// Go's "read x: is a directory".
func readInput(what, path string) ([]byte, error) {
	name := path
	if what != "" {
		name = what + " " + path
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, pathErr(err))
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s: is a directory", name)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, pathErr(err))
	}
	return b, nil
}

// pathErr drops the operation and path that *fs.PathError repeats.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseHexArg decodes a hex argument or flag value; a bad one is a usage
// error (exit 2).
func parseHexArg(name, s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, failWith(2, fmt.Errorf("%s %q is not a hex string", name, s))
	}
	return b, nil
}
