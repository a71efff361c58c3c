// Package importer puts signed OCI images into the node's containerd for
// the osguard snapshotter: `osguard image import` (an OCI archive, from a
// file or a block device) and `osguard image pull` (after the registry
// package has fetched the image and its signature referrers into a
// layout).
//
// For each image it copies the blobs into containerd's content store,
// converts every layer that is not already there with package layer (the
// same EROFS and hash tree the publisher signed), stages it with the
// publisher's signature for the snapshotter, and asks containerd for the
// layer's snapshot: the snapshotter then creates the verity device, and the
// kernel checks the signature. Only when every layer is in does the image
// get its name in containerd. A failure removes the snapshots, staged layers
// and blobs this import created, so nothing is left half-imported.
//
// The importer never compares root hashes itself. It hands the root hash it
// computed from the layer tar and the publisher's signature to the kernel,
// so that a layer swapped after signing, or a signature by a key the node's
// db does not hold, is refused by the kernel (EKEYREJECTED, ENOKEY).
package importer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/imagesig"
	"github.com/osguard/osguard/layer"
	"github.com/osguard/osguard/layersig"
	"github.com/osguard/osguard/oci"
	"github.com/osguard/osguard/snapshotter"
)

// Containerd is what the importer needs of a containerd client.
type Containerd struct {
	Content     content.Store
	Images      images.Store
	Snapshots   snapshots.Snapshotter // the osguard snapshotter, through containerd
	Leases      leases.Manager
	Snapshotter string // its name in containerd ("osguard")
}

// Options control an import.
type Options struct {
	// SnapshotterRoot is the snapshotter's directory; layers are staged
	// under it, on the same file system.
	SnapshotterRoot string
	// Progress receives one line per step (nil: none).
	Progress io.Writer
	// BaseName prefixes tag-only ref names ("latest" becomes
	// BaseName:latest), as `ctr images import --base-name` does.
	BaseName string
}

// Image is one imported image.
type Image struct {
	Name   string  `json:"name"`
	Digest string  `json:"digest"` // the image manifest
	Layers []Layer `json:"layers"`
}

// Layer is one layer of an imported image.
type Layer struct {
	Digest   string `json:"digest"`
	DiffID   string `json:"diffID"`
	ChainID  string `json:"chainID"`
	RootHash string `json:"rootHash,omitempty"`
	Shared   bool   `json:"shared"` // already on the node (another image has it)
}

// Import imports every named image of the layout (index.json entries
// with org.opencontainers.image.ref.name; only refs when given).
func Import(ctx context.Context, c Containerd, l *oci.Layout, refs []string, opts Options) ([]Image, error) {
	if len(refs) == 0 {
		for _, r := range l.Refs() {
			refs = append(refs, r.Name)
		}
	}
	if len(refs) == 0 {
		return nil, errors.New("import: the layout names no image (no org.opencontainers.image.ref.name in index.json)")
	}
	var out []Image
	for _, ref := range refs {
		img, err := importOne(ctx, c, l, ref, opts)
		if err != nil {
			return out, fmt.Errorf("import %s: %w", ref, err)
		}
		out = append(out, *img)
	}
	return out, nil
}

// job is one image import: what it created, to undo on failure.
type job struct {
	c         Containerd
	opts      Options
	l         *oci.Layout
	newBlobs  []digest.Digest
	newSnaps  []string // committed chain IDs, bottom first
	staged    []string
	progressf func(format string, args ...any)
}

func importOne(ctx context.Context, c Containerd, l *oci.Layout, ref string, opts Options) (_ *Image, err error) {
	j := &job{c: c, opts: opts, l: l, progressf: func(f string, a ...any) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, f+"\n", a...)
		}
	}}
	ctx, done, err := leaseFor(ctx, c.Leases)
	if err != nil {
		return nil, err
	}
	defer done()
	defer func() {
		if err != nil {
			j.undo(ctx)
		}
	}()

	desc, err := l.Resolve(ref)
	if err != nil {
		return nil, err
	}
	img, err := j.resolve(ref, desc)
	if err != nil {
		return nil, err
	}
	sigs, err := j.signatures(img)
	if err != nil {
		return nil, err
	}
	if err := j.copyBlobs(ctx, img); err != nil {
		return nil, err
	}
	name := j.imageName(ref, desc)
	out := &Image{Name: name, Digest: img.Descriptor.Digest.String()}
	diffIDs := img.Config.RootFS.DiffIDs
	for i, desc := range img.Manifest.Layers {
		ly, err := j.layer(ctx, desc, diffIDs[:i+1], sigs)
		if err != nil {
			return nil, err
		}
		out.Layers = append(out.Layers, *ly)
	}
	if err := j.name(ctx, name, img, identity.ChainID(diffIDs).String()); err != nil {
		return nil, err
	}
	return out, nil
}

func leaseFor(ctx context.Context, lm leases.Manager) (context.Context, func(), error) {
	if lm == nil {
		return ctx, func() {}, nil
	}
	var b [8]byte
	rand.Read(b[:])
	lease, err := lm.Create(ctx, leases.WithID("osguard-import-"+hex.EncodeToString(b[:])), leases.WithExpiration(3600e9))
	if err != nil {
		return nil, nil, fmt.Errorf("containerd lease: %w", err)
	}
	return leases.WithLease(ctx, lease.ID), func() { lm.Delete(context.WithoutCancel(ctx), lease) }, nil
}

// imageName is the containerd name of ref, chosen as containerd's own
// import does: the io.containerd.image.name annotation, else the ref name,
// with BaseName before a tag-only ref.
func (j *job) imageName(ref string, desc ocispec.Descriptor) string {
	if n := desc.Annotations[images.AnnotationImageName]; n != "" {
		return n
	}
	if j.opts.BaseName != "" && !strings.ContainsAny(ref, "/:@") {
		return j.opts.BaseName + ":" + ref
	}
	return ref
}

// resolve finds the linux/amd64 image manifest of ref (desc).
func (j *job) resolve(ref string, desc ocispec.Descriptor) (*oci.Image, error) {
	imgs, err := j.l.Images(desc)
	if err != nil {
		return nil, err
	}
	for i := range imgs {
		p := imgs[i].Platform
		if p == nil {
			p = &ocispec.Platform{OS: imgs[i].Config.OS, Architecture: imgs[i].Config.Architecture}
		}
		if p.OS == "linux" && p.Architecture == "amd64" {
			img := &imgs[i]
			if n, m := len(img.Manifest.Layers), len(img.Config.RootFS.DiffIDs); n != m || n == 0 {
				return nil, fmt.Errorf("image %s has %d layers and %d diff IDs", img.Descriptor.Digest, n, m)
			}
			return img, nil
		}
	}
	return nil, fmt.Errorf("%s has no linux/amd64 image", ref)
}

// signatures collects the osguard signature referrers of the image: every
// signed form of each layer, by blob digest.
func (j *job) signatures(img *oci.Image) (map[string][]layersig.Layer, error) {
	refs, err := j.l.Referrers(img.Descriptor.Digest, layersig.ArtifactType)
	if err != nil {
		return nil, err
	}
	sigs := map[string][]layersig.Layer{}
	for _, r := range refs {
		doc, err := j.readSignatures(r)
		if err != nil {
			return nil, fmt.Errorf("signature referrer %s: %w", r.Digest, err)
		}
		for _, ly := range doc.Layers {
			sigs[ly.Digest] = append(sigs[ly.Digest], ly)
		}
	}
	return sigs, nil
}

func (j *job) readSignatures(r ocispec.Descriptor) (*layersig.Document, error) {
	mb, err := j.l.ReadBlob(r, oci.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	m, err := oci.ParseManifest(mb)
	if err != nil {
		return nil, err
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != layersig.ArtifactType {
		return nil, fmt.Errorf("want one blob of type %s, the manifest has %d layers", layersig.ArtifactType, len(m.Layers))
	}
	db, err := j.l.ReadBlob(m.Layers[0], layersig.MaxDocumentSize)
	if err != nil {
		return nil, err
	}
	return layersig.Parse(bytes.NewReader(db))
}

// copyBlobs puts manifest, config and layer blobs into containerd's
// content store, labelled so that containerd's garbage collector keeps the
// config and layers as long as the manifest.
func (j *job) copyBlobs(ctx context.Context, img *oci.Image) error {
	labels := map[string]string{"containerd.io/gc.ref.content.config": img.Manifest.Config.Digest.String()}
	for i, l := range img.Manifest.Layers {
		labels[fmt.Sprintf("containerd.io/gc.ref.content.l.%d", i)] = l.Digest.String()
	}
	if err := j.copyBlob(ctx, img.Manifest.Config, nil); err != nil {
		return err
	}
	for _, l := range img.Manifest.Layers {
		if err := j.copyBlob(ctx, l, nil); err != nil {
			return err
		}
	}
	// The manifest last, with the labels that keep the others.
	return j.copyBlob(ctx, img.Descriptor, labels)
}

func (j *job) copyBlob(ctx context.Context, d ocispec.Descriptor, labels map[string]string) error {
	if info, err := j.c.Content.Info(ctx, d.Digest); err == nil {
		if len(labels) == 0 {
			return nil
		}
		var fields []string
		if info.Labels == nil {
			info.Labels = map[string]string{}
		}
		for k, v := range labels {
			info.Labels[k] = v
			fields = append(fields, "labels."+k)
		}
		_, err := j.c.Content.Update(ctx, info, fields...)
		return err
	}
	rc, err := j.l.Open(d)
	if err != nil {
		return err
	}
	defer rc.Close()
	j.progressf("blob %s (%d bytes)", d.Digest, d.Size)
	if err := content.WriteBlob(ctx, j.c.Content, "osguard-import-"+d.Digest.String(), rc, d, content.WithLabels(labels)); err != nil {
		return fmt.Errorf("content store: %s: %w", d.Digest, err)
	}
	j.newBlobs = append(j.newBlobs, d.Digest)
	return nil
}

// layer brings one layer in: shared when its chain is already a snapshot,
// else converted, staged and handed to the snapshotter, trying each
// signature of it until the kernel accepts one.
func (j *job) layer(ctx context.Context, desc ocispec.Descriptor, chain []digest.Digest, sigs map[string][]layersig.Layer) (*Layer, error) {
	diffID := chain[len(chain)-1].String()
	chainID := identity.ChainID(chain).String()
	parent := ""
	if len(chain) > 1 {
		parent = identity.ChainID(chain[:len(chain)-1]).String()
	}
	out := &Layer{Digest: desc.Digest.String(), DiffID: diffID, ChainID: chainID}
	if _, err := j.c.Snapshots.Stat(ctx, chainID); err == nil {
		out.Shared = true
		j.progressf("layer %s: already on the node", desc.Digest)
		return out, nil
	}
	cands := sigs[desc.Digest.String()]
	if len(cands) == 0 {
		return nil, fmt.Errorf("layer %s is not signed: no osguard signature referrer of the image covers it", desc.Digest)
	}
	j.progressf("layer %s: converting to EROFS and dm-verity", desc.Digest)
	work := snapshotter.StagingDir(j.opts.SnapshotterRoot, diffID) + ".convert"
	j.staged = append(j.staged, work)
	res, err := j.convert(desc, chain[len(chain)-1], work)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	out.RootHash = hex.EncodeToString(res.Verity.RootHash)
	var errs []error
	for _, sig := range cands {
		err := j.snapshot(ctx, work, diffID, chainID, parent, sig.Signature)
		if err == nil {
			os.RemoveAll(work)
			j.newSnaps = append(j.newSnaps, chainID)
			j.progressf("layer %s: verity device created; the kernel accepted its signature", desc.Digest)
			return out, nil
		}
		if !bytes.Equal(sig.Verity.RootHash, res.Verity.RootHash) {
			err = fmt.Errorf("%w (the signature is for root hash %x; this layer's is %x)", err, []byte(sig.Verity.RootHash), res.Verity.RootHash)
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("layer %s: %w", desc.Digest, errors.Join(errs...))
}

// convert writes the layer's image and hash tree, and its record, to dir.
// imagesig.ConvertBlob reads the whole blob, so its digest and the diff ID
// of its content are both checked.
func (j *job) convert(desc ocispec.Descriptor, diffID digest.Digest, dir string) (*layer.Result, error) {
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, snapshotter.ImageFile), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res, err := imagesig.ConvertBlob(j.l, desc, diffID, f, filepath.Dir(dir))
	if err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	rec := &snapshotter.Record{
		DiffID: res.DiffID, Digest: desc.Digest.String(), HashOffset: res.HashOffset,
		HashAlgorithm: res.Verity.HashAlgorithm, DataBlockSize: res.Verity.DataBlockSize,
		HashBlockSize: res.Verity.HashBlockSize, DataBlocks: res.Verity.DataBlocks,
		Salt: hex.EncodeToString(res.Verity.Salt), RootHash: hex.EncodeToString(res.Verity.RootHash),
	}
	if err := rec.Check(res.DiffID); err != nil {
		return nil, err
	}
	return res, snapshotter.WriteRecord(dir, rec)
}

// snapshot stages the converted layer with one signature (hard links of the
// converted files) and asks containerd for its snapshot.
func (j *job) snapshot(ctx context.Context, work, diffID, chainID, parent string, sig []byte) error {
	stage := snapshotter.StagingDir(j.opts.SnapshotterRoot, diffID)
	os.RemoveAll(stage)
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return err
	}
	j.staged = append(j.staged, stage)
	for _, name := range []string{snapshotter.ImageFile, snapshotter.RecordFile} {
		if err := os.Link(filepath.Join(work, name), filepath.Join(stage, name)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(stage, snapshotter.SignatureFile), sig, 0o600); err != nil {
		return err
	}
	var b [8]byte
	rand.Read(b[:])
	key := "osguard-import-" + hex.EncodeToString(b[:]) + " " + chainID
	if _, err := j.c.Snapshots.Prepare(ctx, key, parent, snapshots.WithLabels(map[string]string{snapshotter.LayerLabel: diffID})); err != nil {
		os.RemoveAll(stage)
		return err
	}
	if err := j.c.Snapshots.Commit(ctx, chainID, key); err != nil {
		j.c.Snapshots.Remove(context.WithoutCancel(ctx), key)
		if errdefs.IsAlreadyExists(err) {
			return nil // another import committed the same chain meanwhile
		}
		return fmt.Errorf("commit snapshot %s: %w", chainID, err)
	}
	return nil
}

// name labels the config with the snapshot chain (so that containerd's
// garbage collector keeps the layers while the image exists, as its own
// unpack does) and creates or updates the image record.
func (j *job) name(ctx context.Context, ref string, img *oci.Image, top string) error {
	info, err := j.c.Content.Info(ctx, img.Manifest.Config.Digest)
	if err != nil {
		return err
	}
	label := "containerd.io/gc.ref.snapshot." + j.c.Snapshotter
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	info.Labels[label] = top
	if _, err := j.c.Content.Update(ctx, info, "labels."+label); err != nil {
		return fmt.Errorf("content store: label %s: %w", img.Manifest.Config.Digest, err)
	}
	record := images.Image{Name: ref, Target: img.Descriptor}
	if _, err := j.c.Images.Create(ctx, record); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		if _, err := j.c.Images.Update(ctx, record, "target"); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
	}
	return nil
}

// undo removes what a failed import created: its snapshots (top first),
// staged layers and new blobs.
func (j *job) undo(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for i := len(j.newSnaps) - 1; i >= 0; i-- {
		j.c.Snapshots.Remove(ctx, j.newSnaps[i])
	}
	for _, d := range j.staged {
		os.RemoveAll(d)
	}
	for _, d := range j.newBlobs {
		j.c.Content.Delete(ctx, d)
	}
}
