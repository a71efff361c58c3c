package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/esp"
)

// Results of the last update, as `osguard status` reports them.
const (
	UpdateNone       = "none"
	UpdateApplied    = "applied"     // written, the trial boot not yet started
	UpdateTrial      = "trial"       // running the new slot, not yet found healthy
	UpdateCommitted  = "committed"   // the new slot is permanent
	UpdateRolledBack = "rolled-back" // back on the old slot; Reason says why
)

// UpdateState is what the node remembers about its last update, in
// /osguard/update.json on the ESP.
type UpdateState struct {
	LastResult string `json:"lastResult"`
	Reason     string `json:"reason,omitempty"`
	// Slot and Version are the update's; From* the slot it left.
	Slot        string `json:"slot,omitempty"`
	Version     string `json:"version,omitempty"`
	FromSlot    string `json:"fromSlot,omitempty"`
	FromVersion string `json:"fromVersion,omitempty"`
	// BootEntry is the Boot#### number of the new slot's entry.
	BootEntry uint16 `json:"bootEntry,omitempty"`
}

// ReadUpdateState reads the state from a mounted ESP; a missing file is
// the state "none".
func ReadUpdateState(espDir string) (*UpdateState, error) {
	b, err := os.ReadFile(filepath.Join(espDir, esp.StatePath))
	if errors.Is(err, fs.ErrNotExist) {
		return &UpdateState{LastResult: UpdateNone}, nil
	}
	if err != nil {
		return nil, err
	}
	var s UpdateState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", esp.StatePath, err)
	}
	return &s, nil
}

// WriteUpdateState replaces the state file on a mounted ESP.
func WriteUpdateState(espDir string, s *UpdateState) error {
	p := filepath.Join(espDir, esp.StatePath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	f, err := atomicfile.Create(p, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return err
	}
	return f.Commit()
}

// RunningSlot finds the usr slot the node booted: the partitions whose
// UUIDs are the halves of usrhash= on the kernel command line. Its letter
// is the end of the usr partition's name (usr-A, usr-B).
func RunningSlot() (*bootinit.UsrSlot, string, error) {
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, "", err
	}
	cl, err := bootinit.ParseCmdline(string(raw))
	if err != nil {
		return nil, "", err
	}
	if len(cl.UsrHash) == 0 {
		return nil, "", errors.New("no usrhash= on the kernel command line")
	}
	parts, err := bootinit.DefaultSys.Partitions()
	if err != nil {
		return nil, "", err
	}
	slot, err := bootinit.FindUsr(parts, cl.UsrHash, bootinit.ReadSigPartition)
	if err != nil {
		return nil, "", err
	}
	return slot, SlotLetter(slot.Usr.Name), nil
}

// SlotLetter returns "A" for usr-A and so on ("" for other names).
func SlotLetter(usrPartName string) string {
	if l, ok := strings.CutPrefix(usrPartName, "usr-"); ok && len(l) == 1 {
		return l
	}
	return ""
}

// ReadSlotMeasurements returns, from a mounted ESP, the measurements.json
// whose root hash is rootHash: an update's measurements-<slot>.json, or the
// build's measurements.json. With rootHash empty it returns the build's.
func ReadSlotMeasurements(espDir, rootHash string) ([]byte, string, error) {
	names := []string{image.ESPMeasurementsPath, esp.SlotMeasurementsPath("A"), esp.SlotMeasurementsPath("B")}
	var first []byte
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(espDir, n))
		if err != nil {
			continue
		}
		if first == nil && n == image.ESPMeasurementsPath {
			first = b
		}
		var m image.Measurements
		if rootHash == "" || json.Unmarshal(b, &m) == nil && m.Usr.RootHash == rootHash {
			return b, n, nil
		}
	}
	if first != nil {
		return first, image.ESPMeasurementsPath, nil
	}
	return nil, "", fmt.Errorf("no %s on the ESP", image.ESPMeasurementsPath)
}

// ActiveIPEPolicy returns the name and version of the active IPE policy.
func ActiveIPEPolicy(securityfs string) (name, version string, err error) {
	dir := filepath.Join(securityfs, "ipe", "policies")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("IPE is not available: %w", err)
	}
	for _, e := range ents {
		if a, _ := readTrim(filepath.Join(dir, e.Name(), "active")); a == "1" {
			v, err := readTrim(filepath.Join(dir, e.Name(), "version"))
			return e.Name(), v, err
		}
	}
	return "", "", errors.New("no active IPE policy")
}
