package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/osguard/osguard/internal/atomicfile"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/secureboot"
)

func init() { register(newSBCmd) }

func newSBCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sb",
		Short: "Secure Boot: enroll keys, make OVMF VARS, sign and verify PEs",
	}
	cmd.AddCommand(newSBEnrollCmd(), newSBVarsCmd(), newSBSignCmd(), newSBVerifyCmd(), newSBStatusCmd())
	return cmd
}

func newSBEnrollCmd() *cobra.Command {
	var keys, efivars string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "enroll --keys DIR",
		Short: "Enroll db, KEK and PK through efivarfs (machine in setup mode)",
		Long: `enroll writes DIR/db.auth, DIR/KEK.auth and DIR/PK.auth (made by 'osguard keys
init'; the private keys are not needed) to the firmware through efivarfs, in
this order and each in one write. Writing PK ends setup mode; Secure Boot is
on from the next boot. It refuses to write anything unless SetupMode=1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sbRequire(cmd, "keys"); err != nil {
				return err
			}
			if err := sbCheckEfivars(efivars); err != nil {
				return err
			}
			u, err := secureboot.LoadAuthUpdates(keys)
			if err != nil {
				return err
			}
			before, after, err := secureboot.Enroll(secureboot.Efivarfs{Dir: efivars}, u)
			out := cmd.OutOrStdout()
			if asJSON {
				rep := map[string]any{"enrolled": err == nil}
				if before != nil {
					rep["before"] = sbStateJSON(before)
				}
				if after != nil {
					rep["after"] = sbStateJSON(after)
				}
				if err != nil {
					rep["error"] = err.Error()
				}
				sbPrintJSON(out, rep)
			} else {
				if before != nil {
					fmt.Fprintf(out, "before: SetupMode=%d SecureBoot=%d\n", sbBool(before.SetupMode), sbBool(before.SecureBoot))
				}
				if after != nil {
					fmt.Fprintf(out, "after: SetupMode=%d SecureBoot=%d (Secure Boot takes effect at the next boot)\n", sbBool(after.SetupMode), sbBool(after.SecureBoot))
				}
			}
			if errors.Is(err, secureboot.ErrNotSetupMode) {
				return failWith(1, err)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&keys, "keys", "", "key directory made by 'osguard keys init' (required)")
	cmd.Flags().StringVar(&efivars, "efivars", secureboot.DefaultEfivarfs, "efivarfs mount point")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return cmd
}

func newSBVarsCmd() *cobra.Command {
	var keys, template, output string
	cmd := &cobra.Command{
		Use:   "vars --keys DIR --template OVMF_VARS_4M.fd -o VARS.fd",
		Short: "Enroll PK, KEK and db offline into a copy of an OVMF VARS file",
		Long: `vars copies the edk2/OVMF VARS file --template and writes PK, KEK and db from
DIR (made by 'osguard keys init') into it as authenticated variables, so that
the first boot with the output already runs with Secure Boot on. The template
stays as it is; -o is written atomically.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sbRequire(cmd, "keys", "output"); err != nil {
				return err
			}
			h, err := secureboot.LoadHierarchy(keys)
			if err != nil {
				return err
			}
			tmpl, err := readInput("--template", template)
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			if err := secureboot.WriteVarstore(tmpl, h, &buf); err != nil {
				return fmt.Errorf("--template %s: %w", template, err)
			}
			return atomicfile.WriteFile(output, buf.Bytes(), 0o644)
		},
	}
	cmd.Flags().StringVar(&keys, "keys", "", "key directory made by 'osguard keys init' (required)")
	cmd.Flags().StringVar(&template, "template", "/usr/share/OVMF/OVMF_VARS_4M.fd", "edk2 VARS file to start from")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output VARS file (required)")
	return cmd
}

func newSBSignCmd() *cobra.Command {
	var keyPath, certPath, output string
	cmd := &cobra.Command{
		Use:   "sign --key KEY --cert CERT -o OUT IN",
		Short: "Sign a PE image (UKI, stub, kernel) with Authenticode",
		Long: `sign writes IN to OUT with an Authenticode signature made by KEY, whose
certificate CERT is embedded, and the PE checksum updated. Signatures IN
already had are replaced. IN is not changed; OUT is written atomically.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sbRequire(cmd, "key", "cert", "output"); err != nil {
				return err
			}
			key, cert, err := keyfile.LoadPair(keyPath, certPath)
			if err != nil {
				return err
			}
			in, err := readInput("", args[0])
			if err != nil {
				return err
			}
			out, err := secureboot.SignPE(in, key, cert)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return atomicfile.WriteFile(output, out, 0o644)
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "PEM private key (required)")
	cmd.Flags().StringVar(&certPath, "cert", "", "PEM certificate of the key (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "signed output file (required)")
	return cmd
}

func newSBVerifyCmd() *cobra.Command {
	var certPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify --cert CERT IN",
		Short: "Check a PE image's Authenticode signature by CERT (exit 1 if not)",
		Long: `verify checks that IN carries a valid Authenticode signature made by the key
of CERT, over IN's current content, as the firmware checks it against db. It
exits 0 when it does, 1 when the image is unsigned, modified or signed by
another key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sbRequire(cmd, "cert"); err != nil {
				return err
			}
			cert, err := keyfile.LoadCert(certPath)
			if err != nil {
				return err
			}
			in, err := readInput("", args[0])
			if err != nil {
				return err
			}
			verr := secureboot.VerifyPE(in, cert)
			digest, derr := secureboot.PEDigest(in)
			if asJSON {
				rep := map[string]any{"file": args[0], "valid": verr == nil, "cert": sbCertJSON(cert)}
				signers := []map[string]string{}
				if cs, err := secureboot.Signers(in); err == nil {
					for _, c := range cs {
						if c != nil {
							signers = append(signers, sbCertJSON(c))
						}
					}
				}
				rep["signers"] = signers
				if derr == nil {
					rep["authenticodeSha256"] = hex.EncodeToString(digest)
				}
				if verr != nil {
					rep["error"] = verr.Error()
				}
				sbPrintJSON(cmd.OutOrStdout(), rep)
			} else if verr == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: signature OK, signed by %s\n", args[0], cert.Subject)
			}
			if verr != nil {
				return failWith(1, fmt.Errorf("%s: %w", args[0], verr))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&certPath, "cert", "", "PEM certificate that must have made the signature (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return cmd
}

func newSBStatusCmd() *cobra.Command {
	var efivars string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show SecureBoot, SetupMode and the enrolled PK, KEK and db",
		Long: `status reads the SecureBoot, SetupMode, PK, KEK, db and dbx variables from
efivarfs and prints their values, the enrolled certificates (subject and
sha256 of the DER) and the number of dbx entries. It needs a machine booted
through UEFI.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sbCheckEfivars(efivars); err != nil {
				return err
			}
			st, err := secureboot.ReadState(secureboot.Efivarfs{Dir: efivars})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				sbPrintJSON(out, sbStateJSON(st))
				return nil
			}
			fmt.Fprintf(out, "SecureBoot %d\nSetupMode %d\nEnforcing %t\n", sbBool(st.SecureBoot), sbBool(st.SetupMode), st.Enforcing())
			for _, l := range []struct {
				name  string
				certs []*x509.Certificate
			}{{"PK", st.PK}, {"KEK", st.KEK}, {"db", st.DB}} {
				for _, c := range l.certs {
					fmt.Fprintf(out, "%s %s sha256:%s\n", l.name, c.Subject, sbFingerprint(c))
				}
			}
			if st.DBHashes > 0 {
				fmt.Fprintf(out, "db %d hash entries\n", st.DBHashes)
			}
			fmt.Fprintf(out, "dbx %d entries\n", st.DBXEntries)
			return nil
		},
	}
	cmd.Flags().StringVar(&efivars, "efivars", secureboot.DefaultEfivarfs, "efivarfs mount point")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// sbCheckEfivars refuses a missing or unmounted efivarfs: reading no
// variables there would otherwise look like "Secure Boot off, no keys".
// Every UEFI 2.x firmware has a SetupMode variable.
func sbCheckEfivars(dir string) error {
	if _, _, err := (secureboot.Efivarfs{Dir: dir}).Get(secureboot.VarSetupMode); err == nil {
		return nil
	}
	return fmt.Errorf("no UEFI variables in %s: not booted through UEFI, or efivarfs is not mounted (mount -t efivarfs efivarfs %s)", dir, dir)
}

// sbRequire reports missing required flags as a usage error (exit 2);
// cobra's MarkFlagRequired would exit 1.
func sbRequire(cmd *cobra.Command, names ...string) error {
	var missing []string
	for _, n := range names {
		if !cmd.Flags().Changed(n) {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return failWith(2, fmt.Errorf("required flag(s) %s not set\nRun '%s --help' for usage.", strings.Join(missing, ", "), cmd.CommandPath()))
	}
	return nil
}

func sbBool(b bool) int {
	if b {
		return 1
	}
	return 0
}

func sbFingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

func sbCertJSON(c *x509.Certificate) map[string]string {
	return map[string]string{"subject": c.Subject.String(), "issuer": c.Issuer.String(), "sha256": sbFingerprint(c)}
}

func sbStateJSON(st *secureboot.State) map[string]any {
	list := func(cs []*x509.Certificate) []map[string]string {
		out := []map[string]string{}
		for _, c := range cs {
			out = append(out, sbCertJSON(c))
		}
		return out
	}
	return map[string]any{
		"secureBoot": st.SecureBoot, "setupMode": st.SetupMode, "enforcing": st.Enforcing(),
		"pk": list(st.PK), "kek": list(st.KEK), "db": list(st.DB),
		"dbHashes": st.DBHashes, "dbxEntries": st.DBXEntries,
	}
}

func sbPrintJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
