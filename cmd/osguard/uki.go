package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/uki"
)

func init() { register(newUKICmd) }

func newUKICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "uki",
		Short: "Build and inspect Unified Kernel Images",
	}
	cmd.AddCommand(newUKIBuildCmd(), newUKIInspectCmd())
	return cmd
}

func newUKIBuildCmd() *cobra.Command {
	var (
		stub, linux, osrel, sbat, key, cert, out string
		cmdline, uname                           string
		initrds                                  []string
	)
	cmd := &cobra.Command{
		Use:   "build --stub STUB --linux VMLINUZ --initrd F [--initrd F ...] --cmdline STR --os-release F -o OUT.efi",
		Short: "Assemble a UKI from systemd-stub, a kernel and initrds",
		Long: `build appends .osrel, .cmdline, .uname, .linux and .initrd sections to
systemd-stub, with the same layout as systemd's ukify, and merges the SBAT
entries into the stub's .sbat section. Several --initrd files are
concatenated. With --key and --cert the UKI is signed (Authenticode) for
Secure Boot. OUT.efi is written atomically.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (key == "") != (cert == "") {
				return failWith(2, errors.New("--key and --cert go together"))
			}
			o := uki.Options{Cmdline: cmdline, Uname: uname}
			var err error
			if o.Stub, err = readInput("--stub", stub); err != nil {
				return err
			}
			if o.Linux, err = readInput("--linux", linux); err != nil {
				return err
			}
			for _, p := range initrds {
				b, err := readInput("--initrd", p)
				if err != nil {
					return err
				}
				o.Initrds = append(o.Initrds, b)
			}
			b, err := readInput("--os-release", osrel)
			if err != nil {
				return err
			}
			o.OSRelease = string(b)
			if sbat != "" {
				if o.SBAT, err = readInput("--sbat", sbat); err != nil {
					return err
				}
			}
			img, err := uki.Build(o)
			if err != nil {
				return err
			}
			if key != "" {
				k, c, err := keyfile.LoadPair(key, cert)
				if err != nil {
					return err
				}
				if img, err = secureboot.SignPE(img, k, c); err != nil {
					return err
				}
			}
			return atomicfile.WriteFile(out, img, 0o644)
		},
	}
	f := cmd.Flags()
	f.StringVar(&stub, "stub", "", "systemd-stub (linuxx64.efi.stub from systemd-boot-efi 257)")
	f.StringVar(&linux, "linux", "", "kernel image (EFI PE bzImage)")
	f.StringArrayVar(&initrds, "initrd", nil, "initrd; repeat to concatenate several")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line")
	f.StringVar(&osrel, "os-release", "", "os-release file for the .osrel section")
	f.StringVar(&uname, "uname", "", "kernel release for the .uname section")
	f.StringVar(&sbat, "sbat", "", "SBAT CSV file (default: ukify's UKI entry)")
	f.StringVar(&key, "key", "", "PEM private key to sign with (the db key)")
	f.StringVar(&cert, "cert", "", "PEM certificate of --key")
	f.StringVarP(&out, "output", "o", "", "output file")
	for _, n := range []string{"stub", "linux", "os-release", "output"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func newUKIInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect F",
		Short: "List a UKI's sections (size, sha256) and its signers",
		Long: `inspect lists the PE sections of F (name, size, file offset and the sha256
of their data), whether the PE checksum is right, and the subject, issuer,
serial and sha256 of each Authenticode signer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := openInput("", args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			info, err := uki.Inspect(f)
			if err != nil {
				return failWith(1, fmt.Errorf("%s: %w", args[0], err))
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Fprintf(w, "%-9s %10s %10s  %s\n", "SECTION", "SIZE", "OFFSET", "SHA256")
			for _, s := range info.Sections {
				fmt.Fprintf(w, "%-9s %10d %#10x  %s\n", s.Name, s.Size, s.Offset, s.SHA256)
			}
			ck := "ok"
			if info.Checksum != info.ComputedChecksum {
				ck = fmt.Sprintf("stored %#x, computed %#x", info.Checksum, info.ComputedChecksum)
			}
			fmt.Fprintf(w, "checksum: %s\n", ck)
			if len(info.Signers) == 0 {
				fmt.Fprintln(w, "signers: none")
			}
			for _, s := range info.Signers {
				fmt.Fprintf(w, "signer: %s (issuer %s, serial %s, sha256 %s)\n", s.Subject, s.Issuer, s.Serial, s.Fingerprint)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
