package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/oci"
	"github.com/osguard/osguard/registry"
)

func init() { registerImage(newImagePushCmd) }

// registryFlags are the flags push and pull share.
type registryFlags struct {
	plainHTTP, asJSON, quiet bool
}

func (f *registryFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "talk HTTP, not HTTPS, to the registry (loopback registries always use HTTP)")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress lines on stderr")
}

func (f *registryFlags) options(cmd *cobra.Command) registry.Options {
	o := registry.Options{PlainHTTP: f.plainHTTP}
	if !f.quiet {
		o.Progress = cmd.ErrOrStderr()
	}
	return o
}

// signalContext is cancelled by Ctrl-C or SIGTERM, so that a transfer
// stops cleanly (a pull then removes its temporary directory).
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newImagePushCmd() *cobra.Command {
	var rf registryFlags
	cmd := &cobra.Command{
		Use:   "push LAYOUT[:REF] HOST[:PORT]/REPO:TAG",
		Short: "Push an image and its signature referrers from an OCI layout to a registry",
		Long: `push sends the image that REF names in the OCI image layout directory LAYOUT
(split at the first colon, as skopeo's oci: transport does; REF matches
org.opencontainers.image.ref.name or is a digest; without REF, the layout's
only image) to the registry, with every referrer of it in the layout, such
as the layer signatures 'osguard image sign' adds.

Registries without the OCI 1.1 referrers API (Debian's docker-registry,
distribution 2.8) get the referrers tag schema: a tag sha256-<hex> of the
image manifest digest holding an index of its referrers.

HTTPS is the default; loopback registries (127.0.0.1, ::1, localhost) and
--plain-http use HTTP. Access is anonymous.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return failWith(2, fmt.Errorf("push takes LAYOUT[:REF] and HOST[:PORT]/REPO:TAG, got %d arguments", len(args)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			layout, ref := oci.SplitRef(args[0])
			ctx, stop := signalContext()
			defer stop()
			res, err := registry.Push(ctx, layout, ref, args[1], rf.options(cmd))
			if err != nil {
				return err
			}
			if rf.asJSON {
				return writeJSONOut(cmd, res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "pushed %s@%s\n", res.Target, res.Image.Digest)
			for _, r := range res.Referrers {
				fmt.Fprintf(w, "  referrer %s %s\n", r.Digest, r.ArtifactType)
			}
			return nil
		},
	}
	rf.add(cmd)
	return cmd
}
