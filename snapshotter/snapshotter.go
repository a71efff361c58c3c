package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
)

// LayerLabel marks a Prepare that turns a staged, converted layer into a
// snapshot: its value is the layer's diff ID. containerd passes labels
// under "containerd.io/snapshot/" through to a proxy snapshotter, so the
// label reaches us from `osguard image import` through containerd's own
// snapshot service.
const LayerLabel = "containerd.io/snapshot/osguard.layer"

// ErrUnsigned is returned when containerd asks to unpack a layer into an
// osguard snapshot: only `osguard image import`, which has the layer's
// signature, can create layers.
var ErrUnsigned = errors.New("osguard snapshots hold only layers whose dm-verity root hash is signed")

// Snapshotter is a containerd snapshotter whose committed snapshots are
// signed dm-verity EROFS layers and whose active snapshots are overlayfs
// mounts with those layers below and a writable directory on top. It keeps
// its bookkeeping in containerd's own bolt metadata store.
type Snapshotter struct {
	root string
	ms   *storage.MetaStore
	mu   sync.Mutex // serialises layer activation and release
	// Log receives one line per layer set up or removed (os.Stderr, which
	// the service's journal keeps; nil for none).
	Log io.Writer
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

// New opens (or creates) a snapshotter rooted at root, usually
// /var/lib/osguard/snapshotter.
func New(root string) (*Snapshotter, error) {
	for _, d := range []string{"layers", "staging", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("snapshotter: %w", err)
		}
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("snapshotter: metadata: %w", err)
	}
	return &Snapshotter{root: root, ms: ms, Log: os.Stderr}, nil
}

// StagingDir is where `osguard image import` leaves a converted layer,
// in a directory named after the hex of its diff ID, before it asks for
// the layer's snapshot.
func StagingDir(root, diffID string) string {
	return filepath.Join(root, "staging", strings.TrimPrefix(diffID, "sha256:"))
}

// LayerDir is where a layer lives once it has a snapshot.
func LayerDir(root, diffID string) string {
	return filepath.Join(root, "layers", strings.TrimPrefix(diffID, "sha256:"))
}

func (s *Snapshotter) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", args...)
	}
}

// logSetup reports a layer whose device and mount were just made.
func (s *Snapshotter) logSetup(diffID string, al *activeLayer) {
	if al.setup > 0 {
		s.logf("layer %s: verity device created (the kernel accepted its signature) and EROFS mounted in %.1f ms", diffID, float64(al.setup.Microseconds())/1000)
	}
}

func (s *Snapshotter) snapshotDir(id string) string { return filepath.Join(s.root, "snapshots", id) }

// Close closes the metadata store.
func (s *Snapshotter) Close() error { return s.ms.Close() }

func (s *Snapshotter) read(ctx context.Context, fn func(context.Context) error) error {
	return s.ms.WithTransaction(ctx, false, fn)
}

func (s *Snapshotter) write(ctx context.Context, fn func(context.Context) error) error {
	return s.ms.WithTransaction(ctx, true, fn)
}

// Stat returns the info of snapshot key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.read(ctx, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update changes the labels of snapshot key. The layer label cannot change:
// it says which verified layer a snapshot is.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.write(ctx, func(ctx context.Context) error {
		_, old, _, err := storage.GetInfo(ctx, info.Name)
		if err != nil {
			return err
		}
		if info.Labels[LayerLabel] != old.Labels[LayerLabel] {
			if info.Labels == nil {
				info.Labels = map[string]string{}
			}
			if v, ok := old.Labels[LayerLabel]; ok {
				info.Labels[LayerLabel] = v
			} else {
				delete(info.Labels, LayerLabel)
			}
		}
		out, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage is the size of a layer's image and hash tree, or of an active
// snapshot's writable directory.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	if err := s.read(ctx, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	}); err != nil {
		return snapshots.Usage{}, err
	}
	if info.Kind == snapshots.KindCommitted {
		return usage, nil
	}
	return dirUsage(filepath.Join(s.snapshotDir(id), "fs"))
}

func dirUsage(dir string) (snapshots.Usage, error) {
	var u snapshots.Usage
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		u.Inodes++
		if fi.Mode().IsRegular() {
			u.Size += fi.Size()
		}
		return nil
	})
	return u, err
}

// Walk calls fn for every snapshot matching the filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.read(ctx, func(ctx context.Context) error { return storage.WalkInfo(ctx, fn, filters...) })
}

// Prepare creates an active snapshot. With the layer label it adopts a
// staged layer: the kernel checks the layer's signature when its verity
// device is created, and only then does the snapshot exist. Without it, an
// unpack (containerd extracting a layer tar itself) is refused, and
// anything else (a container's root file system) gets an overlayfs over
// its parent's layers.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, opt := range opts {
		if err := opt(&base); err != nil {
			return nil, err
		}
	}
	if diffID := base.Labels[LayerLabel]; diffID != "" {
		return s.prepareLayer(ctx, key, parent, diffID, opts)
	}
	if chain, ok := unpackTarget(key); ok {
		return nil, fmt.Errorf("osguard: refusing to unpack layer %s (the top of chain %s): %w; import the image with 'osguard image import', which checks its signature: %w",
			layerOfChain(chain, parent), chain, ErrUnsigned, errdefs.ErrFailedPrecondition)
	}
	return s.createSnapshot(ctx, snapshots.KindActive, key, parent, opts)
}

// View creates a read-only snapshot of parent's layers.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.createSnapshot(ctx, snapshots.KindView, key, parent, opts)
}

// unpackTarget recognises containerd's extraction keys ("extract-<unique>
// <chain ID>", snapshots.UnpackKeyFormat) behind the metadata store's
// "<namespace>/<id>/" prefix and returns the chain ID.
func unpackTarget(key string) (string, bool) {
	parts := strings.SplitN(key, "/", 3)
	k := parts[len(parts)-1]
	if !strings.HasPrefix(k, snapshots.UnpackKeyPrefix+"-") {
		return "", false
	}
	_, chain, _ := strings.Cut(k, " ")
	if chain == "" {
		chain = k
	}
	return chain, true
}

// layerOfChain names the layer being unpacked: for the first layer the
// chain ID is the diff ID.
func layerOfChain(chain, parent string) string {
	if parent == "" {
		return chain
	}
	return "on top of " + parent
}

func (s *Snapshotter) prepareLayer(ctx context.Context, key, parent, diffID string, opts []snapshots.Opt) (_ []mount.Mount, err error) {
	if _, err := layerHex(diffID); err != nil {
		return nil, fmt.Errorf("osguard: layer label: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if parent != "" {
		pinfo, err := s.Stat(ctx, parent)
		if err != nil {
			return nil, err
		}
		if pinfo.Kind != snapshots.KindCommitted || pinfo.Labels[LayerLabel] == "" {
			return nil, fmt.Errorf("osguard: parent %s of layer %s is not a verified layer: %w", parent, diffID, errdefs.ErrInvalidArgument)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir, fresh, err := s.adopt(diffID)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && fresh {
			deactivate(dir, diffID)
			os.RemoveAll(dir)
		}
	}()
	rec, err := ReadRecord(dir, diffID)
	if err != nil {
		return nil, fmt.Errorf("osguard: layer %s: %w", diffID, err)
	}
	al, err := activate(dir, rec)
	if err != nil {
		s.logf("layer %s: refused: %v", diffID, err)
		return nil, fmt.Errorf("osguard: layer %s: %w", diffID, err)
	}
	s.logSetup(diffID, al)
	if err := s.write(ctx, func(ctx context.Context) error {
		_, err := storage.CreateSnapshot(ctx, snapshots.KindActive, key, parent, opts...)
		return err
	}); err != nil {
		return nil, err
	}
	return []mount.Mount{{Type: "bind", Source: al.mnt, Options: []string{"ro", "rbind"}}}, nil
}

// adopt moves a staged layer into the layer store, unless the store
// already has it (another image shares the layer; the staged copy is then
// dropped). fresh says the layer is new, so a failure must remove it.
func (s *Snapshotter) adopt(diffID string) (dir string, fresh bool, err error) {
	dir, staged := LayerDir(s.root, diffID), StagingDir(s.root, diffID)
	if _, err := os.Stat(filepath.Join(dir, RecordFile)); err == nil {
		os.RemoveAll(staged)
		return dir, false, nil
	}
	os.RemoveAll(dir) // a partial directory from a crash
	if err := os.Rename(staged, dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", false, fmt.Errorf("osguard: layer %s is not staged in %s: %w", diffID, staged, errdefs.ErrNotFound)
		}
		return "", false, fmt.Errorf("osguard: adopt layer %s: %w", diffID, err)
	}
	return dir, true, nil
}

func (s *Snapshotter) createSnapshot(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	var (
		snap    storage.Snapshot
		diffIDs []string
		dir     string
	)
	err := s.write(ctx, func(ctx context.Context) (err error) {
		if diffIDs, err = chainOf(ctx, parent); err != nil {
			return err
		}
		if snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return err
		}
		dir = s.snapshotDir(snap.ID)
		if err := os.MkdirAll(filepath.Join(dir, "fs"), 0o755); err != nil {
			return err
		}
		if kind == snapshots.KindActive {
			if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
				os.RemoveAll(dir)
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.mounts(kind, dir, diffIDs)
}

// chainOf returns the diff IDs of parent and its ancestors, top first.
func chainOf(ctx context.Context, parent string) ([]string, error) {
	var ids []string
	for p := parent; p != ""; {
		_, info, _, err := storage.GetInfo(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("osguard: parent %s: %w", p, err)
		}
		id := info.Labels[LayerLabel]
		if id == "" {
			return nil, fmt.Errorf("osguard: snapshot %s is not a verified layer: %w", p, errdefs.ErrFailedPrecondition)
		}
		ids = append(ids, id)
		p = info.Parent
		if len(ids) > 500 {
			return nil, fmt.Errorf("osguard: chain of %s is longer than 500 layers", parent)
		}
	}
	return ids, nil
}

// mounts activates the layers (a no-op when they are) and stacks them.
func (s *Snapshotter) mounts(kind snapshots.Kind, dir string, diffIDs []string) ([]mount.Mount, error) {
	lowers := make([]string, 0, len(diffIDs))
	s.mu.Lock()
	for _, id := range diffIDs {
		ldir := LayerDir(s.root, id)
		rec, err := ReadRecord(ldir, id)
		if err == nil {
			var al *activeLayer
			if al, err = activate(ldir, rec); err == nil {
				s.logSetup(id, al)
				lowers = append(lowers, al.mnt)
				continue
			}
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("osguard: layer %s: %w", id, err)
	}
	s.mu.Unlock()
	upper, work := filepath.Join(dir, "fs"), filepath.Join(dir, "work")
	switch {
	case len(lowers) == 0 && kind == snapshots.KindActive:
		return []mount.Mount{{Type: "bind", Source: upper, Options: []string{"rw", "rbind"}}}, nil
	case len(lowers) == 0:
		return []mount.Mount{{Type: "bind", Source: upper, Options: []string{"ro", "rbind"}}}, nil
	case kind != snapshots.KindActive && len(lowers) == 1:
		return []mount.Mount{{Type: "bind", Source: lowers[0], Options: []string{"ro", "rbind"}}}, nil
	case kind != snapshots.KindActive:
		return []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Join(lowers, ":")}}}, nil
	}
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{
		"workdir=" + work, "upperdir=" + upper, "lowerdir=" + strings.Join(lowers, ":")}}}, nil
}

// Mounts returns the mounts of an active or view snapshot.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var (
		snap    storage.Snapshot
		info    snapshots.Info
		diffIDs []string
	)
	if err := s.read(ctx, func(ctx context.Context) (err error) {
		if snap, err = storage.GetSnapshot(ctx, key); err != nil {
			return err
		}
		if _, info, _, err = storage.GetInfo(ctx, key); err != nil {
			return err
		}
		diffIDs, err = chainOf(ctx, info.Parent)
		return err
	}); err != nil {
		return nil, err
	}
	if id := info.Labels[LayerLabel]; id != "" {
		// The active snapshot of a layer being imported.
		return s.mounts(snapshots.KindView, "", []string{id})
	}
	return s.mounts(snap.Kind, s.snapshotDir(snap.ID), diffIDs)
}

// Commit turns the active snapshot of an imported layer into the
// committed layer. Anything else is refused: a committed osguard snapshot
// is always a signed layer, never a directory someone wrote.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.write(ctx, func(ctx context.Context) error {
		_, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		diffID := info.Labels[LayerLabel]
		if diffID == "" {
			return fmt.Errorf("osguard: refusing to commit %s: %w: %w", key, ErrUnsigned, errdefs.ErrFailedPrecondition)
		}
		var base snapshots.Info
		for _, opt := range opts {
			if err := opt(&base); err != nil {
				return err
			}
		}
		if base.Labels == nil {
			base.Labels = map[string]string{}
		}
		base.Labels[LayerLabel] = diffID
		var usage snapshots.Usage
		if fi, err := os.Stat(filepath.Join(LayerDir(s.root, diffID), ImageFile)); err == nil {
			usage = snapshots.Usage{Size: fi.Size(), Inodes: 1}
		}
		_, err = storage.CommitActive(ctx, key, name, usage, snapshots.WithLabels(base.Labels))
		return err
	})
}

// Remove deletes a snapshot. The last snapshot of a layer takes the layer
// with it: its mount, its verity device and its files.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var (
		id     string
		kind   snapshots.Kind
		diffID string
	)
	if err := s.write(ctx, func(ctx context.Context) (err error) {
		_, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		diffID = info.Labels[LayerLabel]
		id, kind, err = storage.Remove(ctx, key)
		return err
	}); err != nil {
		return err
	}
	if diffID == "" {
		if err := os.RemoveAll(s.snapshotDir(id)); err != nil {
			return fmt.Errorf("osguard: remove snapshot %s (%s, %v): %w", key, id, kind, err)
		}
		return nil
	}
	return s.release(ctx, diffID)
}

// release removes a layer no snapshot refers to any more.
func (s *Snapshotter) release(ctx context.Context, diffID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	used := false
	if err := s.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		if info.Labels[LayerLabel] == diffID {
			used = true
		}
		return nil
	}); err != nil {
		return err
	}
	if used {
		return nil
	}
	dir := LayerDir(s.root, diffID)
	if err := deactivate(dir, diffID); err != nil {
		return fmt.Errorf("osguard: release layer %s: %w", diffID, err)
	}
	s.logf("layer %s: removed with its verity device", diffID)
	return os.RemoveAll(dir)
}
