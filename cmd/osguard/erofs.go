package main

import (
	"archive/tar"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/selinux"
)

func init() { register(newErofsCmd) }

func newErofsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "erofs",
		Short: "Build EROFS images from a directory or a tar stream",
	}
	cmd.AddCommand(newErofsBuildCmd())
	return cmd
}

func newErofsBuildCmd() *cobra.Command {
	var (
		timestamp    int64
		uuidStr      string
		label        string
		allRoot      bool
		clampMtime   bool
		fileContexts string
		mountPoint   string
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "build [flags] SOURCE OUTPUT",
		Short: "Build a reproducible EROFS image",
		Long: `Build an uncompressed EROFS image from SOURCE, which is a directory (read
with lstat, symlinks never followed), a tar file (plain, gzip, zstd or xz), or
"-" for a tar stream on standard input. Owners, modes, mtimes, device numbers,
hard links and xattrs are kept exactly.

--timestamp sets the image build time (default: $SOURCE_DATE_EPOCH, else 0);
file mtimes stay as in the source unless --clamp-mtime clamps newer ones to it.
--file-contexts labels every file (security.selinux) as selabel_lookup(3)
does for its path below --mount-point. OUTPUT is written to a temporary file
and renamed, so a failure leaves nothing behind.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, out := args[0], args[1]
			opts := erofs.Options{Label: label, AllRoot: allRoot, ClampMtime: clampMtime, MountPoint: mountPoint}
			switch {
			case cmd.Flags().Changed("timestamp"):
				opts.BuildTime = timestamp
			default:
				t, err := sourceDateEpoch(0, false)
				if err != nil {
					return failWith(2, err)
				}
				opts.BuildTime = t
			}
			if uuidStr != "" {
				u, err := parseErofsUUID(uuidStr)
				if err != nil {
					return failWith(2, fmt.Errorf("--uuid: %w", err))
				}
				opts.UUID = u
			}
			if len(label) > 16 {
				return failWith(2, fmt.Errorf("--label: %q is longer than 16 bytes", label))
			}
			if !filepath.IsAbs(mountPoint) {
				return failWith(2, fmt.Errorf("--mount-point: %q is not absolute", mountPoint))
			}
			if fileContexts != "" {
				c, err := selinux.LoadFileContexts(fileContexts)
				if err != nil {
					return err
				}
				opts.Labeler = c
			}
			tmp, err := atomicfile.Create(out, 0o644)
			if err != nil {
				return err
			}
			defer tmp.Abort()
			opts.TempDir = filepath.Dir(out)
			var size int64
			if src == "-" {
				size, err = erofs.BuildFromTar(cmd.InOrStdin(), tmp, opts)
			} else if fi, statErr := os.Stat(src); statErr != nil {
				return fmt.Errorf("SOURCE %s: %w", src, pathErr(statErr))
			} else if fi.IsDir() {
				size, err = erofs.BuildFromDir(src, tmp, opts)
			} else {
				var f *os.File
				if f, err = os.Open(src); err != nil {
					return fmt.Errorf("SOURCE %s: %w", src, pathErr(err))
				}
				size, err = erofs.BuildFromTar(f, tmp, opts)
				f.Close()
			}
			if err != nil {
				name := src
				if src == "-" {
					name = "standard input"
				}
				if errors.Is(err, tar.ErrHeader) {
					return fmt.Errorf("%s: not a tar archive (plain, gzip, zstd or xz), or a damaged one", name)
				}
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := tmp.Commit(); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"output": out, "size": size, "buildTime": opts.BuildTime,
					"uuid": formatErofsUUID(opts.UUID)})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d bytes\n", out, size)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&timestamp, "timestamp", 0, "image build time in seconds since the epoch (default $SOURCE_DATE_EPOCH, else 0)")
	fl.StringVar(&uuidStr, "uuid", "", "volume UUID (default all zero)")
	fl.StringVar(&label, "label", "", "volume label, at most 16 bytes")
	fl.BoolVar(&allRoot, "all-root", false, "make every file owned by root (uid 0, gid 0)")
	fl.BoolVar(&clampMtime, "clamp-mtime", false, "clamp mtimes newer than the build time to it")
	fl.StringVar(&fileContexts, "file-contexts", "", "SELinux file_contexts file to label files with")
	fl.StringVar(&mountPoint, "mount-point", "/", "where the image will be mounted (for label lookups)")
	fl.BoolVar(&asJSON, "json", false, "print a JSON object")
	return cmd
}

func parseErofsUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := strings.ReplaceAll(s, "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 || (strings.Contains(s, "-") && len(s) != 36) {
		return u, fmt.Errorf("%q is not a UUID", s)
	}
	copy(u[:], b)
	return u, nil
}

func formatErofsUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
