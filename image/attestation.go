package image

import (
	"encoding/json"
	"fmt"

	"github.com/osguard/osguard/erofs"
)

// AttestationConfigPath is where the node agent finds spec.attestation
// (agent.ConfigPath); /etc comes from the verity volume's factory copy.
const AttestationConfigPath = "/etc/osguard/attestation.json"

// addAttestation puts the agent's settings into the rootfs's /etc.
func addAttestation(root *erofs.Tree, a *Attestation, mtime int64) error {
	if a == nil {
		return nil
	}
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	for _, d := range []string{"/etc", "/etc/osguard"} {
		if root.Get(d) == nil {
			if err := root.Add(d, &erofs.Inode{Mode: erofs.S_IFDIR | 0o755, Mtime: mtime}); err != nil {
				return fmt.Errorf("attestation: %w", err)
			}
		}
	}
	if err := root.Add(AttestationConfigPath, &erofs.Inode{Mode: erofs.S_IFREG | 0o644, Mtime: mtime, Size: int64(len(b)), Open: erofs.BytesOpener(b)}); err != nil {
		return fmt.Errorf("attestation: %w", err)
	}
	return nil
}
