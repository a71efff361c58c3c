package efiboot

import (
	"fmt"
	"io/fs"

	"github.com/osguard/osguard/secureboot"
)

// MemVars is a variable store in memory: a firmware for tests.
type MemVars map[string][]byte

func (m MemVars) key(v secureboot.Variable) string { return v.Name + "-" + v.GUID.String() }

// Get implements secureboot.Vars.
func (m MemVars) Get(v secureboot.Variable) (uint32, []byte, error) {
	b, ok := m[m.key(v)]
	if !ok {
		return 0, nil, fmt.Errorf("%s: %w", v.Name, fs.ErrNotExist)
	}
	return VarAttrs, b, nil
}

// Set implements secureboot.Vars.
func (m MemVars) Set(v secureboot.Variable, _ uint32, b []byte) error {
	m[m.key(v)] = append([]byte(nil), b...)
	return nil
}

// Delete implements Vars.
func (m MemVars) Delete(v secureboot.Variable) error {
	if _, ok := m[m.key(v)]; !ok {
		return fmt.Errorf("%s: %w", v.Name, fs.ErrNotExist)
	}
	delete(m, m.key(v))
	return nil
}
