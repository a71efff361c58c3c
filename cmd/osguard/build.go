package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/image"
)

func init() { register(newBuildCmd) }

// sourceDateEpoch returns the build time: --timestamp, then SOURCE_DATE_EPOCH, then 0.
func sourceDateEpoch(flag int64, set bool) (int64, error) {
	if set {
		return flag, nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
		}
		return n, nil
	}
	return 0, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newBuildCmd() *cobra.Command {
	var (
		configPath, keys, out string
		o                     image.BuildOptions
		timestamp             int64
		asJSON, quiet         bool
		attestOn              bool
		profile               string
		ov                    image.Overrides
	)
	cmd := &cobra.Command{
		Use:   "build [-c osguard.yaml] [--keys DIR] [-o DIR]",
		Short: "Build a signed, measured, bootable OS Guard disk image",
		Long: `build turns a rootfs and a Debian kernel into a bootable disk whose /usr is a
dm-verity protected EROFS volume with a signed root hash, booted by a signed
UKI, with a signed IPE policy, predicted measurements and SBOMs. It needs no
root and no loop devices.

Without -c it builds an embedded profile (--profile, default "default"):
  default        a busybox-static userland with a root shell on the serial
                 console and osguard in /usr/bin, the fetched Debian trixie
                 6.12 kernel, IPE enforcing, SELinux off;
  containerhost  systemd and containerd from Debian trixie packages, which
                 apt resolves and downloads through the private apt state of
                 'make deps' and osguard unpacks without root or maintainer
                 scripts; crun runs the containers; SELinux permissive with
                 Debian's reference policy (--selinux enforcing enforces);
                 no console shell unless --debug-console.
'osguard build --print-profile NAME' shows a profile as a starting point for
your own. The flags --selinux, --ipe, --image-version, --init and
--debug-console override the config or profile.

Outputs in DIR (default ./out): disk.raw, uki.efi, ipe.policy,
ipe.policy.p7s, measurements.json, sbom.spdx.json, sbom.cdx.json,
ovmf-vars.fd (your keys enrolled, for 'osguard run'), and keys/ when the
keys were created here. A failed build leaves DIR as it was.

The build time comes from --timestamp or SOURCE_DATE_EPOCH (default 0); with
the same inputs and time, two builds give the same bytes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if p, _ := cmd.Flags().GetBool("print-default"); p {
				_, err := cmd.OutOrStdout().Write(image.DefaultYAML())
				return err
			}
			if p, _ := cmd.Flags().GetString("print-profile"); p != "" {
				b, err := image.ProfileYAML(p)
				if err != nil {
					return failWith(2, err)
				}
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if configPath != "" && profile != "" {
				return failWith(2, fmt.Errorf("give -c or --profile, not both"))
			}
			if configPath != "" {
				if fi, err := os.Stat(configPath); err == nil && fi.IsDir() {
					return fmt.Errorf("-c %s: is a directory, not an osguard.yaml", configPath)
				}
			}
			if fi, err := os.Stat(out); err == nil && !fi.IsDir() {
				return fmt.Errorf("-o %s: exists and is not a directory", out)
			}
			var cfg *image.Config
			var err error
			if profile != "" {
				if _, perr := image.ProfileYAML(profile); perr != nil {
					return failWith(2, perr)
				}
				cfg, err = image.LoadProfile(profile)
			} else {
				cfg, err = image.LoadConfig(configPath)
			}
			if err != nil {
				return err
			}
			if err := cfg.Apply(ov); err != nil {
				return failWith(2, err)
			}
			if attestOn {
				if err := cfg.EnableAttestation(); err != nil {
					return err
				}
			}
			o.Config, o.KeysDir, o.OutDir, o.ToolVersion = cfg, keys, out, version
			if o.Epoch, err = sourceDateEpoch(timestamp, cmd.Flags().Changed("timestamp")); err != nil {
				return err
			}
			var progress io.Writer
			if !quiet && !asJSON && isTerminal(os.Stderr) {
				progress = cmd.ErrOrStderr()
			}
			o.Progress = progress
			res, err := image.Build(o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"outDir": res.OutDir, "keys": res.KeysDir, "keysCreated": res.KeysCreated, "files": res.Files, "usrImageBytes": res.UsrSize, "measurements": res.Measurements})
			}
			w := cmd.OutOrStdout()
			m := res.Measurements
			fmt.Fprintf(w, "built %s %s in %s\n", m.Image, m.Version, res.OutDir)
			if res.KeysCreated {
				fmt.Fprintf(w, "  keys:          created in %s (keep db.key safe)\n", res.KeysDir)
			}
			fmt.Fprintf(w, "  /usr:          %d files, EROFS %d bytes, root hash %s\n", res.Files, res.UsrSize, m.Usr.RootHash)
			fmt.Fprintf(w, "  UKI:           signed by %s, Authenticode sha256 %s\n", m.UKI.Signer, m.PCR4.UKIAuthenticodeSHA256)
			fmt.Fprintf(w, "  PCR 11:        %s (predicted)\n", m.PCR11.SHA256)
			fmt.Fprintf(w, "  IPE:           %s %s, %s\n", m.IPE.PolicyName, m.IPE.PolicyVersion, m.IPE.Mode)
			fmt.Fprintf(w, "  SELinux:       %s\n", m.SELinux)
			fmt.Fprintf(w, "boot it with: osguard run %s\n", res.OutDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&configPath, "config", "c", "", "osguard.yaml (default: the embedded default profile)")
	f.StringVar(&keys, "keys", "", "directory with PK, KEK and db (overrides the config's keys)")
	f.StringVarP(&out, "output", "o", "out", "output directory")
	f.Int64Var(&timestamp, "timestamp", 0, "build time in Unix seconds (default: SOURCE_DATE_EPOCH, else 0)")
	f.StringVar(&o.InitBinary, "init-binary", "", "static osguard-init (default: next to this osguard)")
	f.StringVar(&o.OsguardBinary, "osguard-binary", "", "static osguard for /usr/bin (default: this osguard)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress lines")
	f.Bool("print-default", false, "print the embedded default profile and exit")
	f.String("print-profile", "", "print the embedded profile `NAME` and exit")
	f.StringVar(&profile, "profile", "", "build the embedded profile `NAME` (default, containerhost)")
	f.StringVar(&ov.SELinux, "selinux", "", "SELinux mode: off, permissive or enforcing")
	f.StringVar(&ov.IPE, "ipe", "", "IPE mode: enforce or audit")
	f.StringVar(&ov.ImageVersion, "image-version", "", "image version `V` (metadata.version; the IPE policy version follows it unless the config sets one)")
	f.StringVar(&ov.Init, "init", "", "the userland's init `PATH` (spec.rootfs.init)")
	f.StringVar(&ov.Flavour, "flavour", "", "guard (IPE, signed verity, SELinux) or standard (AppArmor, no IPE)")
	f.BoolVar(&ov.DebugConsole, "debug-console", false, "a root shell on the serial console (tests, demos; never production)")
	f.BoolVar(&attestOn, "attest", false, "start the attestation agent on the node (spec.attestation; default verifier "+image.DefaultVerifierURL+", which 'osguard run --verifier' forwards)")
	return cmd
}
