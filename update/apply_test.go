package update

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/efiboot"
	"github.com/osguard/osguard/internal/esp"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/verity"
)

// applyImage returns a manifest and payloads apply accepts:
// measurements.json and a signature JSON for the manifest's root hash,
// signed by key; usr spans four chunks.
func applyImage(t *testing.T, key crypto.Signer, cert *x509.Certificate) (Manifest, map[string][]byte) {
	t.Helper()
	m, p := testImage(3*ChunkSize + 4096)
	meas, err := json.Marshal(map[string]any{"image": m.Image.Name, "version": m.Image.Version, "usr": map[string]string{"rootHash": m.Usr.RootHash}})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := verity.SignRootHash(m.RootHash(), key, cert)
	if err != nil {
		t.Fatal(err)
	}
	sj, err := verity.NewSignatureJSON(m.RootHash(), sig, cert).MarshalPadded(4096)
	if err != nil {
		t.Fatal(err)
	}
	p[PayloadMeasurements], p[PayloadSignature] = meas, sj
	return m, p
}

// fakeNode is a slot of regular files, a directory for the ESP and a
// firmware in memory: everything apply may change.
type fakeNode struct {
	dir      string
	vars     efiboot.MemVars
	t        *target
	uuidSets int
}

func newFakeNode(t *testing.T) *fakeNode {
	t.Helper()
	dir := t.TempDir()
	n := &fakeNode{dir: dir, vars: efiboot.MemVars{}}
	part := func(name string, index int, size int64) bootinit.Partition {
		path := filepath.Join(dir, name)
		// The slot holds an older image: bytes apply must keep on refusal.
		if err := os.WriteFile(path, bytes.Repeat([]byte(name[:1]), int(size)), 0o644); err != nil {
			t.Fatal(err)
		}
		return bootinit.Partition{Dev: path, Disk: filepath.Join(dir, "disk"),
			GPTEntry: bootinit.GPTEntry{Name: name, Index: index, FirstLBA: 2048, LastLBA: 2048 + uint64(size)/512 - 1}}
	}
	n.t = &target{letter: "B", runningLetter: "A", runningVersion: "1",
		usr: part("usr-B", 5, 8<<20), ver: part("usr-B-verity", 6, 1<<20), sig: part("usr-B-verity-sig", 7, 16<<10),
		esp: bootinit.Partition{Disk: filepath.Join(dir, "disk"), GPTEntry: bootinit.GPTEntry{Index: 1, FirstLBA: 2048, LastLBA: 4095}}}
	if err := os.Mkdir(filepath.Join(dir, "esp"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A firmware with one boot entry, as OVMF leaves it.
	n.vars.Set(secureboot.Variable{Name: "BootOrder", GUID: secureboot.EFIGlobalVariable}, efiboot.VarAttrs, []byte{1, 0})
	return n
}

// snapshot is every byte apply may write: the partitions, the ESP's files
// and the UEFI variables.
func (n *fakeNode) snapshot(t *testing.T) map[string]string {
	t.Helper()
	s := map[string]string{}
	err := filepath.Walk(n.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		sum := sha256.Sum256(b)
		s[p] = string(sum[:])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range n.vars {
		s["efivar "+k] = string(v)
	}
	return s
}

func (n *fakeNode) applier(certs []*x509.Certificate) *applier {
	return &applier{
		db: certs, vars: n.vars, logf: func(string, ...any) {},
		target: func(*Manifest) (*target, error) { return n.t, nil },
		setUUIDs: func(string, map[int]disk.GUID) error {
			n.uuidSets++
			return nil
		},
		mountESP: func(string) (string, func() error, error) {
			return filepath.Join(n.dir, "esp"), func() error { return nil }, nil
		},
	}
}

// hookReader calls fn once, after the byte at offset at was read.
type hookReader struct {
	r    io.Reader
	off  int64
	at   int64
	fn   func()
	done bool
}

func (h *hookReader) Read(b []byte) (int, error) {
	n, err := h.r.Read(b)
	h.off += int64(n)
	if !h.done && h.off > h.at {
		h.done = true
		h.fn()
	}
	return n, err
}

// TestApplyVerifiesBeforeWriting applies bundles to regular files standing
// in for the inactive slot, the ESP and the firmware: a bundle with one
// flipped byte anywhere in its payloads changes nothing; a bundle that
// changes after its verification stops the write pass with the slot's
// signature cleared and no boot entry or BootNext.
func TestApplyVerifiesBeforeWriting(t *testing.T) {
	key, cert := testKey(t, "db")
	m, payloads := applyImage(t, key, cert)
	good := packSized(t, m, key, cert, payloads)
	r, err := Open(bytes.NewReader(good), []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	start := map[string]int{}
	for i, name := range PayloadOrder {
		start[name] = int(r.offsets[i])
	}
	lastUsrByte := start[PayloadUsr] + len(payloads[PayloadUsr]) - 1
	flip := func(at int) func([]byte) { return func(b []byte) { b[at] ^= 0x40 } }

	for _, c := range []struct {
		name string
		// edit changes the bundle before apply; between changes the file
		// after the verification pass read it.
		edit, between func([]byte)
		// held: the test holds the file open for writing, so that apply
		// gets no lease and checks usr again in the write pass.
		held bool
		// openForWriting: between, the test opens the file for writing
		// (which breaks apply's lease).
		openForWriting bool
		want           string
		changed        bool // the write pass began
	}{
		{name: "intact"},
		{name: "intact, held open for writing", held: true},
		{name: "flipped byte in the last usr chunk", edit: flip(lastUsrByte - 100), want: "payload usr: chunk 3"},
		{name: "flipped byte in the first usr block", edit: flip(start[PayloadUsr]), want: "payload usr: chunk 0"},
		{name: "flipped byte in usr-verity", edit: flip(start[PayloadVerity] + 4096 + 10), want: "payload usr-verity: chunk 0"},
		{name: "flipped byte in the UKI", edit: flip(len(good) - 1), want: "payload uki.efi: chunk 0"},
		{name: "flipped byte in the signature JSON", edit: flip(start[PayloadSignature] + 20), want: "payload usr-verity-sig: chunk 0"},
		{name: "flipped manifest byte", edit: flip(headerSize + 30), want: "not signed by a certificate in db"},
		{name: "truncated in the UKI", want: "truncated"},
		{name: "usr changed after the verification pass", held: true, between: flip(lastUsrByte - 100), want: "payload usr: chunk 3", changed: true},
		{name: "opened for writing after the verification pass", openForWriting: true, want: "was opened for writing during apply"},
		// The UKI is kept from the verification pass: a change after it
		// does not reach the ESP.
		{name: "UKI changed after the verification pass", held: true, between: flip(len(good) - 1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newFakeNode(t)
			data := bytes.Clone(good)
			if c.edit != nil {
				c.edit(data)
			}
			if strings.HasPrefix(c.name, "truncated") {
				data = data[:len(data)-3]
			}
			path := filepath.Join(t.TempDir(), "bundle")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			var holder *os.File
			if c.held {
				if holder, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
					t.Fatal(err)
				}
				defer holder.Close()
			}
			src, err := openSource(context.Background(), path, "")
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if (src.stable == "") != c.held {
				t.Fatalf("source stable %q with the file held open for writing %v", src.stable, c.held)
			}
			switch {
			case c.between != nil:
				src.verify = &hookReader{r: src.verify, at: int64(len(data) - 1), fn: func() {
					c.between(data)
					if _, err := holder.WriteAt(data, 0); err != nil {
						t.Error(err)
					}
				}}
			case c.openForWriting:
				src.verify = &hookReader{r: src.verify, at: int64(len(data) - 1), fn: func() {
					// The lease makes the open wait for apply; without
					// blocking it fails, and the lease breaks.
					f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
					if err == nil {
						f.Close()
						t.Error("opened for writing despite apply's lease")
					} else if !errors.Is(err, unix.EWOULDBLOCK) {
						t.Error(err)
					}
				}}
			}
			before := n.snapshot(t)
			res, err := n.applier([]*x509.Certificate{cert}).apply(context.Background(), src)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if res.RecheckedUsr != c.held {
					t.Errorf("usr checked again: %v; the source could change: %v", res.RecheckedUsr, c.held)
				}
				got, _ := os.ReadFile(n.t.usr.Dev)
				if !bytes.Equal(got[:len(payloads[PayloadUsr])], payloads[PayloadUsr]) {
					t.Error("usr-B does not hold the usr payload")
				}
				ver, _ := os.ReadFile(n.t.ver.Dev)
				if !bytes.Equal(ver[:len(payloads[PayloadVerity])], payloads[PayloadVerity]) {
					t.Error("usr-B-verity does not hold the tree")
				}
				uki, _ := os.ReadFile(filepath.Join(n.dir, "esp", esp.SlotUKIPath("B")))
				if !bytes.Equal(uki, payloads[PayloadUKI]) {
					t.Error("the ESP does not hold the UKI")
				}
				if next, ok, _ := efiboot.BootNext(n.vars); !ok || next != res.BootEntry {
					t.Errorf("BootNext %04X (set %v), want %04X", next, ok, res.BootEntry)
				}
				if n.uuidSets != 1 {
					t.Errorf("GPT UUIDs set %d times", n.uuidSets)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			after := n.snapshot(t)
			if !c.changed {
				if !maps.Equal(before, after) {
					t.Errorf("a refused bundle changed the node:\n%v\n%v", before, after)
				}
				if (c.edit != nil && strings.Contains(c.want, "chunk") || c.openForWriting) && !strings.Contains(err.Error(), "nothing was written") {
					t.Errorf("error does not say that nothing was written: %v", err)
				}
				return
			}
			if !errors.Is(err, errChanged) || !strings.Contains(err.Error(), "nothing boots it") {
				t.Errorf("error %v: want errChanged saying that nothing boots the slot", err)
			}
			sig, _ := os.ReadFile(n.t.sig.Dev)
			if !bytes.Equal(sig, make([]byte, len(sig))) {
				t.Error("the signature partition is not cleared")
			}
			if _, ok, _ := efiboot.BootNext(n.vars); ok {
				t.Error("BootNext is set")
			}
			if _, _, err := n.vars.Get(trialVar); err == nil {
				t.Error("the trial marker is set")
			}
			if _, err := os.Stat(filepath.Join(n.dir, "esp", esp.StatePath)); err == nil {
				t.Error("the update state was written")
			}
		})
	}
}

// TestApplyFromURL: a URL cannot be read twice, so the verification pass
// spools it to an unlinked file; a tampered download changes nothing, and
// no spool file stays behind either way.
func TestApplyFromURL(t *testing.T) {
	key, cert := testKey(t, "db")
	m, payloads := applyImage(t, key, cert)
	good := packSized(t, m, key, cert, payloads)
	bad := bytes.Clone(good)
	bad[len(bad)-2] ^= 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/good":
			w.Write(good)
		case "/bad":
			w.Write(bad)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, c := range []struct{ path, want string }{
		{"/bad", "payload uki.efi: chunk 0"},
		{"/missing", "404"},
		{"/good", ""},
	} {
		t.Run(c.path, func(t *testing.T) {
			n := newFakeNode(t)
			spool := t.TempDir()
			before := n.snapshot(t)
			src, err := openSource(context.Background(), srv.URL+c.path, spool)
			if err == nil {
				_, err = n.applier([]*x509.Certificate{cert}).apply(context.Background(), src)
				if !src.spooled {
					t.Error("the download was not spooled")
				}
				src.Close()
			}
			if ents, _ := os.ReadDir(spool); len(ents) != 0 {
				t.Errorf("the spool directory holds %d files", len(ents))
			}
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, ok, _ := efiboot.BootNext(n.vars); !ok {
					t.Error("BootNext is not set")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if after := n.snapshot(t); !maps.Equal(before, after) {
				t.Error("a refused download changed the node")
			}
		})
	}
}
