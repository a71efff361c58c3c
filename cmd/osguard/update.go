package main

import (
	"encoding/json"
	"fmt"
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
	cmd.AddCommand(newUpdatePackCmd())
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
bundle signed with the db key (DIR/keys, or --keys). It reads the image once
and FILE appears only when complete.`,
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
