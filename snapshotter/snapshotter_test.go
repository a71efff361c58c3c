package snapshotter

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

func TestUnpackTarget(t *testing.T) {
	chain := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		key   string
		chain string
		ok    bool
	}{
		{"default/4/extract-123456-Ab_c " + chain, chain, true},
		{"extract-1 " + chain, chain, true},
		{"default/5/extract-only", "extract-only", true},
		{"default/6/c1", "", false},
		{"default/7/osguard-import-00 " + chain, "", false},
		{"k8s.io/8/sha256:" + strings.Repeat("cd", 32), "", false},
	} {
		got, ok := unpackTarget(tc.key)
		if ok != tc.ok || got != tc.chain {
			t.Errorf("unpackTarget(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.chain, tc.ok)
		}
	}
}

func goodRecord() Record {
	return Record{
		DiffID: "sha256:" + strings.Repeat("01", 32), HashOffset: 3 * 4096, HashAlgorithm: "sha256",
		DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 3,
		Salt: strings.Repeat("5a", 32), RootHash: strings.Repeat("ee", 32),
	}
}

func TestRecordCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Record)
		want string
	}{
		{"good", func(*Record) {}, ""},
		{"other layer", func(r *Record) { r.DiffID = "sha256:" + strings.Repeat("02", 32) }, "record is of layer"},
		{"sha1", func(r *Record) { r.HashAlgorithm = "sha1" }, "hash algorithm"},
		{"block size", func(r *Record) { r.DataBlockSize = 512 }, "block sizes"},
		{"no blocks", func(r *Record) { r.DataBlocks = 0; r.HashOffset = 0 }, "0 data blocks"},
		{"hash offset", func(r *Record) { r.HashOffset = 4096 }, "hash tree at 4096"},
		{"short root", func(r *Record) { r.RootHash = "ee" }, "root hash"},
		{"upper hex", func(r *Record) { r.RootHash = strings.Repeat("EE", 32) }, "root hash"},
		{"odd salt", func(r *Record) { r.Salt = "abc" }, "salt"},
		{"table injection", func(r *Record) { r.Salt = "00 2 ignore_corruption" }, "salt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := goodRecord()
			tc.edit(&r)
			err := r.Check("sha256:" + strings.Repeat("01", 32))
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Check = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	r := goodRecord()
	if err := WriteRecord(dir, &r); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRecord(dir, r.DiffID)
	if err != nil || *got != r {
		t.Fatalf("ReadRecord = %+v, %v", got, err)
	}
	os.WriteFile(filepath.Join(dir, RecordFile), []byte(`{"diffID":"x","extra":1}`), 0o644)
	if _, err := ReadRecord(dir, r.DiffID); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
}

// FuzzReadRecord: any layer.json gives a record that passes Check, or an
// error; never a panic.
func FuzzReadRecord(f *testing.F) {
	r := goodRecord()
	dir := f.TempDir()
	WriteRecord(dir, &r)
	b, _ := os.ReadFile(filepath.Join(dir, RecordFile))
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"diffID":"sha256:0101010101010101010101010101010101010101010101010101010101010101","dataBlocks":18446744073709551615}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, RecordFile), data, 0o644)
		rec, err := ReadRecord(dir, r.DiffID)
		if err == nil {
			if err := rec.Check(r.DiffID); err != nil {
				t.Fatalf("ReadRecord accepted a record Check refuses: %v", err)
			}
		}
	})
}

// TestSnapshotsWithoutLayers exercises what needs no kernel: containers
// without layers, the refusal of unpacking and of commits, views, walks
// and removal. (Layers need device-mapper; the VM test
// image.TestSignedContainers covers them on the node's kernel.)
func TestSnapshotsWithoutLayers(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	sn, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()

	m, err := sn.Prepare(ctx, "default/1/c1", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[0].Type != "bind" || !strings.HasPrefix(m[0].Source, filepath.Join(root, "snapshots")) {
		t.Fatalf("mounts of an empty container: %+v", m)
	}
	os.WriteFile(filepath.Join(m[0].Source, "f"), []byte("12345"), 0o644)
	if u, err := sn.Usage(ctx, "default/1/c1"); err != nil || u.Size != 5 {
		t.Errorf("Usage = %+v, %v", u, err)
	}
	if _, err := sn.Prepare(ctx, "default/2/extract-1-x sha256:"+strings.Repeat("ab", 32), ""); !errors.Is(err, ErrUnsigned) || !errdefs.IsFailedPrecondition(err) {
		t.Errorf("unpack: %v", err)
	}
	if err := sn.Commit(ctx, "default/3/sha256:x", "default/1/c1"); !errors.Is(err, ErrUnsigned) {
		t.Errorf("commit of a container: %v", err)
	}
	if _, err := sn.Prepare(ctx, "default/4/l", "", snapshots.WithLabels(map[string]string{LayerLabel: "sha256:nothex"})); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad layer label: %v", err)
	}
	if _, err := sn.Prepare(ctx, "default/5/l", "", snapshots.WithLabels(map[string]string{LayerLabel: "sha256:" + strings.Repeat("cd", 32)})); !errdefs.IsNotFound(err) {
		t.Errorf("layer never staged: %v", err)
	}
	if _, err := sn.Prepare(ctx, "default/6/c2", "default/1/c1"); err == nil {
		t.Error("an active snapshot became a parent")
	}
	var keys []string
	sn.Walk(ctx, func(ctx context.Context, i snapshots.Info) error { keys = append(keys, i.Name); return nil })
	if len(keys) != 1 || keys[0] != "default/1/c1" {
		t.Errorf("Walk: %v", keys)
	}
	info, err := sn.Update(ctx, snapshots.Info{Name: "default/1/c1", Labels: map[string]string{"a": "b", LayerLabel: "sha256:" + strings.Repeat("ef", 32)}}, "labels")
	if err != nil || info.Labels[LayerLabel] != "" || info.Labels["a"] != "b" {
		t.Errorf("Update = %+v, %v (the layer label must not be settable)", info.Labels, err)
	}
	dir := m[0].Source
	if err := sn.Remove(ctx, "default/1/c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Errorf("the snapshot's directory is still there: %v", err)
	}
}
