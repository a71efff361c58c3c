package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/imagesig"
	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/oci"
)

func init() { registerImage(newImageSignCmd) }

// imageFlags are the flags sign and verify share.
type imageFlags struct {
	cert, tempDir string
	workers       int
	asJSON        bool
}

func (f *imageFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cert, "cert", "", "containers certificate (PEM or DER), e.g. KEYS/containers.crt")
	fl.StringVar(&f.tempDir, "temp-dir", "", "where layer contents are spooled while converting (default $TMPDIR)")
	fl.IntVar(&f.workers, "workers", 0, "layers converted at once (default: the number of CPUs)")
	fl.BoolVar(&f.asJSON, "json", false, "print a JSON report on standard output")
	cmd.MarkFlagRequired("cert")
}

func (f *imageFlags) options(stderr io.Writer) imagesig.Options {
	return imagesig.Options{TempDir: f.tempDir, Workers: f.workers, Progress: func(line string) {
		fmt.Fprintln(stderr, line)
	}}
}

// openLayout opens LAYOUT of a LAYOUT[:REF] argument: a directory, or
// (for verify) a file or block device holding an OCI archive.
func openLayout(path string, archiveOK bool) (*oci.Layout, func(), error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("LAYOUT %s: %w", path, pathErr(err))
	}
	if fi.IsDir() {
		l, err := oci.Open(path)
		if err != nil {
			return nil, nil, err
		}
		return l, func() { l.Close() }, nil
	}
	if !archiveOK {
		return nil, nil, fmt.Errorf("LAYOUT %s is not a directory (an OCI image layout directory is needed)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("LAYOUT %s: %w", path, pathErr(err))
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("LAYOUT %s: %w", path, err)
	}
	l, err := oci.OpenArchive(f, size)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return l, func() { f.Close() }, nil
}

func newImageSignCmd() *cobra.Command {
	var f imageFlags
	var key string
	cmd := &cobra.Command{
		Use:   "sign --key KEY --cert CERT LAYOUT[:REF]",
		Short: "Sign the dm-verity root hash of every layer of an image in an OCI layout",
		Long: `sign converts each layer of the image REF (org.opencontainers.image.ref.name;
the layout's only image when REF is left out) of the OCI image layout
directory LAYOUT into the EROFS image and dm-verity tree the node will build
from it, checks the layer's uncompressed digest against the image config,
and signs the tree's root hash with KEY (PKCS#7, the form the kernel checks
for dm-verity's root_hash_sig_key_desc). An image index is signed manifest by
manifest (each linux platform).

The signatures are added to LAYOUT as an OCI 1.1 referrer artifact of each
image manifest (artifactType ` + "application/vnd.osguard.layer-signatures.v1+json" + `),
listed in index.json without a ref name, so skopeo and umoci still read the
image. Signing again with the same certificate replaces its referrer.
Nothing is written unless every layer is signed. Progress goes to standard
error; --json prints a report on standard output.

Since index.json then lists the referrers too, name the image when other
tools read the layout: 'skopeo inspect oci:LAYOUT:REF' and 'umoci unpack
--image LAYOUT:REF' work, 'oci:LAYOUT' alone finds more than one manifest.
'skopeo copy oci:LAYOUT:REF oci:OTHER:REF' copies the image but not its
referrers (skopeo 1.9 copies one image): copy the layout directory or a tar
of it, push it with 'osguard image push', or sign the copy again.

KEY and CERT are the containers key pair of 'osguard keys init'; the node
trusts them because containers.crt is enrolled in its UEFI db.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return failWith(2, fmt.Errorf("--key is required"))
			}
			k, c, err := keyfile.LoadPair(key, f.cert)
			if err != nil {
				return err
			}
			path, ref := oci.SplitRef(args[0])
			l, closeFn, err := openLayout(path, false)
			if err != nil {
				return err
			}
			defer closeFn()
			stderr := cmd.ErrOrStderr()
			rep, err := imagesig.Sign(l, ref, k, c, f.options(stderr))
			if err != nil {
				return err
			}
			for _, img := range rep.Images {
				fmt.Fprintf(stderr, "signed %s (%s): %d layers, referrer %s\n", img.Manifest, img.Platform, len(img.Layers), img.Referrer)
			}
			if f.asJSON {
				return writeJSONOut(cmd, rep)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "containers private key (PEM), e.g. KEYS/containers.key")
	f.add(cmd)
	return cmd
}
