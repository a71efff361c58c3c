package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/initrd"
	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/atomicfile"
)

func init() { register(newInitrdCmd) }

func newInitrdCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "initrd",
		Short: "Build the initramfs: osguard-init, kernel modules, policies",
	}
	cmd.AddCommand(newInitrdBuildCmd())
	return cmd
}

func newInitrdBuildCmd() *cobra.Command {
	var (
		kernelDeb, kernelRoot, initPath, policy, policyName, selinuxPolicy, out string
		modules, adds                                                           []string
		cfg                                                                     bootconfig.Config
		compression                                                             string
		asJSON                                                                  bool
	)
	cmd := &cobra.Command{
		Use:   "build --kernel-deb F -o OUT",
		Short: "Write a reproducible, compressed newc initramfs",
		Long: `Write a reproducible initramfs (newc cpio, zstd or xz) holding osguard-init as
/init, the dependency closure of the kernel modules it needs (dm-verity, erofs,
efivarfs, virtio/AHCI/SCSI disks, vfat, overlay, plus --module), the signed IPE
policy, an optional SELinux binary policy and the init's configuration.

The kernel comes from a Debian package (--kernel-deb) or its unpacked tree
(--kernel-root). osguard-init is taken from --init-binary, or from the file
osguard-init next to this program. SOURCE_DATE_EPOCH sets the mtimes (0 by
default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (kernelDeb == "") == (kernelRoot == "") {
				return failWith(2, errors.New("give exactly one of --kernel-deb and --kernel-root"))
			}
			if out == "" {
				return failWith(2, fmt.Errorf("required flag -o/--output not set\nRun '%s --help' for usage.", cmd.CommandPath()))
			}
			cfg.Defaults()
			if err := cfg.Validate(); err != nil {
				return failWith(2, err)
			}
			if kernelDeb != "" {
				if fi, err := os.Stat(kernelDeb); err != nil {
					return fmt.Errorf("--kernel-deb %s: %w", kernelDeb, pathErr(err))
				} else if fi.IsDir() {
					return fmt.Errorf("--kernel-deb %s: is a directory (an unpacked package goes to --kernel-root)", kernelDeb)
				}
			}
			opts := initrd.Options{KernelDeb: kernelDeb, KernelRoot: kernelRoot, Modules: modules,
				PolicyName: policyName, Config: cfg, Compression: compression}
			if initPath == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				initPath = filepath.Join(filepath.Dir(exe), "osguard-init")
			}
			opts.InitPath = initPath
			var err error
			if policy != "" {
				if opts.Policy, err = readInput("--policy", policy); err != nil {
					return err
				}
			}
			if selinuxPolicy != "" {
				if opts.SELinuxPolicy, err = readInput("--selinux-policy", selinuxPolicy); err != nil {
					return err
				}
			}
			for _, a := range adds {
				src, dst, ok := strings.Cut(a, ":")
				if !ok || src == "" || !strings.HasPrefix(dst, "/") {
					return failWith(2, fmt.Errorf("--add %q: want SRC:/DST", a))
				}
				opts.Add = append(opts.Add, initrd.File{Src: src, Dst: dst})
			}
			if opts.MTime, err = sourceDateEpoch(0, false); err != nil {
				return failWith(2, err)
			}
			var buf bytes.Buffer
			if err := initrd.Build(opts, &buf); err != nil {
				return err
			}
			if err := atomicfile.WriteFile(out, buf.Bytes(), 0o644); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"output": out, "size": buf.Len()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d bytes\n", out, buf.Len())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kernelDeb, "kernel-deb", "", "Debian kernel package (linux-image-*.deb)")
	f.StringVar(&kernelRoot, "kernel-root", "", "unpacked kernel package (holds boot/ and usr/lib/modules/)")
	f.StringArrayVar(&modules, "module", nil, "extra kernel module to include with its dependencies (repeatable)")
	f.StringVar(&policy, "policy", "", "signed IPE policy (attached PKCS#7, DER)")
	f.StringVar(&policyName, "policy-name", "", "IPE policy name (default: read from the policy)")
	f.StringVar(&selinuxPolicy, "selinux-policy", "", "binary SELinux policy to load at boot")
	f.StringArrayVar(&adds, "add", nil, "extra file as SRC:/DST (repeatable)")
	f.StringVar(&initPath, "init-binary", "", "osguard-init binary (default: osguard-init next to osguard)")
	// --init was the first name; 'osguard build' calls it --init-binary.
	f.StringVar(&initPath, "init", "", "same as --init-binary")
	_ = f.MarkHidden("init")
	f.StringVar(&cfg.IPE, "ipe", bootconfig.IPEEnforce, "default IPE mode: enforce or audit")
	f.StringVar(&cfg.SELinux, "selinux", bootconfig.SELinuxOff, "default SELinux mode: off, permissive or enforcing")
	f.StringVar(&cfg.VerityOnCorruption, "verity-on-corruption", bootconfig.CorruptionEIO, "default dm-verity corruption handling: eio, restart or panic")
	f.StringVar(&cfg.Init, "userland-init", bootconfig.DefaultInit, "default init of the userland")
	f.StringVar(&compression, "compress", initrd.CompressZstd, "compression: zstd, xz or none")
	f.StringVarP(&out, "output", "o", "", "output file")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
