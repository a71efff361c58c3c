package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/imagesig"
	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/oci"
)

func init() { registerImage(newImageVerifyCmd) }

func newImageVerifyCmd() *cobra.Command {
	var f imageFlags
	cmd := &cobra.Command{
		Use:   "verify --cert CERT LAYOUT[:REF]",
		Short: "Check that every layer of an image is signed by CERT, as the node will",
		Long: `verify converts each layer of the image REF in LAYOUT (an OCI image layout
directory, or a file or block device holding a tar of one) exactly as the
node will, and checks that a layer-signature referrer of the image manifest
holds a signature by CERT over that layer's dm-verity root hash.

It exits 0 when every layer of every image manifest is signed and matches,
and 1 when a layer is unsigned, signed only by another key, or signed for
content other than what it converts to (mismatch); the message names each
such layer by digest. --json prints the report on standard output.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := keyfile.LoadCert(f.cert)
			if err != nil {
				return err
			}
			path, ref := oci.SplitRef(args[0])
			l, closeFn, err := openLayout(path, true)
			if err != nil {
				return err
			}
			defer closeFn()
			rep, err := imagesig.Verify(l, ref, c, f.options(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			var bad []string
			for _, img := range rep.Images {
				for _, lr := range img.Layers {
					if lr.Status != imagesig.StatusOK {
						bad = append(bad, fmt.Sprintf("layer %s of %s: %s: %s", lr.Digest, img.Manifest, lr.Status, lr.Message))
					} else if !f.asJSON {
						fmt.Fprintf(cmd.OutOrStdout(), "ok %s (%s) root hash %s\n", lr.Digest, img.Platform, lr.RootHash)
					}
				}
			}
			if f.asJSON {
				if err := writeJSONOut(cmd, rep); err != nil {
					return err
				}
			}
			if len(bad) > 0 {
				return failWith(1, errors.New(strings.Join(bad, "\n")))
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
