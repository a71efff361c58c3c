package main

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/snapshotter"
)

func init() { register(newSnapshotterCmd) }

// Default paths of the node's snapshotter; the containerhost profile's
// containerd config.toml names the socket.
const (
	defaultSnapshotterRoot   = "/var/lib/osguard/snapshotter"
	defaultSnapshotterSocket = "/run/osguard/snapshotter.sock"
)

func newSnapshotterCmd() *cobra.Command {
	var root, socket string
	cmd := &cobra.Command{
		Use:   "snapshotter",
		Short: "Serve containerd's snapshot API over signed dm-verity EROFS layers (node service)",
		Long: `snapshotter runs osguard's containerd proxy snapshotter on the node (the
osguard-snapshotter.service unit of the containerhost profile). containerd
uses it for 'ctr run --snapshotter osguard': every layer is an EROFS volume
on a dm-verity device created with the publisher's signature, which the
kernel checks, and a container's root is an overlayfs over those layers.
Layers get in only through 'osguard image import' (or 'osguard image pull');
containerd's own unpacking into this snapshotter is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := snapshotter.New(root)
			if err != nil {
				return err
			}
			defer sn.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return snapshotter.Serve(ctx, sn, socket)
		},
	}
	cmd.Flags().StringVar(&root, "root", defaultSnapshotterRoot, "directory of the layers, the writable directories and the metadata")
	cmd.Flags().StringVar(&socket, "socket", defaultSnapshotterSocket, "unix socket containerd connects to")
	return cmd
}
