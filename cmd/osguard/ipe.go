package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/ipe"
)

func init() { register(newIPECmd) }

func newIPECmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ipe",
		Short: "Check, format, simulate and sign IPE policies (Linux 6.12 rules)",
	}
	cmd.AddCommand(newIPECheckCmd(), newIPEFmtCmd(), newIPEEvalCmd(), newIPESignCmd())
	return cmd
}

// ipeSilent makes main exit 1 without printing: the command already said why.
var ipeSilent = errors.New("")

// ipeLoad reads and parses a policy; a parse error is printed as
// FILE:LINE: reason (stderr) and turned into exit status 1.
func ipeLoad(cmd *cobra.Command, path string) (*ipe.Policy, []byte, error) {
	text, err := readInput("", path)
	if err != nil {
		return nil, nil, err
	}
	p, err := ipe.Parse(text)
	if err != nil {
		var pe *ipe.ParseError
		if errors.As(err, &pe) {
			fmt.Fprintf(cmd.ErrOrStderr(), "%s:%d: %s\n", path, pe.Line, pe.Reason)
			return nil, nil, failWith(1, ipeSilent)
		}
		return nil, nil, failWith(1, err)
	}
	return p, text, nil
}

func newIPECheckCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check FILE...",
		Short: "Check that the 6.12 kernel accepts a policy (FILE:LINE: reason)",
		Long: `check parses each FILE with the rules of the Linux 6.12 IPE parser. For a
policy the kernel would refuse it prints FILE:LINE: reason on stderr (with
--json, a JSON array on stdout, with the errno the kernel would return). It
exits 0 when every FILE is valid, 1 otherwise.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type result struct {
				File    string `json:"file"`
				Valid   bool   `json:"valid"`
				Line    int    `json:"line,omitempty"`
				Reason  string `json:"reason,omitempty"`
				Errno   string `json:"errno,omitempty"`
				Name    string `json:"name,omitempty"`
				Version string `json:"version,omitempty"`
			}
			var results []result
			bad := false
			for _, path := range args {
				text, err := readInput("", path)
				if err != nil {
					return err
				}
				r := result{File: path}
				p, err := ipe.Parse(text)
				var pe *ipe.ParseError
				switch {
				case errors.As(err, &pe):
					bad = true
					r.Line, r.Reason, r.Errno = pe.Line, pe.Reason, ipeErrnoName(pe)
					if !asJSON {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s:%d: %s\n", path, pe.Line, pe.Reason)
					}
				case err != nil:
					return err
				default:
					r.Valid, r.Name, r.Version = true, p.Name, p.Version.String()
				}
				results = append(results, r)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			}
			if bad {
				return failWith(1, ipeSilent)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as a JSON array on stdout")
	return cmd
}

// ipeErrnoName names the errno the kernel's write to new_policy returns.
func ipeErrnoName(pe *ipe.ParseError) string {
	names := map[string]string{"bad message": "EBADMSG", "invalid argument": "EINVAL",
		"numerical result out of range": "ERANGE", "permission denied": "EACCES", "file name too long": "ENAMETOOLONG"}
	if n, ok := names[strings.ToLower(pe.Errno.Error())]; ok {
		return n
	}
	return pe.Errno.Error()
}

func newIPEFmtCmd() *cobra.Command {
	var write bool
	cmd := &cobra.Command{
		Use:   "fmt FILE",
		Short: "Print a policy in canonical form (comments are dropped)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, _, err := ipeLoad(cmd, args[0])
			if err != nil {
				return err
			}
			out := p.Format()
			if write {
				return atomicfile.WriteFile(args[0], out, 0o644)
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().BoolVarP(&write, "write", "w", false, "rewrite FILE in place instead of printing")
	return cmd
}

func newIPEEvalCmd() *cobra.Command {
	var (
		opName, rootHash, fsDigest   string
		bootVerified, dmvSig, fsvSig bool
		asJSON                       bool
	)
	cmd := &cobra.Command{
		Use:   "eval FILE --op OP [facts]",
		Short: "Decide an operation as the kernel would: ALLOW or DENY, and why",
		Long: `eval decides --op for a file described by the fact flags, as IPE would
under the policy FILE: the first matching rule of the operation, else its
DEFAULT, else the global DEFAULT. It prints ALLOW or DENY, then FILE:LINE and
the rule or default that decided. Facts not given are false.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := ipe.ParseOp(opName)
			if err != nil {
				return failWith(2, err)
			}
			f := ipe.Facts{BootVerified: bootVerified, DMVeritySignature: dmvSig, FSVeritySignature: fsvSig}
			for _, d := range []struct {
				val string
				dst **ipe.Digest
			}{{rootHash, &f.DMVerityRootHash}, {fsDigest, &f.FSVerityDigest}} {
				if d.val == "" {
					continue
				}
				dg, err := ipe.ParseDigest(d.val)
				if err != nil {
					return failWith(2, err)
				}
				*d.dst = &dg
			}
			p, _, err := ipeLoad(cmd, args[0])
			if err != nil {
				return err
			}
			d := p.Evaluate(op, f)
			verdict := "DENY"
			if d.Allow {
				verdict = "ALLOW"
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"decision": verdict, "allow": d.Allow, "line": d.Line, "rule": d.Rule, "op": op.String()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s:%d: %s\n", verdict, args[0], d.Line, d.Rule)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opName, "op", "", "operation: EXECUTE, FIRMWARE, KMODULE, KEXEC_IMAGE, KEXEC_INITRAMFS, POLICY or X509_CERT")
	fl.BoolVar(&bootVerified, "boot-verified", false, "the file is on the initramfs")
	fl.StringVar(&rootHash, "dmverity-roothash", "", "the file is on a dm-verity volume with this root hash (ALG:HEX)")
	fl.BoolVar(&dmvSig, "dmverity-signature", false, "the dm-verity volume's root hash signature was verified")
	fl.StringVar(&fsDigest, "fsverity-digest", "", "the file's fs-verity digest (ALG:HEX)")
	fl.BoolVar(&fsvSig, "fsverity-signature", false, "the file has a verified fs-verity signature")
	fl.BoolVar(&asJSON, "json", false, "print the decision as JSON")
	cmd.MarkFlagRequired("op")
	return cmd
}

func newIPESignCmd() *cobra.Command {
	var keyPath, certPath, out string
	cmd := &cobra.Command{
		Use:   "sign --key KEY --cert CERT -o OUT FILE",
		Short: "Check a policy and sign it (attached PKCS#7) for IPE",
		Long: `sign checks FILE as 'osguard ipe check' does, then writes it to OUT as an
attached PKCS#7 DER signature (sha256, no authenticated attributes), which
the kernel accepts at /sys/kernel/security/ipe/new_policy when it trusts
CERT (on an osguard node: the db certificate, in the .platform keyring).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, text, err := ipeLoad(cmd, args[0])
			if err != nil {
				return err
			}
			key, cert, err := keyfile.LoadPair(keyPath, certPath)
			if err != nil {
				return err
			}
			der, err := ipe.Sign(text, key, cert)
			if err != nil {
				return err
			}
			return atomicfile.WriteFile(out, der, 0o644)
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "PEM private key (the db key)")
	cmd.Flags().StringVar(&certPath, "cert", "", "PEM or DER certificate of the key")
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the DER PKCS#7")
	for _, f := range []string{"key", "cert", "output"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}
