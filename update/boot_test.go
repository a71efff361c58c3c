package update

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/efiboot"
	"github.com/osguard/osguard/node"
	"github.com/osguard/osguard/secureboot"
)

func u16s(v ...uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// TestCheckBoot walks the decisions of the boot-time check with a fake
// firmware: the VM test covers commit and the failed trial on real firmware;
// this covers every state, and the unhealthy trial that reboots.
func TestCheckBoot(t *testing.T) {
	global := secureboot.EFIGlobalVariable
	order := secureboot.Variable{Name: "BootOrder", GUID: global}
	next := secureboot.Variable{Name: "BootNext", GUID: global}
	applied := func() *node.UpdateState {
		return &node.UpdateState{LastResult: node.UpdateApplied, Slot: "B", Version: "2", FromSlot: "A", FromVersion: "1", BootEntry: 8}
	}
	for _, c := range []struct {
		name      string
		st        *node.UpdateState
		running   string
		bootNext  bool
		healthy   bool
		want      string
		reason    string
		rebooted  bool
		orderWant []uint16
	}{
		{"nothing to do", &node.UpdateState{LastResult: node.UpdateNone}, "A", false, true, node.UpdateNone, "", false, []uint16{1, 8}},
		{"committed stays", &node.UpdateState{LastResult: node.UpdateCommitted, Slot: "B"}, "B", false, true, node.UpdateCommitted, "", false, []uint16{1, 8}},
		{"applied, not rebooted yet", applied(), "A", true, true, node.UpdateApplied, "", false, []uint16{1, 8}},
		{"trial never reached the userland", applied(), "A", false, true, node.UpdateRolledBack, "did not reach", false, []uint16{1, 8}},
		{"trial ended before healthy", func() *node.UpdateState { s := applied(); s.LastResult = node.UpdateTrial; return s }(), "A", false, true, node.UpdateRolledBack, "ended before", false, []uint16{1, 8}},
		{"healthy trial commits", applied(), "B", false, true, node.UpdateCommitted, "", false, []uint16{8, 1}},
		{"unhealthy trial rolls back", applied(), "B", false, false, node.UpdateRolledBack, "not healthy within", true, []uint16{1, 8}},
	} {
		t.Run(c.name, func(t *testing.T) {
			vars := efiboot.MemVars{}
			vars.Set(order, 7, u16s(1, 8))
			vars.Set(trialVar, 7, u16s(8))
			if c.bootNext {
				vars.Set(next, 7, u16s(8))
			}
			saved, rebooted := 0, false
			o := CheckOptions{Timeout: 30 * time.Millisecond, Interval: 10 * time.Millisecond,
				Health: func() (bool, string) { return c.healthy, "ipe: audit mode" },
				Reboot: func() error { rebooted = true; return nil }}
			err := checkBoot(context.Background(), o, c.st, c.running, vars, func() error { saved++; return nil }, func(string, ...any) {})
			if err != nil {
				t.Fatal(err)
			}
			if c.st.LastResult != c.want || !strings.Contains(c.st.Reason, c.reason) {
				t.Errorf("state %s (%s), want %s (%q)", c.st.LastResult, c.st.Reason, c.want, c.reason)
			}
			if rebooted != c.rebooted {
				t.Errorf("rebooted %v, want %v", rebooted, c.rebooted)
			}
			if got, _ := efiboot.BootOrder(vars); !slices.Equal(got, c.orderWant) {
				t.Errorf("BootOrder %v, want %v", got, c.orderWant)
			}
			// A decision (commit or rollback) is saved and removes the
			// trial marker; otherwise nothing changes.
			decided := c.want == node.UpdateRolledBack || c.want == node.UpdateCommitted && c.name == "healthy trial commits"
			_, _, markerErr := vars.Get(trialVar)
			if decided == (markerErr == nil) {
				t.Errorf("decided %v, trial marker present %v", decided, markerErr == nil)
			}
			if decided != (saved > 0) {
				t.Errorf("decided %v, saved %d times", decided, saved)
			}
		})
	}
}
