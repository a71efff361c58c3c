package main

import "github.com/spf13/cobra"

func init() { register(newImageCmd) }

// imageSubcommands is filled by the init functions of the image_*.go files,
// one file per subcommand (sign, verify, push, pull, import), so that they
// never touch each other.
var imageSubcommands []func() *cobra.Command

func registerImage(f func() *cobra.Command) { imageSubcommands = append(imageSubcommands, f) }

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Sign, verify, push, pull and import container images with signed dm-verity layers",
		Long: `image works on OCI container images whose layers osguard turns into EROFS
volumes under dm-verity. The publisher signs each layer's verity root hash
with the containers key (its certificate is enrolled in the node's UEFI db);
the signatures travel as an OCI 1.1 referrer artifact of the image. The node
re-derives the same EROFS from each layer tar, and the kernel checks the
signature when it creates the layer's verity device.`,
	}
	for _, f := range imageSubcommands {
		cmd.AddCommand(f())
	}
	return cmd
}
