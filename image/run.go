package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/osguard/osguard/internal/vm"
)

// RunOptions describe a boot of a built image under QEMU.
type RunOptions struct {
	// Target is a build output directory or a disk.raw.
	Target string
	// Vars is the OVMF VARS file a new machine starts from; default
	// ovmf-vars.fd next to the disk. It is copied, so the file stays as the
	// build made it.
	Vars  string
	NoTPM bool
	// TPMState keeps the swtpm state in this directory instead of the
	// machine's.
	TPMState string
	// Fresh discards the machine's state (disk writes, UEFI variables, TPM)
	// and starts over from the built files.
	Fresh bool
	// TPMCA is the local CA that signs the EK certificate of a new swtpm
	// state (default: tpm-ca next to the disk; created on first use). A
	// verifier trusts it with --ek-ca TPMCA/issuercert.pem.
	TPMCA string
	// Verifier, a 127.0.0.1:PORT (or localhost:PORT), gives the node QEMU
	// user networking with restrict=on whose only way out is
	// 10.0.2.100:80 forwarded there (spec.attestation's default URL).
	Verifier string
	// Console receives the serial console; Stdin, when set, is typed into it.
	Console io.Writer
	Stdin   io.Reader
	// Timeout stops the machine after this long (0: no limit).
	Timeout time.Duration
	// CPUs is the number of virtual CPUs (default 1).
	CPUs int
	// Exec, when set, waits for the root shell, runs this command line in
	// it, powers the machine off, and returns the command's exit status.
	Exec string
	// ExecOutput receives the output of Exec (useful with Console nil).
	ExecOutput io.Writer
	// Snapshot discards the guest's writes to the disk.
	Snapshot bool
	// Drives are attached after the image disk.
	Drives []vm.Drive
}

// ResolveTarget returns the disk and VARS paths for a build dir or a disk file.
func ResolveTarget(target, vars string) (disk, varsPath string, err error) {
	if target == "" {
		target = "out"
	}
	st, err := os.Stat(target)
	if err != nil {
		return "", "", fmt.Errorf("run: %w", err)
	}
	disk = target
	if st.IsDir() {
		disk = filepath.Join(target, "disk.raw")
	}
	if _, err := os.Stat(disk); err != nil {
		return "", "", fmt.Errorf("run: no disk image: %w (build one with 'osguard build')", err)
	}
	varsPath = vars
	if varsPath == "" {
		varsPath = filepath.Join(filepath.Dir(disk), "ovmf-vars.fd")
	}
	if _, err := os.Stat(varsPath); err != nil {
		return "", "", fmt.Errorf("run: OVMF VARS: %w (give --vars, or build with 'osguard build')", err)
	}
	return disk, varsPath, nil
}

// Run boots the image as one machine across runs (see Machine) and waits
// until it powers off, the timeout passes, or ctx ends; the guest may
// reboot in between. With Exec it returns the command's exit status.
func Run(ctx context.Context, o RunOptions) (int, error) {
	disk, vars, err := ResolveTarget(o.Target, o.Vars)
	if err != nil {
		return 0, err
	}
	mach, err := PrepareMachine(disk, vars, o.Fresh)
	if err != nil {
		return 0, err
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	cfg := mach.VMConfig(!o.NoTPM)
	cfg.Drives[0].Snapshot = o.Snapshot
	cfg.Drives = append(cfg.Drives, o.Drives...)
	cfg.CPUs = o.CPUs
	if o.TPMState != "" {
		cfg.TPMState = o.TPMState
	}
	cfg.TPMCA = o.TPMCA
	if cfg.TPMCA == "" {
		cfg.TPMCA = filepath.Join(filepath.Dir(disk), "tpm-ca")
	}
	if o.Verifier != "" {
		hp, err := loopbackHostPort(o.Verifier)
		if err != nil {
			return 0, err
		}
		cfg.Net = &vm.UserNet{GuestFwd: map[string]string{vm.GuestFwdAddr: hp}}
	}
	cfg.Console, cfg.Stdin = o.Console, o.Stdin
	m, err := vm.Start(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	if o.Exec == "" {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return 0, fmt.Errorf("run: stopped after the timeout of %v", o.Timeout)
			}
			return 0, ctx.Err()
		case <-waitExit(m):
			return 0, nil
		}
	}
	return runExec(ctx, m, o.Exec, o.ExecOutput)
}

func waitExit(m *vm.Machine) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		m.Wait(24 * 365 * time.Hour)
		close(ch)
	}()
	return ch
}

// bootFailure matches the console lines that mean the node will not reach
// its shell: firmware refusals and osguard-init failures.
var bootFailure = regexp.MustCompile(`Access Denied|Security Violation|No bootable option|osguard-init: FAILED[^\n]*|Kernel panic[^\n]*`)

func runExec(ctx context.Context, m *vm.Machine, command string, output io.Writer) (int, error) {
	deadline := 10 * time.Minute
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	type result struct{ err error }
	ready := make(chan result, 1)
	go func() {
		_, err := m.WaitForText(vm.ShellPrompt, 0, deadline)
		ready <- result{err}
	}()
	failed := make(chan string, 1)
	go func() {
		if subs, err := m.WaitFor(bootFailure.String(), deadline); err == nil {
			failed <- subs[0]
		}
	}()
	select {
	case r := <-ready:
		if r.err != nil {
			return 0, fmt.Errorf("run: waiting for the node's shell: %w", r.err)
		}
	case why := <-failed:
		return 0, fmt.Errorf("run: the node did not boot: %s", strings.TrimSpace(why))
	case <-ctx.Done():
		return 0, fmt.Errorf("run: waiting for the node's shell: %w", ctx.Err())
	}
	out, err := m.Run(command, deadline)
	status := 0
	var ee *vm.ExitError
	if errors.As(err, &ee) {
		status, _ = strconv.Atoi(ee.Status)
	} else if err != nil {
		return 0, err
	}
	if output != nil {
		io.WriteString(output, out)
	}
	m.Send("poweroff -f\n")
	m.Wait(30 * time.Second)
	return status, nil
}

// loopbackHostPort checks a --verifier HOST:PORT: the node may reach the
// host's loopback only.
func loopbackHostPort(hp string) (string, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", fmt.Errorf("run: --verifier %q: want HOST:PORT, e.g. 127.0.0.1:8443", hp)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("run: --verifier %q: the host must be 127.0.0.1 (the node reaches nothing else)", hp)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("run: --verifier %q: bad port", hp)
	}
	return net.JoinHostPort(host, port), nil
}
