package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/pcr"
)

func init() { register(newPCRCmd) }

func newPCRCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pcr",
		Short: "Predict TPM PCR values of a measured boot",
	}
	cmd.AddCommand(newPCRPredictCmd())
	return cmd
}

func newPCRPredictCmd() *cobra.Command {
	var (
		ukiPath string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "predict --uki F",
		Short: "Predict PCR 11 as systemd-stub 257 measures a UKI, and its phases",
		Long: `predict prints PCR 11 in the sha256 bank as it is when systemd-stub hands
over to the kernel (first line: "pcr11 <hex>"), then the values
systemd-measure reports after the boot phases enter-initrd, leave-initrd,
sysinit and ready, then (as # comments) the measured sections.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := readInput("--uki", ukiPath)
			if err != nil {
				return err
			}
			p, err := pcr.PredictUKI(b)
			if err != nil {
				return failWith(1, fmt.Errorf("%s: %w", ukiPath, err))
			}
			w := cmd.OutOrStdout()
			if asJSON {
				out := struct {
					Bank         string            `json:"bank"`
					PCR11        string            `json:"pcr11"`
					Phases       []pcr.PhaseValue  `json:"phases"`
					Measurements []pcr.Measurement `json:"measurements"`
				}{"sha256", hex.EncodeToString(p.PCR11), p.Phases, p.Measurements}
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			fmt.Fprintf(w, "pcr11 %x\n", p.PCR11)
			for _, ph := range p.Phases {
				fmt.Fprintf(w, "phase %s %s\n", ph.Phase, ph.Hex)
			}
			for _, m := range p.Measurements {
				fmt.Fprintf(w, "# %-8s %10d bytes sha256 %s\n", m.Section, m.Size, m.DataDigest)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ukiPath, "uki", "", "the UKI")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	_ = cmd.MarkFlagRequired("uki")
	return cmd
}
