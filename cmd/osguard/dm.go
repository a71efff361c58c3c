package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/internal/dm"
)

func init() { register(newDMCmd) }

// newDMCmd is a small dmsetup for nodes, which have none: enough to read
// tables and to replace one, which is how the attack suite shows what the
// kernel lets root do to a mounted verity device.
func newDMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dm",
		Short: "Read and replace device-mapper tables on a node (a small dmsetup)",
	}
	cmd.AddCommand(newDMListCmd("table NAME", "Print the active table of a device, as dmsetup table does", dm.Table))
	cmd.AddCommand(newDMListCmd("status NAME", "Print the status of a device's targets, as dmsetup status does", dm.TargetStatus))
	var readOnly bool
	reload := &cobra.Command{
		Use:   "reload NAME 'START LENGTH TYPE PARAMS...'",
		Short: "Load a new single-target table into a device and resume it",
		Long: `reload loads a table with one target into device NAME and resumes it, as
'dmsetup reload' followed by 'dmsetup resume'. For example

  osguard dm reload usr "0 26416 linear /dev/vda2 0"

replaces the verity target under /usr by a plain mapping: the kernel allows
this to root (GHSA-6vq3-w69p-w63m), and 'osguard status' then reports /usr as
no longer verified.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := strings.Fields(args[1])
			if len(f) < 3 {
				return failWith(2, fmt.Errorf("table %q: want START LENGTH TYPE [PARAMS...]", args[1]))
			}
			start, err1 := strconv.ParseUint(f[0], 10, 64)
			length, err2 := strconv.ParseUint(f[1], 10, 64)
			if err1 != nil || err2 != nil {
				return failWith(2, fmt.Errorf("table %q: START and LENGTH are sector counts", args[1]))
			}
			t := dm.Target{Start: start, Length: length, Type: f[2], Params: strings.Join(f[3:], " ")}
			if err := dm.Load(args[0], readOnly, []dm.Target{t}); err != nil {
				return err
			}
			return dm.Resume(args[0])
		},
	}
	reload.Flags().BoolVar(&readOnly, "readonly", true, "load the table read-only")
	cmd.AddCommand(reload)
	return cmd
}

// newDMListCmd makes table and status: one line per target, as dmsetup
// prints them, or with --json an array of {start, length, type, params}.
func newDMListCmd(use, short string, get func(string) ([]dm.Target, error)) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := get(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				type target struct {
					Start  uint64 `json:"start"`
					Length uint64 `json:"length"`
					Type   string `json:"type"`
					Params string `json:"params"`
				}
				out := []target{}
				for _, t := range ts {
					out = append(out, target{t.Start, t.Length, t.Type, t.Params})
				}
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			for _, t := range ts {
				fmt.Fprintln(w, t.String())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the targets as a JSON array")
	return cmd
}
