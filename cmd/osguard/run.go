package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/vm"
)

func init() { register(newRunCmd) }

func newRunCmd() *cobra.Command {
	var o image.RunOptions
	var console, quietConsole bool
	var disks []string
	cmd := &cobra.Command{
		Use:   "run [DIR|disk.raw]",
		Short: "Boot a built image in QEMU with OVMF Secure Boot and a swtpm TPM",
		Long: `run boots an image made by 'osguard build' under QEMU (q35, one CPU unless --cpus)
with OVMF's Secure Boot firmware, the VARS file the build enrolled your keys
into, and a swtpm TPM 2.0. The serial console is shown on the terminal.
Everything run starts is stopped when it exits.

The node is one machine across runs and reboots: its disk writes (a qcow2
overlay on disk.raw), its UEFI variables and its TPM state live in
DIR/machine (DISK.machine for a disk file), so that the built files stay as
built. The guest may reboot within a run (an update's trial boot does).
--fresh starts the machine over from the built files.

DIR defaults to ./out; a disk.raw may be given instead, with its VARS file next
to it or named by --vars.

  --console     type into the node's serial console (raw terminal; Ctrl-] quits)
  --exec CMD    wait for the node's root shell, run CMD there, power off, and
                exit with CMD's status (what 'make demo' does). It needs a
                root shell on the console: the default profile has one,
                other images get one from 'osguard build --debug-console'.
  --disk FILE   attach FILE as an extra read-only virtio disk; repeat it for
                more. On the node they are /dev/vdb, /dev/vdc, ... in order
                (an OCI archive to import, an update bundle).
  --verifier 127.0.0.1:PORT
                QEMU user networking with restrict=on: the node reaches
                nothing but 10.0.2.100:80, forwarded to the verifier there

A new swtpm state gets EK certificates signed by a local CA in
DIR/tpm-ca (made on first use; --tpm-ca elsewhere); a verifier trusts them with
'osguard attest serve --ek-ca DIR/tpm-ca/issuercert.pem'.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Target = args[0]
			}
			for _, d := range disks {
				fi, err := os.Stat(d)
				if err != nil {
					return fmt.Errorf("--disk %s: %w", d, err)
				}
				if fi.IsDir() {
					return fmt.Errorf("--disk %s: is a directory, not a disk image", d)
				}
				o.Drives = append(o.Drives, vm.Drive{Path: d, ReadOnly: true})
			}
			if o.Timeout < 0 {
				return failWith(2, fmt.Errorf("--timeout %s: must not be negative (0: no limit)", o.Timeout))
			}
			if quietConsole {
				if o.Exec == "" {
					return failWith(2, errors.New("--quiet needs --exec: without it nothing would be shown"))
				}
				o.ExecOutput = cmd.OutOrStdout()
			} else {
				o.Console = cmd.OutOrStdout()
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if console {
				restore, in, err := rawStdin()
				if err != nil {
					return err
				}
				defer restore()
				o.Stdin = in
				ctx2, cancel := context.WithCancel(ctx)
				defer cancel()
				go func() { <-quitKey; cancel() }()
				ctx = ctx2
			}
			status, err := image.Run(ctx, o)
			if err != nil {
				return err
			}
			if status != 0 {
				return failWith(status, nil)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Vars, "vars", "", "OVMF VARS file a new machine starts from (default: ovmf-vars.fd next to the disk)")
	f.BoolVar(&o.NoTPM, "no-tpm", false, "boot without a TPM")
	f.IntVar(&o.CPUs, "cpus", 1, "virtual CPUs (under TCG each is a host thread: at most the host's cores is useful)")
	f.StringVar(&o.TPMState, "tpm-state", "", "keep the swtpm state in this directory across runs")
	f.StringVar(&o.TPMCA, "tpm-ca", "", "local CA signing the swtpm EK certificate (default: tpm-ca next to the disk)")
	f.StringVar(&o.Verifier, "verifier", "", "127.0.0.1:PORT of a verifier: the node's only network exit, as 10.0.2.100:80")
	f.BoolVar(&console, "console", false, "connect the terminal's keyboard to the serial console")
	f.DurationVar(&o.Timeout, "timeout", 0, "stop the machine after this long, e.g. 2m (0: no limit)")
	f.StringVar(&o.Exec, "exec", "", "run this command in the node's root shell, then power off")
	f.StringArrayVar(&disks, "disk", nil, "attach `FILE` as an extra read-only virtio disk (repeatable; /dev/vdb, /dev/vdc, ...)")
	f.BoolVar(&o.Snapshot, "snapshot", false, "discard the guest's writes to the disk")
	f.BoolVar(&o.Fresh, "fresh", false, "start the machine over from the built files (disk, UEFI variables, TPM)")
	f.BoolVarP(&quietConsole, "quiet", "q", false, "with --exec: hide the boot console, print only the command's output")
	return cmd
}

var quitKey = make(chan struct{}, 1)

// quitFilter passes keystrokes through until Ctrl-] (0x1d).
type quitFilter struct{ r io.Reader }

func (q quitFilter) Read(p []byte) (int, error) {
	n, err := q.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] == 0x1d {
			select {
			case quitKey <- struct{}{}:
			default:
			}
			return i, io.EOF
		}
	}
	return n, err
}

// rawStdin puts the terminal in raw mode so that keys reach the guest as typed.
func rawStdin() (restore func(), in io.Reader, err error) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		// Not a terminal: forward stdin as it is.
		return func() {}, quitFilter{os.Stdin}, nil
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, nil, err
	}
	return func() {
		unix.IoctlSetTermios(fd, unix.TCSETS, old)
		os.Stdout.WriteString("\r\n")
	}, quitFilter{os.Stdin}, nil
}
