package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/secureboot"
)

func init() { register(newKeysCmd) }

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create and manage the Secure Boot key hierarchy (PK, KEK, db)",
	}
	cmd.AddCommand(newKeysInitCmd())
	return cmd
}

func newKeysInitCmd() *cobra.Command {
	var opts secureboot.KeygenOptions
	var notBefore string
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Create PK, KEK, db and containers keys, certificates, ESLs and .auth files",
		Long: `init writes DIR/{PK,KEK,db,containers}.key (PEM, mode 0600) and .crt
(PEM), the certificates as EFI signature lists (.esl), the signed variable
updates for enrollment (.auth: PK signed by PK, KEK by PK, db by KEK) and
DIR/owner.guid. An existing DIR is only replaced with --force.

db.key signs the boot chain (the UKI). containers.key signs container image
layers ('osguard image sign'): the node's kernel checks each layer's dm-verity
root hash signature against the UEFI db certificates, so the image build
enrolls containers.crt in db beside db.crt (db.auth holds both). Any
certificate in db can also sign boot binaries: the firmware would start an
EFI program signed with containers.key. That is why the image key is a key of
its own, kept apart from the UKI key: give the publisher containers.key only,
never db.key, and guard containers.key like a boot signing key. Only
containers.crt is needed to build images and on nodes.

The certificates' validity starts, and the .auth files are timestamped, at
--not-before, else at $SOURCE_DATE_EPOCH, else at the Unix epoch; the clock is
read only for --not-before now.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := sbNotBefore(notBefore)
			if err != nil {
				return failWith(2, err)
			}
			opts.Time = t
			dir := args[0]
			if fi, err := os.Stat(dir); err == nil && !fi.IsDir() && !opts.Force {
				return fmt.Errorf("%s exists and is not a directory (--force replaces it)", dir)
			}
			if parent := filepath.Dir(filepath.Clean(dir)); parent != "." {
				if fi, err := os.Stat(parent); err != nil {
					return fmt.Errorf("cannot create %s: %s: %w", dir, parent, pathErr(err))
				} else if !fi.IsDir() {
					return fmt.Errorf("cannot create %s: %s is not a directory", dir, parent)
				}
			}
			if err := secureboot.GenerateKeys(dir, opts); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: PK, KEK, db (.key .crt .esl .auth), containers (.key .crt .esl), %s\n", args[0], secureboot.OwnerFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.SubjectPrefix, "subject-prefix", "osguard", "common name prefix of the certificates (\"<prefix> PK\")")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace an existing DIR")
	cmd.Flags().StringVar(&notBefore, "not-before", "", "validity start: RFC 3339 time, Unix seconds or \"now\" (default $SOURCE_DATE_EPOCH, else 1970-01-01)")
	return cmd
}

// sbNotBefore resolves the validity start of new keys.
func sbNotBefore(flag string) (time.Time, error) {
	switch {
	case flag == "now":
		return time.Now(), nil
	case flag != "":
		if t, err := time.Parse(time.RFC3339, flag); err == nil {
			return t, nil
		}
		if s, err := strconv.ParseInt(flag, 10, 64); err == nil {
			return time.Unix(s, 0), nil
		}
		return time.Time{}, fmt.Errorf("--not-before %q: want RFC 3339, Unix seconds or \"now\"", flag)
	}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		s, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", e)
		}
		return time.Unix(s, 0), nil
	}
	return time.Time{}, nil
}
