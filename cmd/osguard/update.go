package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/update"
)

func init() { register(newUpdateCmd) }

func newUpdateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Signed A/B updates: pack a build, apply it on a node, commit or roll back",
		Long: `update moves a node from one image to the next without reimaging it.

  pack        on the build host: a build output directory → one signed bundle
  apply       on the node: verify the bundle against the node's UEFI db, write
              the inactive usr slot and the UKI, arrange one trial boot
  check-boot  on the node at every boot: commit a healthy trial boot, record
              a failed one (the firmware already went back to the old slot)

The bundle format is documented in the update package (go doc
github.com/osguard/osguard/update).`,
	}
	cmd.AddCommand(newUpdatePackCmd(), newUpdateApplyCmd(), newUpdateCheckBootCmd())
	return cmd
}

func newUpdatePackCmd() *cobra.Command {
	var o update.PackOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pack DIR -o FILE",
		Short: "Turn an 'osguard build' output into a signed update bundle",
		Long: `pack reads DIR (an 'osguard build' output): slot A's usr image, verity tree
and signature from disk.raw, uki.efi and measurements.json, and writes one
bundle signed with the db key (DIR/keys, or --keys). FILE appears only when
complete.

The usr image is not hashed again: the build's dm-verity tree, which pack
checks against the signed root hash, goes into the bundle and covers every
block of it, on the node as in the bundle. pack copies the image once, in
the kernel (copy_file_range; on a file system with reflinks it shares the
blocks instead). The format is documented in the update package
(go doc github.com/osguard/osguard/update).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Dir = args[0]
			t0 := time.Now()
			m, err := update.PackDir(o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				m.Payloads = nil
				return enc.Encode(m)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "packed %s %s into %s in %.1fs\n", m.Image.Name, m.Image.Version, o.Out, time.Since(t0).Seconds())
			fmt.Fprintf(w, "  usr root hash: %s\n  IPE policy:    %s %s\n", m.Usr.RootHash, m.IPE.PolicyName, m.IPE.PolicyVersion)
			for _, p := range m.Payloads {
				if p.Name == update.PayloadUsr {
					fmt.Fprintf(w, "  %-18s %10d bytes  checked against usr-verity\n", p.Name, p.Size)
					continue
				}
				fmt.Fprintf(w, "  %-18s %10d bytes  sha256 %s\n", p.Name, p.Size, p.SHA256)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Out, "output", "o", "", "the bundle file to write")
	f.StringVar(&o.KeysDir, "keys", "", "directory with db.key and db.crt (default DIR/keys)")
	f.BoolVar(&asJSON, "json", false, "print the manifest (without payload hashes) as JSON")
	cmd.MarkFlagRequired("output")
	return cmd
}

func newUpdateApplyCmd() *cobra.Command {
	var o update.ApplyOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "apply FILE|URL [--allow-downgrade]",
		Short: "On a node: verify a bundle and write it to the inactive slot for one trial boot",
		Long: `apply runs on an osguard node as root. It reads the bundle (a file, a block
device holding one, or an http(s) URL) and, before it writes anything, checks
the manifest's signature against the certificates in the node's UEFI db
(efivarfs), the architecture and disk layout, and that the image version and
the IPE policy version are higher than the running ones (--allow-downgrade
accepts lower ones).

Before it writes anything it also reads the whole bundle once and checks
every payload byte against the signed manifest (the usr image block by block
against its signed dm-verity tree): a bundle with one flipped byte anywhere
is refused and nothing on the node changes. A URL (or a pipe) cannot be
read twice, so this pass keeps a copy in an unlinked file in --spool-dir,
gone when apply ends.

It then writes the inactive slot (usr, usr-verity, usr-verity-sig, with the
partition UUIDs the new root hash gives), reading the usr image again with
direct I/O. It checks it again unless nothing can change it in between: a
read-only device, the spool, or a file it holds a read lease on (opening
that file for writing breaks the lease and stops apply). Should a check
fail, the write stops and the slot, whose signature partition is cleared
first and written last, boots nothing. It puts the UKI on the ESP, and sets
a Boot#### entry and BootNext for one trial boot. It never writes the running slot. Reboot to try
the new slot: 'osguard update check-boot' commits it when the node is
healthy; any failure before that returns the node to the old slot.

Exit status 1 when the bundle is refused or cannot be applied.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Source = args[0]
			if !asJSON {
				o.Log = cmd.ErrOrStderr()
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := update.Apply(ctx, o)
			if err != nil {
				return failWith(1, err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{
					"image": res.Manifest.Image, "slot": res.Slot, "fromSlot": res.FromSlot, "fromVersion": res.FromVersion,
					"bootEntry": fmt.Sprintf("Boot%04X", res.BootEntry), "bytes": res.Bytes,
					"usrBytes": res.UsrBytes, "usrSeconds": res.UsrDuration.Seconds(), "verifySeconds": res.VerifyDuration.Seconds(),
					"recheckedUsr": res.RecheckedUsr,
					"seconds":      res.Duration.Seconds(),
				})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %s %s to slot %s (Boot%04X, BootNext); reboot for its trial boot\n",
				res.Manifest.Image.Name, res.Manifest.Image.Version, res.Slot, res.BootEntry)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.AllowDowngrade, "allow-downgrade", false, "accept an image or IPE policy version that is not higher than the running one")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&o.SpoolDir, "spool-dir", update.DefaultSpoolDir, "where the copy of a URL's bundle is kept while it is verified")
	return cmd
}

func newUpdateCheckBootCmd() *cobra.Command {
	var o update.CheckOptions
	var verbose bool
	cmd := &cobra.Command{
		Use:   "check-boot [--timeout D]",
		Short: "On a node at boot: commit a healthy trial boot, or record and undo a failed one",
		Long: `check-boot runs at every boot of a node (the default userland starts it from
its rcS; a systemd node runs it as a service). After 'osguard update apply'
and a reboot into the new slot it waits until 'osguard status' is all ok
(and containerd is active where it is installed), then puts the new slot's
boot entry first in BootOrder: committed. When the node is not healthy
within --timeout it records the reason and reboots; the firmware then boots
the old slot. On the trial boot it takes over the watchdog osguard-init armed
(for osguard.update.timeout plus 30s, so that a userland that hangs before
check-boot starts is reset), re-arms it for --timeout plus 30s and stops it
when it commits. On the old slot after a trial boot that failed earlier
(kernel panic, missing init, verity failure, refused UKI, a reset by the
watchdog) it records rolled-back and why.
'osguard status' shows the result as update.lastResult. It prints
'update: RESULT' when it changed the result (always with -v).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = cmd.ErrOrStderr()
			before := ""
			st, err := update.CheckBoot(context.Background(), o, &before)
			if err != nil {
				return err
			}
			// Quiet when there was nothing to decide: it runs at every
			// boot, next to the console's shell prompt.
			if st.LastResult != before || verbose {
				fmt.Fprintf(cmd.OutOrStdout(), "update: %s\n", st.LastResult)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 0, "how long a trial boot has to become healthy (default: osguard.update.timeout= on the kernel command line, else 2m)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the result even when nothing changed")
	return cmd
}
