package update

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/verity"
)

// PackOptions say what to pack.
type PackOptions struct {
	// Dir is an `osguard build` output directory.
	Dir string
	// Out is the bundle file; it appears only when complete.
	Out string
	// KeysDir holds db.key and db.crt; default Dir/keys.
	KeysDir string
}

// slotSource is slot A of a built disk: where its payloads are.
type slotSource struct {
	layout                Layout
	usrOff, usrSize       int64
	verityOff, veritySize int64
	sig                   []byte
}

// PackDir turns a build output directory into a bundle. The usr image, its
// verity tree and its signature come from slot A of disk.raw, the UKI and
// measurements.json from the directory.
func PackDir(o PackOptions) (*Manifest, error) {
	if o.KeysDir == "" {
		o.KeysDir = filepath.Join(o.Dir, "keys")
	}
	key, cert, err := keyfile.LoadPair(filepath.Join(o.KeysDir, "db.key"), filepath.Join(o.KeysDir, "db.crt"))
	if err != nil {
		return nil, fmt.Errorf("update: pack: the db key signs the bundle: %w", err)
	}
	measurements, err := os.ReadFile(filepath.Join(o.Dir, image.MeasurementsFile))
	if err != nil {
		return nil, fmt.Errorf("update: pack: %w (is %s an 'osguard build' output?)", err, o.Dir)
	}
	var meas image.Measurements
	if err := json.Unmarshal(measurements, &meas); err != nil {
		return nil, fmt.Errorf("update: pack: %s: %w", image.MeasurementsFile, err)
	}
	uki, err := os.Open(filepath.Join(o.Dir, image.UKIFile))
	if err != nil {
		return nil, fmt.Errorf("update: pack: %w", err)
	}
	defer uki.Close()
	ukiInfo, err := uki.Stat()
	if err != nil {
		return nil, err
	}
	dsk, err := os.Open(filepath.Join(o.Dir, image.DiskFile))
	if err != nil {
		return nil, fmt.Errorf("update: pack: %w", err)
	}
	defer dsk.Close()
	src, err := findSlotA(dsk, &meas)
	if err != nil {
		return nil, fmt.Errorf("update: pack: %s: %w", image.DiskFile, err)
	}

	// The tree is usr's hash in the bundle: check it against the root hash
	// (usr itself is not read here; apply checks it against the tree).
	tree := make([]byte, src.veritySize)
	if _, err := dsk.ReadAt(tree, src.verityOff); err != nil {
		return nil, fmt.Errorf("update: pack: %s: usr-A-verity: %w", image.DiskFile, err)
	}
	rootHash, _ := hexBytes(meas.Usr.RootHash)
	if _, err := verity.NewChecker(tree, rootHash, verity.Params{}); err != nil {
		return nil, fmt.Errorf("update: pack: %s: the verity tree of slot A is not the tree of root hash %s: %w", image.DiskFile, meas.Usr.RootHash, err)
	}

	var m Manifest
	m.Architecture = Architecture
	m.Image.Name, m.Image.Version = meas.Image, meas.Version
	m.IPE.PolicyName, m.IPE.PolicyVersion = meas.IPE.PolicyName, meas.IPE.PolicyVersion
	m.Usr.RootHash, m.Usr.PartUUID, m.Usr.VerityPartUUID = meas.Usr.RootHash, meas.Usr.PartUUID, meas.Usr.VerityUUID
	m.Layout = src.layout

	out, err := atomicfile.Create(o.Out, 0o644)
	if err != nil {
		return nil, fmt.Errorf("update: pack: %w", err)
	}
	defer out.Abort()
	payloads := []PackPayload{
		{PayloadMeasurements, int64(len(measurements)), bytes.NewReader(measurements)},
		{PayloadSignature, int64(len(src.sig)), bytes.NewReader(src.sig)},
		{PayloadVerity, src.veritySize, bytes.NewReader(tree)},
		{PayloadUsr, src.usrSize, io.NewSectionReader(dsk, src.usrOff, src.usrSize)},
		{PayloadUKI, ukiInfo.Size(), uki},
	}
	if err := Pack(out.File, m, payloads, key, cert); err != nil {
		return nil, err
	}
	if err := out.Commit(); err != nil {
		return nil, fmt.Errorf("update: pack: %w", err)
	}
	// Read back what was signed, for the caller's report.
	f, err := os.Open(o.Out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := Open(f, []*x509.Certificate{cert})
	if err != nil {
		return nil, fmt.Errorf("update: pack: the new bundle does not read back: %w", err)
	}
	return r.Manifest, nil
}

// findSlotA locates slot A's partitions in a built disk through its GPT:
// the usr and usr-verity partitions whose UUIDs are the halves of the root
// hash in measurements.json, and the signature partition for that hash.
func findSlotA(dsk *os.File, meas *image.Measurements) (*slotSource, error) {
	ents, err := bootinit.ReadGPT(dsk, 512)
	if err != nil {
		return nil, err
	}
	var parts []bootinit.Partition
	slots := 0
	for _, e := range ents {
		parts = append(parts, bootinit.Partition{Dev: fmt.Sprintf("partition %d (%s)", e.Index, e.Name), Disk: "disk", GPTEntry: e})
		if e.Type == disk.TypeUsrX86_64 {
			slots++
		}
	}
	rootHash, err := hexBytes(meas.Usr.RootHash)
	if err != nil {
		return nil, fmt.Errorf("%s: usr.rootHash: %w", image.MeasurementsFile, err)
	}
	readSig := func(p bootinit.Partition) ([]byte, error) {
		b := make([]byte, min(int64(maxSmallPayload), partBytes(p.GPTEntry)))
		_, err := dsk.ReadAt(b, int64(p.FirstLBA)*512)
		return b, err
	}
	slot, err := bootinit.FindUsr(parts, rootHash, readSig)
	if err != nil {
		return nil, err
	}
	sigRaw, err := readSig(slot.Sig)
	if err != nil {
		return nil, err
	}
	sig, _, _ := bytes.Cut(sigRaw, []byte{0})
	vOff := int64(slot.Verity.FirstLBA) * 512
	sb, err := verity.ReadSuperblock(dsk, vOff)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", slot.Verity.Dev, err)
	}
	s := &slotSource{
		layout: Layout{Slots: slots, SectorSize: 512, UsrBytes: partBytes(slot.Usr.GPTEntry),
			VerityBytes: partBytes(slot.Verity.GPTEntry), SigBytes: partBytes(slot.Sig.GPTEntry)},
		usrOff: int64(slot.Usr.FirstLBA) * 512, usrSize: int64(sb.DataBlocks) * int64(sb.DataBlockSize),
		verityOff: vOff, veritySize: verity.HashDeviceSize(sb.Params(0)),
		sig: sig,
	}
	if sb.DataBlocks != meas.Usr.DataBlocks {
		return nil, fmt.Errorf("the verity superblock says %d data blocks, measurements.json %d", sb.DataBlocks, meas.Usr.DataBlocks)
	}
	if s.veritySize <= 0 || s.veritySize > s.layout.VerityBytes || s.usrSize > s.layout.UsrBytes {
		return nil, errors.New("the verity superblock does not fit the partitions")
	}
	return s, nil
}

func partBytes(e bootinit.GPTEntry) int64 {
	if e.LastLBA < e.FirstLBA {
		return 0
	}
	return int64(e.LastLBA-e.FirstLBA+1) * 512
}

func hexBytes(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%q is not a hex digest", s)
	}
	return b, nil
}
