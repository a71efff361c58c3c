package snapshotter

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/internal/dm"
	"github.com/osguard/osguard/internal/keyring"
	"github.com/osguard/osguard/internal/loop"
)

// Files of a converted layer, in its directory.
const (
	ImageFile     = "layer.img"  // the EROFS image, then the dm-verity hash tree at HashOffset
	RecordFile    = "layer.json" // the Record
	SignatureFile = "layer.p7"   // PKCS#7 signature of the root hash, as the publisher made it
)

// Record describes a converted layer: what the verity table needs, and where
// the layer came from. The root hash here is the one the node computed from
// the layer's tar; the kernel checks the publisher's signature against it.
type Record struct {
	DiffID        string `json:"diffID"`
	Digest        string `json:"digest,omitempty"` // the blob it was converted from
	HashOffset    int64  `json:"hashOffset"`
	HashAlgorithm string `json:"hashAlgorithm"`
	DataBlockSize uint32 `json:"dataBlockSize"`
	HashBlockSize uint32 `json:"hashBlockSize"`
	DataBlocks    uint64 `json:"dataBlocks"`
	Salt          string `json:"salt"`     // hex
	RootHash      string `json:"rootHash"` // hex
}

var (
	diffIDPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	hexPattern    = regexp.MustCompile(`^[0-9a-f]*$`)
)

// Check validates r as the record of diffID.
func (r *Record) Check(diffID string) error {
	switch {
	case r.DiffID != diffID:
		return fmt.Errorf("record is of layer %s, not %s", r.DiffID, diffID)
	case r.HashAlgorithm != "sha256":
		return fmt.Errorf("hash algorithm %q, want sha256", r.HashAlgorithm)
	case r.DataBlockSize != 4096 || r.HashBlockSize != 4096:
		return fmt.Errorf("block sizes %d/%d, want 4096/4096", r.DataBlockSize, r.HashBlockSize)
	case r.DataBlocks == 0 || r.DataBlocks > 1<<40:
		return fmt.Errorf("%d data blocks", r.DataBlocks)
	case r.HashOffset != int64(r.DataBlocks)*int64(r.DataBlockSize):
		return fmt.Errorf("hash tree at %d, want right after the %d data blocks", r.HashOffset, r.DataBlocks)
	case len(r.RootHash) != 64 || !hexPattern.MatchString(r.RootHash):
		return fmt.Errorf("root hash %q is not 32 bytes of lowercase hex", r.RootHash)
	case len(r.Salt) > 512 || len(r.Salt)%2 != 0 || !hexPattern.MatchString(r.Salt):
		return fmt.Errorf("salt %q is not lowercase hex of at most 256 bytes", r.Salt)
	}
	return nil
}

// ReadRecord reads and checks the record in dir.
func ReadRecord(dir, diffID string) (*Record, error) {
	f, err := os.Open(filepath.Join(dir, RecordFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r Record
	dec := json.NewDecoder(io.LimitReader(f, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, RecordFile), err)
	}
	if err := r.Check(diffID); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, RecordFile), err)
	}
	return &r, nil
}

// WriteRecord writes r to dir.
func WriteRecord(dir string, r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, RecordFile), append(b, '\n'), 0o644)
}

// layerHex is the hex part of a diff ID, which names its directory, its
// device-mapper device and its mount point.
func layerHex(diffID string) (string, error) {
	if !diffIDPattern.MatchString(diffID) {
		return "", fmt.Errorf("%q is not a sha256 diff ID", diffID)
	}
	return strings.TrimPrefix(diffID, "sha256:"), nil
}

// DMName is the device-mapper name of a layer's verity device.
func DMName(diffID string) string { return "osguard-layer-" + strings.TrimPrefix(diffID, "sha256:") }

// activeLayer is a layer whose verity device exists and whose EROFS is
// mounted at mnt.
type activeLayer struct {
	mnt   string
	setup time.Duration // time to create the device and mount it; 0 when both existed
}

// activate creates the layer's verity device with its signature, so that
// the kernel checks the signature (root_hash_sig_key_desc) against its
// trusted keyrings (the UEFI db, through the platform keyring), and mounts
// the EROFS read-only at dir/mnt. A device and mount left from an earlier
// run of the snapshotter (same boot) are reused.
func activate(dir string, rec *Record) (*activeLayer, error) {
	start := time.Now()
	mnt := filepath.Join(dir, "mnt")
	if mounted(mnt) {
		return &activeLayer{mnt: mnt}, nil
	}
	name := DMName(rec.DiffID)
	dev, err := dm.Status(name)
	if err != nil {
		dev, err = createVerity(dir, name, rec)
		if err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	src := fmt.Sprintf("/dev/dm-%d", dev.Minor)
	if _, err := os.Stat(src); err != nil {
		// devtmpfs makes the node; make our own when /dev is something else.
		src = filepath.Join(dir, "dev")
		os.Remove(src)
		if err := unix.Mknod(src, unix.S_IFBLK|0o600, int(unix.Mkdev(dev.Major, dev.Minor))); err != nil {
			return nil, fmt.Errorf("mknod %s: %w", src, err)
		}
	}
	if err := unix.Mount(src, mnt, "erofs", unix.MS_RDONLY, ""); err != nil {
		return nil, fmt.Errorf("mount the layer's EROFS (%s on %s): %w", src, mnt, err)
	}
	return &activeLayer{mnt: mnt, setup: time.Since(start)}, nil
}

func createVerity(dir, name string, rec *Record) (dm.Device, error) {
	sig, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	if err != nil {
		return dm.Device{}, fmt.Errorf("layer signature: %w", err)
	}
	root, _ := hex.DecodeString(rec.RootHash)
	lo, err := loop.AttachReadOnly(filepath.Join(dir, ImageFile))
	if err != nil {
		return dm.Device{}, err
	}
	defer lo.Close()
	// The signature goes to the kernel as a key of this thread, and the
	// table that names it is loaded from the same thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	desc := "osguard:layer:" + strings.TrimPrefix(rec.DiffID, "sha256:")
	keyID, err := keyring.AddThread(desc, sig)
	if err != nil {
		return dm.Device{}, err
	}
	defer keyring.Invalidate(keyID)
	salt := rec.Salt
	if salt == "" {
		salt = "-"
	}
	params := fmt.Sprintf("1 %s %s %d %d %d %d %s %x %s 2 root_hash_sig_key_desc %s",
		lo.DevNum(), lo.DevNum(), rec.DataBlockSize, rec.HashBlockSize, rec.DataBlocks,
		rec.HashOffset/int64(rec.HashBlockSize), rec.HashAlgorithm, root, salt, desc)
	target := dm.Target{Start: 0, Length: rec.DataBlocks * uint64(rec.DataBlockSize) / 512, Type: "verity", Params: params}
	if _, err := dm.Create(name, "OSGUARD-LAYER-"+strings.TrimPrefix(rec.DiffID, "sha256:")); err != nil {
		return dm.Device{}, fmt.Errorf("create the verity device: %w", err)
	}
	if err := dm.Load(name, true, []dm.Target{target}); err != nil {
		dm.Remove(name)
		return dm.Device{}, fmt.Errorf("the kernel refused the layer's verity table (signature check): %w", err)
	}
	if err := dm.Resume(name); err != nil {
		dm.Remove(name)
		return dm.Device{}, fmt.Errorf("resume the verity device: %w", err)
	}
	return dm.Status(name)
}

// deactivate unmounts the layer and removes its verity device; the loop
// device under it then clears itself.
func deactivate(dir, diffID string) error {
	mnt := filepath.Join(dir, "mnt")
	var errs []error
	if mounted(mnt) {
		if err := unix.Unmount(mnt, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mnt, err))
		}
	}
	if _, err := dm.Status(DMName(diffID)); err == nil {
		if err := dm.Remove(DMName(diffID)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mounted reports whether p is a mount point (its device differs from its
// parent's), which is all activate needs to know about its own mounts.
func mounted(p string) bool {
	var st, pst unix.Stat_t
	if unix.Lstat(p, &st) != nil || unix.Lstat(filepath.Dir(p), &pst) != nil {
		return false
	}
	return st.Dev != pst.Dev
}
