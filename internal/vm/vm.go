// Package vm starts QEMU virtual machines for osguard: `osguard run` and the
// VM tests. It boots either a kernel directly or a disk through OVMF with
// Secure Boot firmware (q35, SMM, a writable copy of a VARS file), optionally
// with a swtpm TPM 2.0 on a tpm-crb device, captures the serial console, and
// lets a caller wait for console lines and type into a shell.
//
// Under TCG (no KVM) the guest always gets one CPU: with -smp 2 the 6.12
// kernel crashed in about one boot in three (a text-patching race under
// MTTCG). Every process the package starts runs in its own process group and
// dies with its parent (PR_SET_PDEATHSIG), and Close kills the group, so no
// QEMU or swtpm outlives a test or an `osguard run`.
package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmware paths of Debian's ovmf package.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Drive is a disk attached to the machine.
type Drive struct {
	Path     string
	ReadOnly bool
	// Interface is "virtio" (default; /dev/vdX in the guest) or "ide" (AHCI on q35; /dev/sdX).
	Interface string
	Serial    string
	// Snapshot discards the guest's writes (qemu -snapshot per drive).
	Snapshot bool
	// Format is the image format: raw (default) or qcow2.
	Format string
}

// Config describes one boot.
type Config struct {
	// Direct kernel boot (with or without UEFI).
	Kernel, Initrd, Append string
	// UEFI boots through OVMF with Secure Boot capable firmware.
	UEFI bool
	// Vars is the VARS file to start from; it is copied and never changed
	// unless VarsInPlace. Empty means OVMF's empty store (setup mode).
	Vars string
	// VarsInPlace lets the firmware write Vars itself: the machine's UEFI
	// variables then persist across boots of separate QEMU processes.
	VarsInPlace bool
	// Reboot lets a guest reboot restart the machine; otherwise QEMU exits
	// (-no-reboot), as the tests of a single boot want.
	Reboot bool
	// FirmwareBootOrder leaves the boot order to the firmware's BootOrder
	// and BootNext. Otherwise the first drive gets bootindex=0, and OVMF
	// then rewrites BootOrder from QEMU's order at every boot and deletes
	// the Boot#### entries it does not match (OvmfPkg QemuBootOrderLib), so
	// that an entry for a file on the ESP would not survive.
	FirmwareBootOrder bool
	// Code overrides the OVMF code file.
	Code   string
	Drives []Drive
	// TPM attaches a swtpm TPM 2.0 (tpm-crb).
	TPM bool
	// TPMState is a directory holding the swtpm state; empty means a fresh one.
	TPMState string
	// TPMCA, when set, is a directory holding a local CA (made by
	// swtpm_localca on first use): a TPM state without one gets an EK
	// certificate signed by it (swtpm_setup --create-ek-cert), which a
	// verifier trusts with --ek-ca TPMCA/issuercert.pem.
	TPMCA string
	// Net, when set, gives the guest QEMU user networking (virtio-net) with
	// restrict=on: no way out but the forwards in it.
	Net      *UserNet
	MemoryMB int
	// CPUs is the number of virtual CPUs (default 1). Under TCG each is
	// a host thread, so more than the host's cores only adds contention.
	CPUs int
	// ConsoleLog, when set, receives a copy of the serial console.
	ConsoleLog string
	// Console, when set, also receives the serial console as it arrives (e.g. os.Stdout).
	Console io.Writer
	// Stdin, when set, is copied to the serial console (interactive use).
	Stdin io.Reader
	// Dir holds the machine's scratch files; empty means a new temp dir removed by Close.
	Dir       string
	ExtraArgs []string
	// QEMU overrides the qemu-system-x86_64 binary.
	QEMU string
}

// UserNet is QEMU user networking with restrict=on.
type UserNet struct {
	// GuestFwd maps a guest address to a TCP endpoint on the host:
	// "10.0.2.100:80" → "127.0.0.1:8080". Every guest connection is
	// relayed by a socat of its own (the Debian package socat).
	GuestFwd map[string]string
}

// GuestFwdAddr is the guest address osguard forwards to a verifier.
const GuestFwdAddr = "10.0.2.100:80"

// Machine is a running QEMU.
type Machine struct {
	cfg     Config
	dir     string
	ownDir  bool
	vars    string
	cmd     *exec.Cmd
	swtpm   *exec.Cmd
	stdin   io.WriteCloser
	done    chan struct{}
	exitErr error

	mu      sync.Mutex
	cond    *sync.Cond
	console bytes.Buffer
	closed  bool
	logf    *os.File
}

// ShellPrompt matches a root shell's prompt at the end of the console, for
// WaitForText. busybox ash may follow it with a cursor-position query.
const ShellPrompt = `# (\x1b\[6n)?$`

// ErrTimeout is returned when a wait ran out of time.
var ErrTimeout = errors.New("vm: timed out")

// ErrExited is returned when QEMU exited before the awaited output appeared.
var ErrExited = errors.New("vm: qemu exited")

func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// args returns the QEMU command line for the machine's config and files.
func (m *Machine) args() ([]string, error) {
	cfg := m.cfg
	mem := cfg.MemoryMB
	if mem == 0 {
		mem = 1024
	}
	cpus := max(cfg.CPUs, 1)
	a := []string{
		"-machine", "q35,accel=tcg" + map[bool]string{true: ",smm=on", false: ""}[cfg.UEFI],
		"-cpu", "max", "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-display", "none", "-vga", "none", "-nodefaults",
		"-monitor", "none",
		"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
	}
	if !cfg.Reboot {
		a = append(a, "-no-reboot")
	}
	if cfg.UEFI {
		code := cfg.Code
		if code == "" {
			code = OVMFCode
		}
		a = append(a,
			"-global", "driver=cfi.pflash01,property=secure,value=on",
			"-global", "ICH9-LPC.disable_s3=1",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+m.vars)
	}
	if cfg.Net == nil {
		a = append(a, "-nic", "none")
	} else {
		nic := "user,model=virtio-net-pci,restrict=on"
		// Each guest connection gets a connection of its own to the host
		// endpoint: QEMU starts socat for it (guestfwd=...-cmd:). A
		// chardev forward would carry every guest connection over one host
		// stream, which breaks as soon as a client opens two at once (an
		// HTTP client fetching blobs in parallel).
		relay, err := exec.LookPath("socat")
		if err != nil && len(cfg.Net.GuestFwd) > 0 {
			return nil, fmt.Errorf("vm: guest forwards need socat (Debian package socat): %w", err)
		}
		for guest, host := range cfg.Net.GuestFwd {
			if strings.ContainsAny(guest+host, ", ") {
				return nil, fmt.Errorf("vm: bad guest forward %q -> %q", guest, host)
			}
			nic += ",guestfwd=tcp:" + guest + "-cmd:" + relay + " - TCP:" + host
		}
		a = append(a, "-nic", nic)
	}
	if cfg.Kernel != "" {
		a = append(a, "-kernel", cfg.Kernel)
		if cfg.Initrd != "" {
			a = append(a, "-initrd", cfg.Initrd)
		}
		if cfg.Append != "" {
			a = append(a, "-append", cfg.Append)
		}
	}
	for i, d := range cfg.Drives {
		id := fmt.Sprintf("drive%d", i)
		format := d.Format
		if format == "" {
			format = "raw"
		}
		opt := "if=none,format=" + format + ",id=" + id + ",file=" + d.Path
		if d.ReadOnly {
			opt += ",readonly=on"
		}
		if d.Snapshot {
			opt += ",snapshot=on"
		}
		a = append(a, "-drive", opt)
		dev := "virtio-blk-pci,drive=" + id
		if d.Interface == "ide" {
			dev = "ide-hd,drive=" + id
		}
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		if i == 0 && cfg.Kernel == "" && !cfg.FirmwareBootOrder {
			dev += ",bootindex=0"
		}
		a = append(a, "-device", dev)
	}
	if cfg.TPM {
		sock := filepath.Join(m.dir, "swtpm.sock")
		a = append(a,
			"-chardev", "socket,id=chrtpm,path="+sock,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
			"-device", "tpm-crb,tpmdev=tpm0")
	}
	return append(a, cfg.ExtraArgs...), nil
}

// Start boots a machine. The context bounds the machine's whole life: when it
// is done the machine is killed.
func Start(ctx context.Context, cfg Config) (*Machine, error) {
	m := &Machine{cfg: cfg, done: make(chan struct{})}
	m.cond = sync.NewCond(&m.mu)
	m.dir = cfg.Dir
	if m.dir == "" {
		d, err := os.MkdirTemp("", "osguard-vm-")
		if err != nil {
			return nil, fmt.Errorf("vm: %w", err)
		}
		m.dir, m.ownDir = d, true
	}
	fail := func(err error) (*Machine, error) {
		m.Close()
		return nil, err
	}
	if cfg.UEFI {
		src := cfg.Vars
		if src == "" {
			src = OVMFVars
		}
		m.vars = filepath.Join(m.dir, "vars.fd")
		if cfg.VarsInPlace {
			if cfg.Vars == "" {
				return fail(errors.New("vm: VarsInPlace needs a Vars file"))
			}
			m.vars = cfg.Vars
		} else if err := copyFile(m.vars, src); err != nil {
			return fail(fmt.Errorf("vm: copy VARS: %w", err))
		}
	}
	if cfg.ConsoleLog != "" {
		f, err := os.Create(cfg.ConsoleLog)
		if err != nil {
			return fail(fmt.Errorf("vm: console log: %w", err))
		}
		m.logf = f
	}
	if cfg.TPM {
		if err := m.startTPM(ctx); err != nil {
			return fail(err)
		}
	}
	args, err := m.args()
	if err != nil {
		return fail(err)
	}
	qemu := cfg.QEMU
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	m.cmd = exec.Command(qemu, args...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	m.cmd.Stdout = consoleWriter{m}
	m.cmd.Stderr = consoleWriter{m}
	stdin, err := m.cmd.StdinPipe()
	if err != nil {
		return fail(fmt.Errorf("vm: %w", err))
	}
	m.stdin = stdin
	if err := m.cmd.Start(); err != nil {
		return fail(fmt.Errorf("vm: start %s: %w", qemu, err))
	}
	go func() {
		err := m.cmd.Wait()
		m.mu.Lock()
		m.exitErr = err
		m.mu.Unlock()
		close(m.done)
		m.cond.Broadcast()
	}()
	go func() {
		select {
		case <-ctx.Done():
			m.kill()
		case <-m.done:
		}
	}()
	if cfg.Stdin != nil {
		go io.Copy(stdin, cfg.Stdin)
	}
	return m, nil
}

func (m *Machine) startTPM(ctx context.Context) error {
	state := m.cfg.TPMState
	if state == "" {
		state = filepath.Join(m.dir, "tpm")
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("vm: tpm state: %w", err)
	}
	if m.cfg.TPMCA != "" {
		if _, err := os.Stat(filepath.Join(state, "tpm2-00.permall")); errors.Is(err, os.ErrNotExist) {
			if err := ManufactureTPM(state, m.cfg.TPMCA); err != nil {
				return err
			}
		}
	}
	sock := filepath.Join(m.dir, "swtpm.sock")
	m.swtpm = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+state,
		"--ctrl", "type=unixio,path="+sock,
		"--flags", "startup-clear",
		"--log", "file="+filepath.Join(m.dir, "swtpm.log"))
	m.swtpm.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.swtpm.Start(); err != nil {
		return fmt.Errorf("vm: start swtpm: %w", err)
	}
	go m.swtpm.Wait()
	// QEMU fails if the socket is not there yet.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(m.dir, "swtpm.log"))
			return fmt.Errorf("vm: swtpm socket did not appear: %s", b)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ManufactureTPM creates the swtpm state in dir as a TPM vendor would: an
// RSA and an ECC EK with certificates signed by the local CA in caDir
// (swtpm_localca creates the CA on first use), a platform certificate, and
// locked NV indices.
func ManufactureTPM(dir, caDir string) error {
	ca, err := filepath.Abs(caDir)
	if err != nil {
		return fmt.Errorf("vm: tpm CA: %w", err)
	}
	for _, d := range []string{ca, dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("vm: tpm: %w", err)
		}
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return fmt.Errorf("vm: swtpm_localca (Debian package swtpm-tools): %w", err)
	}
	files := map[string]string{
		"swtpm-localca.conf":    fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca),
		"swtpm-localca.options": "--platform-manufacturer osguard\n--platform-version 2.1\n--platform-model QEMU\n",
		"swtpm_setup.conf":      fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s/swtpm-localca.conf\ncreate_certs_tool_options = %s/swtpm-localca.options\n", localca, ca, ca),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ca, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("vm: tpm CA: %w", err)
		}
	}
	cmd := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", dir, "--create-ek-cert", "--create-platform-cert",
		"--lock-nvram", "--overwrite", "--config", filepath.Join(ca, "swtpm_setup.conf"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vm: swtpm_setup: %v: %s", err, out)
	}
	return nil
}

type consoleWriter struct{ m *Machine }

func (w consoleWriter) Write(p []byte) (int, error) {
	m := w.m
	m.mu.Lock()
	m.console.Write(p)
	if m.logf != nil {
		m.logf.Write(p)
	}
	m.mu.Unlock()
	if m.cfg.Console != nil {
		m.cfg.Console.Write(p)
	}
	m.cond.Broadcast()
	return len(p), nil
}

// Console returns everything the serial console printed so far.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String()
}

// VarsPath returns the machine's writable VARS copy (UEFI boots only). It
// keeps what the firmware and the guest wrote, e.g. enrolled keys. When the
// machine made its own scratch dir, the file is removed by Close: copy it
// first, or set Config.Dir.
func (m *Machine) VarsPath() string { return m.vars }

// Dir returns the machine's scratch directory.
func (m *Machine) Dir() string { return m.dir }

// Exited reports whether QEMU has exited.
func (m *Machine) Exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// waitFrom waits until re matches the console text after offset from.
// It returns the submatches and the offset just past the match.
// With lines set, only complete lines (up to the last newline) are searched,
// so that a match never stops at a partly printed line.
func (m *Machine) waitFrom(re *regexp.Regexp, from int, lines bool, timeout time.Duration) ([]string, int, error) {
	timer := time.AfterFunc(timeout, func() { m.cond.Broadcast() })
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		text := m.console.Bytes()
		if from > len(text) {
			from = len(text)
		}
		if lines {
			text = text[:bytes.LastIndexByte(text, '\n')+1]
			if from > len(text) {
				text = text[:from]
			}
		}
		if loc := re.FindSubmatchIndex(text[from:]); loc != nil {
			subs := make([]string, len(loc)/2)
			for i := range subs {
				if loc[2*i] >= 0 {
					subs[i] = string(text[from+loc[2*i] : from+loc[2*i+1]])
				}
			}
			return subs, from + loc[1], nil
		}
		if m.Exited() {
			return nil, from, fmt.Errorf("%w while waiting for %q: %v", ErrExited, re, m.exitErr)
		}
		if time.Now().After(deadline) {
			return nil, from, fmt.Errorf("%w after %v waiting for %q", ErrTimeout, timeout, re)
		}
		m.cond.Wait()
	}
}

// WaitFor waits until the complete lines of the console (from the start of
// the boot) match the regular expression pattern and returns its submatches.
func (m *Machine) WaitFor(pattern string, timeout time.Duration) ([]string, error) {
	return m.WaitForAfter(pattern, 0, timeout)
}

// WaitForAfter is WaitFor on the console text printed after offset; use
// len(m.Console()) as the offset to wait for new output only.
func (m *Machine) WaitForAfter(pattern string, offset int, timeout time.Duration) ([]string, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	subs, _, err := m.waitFrom(re, offset, true, timeout)
	return subs, err
}

// WaitForText is WaitFor on the raw console text, partial lines included:
// for prompts such as "# ", which end without a newline.
func (m *Machine) WaitForText(pattern string, offset int, timeout time.Duration) ([]string, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	subs, _, err := m.waitFrom(re, offset, false, timeout)
	return subs, err
}

// Send types s on the serial console.
func (m *Machine) Send(s string) error {
	if _, err := io.WriteString(m.stdin, s); err != nil {
		return fmt.Errorf("vm: write console: %w", err)
	}
	return nil
}

var runSeq int

// Run types a command into a POSIX shell on the serial console and returns
// what it printed and its exit status as an error (nil for status 0). The
// shell must already be at a prompt. Output is delimited by markers, so
// kernel messages printed meanwhile may appear in it.
func (m *Machine) Run(command string, timeout time.Duration) (string, error) {
	m.mu.Lock()
	runSeq++
	n := runSeq
	from := m.console.Len()
	m.mu.Unlock()
	begin := fmt.Sprintf("@@B%d@@", n)
	end := fmt.Sprintf("@@E%d@@", n)
	// The markers are printed from quoted pieces, so that the terminal's echo
	// of the typed line does not match them.
	line := fmt.Sprintf("printf '%%s\\n' '@@B'%d'@@'; { %s\n}; printf '%%s %%s\\n' '@@E'%d'@@' $?\n", n, command, n)
	if err := m.Send(line); err != nil {
		return "", err
	}
	re := regexp.MustCompile(regexp.QuoteMeta(begin) + `\r?\n((?s:.*?))` + regexp.QuoteMeta(end) + ` (\d+)`)
	subs, _, err := m.waitFrom(re, from, true, timeout)
	if err != nil {
		return "", fmt.Errorf("vm: run %q: %w", command, err)
	}
	out := strings.ReplaceAll(subs[1], "\r\n", "\n")
	if subs[2] != "0" {
		return out, &ExitError{Command: command, Status: subs[2], Output: out}
	}
	return out, nil
}

// ExitError is a guest command that exited with a non-zero status.
type ExitError struct {
	Command, Status, Output string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("vm: %q exited with status %s: %s", e.Command, e.Status, strings.TrimSpace(e.Output))
}

// Wait waits for QEMU to exit and returns its error (nil for exit status 0).
func (m *Machine) Wait(timeout time.Duration) error {
	select {
	case <-m.done:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.exitErr
	case <-time.After(timeout):
		return fmt.Errorf("%w after %v waiting for qemu to exit", ErrTimeout, timeout)
	}
}

func (m *Machine) kill() {
	for _, c := range []*exec.Cmd{m.cmd, m.swtpm} {
		if c != nil && c.Process != nil {
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
	}
}

// Close kills QEMU and swtpm, waits for QEMU, and removes the scratch files
// it created. It is safe to call more than once.
func (m *Machine) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.kill()
	if m.cmd != nil && m.cmd.Process != nil {
		<-m.done
	}
	if m.swtpm != nil && m.swtpm.Process != nil {
		// Wait is called by the goroutine started with it; give it a moment.
		for i := 0; i < 100 && m.swtpm.ProcessState == nil; i++ {
			if err := syscall.Kill(m.swtpm.Process.Pid, 0); err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if m.logf != nil {
		m.logf.Close()
	}
	if m.ownDir {
		os.RemoveAll(m.dir)
	}
	return nil
}
