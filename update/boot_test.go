package update

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/bootinit"
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

// fakeWatchdog records what check-boot does with the trial's watchdog.
type fakeWatchdog struct {
	armed    []time.Duration
	disarmed int
	err      error
}

func (w *fakeWatchdog) Arm(d time.Duration) (time.Duration, string, error) {
	if w.err != nil {
		return 0, "", w.err
	}
	w.armed = append(w.armed, d)
	return d, "fake", nil
}

func (w *fakeWatchdog) Disarm() error {
	if w.err != nil {
		return w.err
	}
	w.disarmed++
	return nil
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
	trial := func() *node.UpdateState { s := applied(); s.LastResult = node.UpdateTrial; return s }
	const timeout = 30 * time.Millisecond
	for _, c := range []struct {
		name      string
		st        *node.UpdateState
		running   string
		bootNext  bool
		marker    bool // osguard-init handed the trial over with a 40s watchdog
		healthy   bool
		want      string
		reason    string
		rebooted  bool
		orderWant []uint16
		// armed: check-boot re-armed the watchdog for its own timeout;
		// disarmed: it stopped it.
		armed, disarmed bool
	}{
		{"nothing to do", &node.UpdateState{LastResult: node.UpdateNone}, "A", false, false, true, node.UpdateNone, "", false, []uint16{1, 8}, false, false},
		{"committed stays", &node.UpdateState{LastResult: node.UpdateCommitted, Slot: "B"}, "B", false, false, true, node.UpdateCommitted, "", false, []uint16{1, 8}, false, false},
		{"applied, not rebooted yet", applied(), "A", true, false, true, node.UpdateApplied, "", false, []uint16{1, 8}, false, false},
		{"trial never reached the userland", applied(), "A", false, false, true, node.UpdateRolledBack, "did not reach", false, []uint16{1, 8}, false, false},
		{"trial userland hung, watchdog reset", applied(), "A", false, true, true, node.UpdateRolledBack, "did not start 'osguard update check-boot': the watchdog osguard-init armed for 40s (osguard.update.timeout plus 30s) reset it", false, []uint16{1, 8}, false, false},
		{"trial ended before healthy", trial(), "A", false, false, true, node.UpdateRolledBack, "ended before", false, []uint16{1, 8}, false, false},
		{"check-boot hung, watchdog reset", trial(), "A", false, true, true, node.UpdateRolledBack, "ended before it was found healthy (a hang that the trial's watchdog reset after 40s", false, []uint16{1, 8}, false, false},
		{"healthy trial commits", applied(), "B", false, true, true, node.UpdateCommitted, "", false, []uint16{8, 1}, true, true},
		{"unhealthy trial rolls back", applied(), "B", false, true, false, node.UpdateRolledBack, "not healthy within", true, []uint16{1, 8}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			vars := efiboot.MemVars{}
			vars.Set(order, 7, u16s(1, 8))
			vars.Set(trialVar, 7, u16s(8))
			if c.bootNext {
				vars.Set(next, 7, u16s(8))
			}
			if c.marker {
				vars.Set(watchdogVar, 7, bootinit.EncodeWatchdogMarker(40*time.Second))
			}
			saved, rebooted := 0, false
			wd := &fakeWatchdog{}
			o := CheckOptions{Timeout: timeout, Interval: 10 * time.Millisecond,
				Health:   func() (bool, string) { return c.healthy, "ipe: audit mode" },
				Reboot:   func() error { rebooted = true; return nil },
				Watchdog: wd}
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
			// The watchdog marker goes with the trial marker.
			if _, _, err := vars.Get(watchdogVar); decided && err == nil {
				t.Errorf("watchdog marker left after the decision")
			}
			if want := []time.Duration{timeout + bootinit.WatchdogMargin}; c.armed != slices.Equal(wd.armed, want) {
				t.Errorf("watchdog armed %v, want re-armed %v (for %v)", wd.armed, c.armed, want)
			}
			if c.disarmed != (wd.disarmed == 1) {
				t.Errorf("watchdog disarmed %d times, want disarmed %v", wd.disarmed, c.disarmed)
			}
		})
	}
}

// TestCheckBootWatchdogFailures: a trial without a watchdog of its own is
// checked all the same; a commit whose watchdog cannot be stopped says so,
// since the node will be reset.
func TestCheckBootWatchdogFailures(t *testing.T) {
	for _, c := range []struct {
		name    string
		err     error
		wantErr string
	}{
		{"no watchdog device", fmt.Errorf("watchdog: %w", os.ErrNotExist), ""},
		{"watchdog refuses", errors.New("watchdog /dev/watchdog: magic close: EIO"), "watchdog still runs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vars := efiboot.MemVars{}
			vars.Set(trialVar, 7, u16s(8))
			st := &node.UpdateState{LastResult: node.UpdateApplied, Slot: "B", Version: "2", FromSlot: "A", BootEntry: 8}
			var log strings.Builder
			o := CheckOptions{Timeout: time.Second, Interval: 10 * time.Millisecond,
				Health: func() (bool, string) { return true, "" }, Reboot: func() error { t.Fatal("rebooted"); return nil },
				Watchdog: &fakeWatchdog{err: c.err}}
			err := checkBoot(context.Background(), o, st, "B", vars, func() error { return nil },
				func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) })
			if st.LastResult != node.UpdateCommitted {
				t.Errorf("state %s, want committed", st.LastResult)
			}
			if !strings.Contains(log.String(), "without a watchdog of its own") {
				t.Errorf("log does not say the trial has no watchdog:\n%s", log.String())
			}
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Errorf("err = %v, want %q", err, c.wantErr)
			}
		})
	}
}
