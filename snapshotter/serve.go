package snapshotter

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"google.golang.org/grpc"
)

// Serve answers containerd's snapshot service on the unix socket path
// (mode 0600: only root, which containerd runs as, may use it) until ctx
// ends. containerd reaches it through a proxy_plugins entry of type
// "snapshot" in its config.toml.
func Serve(ctx context.Context, sn *Snapshotter, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("snapshotter: %w", err)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			srv.GracefulStop()
		case <-done:
		}
	}()
	err = srv.Serve(l)
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("snapshotter: serve %s: %w", socket, err)
}
