package oci

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// EmptyJSON is the empty descriptor's content, the config of artifacts.
var EmptyJSON = []byte("{}")

// writeFile writes b to name inside the layout via a temporary file in the
// same directory, synced and renamed, so a reader or a crash sees the old
// file or the whole new one.
func (l *Layout) writeFile(name string, b []byte) error {
	if l.root == nil {
		return errors.New("oci: an archive layout cannot be written")
	}
	dir := path.Dir(name)
	if err := l.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := path.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := l.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.root.Rename(tmp, name)
	}
	if err != nil {
		l.root.Remove(tmp)
		return fmt.Errorf("oci: write %s: %w", name, err)
	}
	return nil
}

// PutBlob adds b to the layout's blobs (unless a blob with its digest and
// size is there already) and returns its descriptor.
func (l *Layout) PutBlob(mediaType string, b []byte) (ocispec.Descriptor, error) {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	name, err := blobPath(d.Digest)
	if err != nil {
		return d, err
	}
	if l.root == nil {
		return d, errors.New("oci: an archive layout cannot be written")
	}
	if fi, err := l.root.Lstat(name); err == nil && fi.Mode().IsRegular() && fi.Size() == d.Size {
		// Same name, same size: check the content before relying on it.
		if _, err := l.ReadBlob(d, d.Size); err == nil {
			return d, nil
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d, fmt.Errorf("oci: %w", err)
	}
	return d, l.writeFile(name, b)
}

// PutJSON marshals v and adds it as a blob.
func (l *Layout) PutJSON(mediaType string, v any) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("oci: %w", err)
	}
	return l.PutBlob(mediaType, b)
}

// UpdateIndex applies fn to a copy of index.json and writes the result
// atomically. The entries fn leaves are kept as they were.
func (l *Layout) UpdateIndex(fn func(ix *ocispec.Index) error) error {
	ix := l.Index()
	if err := fn(&ix); err != nil {
		return err
	}
	b, err := json.Marshal(ix)
	if err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	if _, err := ParseIndex(b); err != nil {
		return fmt.Errorf("oci: new index.json: %w", err)
	}
	if err := l.writeFile(ocispec.ImageIndexFile, b); err != nil {
		return err
	}
	l.index = ix
	return nil
}

// Referrer describes a referrer manifest to add.
type Referrer struct {
	Subject      ocispec.Descriptor   // the image manifest it refers to
	ArtifactType string               // manifest artifactType (and index entry's)
	Blobs        []ocispec.Descriptor // its layers, already in the layout (PutBlob)
	Annotations  map[string]string    // on the manifest and its index entry
	// Replace lists index.json entries (by digest) that the new referrer
	// supersedes; they leave the index (their blobs stay).
	Replace []digest.Digest
}

// AddReferrer writes an OCI 1.1 referrer manifest (artifactType, the empty
// config, r.Blobs as layers, subject) and lists it in index.json with its
// artifactType and annotations, in one atomic index update. Adding a
// referrer that is already listed changes nothing.
func (l *Layout) AddReferrer(r Referrer) (ocispec.Descriptor, error) {
	ds, err := l.AddReferrers([]Referrer{r})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ds[0], nil
}

// AddReferrers is AddReferrer for several referrers with a single index
// update: either all of them are listed, or (on error) none.
func (l *Layout) AddReferrers(rs []Referrer) ([]ocispec.Descriptor, error) {
	var mds []ocispec.Descriptor
	var replace []digest.Digest
	for _, r := range rs {
		md, err := l.putReferrer(r)
		if err != nil {
			return nil, err
		}
		mds = append(mds, md)
		replace = append(replace, r.Replace...)
	}
	err := l.UpdateIndex(func(ix *ocispec.Index) error {
		ix.Manifests = slices.DeleteFunc(ix.Manifests, func(d ocispec.Descriptor) bool {
			return slices.Contains(replace, d.Digest) &&
				!slices.ContainsFunc(mds, func(md ocispec.Descriptor) bool { return md.Digest == d.Digest })
		})
		for _, md := range mds {
			// Already listed: keep its place.
			if i := slices.IndexFunc(ix.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == md.Digest }); i >= 0 {
				ix.Manifests[i] = md
				continue
			}
			ix.Manifests = append(ix.Manifests, md)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return mds, nil
}

// putReferrer writes the blobs of a referrer manifest and returns its
// index entry.
func (l *Layout) putReferrer(r Referrer) (ocispec.Descriptor, error) {
	if r.ArtifactType == "" {
		return ocispec.Descriptor{}, errors.New("oci: referrer without artifactType")
	}
	if len(r.Blobs) == 0 {
		return ocispec.Descriptor{}, errors.New("oci: referrer without blobs")
	}
	if !isManifest(r.Subject.MediaType) && !isIndex(r.Subject.MediaType) {
		return ocispec.Descriptor{}, fmt.Errorf("oci: referrer subject is a %q", r.Subject.MediaType)
	}
	empty, err := l.PutBlob(ocispec.MediaTypeEmptyJSON, EmptyJSON)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	empty.Data = EmptyJSON
	subj := ocispec.Descriptor{MediaType: r.Subject.MediaType, Digest: r.Subject.Digest, Size: r.Subject.Size}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: r.ArtifactType,
		Config: empty, Layers: r.Blobs, Subject: &subj, Annotations: r.Annotations,
	}
	m.SchemaVersion = 2
	md, err := l.PutJSON(ocispec.MediaTypeImageManifest, m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	md.ArtifactType = r.ArtifactType
	md.Annotations = r.Annotations
	return md, nil
}
