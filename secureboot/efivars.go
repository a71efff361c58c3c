package secureboot

import (
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// More well-known global variables (UEFI spec 2.10, section 3.3).
var (
	VarSecureBoot = Variable{"SecureBoot", EFIGlobalVariable}
	VarSetupMode  = Variable{"SetupMode", EFIGlobalVariable}
	VarDBX        = Variable{"dbx", EFIImageSecurityDatabase}
)

// Vars reads and writes UEFI variables. Get returns an error wrapping
// fs.ErrNotExist for a missing variable. Set must hand attributes and data
// to the firmware in one SetVariable call.
type Vars interface {
	Get(v Variable) (attrs uint32, data []byte, err error)
	Set(v Variable, attrs uint32, data []byte) error
}

// DefaultEfivarfs is where Linux mounts efivarfs.
const DefaultEfivarfs = "/sys/firmware/efi/efivars"

// Efivarfs is Linux's efivarfs: one file "Name-GUID" per variable holding
// u32 attributes ‖ data (Documentation/filesystems/efivarfs.rst).
type Efivarfs struct{ Dir string }

var _ Vars = Efivarfs{}

func (e Efivarfs) path(v Variable) string { return filepath.Join(e.Dir, v.Name+"-"+v.GUID.String()) }

// Get reads a variable.
func (e Efivarfs) Get(v Variable) (uint32, []byte, error) {
	b, err := os.ReadFile(e.path(v))
	if err != nil {
		return 0, nil, fmt.Errorf("secureboot: read %s: %w", v.Name, err)
	}
	if len(b) < 4 {
		// efivarfs shows an empty file for a variable that a failed write
		// left behind; it holds no value.
		return 0, nil, fmt.Errorf("secureboot: read %s: %w", v.Name, fs.ErrNotExist)
	}
	return binary.LittleEndian.Uint32(b), b[4:], nil
}

// Set writes a variable with a single write(2), which efivarfs turns into
// one SetVariable() call. An existing file is made mutable first: efivarfs
// marks standard variables immutable.
func (e Efivarfs) Set(v Variable, attrs uint32, data []byte) error {
	p := e.path(v)
	buf := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(data)), attrs)
	buf = append(buf, data...)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrPermission) {
		if err2 := clearImmutable(p); err2 == nil {
			f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
		}
	}
	if err != nil {
		return fmt.Errorf("secureboot: write %s: %w", v.Name, err)
	}
	n, err := f.Write(buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != len(buf) {
		err = fmt.Errorf("short write of %d of %d bytes", n, len(buf))
	}
	if err != nil {
		return fmt.Errorf("secureboot: write %s: %w", v.Name, err)
	}
	return nil
}

// Delete removes a variable: efivarfs deletes it in the firmware when its
// file is unlinked.
func (e Efivarfs) Delete(v Variable) error {
	p := e.path(v)
	err := os.Remove(p)
	if errors.Is(err, fs.ErrPermission) {
		if err2 := clearImmutable(p); err2 == nil {
			err = os.Remove(p)
		}
	}
	if err != nil {
		return fmt.Errorf("secureboot: delete %s: %w", v.Name, err)
	}
	return nil
}

func clearImmutable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL))
}

// State is the Secure Boot state of a machine as its variables show it.
type State struct {
	SecureBoot bool                `json:"secureBoot"`
	SetupMode  bool                `json:"setupMode"`
	PK         []*x509.Certificate `json:"-"`
	KEK        []*x509.Certificate `json:"-"`
	DB         []*x509.Certificate `json:"-"`
	DBHashes   int                 `json:"dbHashes"` // non-certificate entries in db
	DBXEntries int                 `json:"dbxEntries"`
}

// Enforcing reports whether the firmware checks signatures: SecureBoot=1
// and SetupMode=0. Only then does the kernel's .platform keyring (loaded
// from db whatever the state) mean anything.
func (s *State) Enforcing() bool { return s.SecureBoot && !s.SetupMode }

// ReadState reads SecureBoot, SetupMode, PK, KEK, db and dbx. Missing
// SecureBoot or SetupMode variables read as false (firmware without Secure
// Boot support); malformed ones are errors.
func ReadState(v Vars) (*State, error) {
	s := &State{}
	var err error
	if s.SecureBoot, err = readBool(v, VarSecureBoot); err != nil {
		return nil, err
	}
	if s.SetupMode, err = readBool(v, VarSetupMode); err != nil {
		return nil, err
	}
	for _, x := range []struct {
		v     Variable
		certs *[]*x509.Certificate
	}{{VarPK, &s.PK}, {VarKEK, &s.KEK}, {VarDB, &s.DB}} {
		sigs, err := readSigs(v, x.v)
		if err != nil {
			return nil, err
		}
		if *x.certs, err = Certificates(sigs); err != nil {
			return nil, fmt.Errorf("secureboot: %s: %w", x.v.Name, err)
		}
		if x.v == VarDB {
			s.DBHashes = len(sigs) - len(s.DB)
		}
	}
	dbx, err := readSigs(v, VarDBX)
	if err != nil {
		return nil, err
	}
	s.DBXEntries = len(dbx)
	return s, nil
}

func readBool(v Vars, x Variable) (bool, error) {
	_, b, err := v.Get(x)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(b) != 1 || b[0] > 1 {
		return false, fmt.Errorf("secureboot: %s holds % x, want one byte 0 or 1", x.Name, b)
	}
	return b[0] == 1, nil
}

func readSigs(v Vars, x Variable) ([]Signature, error) {
	_, b, err := v.Get(x)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sigs, err := ParseSignatureLists(b)
	if err != nil {
		return nil, fmt.Errorf("secureboot: %s: %w", x.Name, err)
	}
	return sigs, nil
}

// ErrNotSetupMode is returned by Enroll when the firmware is in user mode.
var ErrNotSetupMode = errors.New("secureboot: firmware is not in setup mode (SetupMode=0): " +
	"a platform key is already enrolled; clear the Secure Boot keys in the firmware setup first")

// AuthUpdates are the signed updates (.auth file contents) Enroll writes.
type AuthUpdates struct{ PK, KEK, DB []byte }

// LoadAuthUpdates reads DIR/{PK,KEK,db}.auth as written by GenerateKeys.
// Only these files are needed on the node, not the private keys.
func LoadAuthUpdates(dir string) (*AuthUpdates, error) {
	u := &AuthUpdates{}
	for _, x := range []struct {
		p    *[]byte
		name string
	}{{&u.PK, "PK"}, {&u.KEK, "KEK"}, {&u.DB, "db"}} {
		b, err := os.ReadFile(filepath.Join(dir, x.name+".auth"))
		if err != nil {
			return nil, fmt.Errorf("secureboot: %w", err)
		}
		if _, err := ParseAuthVar(b); err != nil {
			return nil, fmt.Errorf("secureboot: %s.auth: %w", x.name, err)
		}
		*x.p = b
	}
	return u, nil
}

// Enroll writes db, then KEK, then PK (which ends setup mode) as
// time-based authenticated writes. It refuses to start unless SetupMode=1,
// and returns the state before and after (after is nil if a write failed).
func Enroll(v Vars, u *AuthUpdates) (before, after *State, err error) {
	if before, err = ReadState(v); err != nil {
		return nil, nil, err
	}
	if !before.SetupMode {
		return before, nil, ErrNotSetupMode
	}
	for _, x := range []struct {
		v    Variable
		data []byte
	}{{VarDB, u.DB}, {VarKEK, u.KEK}, {VarPK, u.PK}} {
		if err := v.Set(x.v, AuthVarAttributes, x.data); err != nil {
			return before, nil, err
		}
	}
	after, err = ReadState(v)
	return before, after, err
}

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h.
const fsImmutableFL = 0x00000010
