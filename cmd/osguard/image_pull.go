package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/oci"
	"github.com/osguard/osguard/registry"
)

func init() { registerImage(newImagePullCmd) }

func newImagePullCmd() *cobra.Command {
	var rf registryFlags
	var layout, platform string
	var all bool
	var nf nodeFlags
	cmd := &cobra.Command{
		Use:   "pull HOST[:PORT]/REPO:TAG [--layout DIR]",
		Short: "Pull an image and its signature referrers into the node's containerd, or into an OCI layout",
		Long: `pull fetches the image (from an index: the linux/amd64 image, or --platform,
or with --all-platforms the whole index) with its referrers, such as the layer
signatures 'osguard image sign' made, and writes them as the OCI image layout
DIR: index.json names the image by its tag (org.opencontainers.image.ref.name)
and full reference (io.containerd.image.name), and lists each referrer with
its artifactType. DIR must not exist or be empty; the layout appears there
only when everything arrived with the right digests.

Referrers come from the registry's referrers API when it has one, else from
the OCI 1.1 referrers tag schema (Debian's docker-registry has no API).
HTTPS is the default; loopback registries and --plain-http use HTTP.

Without --layout (on a node) the pulled layout goes to a temporary directory
under the snapshotter's directory and is imported into containerd as
'osguard image import' does: every layer is converted to EROFS and dm-verity
on the node and the kernel checks the publisher's signature. The temporary
layout is removed afterwards.

It prints the image references it pulled (with --layout) or imported, one per line.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return failWith(2, fmt.Errorf("pull takes one HOST[:PORT]/REPO:TAG, got %d arguments", len(args)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o := rf.options(cmd)
			o.AllPlatforms = all
			if platform != "" {
				p, err := registry.ParsePlatform(platform)
				if err != nil {
					return failWith(2, err)
				}
				o.Platform = &p
			}
			ctx, stop := signalContext()
			defer stop()
			if layout == "" {
				return pullAndImport(cmd, &nf, args[0], o, rf.asJSON)
			}
			res, err := registry.Pull(ctx, args[0], layout, o)
			if err != nil {
				return err
			}
			if rf.asJSON {
				return writeJSONOut(cmd, res)
			}
			for _, r := range res.Refs {
				fmt.Fprintln(cmd.OutOrStdout(), r)
			}
			return nil
		},
	}
	rf.add(cmd)
	nf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&layout, "layout", "", "write the OCI image layout to `DIR` (must not exist or be empty)")
	f.StringVar(&platform, "platform", "", "the image of an index to pull, `OS/ARCH[/VARIANT]` (default linux/amd64)")
	f.BoolVar(&all, "all-platforms", false, "pull the whole index")
	cmd.MarkFlagsMutuallyExclusive("platform", "all-platforms")
	return cmd
}

// pullAndImport pulls into a temporary layout next to the snapshotter's
// layers and imports it into containerd.
func pullAndImport(cmd *cobra.Command, nf *nodeFlags, ref string, o registry.Options, asJSON bool) error {
	if fi, err := os.Stat(nf.address); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return failWith(1, fmt.Errorf("no containerd at %s: without --layout, pull imports into the node's containerd (give --layout DIR to pull into an OCI layout)", nf.address))
	}
	ctx, stop := signalContext()
	defer stop()
	if err := os.MkdirAll(nf.snapshotterRoot, 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(nf.snapshotterRoot, "pull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	res, err := registry.Pull(ctx, ref, filepath.Join(tmp, "layout"), o)
	if err != nil {
		return err
	}
	l, err := oci.Open(res.Layout)
	if err != nil {
		return err
	}
	defer l.Close()
	imgs, err := nf.importLayout(ctx, l, []string{res.RefName}, o.Progress)
	if err != nil {
		return failWith(1, err)
	}
	if asJSON {
		return writeJSONOut(cmd, map[string]any{"pull": res, "images": imgs})
	}
	for _, img := range imgs {
		fmt.Fprintln(cmd.OutOrStdout(), img.Name)
	}
	return nil
}
