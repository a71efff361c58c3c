package image

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/osguard/osguard/internal/vm"
)

// Machine is the state that makes `osguard run` one machine across power
// cycles: a copy-on-write overlay of the built disk (so the disk the build
// made stays as built), the UEFI variables and the TPM state. It lives next
// to the disk: DIR/machine for a build directory, DISK.machine for a disk
// file.
type Machine struct {
	Dir  string
	Disk string // qcow2 overlay whose backing file is the built disk
	Vars string // the machine's UEFI variables, first copied from the build's
	TPM  string // swtpm state directory
	// Created is true when PrepareMachine made the state now.
	Created bool
}

// machineSource records which built disk a machine was made from.
const machineSource = "source"

// MachineDir is where the state of the machine booting disk lives.
func MachineDir(disk string) string {
	if filepath.Base(disk) == DiskFile {
		return filepath.Join(filepath.Dir(disk), "machine")
	}
	return disk + ".machine"
}

// PrepareMachine returns the machine state for a built disk and its VARS
// file, creating it when missing or when fresh is set (which discards the
// old state). A machine made from a disk that has since been rebuilt is an
// error: its overlay would describe another image.
func PrepareMachine(disk, vars string, fresh bool) (*Machine, error) {
	absDisk, err := filepath.Abs(disk)
	if err != nil {
		return nil, err
	}
	source, err := diskIdentity(absDisk)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	m := &Machine{Dir: MachineDir(absDisk)}
	m.Disk, m.Vars, m.TPM = filepath.Join(m.Dir, "disk.qcow2"), filepath.Join(m.Dir, "ovmf-vars.fd"), filepath.Join(m.Dir, "tpm")
	if fresh {
		if err := os.RemoveAll(m.Dir); err != nil {
			return nil, fmt.Errorf("run: --fresh: %w", err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(m.Dir, machineSource)); err == nil {
		if string(b) != source {
			return nil, fmt.Errorf("run: %s was rebuilt after the machine in %s was made; 'osguard run --fresh' starts it over from the new build", disk, m.Dir)
		}
		return m, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("run: %w", err)
	}
	// Make the state in a temporary directory and rename it into place, so
	// that a failure leaves no half-made machine.
	if err := os.MkdirAll(filepath.Dir(m.Dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(m.Dir), ".machine-")
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	defer os.RemoveAll(tmp)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, errors.New("run: qemu-img not found (Debian package qemu-utils)")
	}
	out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", absDisk, filepath.Join(tmp, "disk.qcow2")).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("run: qemu-img create: %v: %s", err, strings.TrimSpace(string(out)))
	}
	v, err := os.ReadFile(vars)
	if err != nil {
		return nil, fmt.Errorf("run: OVMF VARS: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "ovmf-vars.fd"), v, 0o644); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(tmp, "tpm"), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, machineSource), []byte(source), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, m.Dir); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	m.Created = true
	return m, nil
}

// diskIdentity names a built disk by its path, size and the sha256 of its
// first 34 sectors (MBR and primary GPT): the build derives the disk and
// partition UUIDs from everything it put in the image, so two builds of the
// same inputs are the same disk, and any other build is not.
func diskIdentity(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	head := make([]byte, 34*512)
	if _, err := io.ReadFull(f, head); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return fmt.Sprintf("%s\n%d\n%x\n", path, st.Size(), sha256.Sum256(head)), nil
}

// VMConfig is the QEMU configuration of the machine: its overlay disk, its
// own UEFI variables written in place, its TPM, guest reboots allowed and
// the boot order left to the firmware (BootOrder, BootNext).
func (m *Machine) VMConfig(tpm bool) vm.Config {
	c := vm.Config{
		UEFI: true, Vars: m.Vars, VarsInPlace: true, Reboot: true, FirmwareBootOrder: true,
		Drives: []vm.Drive{{Path: m.Disk, Format: "qcow2"}},
		TPM:    tpm,
	}
	if tpm {
		c.TPMState = m.TPM
	}
	return c
}
