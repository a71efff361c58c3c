package snapshotter_test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/imagetest"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
)

// BenchmarkContainerRun measures the time from `ctr run` to the
// container's first output with the osguard snapshotter (signed dm-verity
// EROFS layers under overlayfs) against containerd's stock overlayfs
// snapshotter, on the same image, both already unpacked, on one
// containerhost node. The node is of the standard flavour (no IPE), so
// that the stock snapshotter's layers may execute at all. Goal: ratio at
// most 1.5. It also reports what setting up one layer's verity device and
// EROFS mount costs, as the snapshotter logs it (verity-ms/layer), and
// the import time per layer (import-s/layer: conversion on the node
// included).
func BenchmarkContainerRun(b *testing.B) {
	ib := imagetest.Get(b)
	out := ib.Profile(b, "containerhost-standard-debug", "containerhost", image.Overrides{Flavour: "standard", DebugConsole: true})
	archive, _, _ := signedArchive(b, ib)
	node := vmtest.Start(b, vm.Config{
		UEFI: true, Vars: filepath.Join(out, image.VarsFile), TPM: true,
		Drives: []vm.Drive{{Path: filepath.Join(out, image.DiskFile), Snapshot: true}, {Path: archive, ReadOnly: true}},
	})
	if _, err := node.WaitForText(vm.ShellPrompt, 0, bootTimeout); err != nil {
		b.Fatal(err)
	}
	run := func(cmd string) string {
		b.Helper()
		got, err := node.Run(cmd, 4*time.Minute)
		if err != nil {
			b.Fatalf("%s: %v\n%s", cmd, err, got)
		}
		return strings.TrimSpace(got)
	}
	run("dmesg -n 1; systemctl is-system-running --wait >/dev/null || true")
	start := time.Now()
	run("osguard image import -q --ref " + refGood + " /dev/vdb")
	importPerLayer := time.Since(start).Seconds() / 2
	run("ctr images import --no-unpack --all-platforms /dev/vdb >/dev/null")
	// firstOutput runs the image and returns seconds from ctr's start to the
	// container's first output: /proc/uptime read by the host shell and by
	// the container's first process (one kernel, one clock).
	firstOutput := func(snapshotter, id string) float64 {
		b.Helper()
		got := run(fmt.Sprintf("cat /proc/uptime; ctr run --rm --snapshotter %s %s %s /bin/cat /proc/uptime", snapshotter, refGood, id))
		lines := strings.Fields(got)
		if len(lines) != 4 {
			b.Fatalf("uptimes: %q", got)
		}
		t0, err0 := strconv.ParseFloat(lines[0], 64)
		t1, err1 := strconv.ParseFloat(lines[2], 64)
		if err0 != nil || err1 != nil {
			b.Fatalf("uptimes: %q", got)
		}
		return t1 - t0
	}
	firstOutput("overlayfs", "warm-o") // unpacks into overlayfs
	firstOutput("osguard", "warm-g")
	var osg, ovl float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		osg += firstOutput("osguard", fmt.Sprintf("g%d", i))
		ovl += firstOutput("overlayfs", fmt.Sprintf("o%d", i))
	}
	b.StopTimer()
	var setup []float64
	for _, l := range strings.Split(run("journalctl -b -u osguard-snapshotter --no-pager -o cat | grep 'EROFS mounted in' || true"), "\n") {
		var ms float64
		if i := strings.Index(l, "mounted in "); i >= 0 {
			if _, err := fmt.Sscanf(l[i:], "mounted in %f ms", &ms); err == nil {
				setup = append(setup, ms)
			}
		}
	}
	b.ReportMetric(osg/float64(b.N), "osguard-s/run")
	b.ReportMetric(ovl/float64(b.N), "overlayfs-s/run")
	b.ReportMetric(osg/ovl, "ratio")
	b.ReportMetric(importPerLayer, "import-s/layer")
	if len(setup) > 0 {
		sum := 0.0
		for _, v := range setup {
			sum += v
		}
		b.ReportMetric(sum/float64(len(setup)), "verity-ms/layer")
	}
}
