package imagesig

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/internal/tarfs"
	"github.com/osguard/osguard/layer"
	"github.com/osguard/osguard/layersig"
	"github.com/osguard/osguard/oci"
	"github.com/osguard/osguard/verity"
)

// AnnotationCertificate holds, on a referrer manifest and its index.json
// entry, the lowercase hex sha256 of the signing certificate's DER. It
// only picks which referrer a re-sign replaces; verification never trusts
// it.
const AnnotationCertificate = "dev.osguard.layer-signatures.certificate.sha256"

// Options are shared by Sign and Verify.
type Options struct {
	TempDir string // spool of layer contents (os.TempDir() when empty)
	// Workers converts this many layers at once (GOMAXPROCS when 0).
	Workers int
	// Progress, when set, gets one line per event (no newline).
	Progress func(line string)
}

// Fingerprint returns the lowercase hex sha256 of cert's DER.
func Fingerprint(cert *x509.Certificate) string {
	s := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(s[:])
}

// LayerResult is one layer of a report.
type LayerResult struct {
	Digest     string  `json:"digest"`
	DiffID     string  `json:"diffID"`
	RootHash   string  `json:"rootHash,omitempty"`
	DataBlocks uint64  `json:"dataBlocks,omitempty"`
	Size       int64   `json:"size"` // blob bytes
	Seconds    float64 `json:"seconds"`
	// Verify only.
	Status  string `json:"status,omitempty"` // ok, unsigned, wrong-key, mismatch, bad-layer
	Message string `json:"message,omitempty"`
}

// ImageResult is one image manifest of a report.
type ImageResult struct {
	Manifest string        `json:"manifest"`
	Platform string        `json:"platform,omitempty"`
	Referrer string        `json:"referrer,omitempty"` // Sign: the referrer written
	Layers   []LayerResult `json:"layers"`
}

// Report is what Sign and Verify did.
type Report struct {
	Layout      string        `json:"layout"`
	Ref         string        `json:"ref"`
	Subject     string        `json:"subject"` // what ref resolved to
	Certificate string        `json:"certificate"`
	Images      []ImageResult `json:"images"`
	OK          bool          `json:"ok"`
	Seconds     float64       `json:"seconds"`
}

func platformString(p *ocispec.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// converted is one layer blob measured.
type converted struct {
	res     *layer.Result
	err     error
	seconds float64
}

// measureAll converts every distinct layer blob of imgs, Workers at a time.
func measureAll(l *oci.Layout, imgs []oci.Image, o Options) map[digest.Digest]*converted {
	var todo []ocispec.Descriptor
	out := map[digest.Digest]*converted{}
	want := map[digest.Digest]digest.Digest{}
	for _, img := range imgs {
		for i, d := range img.Manifest.Layers {
			if out[d.Digest] == nil {
				out[d.Digest] = &converted{}
				todo = append(todo, d)
				want[d.Digest] = img.Config.RootFS.DiffIDs[i]
			}
		}
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	jobs := make(chan ocispec.Descriptor)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range min(workers, len(todo)) {
		wg.Go(func() {
			for d := range jobs {
				start := time.Now()
				res, err := measure(l, d, want[d.Digest], o)
				c := out[d.Digest]
				c.res, c.err, c.seconds = res, err, time.Since(start).Seconds()
				if o.Progress != nil {
					mu.Lock()
					if err != nil {
						o.Progress(fmt.Sprintf("layer %s: %v", d.Digest, err))
					} else {
						o.Progress(fmt.Sprintf("layer %s: %.1f MB in %.2fs, root hash %x", d.Digest, float64(d.Size)/1e6, c.seconds, res.Verity.RootHash))
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, d := range todo {
		jobs <- d
	}
	close(jobs)
	wg.Wait()
	return out
}

func measure(l *oci.Layout, d ocispec.Descriptor, want digest.Digest, o Options) (*layer.Result, error) {
	return ConvertBlob(l, d, want, nil, o.TempDir)
}

// ConvertBlob converts the layer blob d of l with package layer and checks
// along the way that the blob has d's digest and, when diffID is not
// empty, that its uncompressed content has that DiffID (from the image
// config). With out nil nothing but the spool is written (layer.Measure);
// else out receives the image and its hash tree (layer.Convert). On the
// node, out then holds exactly what the publisher signed, or ConvertBlob
// fails.
//
// A directory layout's blob file is read in place: an uncompressed one is
// its own DiffID, checked while the image is written; a compressed one has
// its digest checked on another goroutine meanwhile. An archive's blob is
// streamed and its digest checked at the end.
func ConvertBlob(l *oci.Layout, d ocispec.Descriptor, diffID digest.Digest, out *os.File, tempDir string) (*layer.Result, error) {
	run := func(r io.Reader, expect string) (*layer.Result, error) {
		opts := layer.Options{TempDir: tempDir, DiffID: expect}
		if out == nil {
			return layer.Measure(r, opts)
		}
		return layer.Convert(r, out, opts)
	}
	var res *layer.Result
	f, err := l.BlobFile(d)
	switch {
	case err == nil:
		defer f.Close()
		res, err = convertFile(f, d, diffID, run)
	case errors.Is(err, oci.ErrNotFile):
		res, err = convertStream(l, d, diffID, run)
	}
	if err != nil {
		return nil, err
	}
	if diffID != "" && res.DiffID != diffID.String() {
		return nil, fmt.Errorf("%w: the layer's uncompressed content is %s, the config says %s", layer.ErrDiffID, res.DiffID, diffID)
	}
	return res, nil
}

type convertFunc func(r io.Reader, expectDiffID string) (*layer.Result, error)

func convertStream(l *oci.Layout, d ocispec.Descriptor, diffID digest.Digest, run convertFunc) (*layer.Result, error) {
	rc, err := l.Open(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	res, err := run(rc, diffID.String())
	// The conversion stops at the end of the compressed stream: read the
	// rest, so that the blob's digest is checked over all its bytes (and
	// named as the cause when the content was changed).
	if _, derr := io.Copy(io.Discard, rc); derr != nil {
		return nil, derr
	}
	return res, err
}

func convertFile(f *os.File, d ocispec.Descriptor, diffID digest.Digest, run convertFunc) (*layer.Result, error) {
	head := make([]byte, 6)
	n, _ := f.ReadAt(head, 0)
	if tarfs.Detect(head[:n]) == tarfs.None && d.Digest.Algorithm() == digest.SHA256 {
		res, err := run(f, d.Digest.String())
		if err != nil {
			// A broken tar may be a changed blob: say so if it is.
			if verr := oci.VerifyDigest(f, d); verr != nil {
				return nil, verr
			}
		}
		return res, err
	}
	ch := make(chan error, 1)
	go func() { ch <- oci.VerifyDigest(f, d) }()
	res, err := run(f, diffID.String())
	if verr := <-ch; verr != nil {
		return nil, verr
	}
	return res, err
}

// checkDiffID compares a conversion with the config's diff_id of layer i.
func checkDiffID(img *oci.Image, i int, res *layer.Result) error {
	want := img.Config.RootFS.DiffIDs[i]
	if res.DiffID != want.String() {
		return fmt.Errorf("uncompressed content %s differs from the config's diff_id %s", res.DiffID, want)
	}
	return nil
}

func resolve(l *oci.Layout, ref string) (ocispec.Descriptor, []oci.Image, error) {
	d, err := l.Resolve(ref)
	if err != nil {
		return d, nil, err
	}
	imgs, err := l.Images(d)
	if err != nil {
		return d, nil, err
	}
	var linux []oci.Image
	seen := map[digest.Digest]bool{}
	for _, img := range imgs {
		if seen[img.Descriptor.Digest] {
			continue // listed twice: signed once
		}
		seen[img.Descriptor.Digest] = true
		if img.Platform == nil || img.Platform.OS == "" || img.Platform.OS == "linux" {
			linux = append(linux, img)
		}
	}
	if len(linux) == 0 {
		return d, nil, fmt.Errorf("imagesig: %s has no linux image", d.Digest)
	}
	return d, linux, nil
}

// ErrLayer wraps the error of a layer that cannot be signed.
var ErrLayer = errors.New("imagesig: layer")

// Sign signs every layer of the images ref names in the directory layout
// l and adds the referrers. It writes nothing unless every layer converts,
// matches its diff_id and is signed.
func Sign(l *oci.Layout, ref string, key crypto.Signer, cert *x509.Certificate, o Options) (*Report, error) {
	start := time.Now()
	if l.Dir() == "" {
		return nil, errors.New("imagesig: sign needs a layout directory, not an archive")
	}
	subject, imgs, err := resolve(l, ref)
	if err != nil {
		return nil, err
	}
	fp := Fingerprint(cert)
	rep := &Report{Layout: l.Dir(), Ref: ref, Subject: subject.Digest.String(), Certificate: fp}
	convs := measureAll(l, imgs, o)
	type pending struct {
		doc []byte
		r   oci.Referrer
	}
	var todo []pending
	for _, img := range imgs {
		ir := ImageResult{Manifest: img.Descriptor.Digest.String(), Platform: platformString(img.Platform)}
		doc := &layersig.Document{SchemaVersion: 1}
		for i, d := range img.Manifest.Layers {
			c := convs[d.Digest]
			if c.err != nil {
				return nil, fmt.Errorf("%w %s: %w", ErrLayer, d.Digest, c.err)
			}
			if err := checkDiffID(&img, i, c.res); err != nil {
				return nil, fmt.Errorf("%w %s: %w", ErrLayer, d.Digest, err)
			}
			ir.Layers = append(ir.Layers, LayerResult{Digest: d.Digest.String(), DiffID: c.res.DiffID,
				RootHash: hex.EncodeToString(c.res.Verity.RootHash), DataBlocks: c.res.Verity.DataBlocks, Size: d.Size, Seconds: c.seconds})
			if doc.Find(d.Digest.String()) != nil {
				continue // the same blob twice in one image
			}
			sig, err := verity.SignRootHash(c.res.Verity.RootHash, key, cert)
			if err != nil {
				return nil, fmt.Errorf("%w %s: %w", ErrLayer, d.Digest, err)
			}
			v := c.res.Verity
			doc.Layers = append(doc.Layers, layersig.Layer{Digest: d.Digest.String(), DiffID: c.res.DiffID, Signature: sig,
				Verity: layersig.Verity{HashAlgorithm: v.HashAlgorithm, DataBlockSize: v.DataBlockSize, HashBlockSize: v.HashBlockSize,
					DataBlocks: v.DataBlocks, Salt: v.Salt, RootHash: v.RootHash}})
		}
		b, err := doc.Marshal()
		if err != nil {
			return nil, err
		}
		old, err := l.Referrers(img.Descriptor.Digest, layersig.ArtifactType)
		if err != nil {
			return nil, err
		}
		var replace []digest.Digest
		for _, od := range old {
			if od.Annotations[AnnotationCertificate] == fp {
				replace = append(replace, od.Digest)
			}
		}
		todo = append(todo, pending{b, oci.Referrer{
			Subject: img.Descriptor, ArtifactType: layersig.ArtifactType,
			Annotations: map[string]string{AnnotationCertificate: fp}, Replace: replace,
		}})
		rep.Images = append(rep.Images, ir)
	}
	// Everything is signed: now write.
	var rs []oci.Referrer
	for _, p := range todo {
		bd, err := l.PutBlob(layersig.ArtifactType, p.doc)
		if err != nil {
			return nil, err
		}
		p.r.Blobs = []ocispec.Descriptor{bd}
		rs = append(rs, p.r)
	}
	mds, err := l.AddReferrers(rs)
	if err != nil {
		return nil, err
	}
	for i, md := range mds {
		rep.Images[i].Referrer = md.Digest.String()
	}
	rep.OK = true
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// Layer statuses of Verify.
const (
	StatusOK       = "ok"
	StatusUnsigned = "unsigned"  // no referrer lists the layer
	StatusWrongKey = "wrong-key" // listed, but no signature by the certificate
	StatusMismatch = "mismatch"  // signed, but not what the layer converts to
	StatusBad      = "bad-layer" // the layer does not convert or differs from its diff_id
)

// Verify re-derives every layer of the images ref names in l (a directory
// or an archive) and checks each against the referrers' signatures by
// cert. Report.OK is false when any layer is not StatusOK; the error is
// for what stops the check itself (a broken layout, a bad referrer).
func Verify(l *oci.Layout, ref string, cert *x509.Certificate, o Options) (*Report, error) {
	start := time.Now()
	subject, imgs, err := resolve(l, ref)
	if err != nil {
		return nil, err
	}
	rep := &Report{Layout: l.Dir(), Ref: ref, Subject: subject.Digest.String(), Certificate: Fingerprint(cert), OK: true}
	convs := measureAll(l, imgs, o)
	for _, img := range imgs {
		ir := ImageResult{Manifest: img.Descriptor.Digest.String(), Platform: platformString(img.Platform)}
		docs, err := documents(l, img.Descriptor.Digest)
		if err != nil {
			return nil, err
		}
		for i, d := range img.Manifest.Layers {
			c := convs[d.Digest]
			lr := LayerResult{Digest: d.Digest.String(), Size: d.Size, Seconds: c.seconds}
			if c.err == nil {
				c.err = checkDiffID(&img, i, c.res)
			}
			if c.err != nil {
				lr.Status, lr.Message = StatusBad, c.err.Error()
			} else {
				lr.DiffID, lr.RootHash, lr.DataBlocks = c.res.DiffID, hex.EncodeToString(c.res.Verity.RootHash), c.res.Verity.DataBlocks
				lr.Status, lr.Message = check(docs, d.Digest.String(), c.res, cert)
			}
			if lr.Status != StatusOK {
				rep.OK = false
			}
			ir.Layers = append(ir.Layers, lr)
		}
		rep.Images = append(rep.Images, ir)
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// documents reads the layersig documents of the referrers of a manifest.
func documents(l *oci.Layout, subject digest.Digest) ([]*layersig.Document, error) {
	refs, err := l.Referrers(subject, layersig.ArtifactType)
	if err != nil {
		return nil, err
	}
	var docs []*layersig.Document
	for _, rd := range refs {
		b, err := l.ReadBlob(rd, oci.MaxManifestSize)
		if err != nil {
			return nil, err
		}
		m, err := oci.ParseManifest(b)
		if err != nil {
			return nil, fmt.Errorf("imagesig: referrer %s: %w", rd.Digest, err)
		}
		for _, bd := range m.Layers {
			if bd.MediaType != layersig.ArtifactType {
				continue
			}
			if bd.Size > layersig.MaxDocumentSize {
				return nil, fmt.Errorf("imagesig: referrer %s: document of %d bytes", rd.Digest, bd.Size)
			}
			rc, err := l.Open(bd)
			if err != nil {
				return nil, fmt.Errorf("imagesig: referrer %s: %w", rd.Digest, err)
			}
			doc, err := layersig.Parse(rc)
			if err == nil {
				_, err = io.Copy(io.Discard, rc) // completes the digest check
			}
			rc.Close()
			if err != nil {
				return nil, fmt.Errorf("imagesig: referrer %s: %w", rd.Digest, err)
			}
			docs = append(docs, doc)
		}
	}
	return docs, nil
}

// check finds a signature by cert for the layer as it converts.
func check(docs []*layersig.Document, blob string, res *layer.Result, cert *x509.Certificate) (status, msg string) {
	status, msg = StatusUnsigned, "no signature lists this layer"
	for _, doc := range docs {
		e := doc.Find(blob)
		if e == nil {
			continue
		}
		if err := verity.VerifyRootHashSignature(e.Verity.RootHash, e.Signature, cert); err != nil {
			if status == StatusUnsigned {
				status, msg = StatusWrongKey, "not signed by this certificate: "+err.Error()
			}
			continue
		}
		v := res.Verity
		switch {
		case e.DiffID != res.DiffID:
			status, msg = StatusMismatch, fmt.Sprintf("signed for diffID %s, the layer is %s", e.DiffID, res.DiffID)
		case string(e.Verity.RootHash) != string(v.RootHash):
			status, msg = StatusMismatch, fmt.Sprintf("signed root hash %x, the layer converts to %x", []byte(e.Verity.RootHash), v.RootHash)
		case string(e.Verity.Salt) != string(v.Salt) || e.Verity.DataBlocks != v.DataBlocks ||
			e.Verity.HashAlgorithm != v.HashAlgorithm || e.Verity.DataBlockSize != v.DataBlockSize || e.Verity.HashBlockSize != v.HashBlockSize:
			status, msg = StatusMismatch, "signed verity parameters differ from the conversion's"
		default:
			return StatusOK, ""
		}
	}
	return status, msg
}
