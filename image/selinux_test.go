package image_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/image"
)

// avcDenials lists the kernel's SELinux denials since boot, one line each.
const avcDenials = "dmesg | grep 'avc:  denied' | sed 's/.*avc:  denied/denied/' || true"

// TestContainerHostSELinux boots the containerhost node with SELinux
// enforcing (Debian trixie's reference policy plus osguard's module) and
// asks the kernel what it denied from boot until containerd was active,
// and after a container ran: nothing.
func TestContainerHostSELinux(t *testing.T) {
	f := getFixture(t)
	out := filepath.Join(t.TempDir(), "out")
	f.buildContainerHost(t, out, image.Overrides{SELinux: "enforcing"})
	start := time.Now()
	node, run := bootContainerHost(t, out)
	// A denial can fail a unit: the state is checked, the denials listed
	// either way.
	if got, _ := node.Run("systemctl is-system-running --wait", 4*time.Minute); !strings.HasSuffix(strings.TrimSpace(got), "running") {
		t.Errorf("systemctl is-system-running = %q, want running; failed units:\n%s", got, run("systemctl --failed --no-legend"))
	}
	if got := run("systemctl is-active containerd"); got != "active" {
		t.Errorf("containerd.service is %q", got)
	}
	t.Logf("QEMU start to a running system with containerd, SELinux enforcing: %v", time.Since(start).Round(100*time.Millisecond))
	if got := run("cat /sys/fs/selinux/enforce"); got != "1" {
		t.Fatalf("/sys/fs/selinux/enforce = %q, want 1", got)
	}
	if got := run(avcDenials); got != "" {
		t.Errorf("%d AVC denials from boot to containerd active:\n%s", len(strings.Split(got, "\n")), got)
	}

	// Who runs as what: systemd in init_t (the kernel's transition on
	// exec of init_exec_t after osguard-init loaded the policy),
	// containerd in its own domain, and the files carry the policy's
	// labels: /usr from the EROFS, the tmpfs root from osguard-init.
	for _, c := range []struct{ cmd, want string }{
		{"tr -d '\\0' < /proc/1/attr/current", `^system_u:system_r:init_t:s0$`},
		{"tr -d '\\0' < /proc/$(systemctl show -P MainPID containerd)/attr/current", `^system_u:system_r:\w+_t:s0$`},
		{"stat -c %C /usr/lib/systemd/systemd", `^system_u:object_r:init_exec_t:s0$`},
		{"stat -c %C /etc/shadow", `^system_u:object_r:shadow_t:s0$`},
		{"stat -c %C /etc/selinux/default/contexts/files/file_contexts", `^system_u:object_r:file_context_t:s0$`},
		{"stat -c %C /root", `^system_u:object_r:user_home_dir_t:s0$`},
		{"stat -c %C /run", `^system_u:object_r:var_run_t:s0$`},
		{"stat -c %C /dev/null", `^system_u:object_r:null_device_t:s0$`},
		{"grep ^SELINUX= /etc/selinux/config", `^SELINUX=enforcing$`},
	} {
		if got := run(c.cmd); !regexp.MustCompile(c.want).MatchString(got) {
			t.Errorf("%s = %q, want %s", c.cmd, got, c.want)
		}
	}
	if got := run("cat /proc/$(systemctl show -P MainPID containerd)/attr/current"); strings.Contains(got, "unconfined") || strings.Contains(got, "init_t") {
		t.Errorf("containerd runs as %s, want a domain of its own", got)
	}

	t.Run("container", func(t *testing.T) {
		// The container's root: the node's signed /usr bound read-only by
		// the runtime, in a directory labelled for containers.
		run("mkdir -p /tmp/c/rootfs && cd /tmp/c/rootfs && mkdir -p usr proc dev sys tmp etc run && ln -s usr/bin bin && ln -s usr/lib lib && ln -s usr/lib64 lib64 && ln -s usr/sbin sbin && chcon -R -t container_file_t /tmp/c")
		got := run("ctr run --rm --mount type=bind,src=/usr,dst=/usr,options=rbind:ro --rootfs /tmp/c/rootfs c1 /usr/bin/echo hello-from-crun")
		if !strings.Contains(got, "hello-from-crun") {
			t.Errorf("ctr run under SELinux enforcing: %q", got)
		}
		if got := run(avcDenials); got != "" {
			t.Errorf("AVC denials after the container ran:\n%s", got)
		}
	})
}
