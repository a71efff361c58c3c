package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/spf13/cobra"

	"github.com/osguard/osguard/importer"
	"github.com/osguard/osguard/oci"
)

func init() { registerImage(newImageImportCmd) }

// nodeFlags are the containerd and snapshotter settings of the node-side
// image commands.
type nodeFlags struct {
	address, namespace, snapshotterRoot, baseName string
}

func (f *nodeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.address, "address", "/run/containerd/containerd.sock", "containerd's socket")
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace (as ctr's -n)")
	cmd.Flags().StringVar(&f.snapshotterRoot, "snapshotter-root", defaultSnapshotterRoot, "the osguard snapshotter's directory (layers are staged there)")
	cmd.Flags().StringVar(&f.baseName, "base-name", "", "prefix for tag-only image names, as ctr images import --base-name (\"latest\" becomes BASE:latest)")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// importLayout imports refs (all named images when empty) of l into the
// node's containerd.
func (f *nodeFlags) importLayout(ctx context.Context, l *oci.Layout, refs []string, progress io.Writer) ([]importer.Image, error) {
	client, err := containerd.New(f.address, containerd.WithDefaultNamespace(f.namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", f.address, err)
	}
	defer client.Close()
	c := importer.Containerd{
		Content: client.ContentStore(), Images: client.ImageService(),
		Snapshots: client.SnapshotService("osguard"), Leases: client.LeasesService(), Snapshotter: "osguard",
	}
	return importer.Import(ctx, c, l, refs, importer.Options{
		SnapshotterRoot: f.snapshotterRoot, Progress: progress, BaseName: f.baseName,
	})
}

func newImageImportCmd() *cobra.Command {
	var (
		nf     nodeFlags
		refs   []string
		asJSON bool
		quiet  bool
	)
	cmd := &cobra.Command{
		Use:   "import PATH",
		Short: "Import a signed OCI archive into the node's containerd (osguard snapshotter)",
		Long: `import reads an OCI archive (a tar of an OCI image layout, as
'skopeo copy ... oci-archive:FILE' writes it, with osguard's signature
referrers inside) from PATH, a file, a block device (such as a disk given to
'osguard run --disk') or a layout directory, and imports its images into
containerd for 'ctr run --snapshotter osguard'.

Every layer is converted to EROFS and its dm-verity hash tree on the node,
from the layer's own tar, and its verity device is created with the
publisher's signature: the kernel checks it against the node's UEFI db.
An unsigned layer, a signature by a key the db does not hold, or a layer
whose tar changed after signing is refused, and nothing of that image is
left behind. The image names imported are printed one per line.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, closeLayout, err := openLayoutOrArchive(args[0])
			if err != nil {
				return err
			}
			defer closeLayout()
			progress := cmd.ErrOrStderr()
			if quiet {
				progress = nil
			}
			imgs, err := nf.importLayout(cmd.Context(), l, refs, progress)
			if err != nil {
				return failWith(1, err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"images": imgs})
			}
			for _, img := range imgs {
				fmt.Fprintln(cmd.OutOrStdout(), img.Name)
			}
			return nil
		},
	}
	nf.register(cmd)
	cmd.Flags().StringSliceVar(&refs, "ref", nil, "import only this image (a ref name of the archive's index; repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the images and their layers as JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress lines on stderr")
	return cmd
}

// openLayoutOrArchive opens a layout directory, or an OCI archive in a
// file or on a block device; closeLayout releases either.
func openLayoutOrArchive(path string) (l *oci.Layout, closeLayout func(), err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, pathErr(err)
	}
	if fi.IsDir() {
		if l, err = oci.Open(path); err != nil {
			return nil, nil, err
		}
		return l, func() { l.Close() }, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, pathErr(err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		l, err = oci.OpenArchive(f, size)
	}
	if err != nil {
		f.Close()
		if strings.HasPrefix(path, "/dev/") {
			return nil, nil, fmt.Errorf("%s: %w (does the disk hold an OCI archive?)", path, err)
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, func() { l.Close(); f.Close() }, nil
}
