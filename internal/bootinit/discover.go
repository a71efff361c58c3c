package bootinit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/verity"
)

// Partition is a partition the kernel has registered, with its GPT entry.
type Partition struct {
	Dev   string // device node, e.g. /dev/vda2
	Disk  string // the whole disk's node, e.g. /dev/vda
	Major uint32
	Minor uint32
	GPTEntry
}

// Sys points the discovery at the kernel's view; tests use fake trees.
type Sys struct {
	SysClassBlock string // /sys/class/block
	Dev           string // /dev
}

// DefaultSys is the running kernel.
var DefaultSys = Sys{SysClassBlock: "/sys/class/block", Dev: "/dev"}

// ErrNoUsr is returned while the usr partitions for usrhash are not there.
var ErrNoUsr = errors.New("bootinit: no usr partition matches usrhash")

func readUevent(p string) map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile(p)
	if err != nil {
		return m
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// Partitions lists the GPT partitions of every disk the kernel knows, by
// reading each disk's GPT once and matching entries to the kernel's
// partitions through PARTN in their uevent.
func (s Sys) Partitions() ([]Partition, error) {
	ents, err := os.ReadDir(s.SysClassBlock)
	if err != nil {
		return nil, fmt.Errorf("bootinit: list block devices: %w", err)
	}
	tables := map[string][]GPTEntry{}
	var out []Partition
	for _, e := range ents {
		dir := filepath.Join(s.SysClassBlock, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
			continue
		}
		ue := readUevent(filepath.Join(dir, "uevent"))
		partn, err := strconv.Atoi(ue["PARTN"])
		if err != nil {
			continue
		}
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue
		}
		diskName := filepath.Base(filepath.Dir(real))
		table, ok := tables[diskName]
		if !ok {
			table, _ = s.readDiskGPT(diskName) // not GPT, or unreadable: no entries
			tables[diskName] = table
		}
		for _, g := range table {
			if g.Index == partn {
				maj, _ := strconv.Atoi(ue["MAJOR"])
				min, _ := strconv.Atoi(ue["MINOR"])
				out = append(out, Partition{Dev: filepath.Join(s.Dev, ue["DEVNAME"]), Disk: filepath.Join(s.Dev, diskName),
					Major: uint32(maj), Minor: uint32(min), GPTEntry: g})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dev < out[j].Dev })
	return out, nil
}

func (s Sys) readDiskGPT(diskName string) ([]GPTEntry, error) {
	sector := 512
	if b, err := os.ReadFile(filepath.Join(s.SysClassBlock, diskName, "queue", "logical_block_size")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 512 && n <= 4096 {
			sector = n
		}
	}
	f, err := os.Open(filepath.Join(s.Dev, diskName))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadGPT(f, sector)
}

// UsrSlot is the set of partitions that make up one /usr.
type UsrSlot struct {
	Usr, Verity, Sig Partition
	Signature        *verity.SignatureJSON
}

// usrUUIDs returns the partition UUIDs the DPS derives from a root hash:
// its first and its last 128 bits.
func usrUUIDs(rootHash []byte) (usr, ver disk.GUID) {
	copy(usr[:], rootHash[:16])
	copy(ver[:], rootHash[len(rootHash)-16:])
	return
}

// FindUsr picks the usr slot (A/B) whose partition UUIDs are the halves of
// rootHash and whose signature partition, on the same disk, carries a JSON
// object for that same root hash.
func FindUsr(parts []Partition, rootHash []byte, readSig func(Partition) ([]byte, error)) (*UsrSlot, error) {
	wantUsr, wantVer := usrUUIDs(rootHash)
	var slot UsrSlot
	var haveUsr, haveVer bool
	for _, p := range parts {
		switch {
		case p.Type == disk.TypeUsrX86_64 && p.UUID == wantUsr:
			if haveUsr {
				// A cloned disk, or a planted one: refuse to guess.
				return nil, fmt.Errorf("bootinit: two usr partitions with UUID %s: %s and %s", wantUsr, slot.Usr.Dev, p.Dev)
			}
			slot.Usr, haveUsr = p, true
		case p.Type == disk.TypeUsrX86_64Verity && p.UUID == wantVer:
			if haveVer {
				return nil, fmt.Errorf("bootinit: two usr-verity partitions with UUID %s: %s and %s", wantVer, slot.Verity.Dev, p.Dev)
			}
			slot.Verity, haveVer = p, true
		}
	}
	if !haveUsr || !haveVer {
		return nil, fmt.Errorf("%w (usr %s found: %v, usr-verity %s found: %v)", ErrNoUsr, wantUsr, haveUsr, wantVer, haveVer)
	}
	if slot.Usr.Disk != slot.Verity.Disk {
		return nil, fmt.Errorf("bootinit: usr (%s) and usr-verity (%s) are on different disks", slot.Usr.Dev, slot.Verity.Dev)
	}
	want := fmt.Sprintf("%x", rootHash)
	var tried []string
	for _, p := range parts {
		if p.Type != disk.TypeUsrX86_64VeritySig || p.Disk != slot.Usr.Disk {
			continue
		}
		b, err := readSig(p)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", p.Dev, err))
			continue
		}
		sj, err := verity.ParseSignatureJSON(b)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", p.Dev, err))
			continue
		}
		if sj.RootHash != want {
			tried = append(tried, fmt.Sprintf("%s: rootHash %s", p.Dev, sj.RootHash))
			continue
		}
		slot.Sig, slot.Signature = p, sj
		return &slot, nil
	}
	return nil, fmt.Errorf("bootinit: no usr-verity-sig partition for root hash %s on %s %v", want, slot.Usr.Disk, tried)
}

// maxSigPartition bounds what is read from a signature partition.
const maxSigPartition = 1 << 20

// ReadSigPartition reads the start of a signature partition.
func ReadSigPartition(p Partition) ([]byte, error) {
	f, err := os.Open(p.Dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, maxSigPartition)
	n, err := f.ReadAt(b, 0)
	if n == 0 && err != nil {
		return nil, err
	}
	return b[:n], nil
}
