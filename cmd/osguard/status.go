package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/node"
)

func init() { register(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	var o node.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Report the node's security state from its kernel and firmware",
		Long: `status runs on an osguard node (as root) and reports, from the kernel's and the
firmware's own interfaces:

  secure-boot  SecureBoot and SetupMode (efivarfs) and the db certificates
  usr-verity   the device-mapper table under /usr: target type, root hash,
               whether the kernel checked a root-hash signature, and health
  ipe          the active IPE policy, its version and the enforce/audit mode
  selinux      whether SELinux runs, and its mode
  pcr11        the TPM's PCR 11 against the prediction

It compares them with measurements.json, which 'osguard build' put on the ESP
(or --measurements FILE), and exits 1 when any guarantee is broken, for
example when /usr's table was reloaded as dm-linear.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st := node.Collect(o)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					*node.Status
					OK bool `json:"ok"`
				}{st, st.OK()}); err != nil {
					return err
				}
			} else {
				fmt.Fprint(cmd.OutOrStdout(), st.Text())
			}
			if !st.OK() {
				return failWith(1, errors.New("some guarantees are broken"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	cmd.Flags().StringVar(&o.Measurements, "measurements", "", "measurements.json to compare with (default: the one on the ESP)")
	return cmd
}
