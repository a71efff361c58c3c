package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/internal/p7"
	"github.com/osguard/osguard/verity"
)

func init() { register(newVerityCmd) }

func newVerityCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verity",
		Short: "Make, check and sign dm-verity hash trees, as veritysetup does",
	}
	cmd.AddCommand(newVerityFormatCmd(), newVerityVerifyCmd(), newVerityDumpCmd(),
		newVeritySignCmd(), newVerityVerifySigCmd())
	return cmd
}

// verityFlags are veritysetup's tree options, shared by format and verify.
type verityFlags struct {
	hash         string
	dataBS       uint32
	hashBS       uint32
	salt         string
	uuid         string
	hashOffset   uint64
	dataBlocks   uint64
	noSuperblock bool
	format       uint32
	asJSON       bool
}

func (f *verityFlags) add(cmd *cobra.Command, defaults bool) {
	fl := cmd.Flags()
	alg, bs, format := "", uint32(0), uint32(0)
	if defaults {
		alg, bs, format = verity.DefaultHashAlgorithm, verity.DefaultBlockSize, verity.DefaultHashFormat
	}
	fl.StringVar(&f.hash, "hash", alg, "hash algorithm (sha256, sha512, sha1, sha224, sha384)")
	fl.Uint32Var(&f.dataBS, "data-block-size", bs, "data block size in bytes (512-4096, power of two)")
	fl.Uint32Var(&f.hashBS, "hash-block-size", bs, "hash block size in bytes (512-4096, power of two)")
	fl.StringVar(&f.salt, "salt", "", "salt as hex, or - for none (format default: 32 random bytes)")
	fl.StringVar(&f.uuid, "uuid", "", "UUID for the superblock (format default: random)")
	fl.Uint64Var(&f.hashOffset, "hash-offset", 0, "byte offset of the superblock/tree on the hash device")
	fl.Uint64Var(&f.dataBlocks, "data-blocks", 0, "number of data blocks (default: the whole data device)")
	fl.BoolVar(&f.noSuperblock, "no-superblock", false, "do not write (or read) a superblock")
	fl.Uint32Var(&f.format, "format", format, "hash format: 1 (normal) or 0 (Chrome OS)")
	fl.BoolVar(&f.asJSON, "json", false, "print a JSON object")
}

func (f *verityFlags) params(cmd *cobra.Command, random bool) (verity.Params, error) {
	p := verity.Params{
		HashAlgorithm: f.hash, DataBlockSize: f.dataBS, HashBlockSize: f.hashBS, HashFormat: f.format,
		DataBlocks: f.dataBlocks, HashOffset: f.hashOffset, NoSuperblock: f.noSuperblock,
	}
	switch {
	case f.salt == "-":
		p.Salt = []byte{}
	case f.salt != "":
		s, err := parseHexArg("--salt", f.salt)
		if err != nil {
			return p, err
		}
		p.Salt = s
	case random:
		p.Salt = make([]byte, 32)
		if _, err := rand.Read(p.Salt); err != nil {
			return p, err
		}
	}
	switch {
	case f.uuid != "":
		u, err := verity.ParseUUID(f.uuid)
		if err != nil {
			return p, failWith(2, fmt.Errorf("--uuid: %w", err))
		}
		p.UUID = u
	case random && !f.noSuperblock:
		if _, err := rand.Read(p.UUID[:]); err != nil {
			return p, err
		}
		p.UUID[6] = p.UUID[6]&0x0f | 0x40
		p.UUID[8] = p.UUID[8]&0x3f | 0x80
	}
	if !cmd.Flags().Changed("format") && !random {
		// verify: let the superblock decide unless --format was given.
		p.HashFormat = 0
		if f.noSuperblock {
			p.HashFormat = verity.DefaultHashFormat
		}
	}
	return p, nil
}

// verityInfo is what format prints, and dump without the root hash.
type verityInfo struct {
	Device         string `json:"device"`
	RootHash       string `json:"rootHash,omitempty"`
	Salt           string `json:"salt"`
	UUID           string `json:"uuid"`
	HashAlgorithm  string `json:"hashAlgorithm"`
	HashFormat     uint32 `json:"hashFormat"`
	DataBlockSize  uint32 `json:"dataBlockSize"`
	HashBlockSize  uint32 `json:"hashBlockSize"`
	DataBlocks     uint64 `json:"dataBlocks"`
	HashBlocks     uint64 `json:"hashBlocks"`
	HashOffset     uint64 `json:"hashOffset"`
	HashStartBlock uint64 `json:"hashStartBlock"`
	HashDeviceSize int64  `json:"hashDeviceSize"`
	Superblock     bool   `json:"superblock"`
}

func infoOf(dev string, p verity.Params, root []byte) (*verityInfo, error) {
	res, err := layoutOf(p)
	if err != nil {
		return nil, err
	}
	in := &verityInfo{
		Device: dev, Salt: hex.EncodeToString(p.Salt), HashAlgorithm: p.HashAlgorithm,
		HashFormat: p.HashFormat, DataBlockSize: p.DataBlockSize, HashBlockSize: p.HashBlockSize,
		DataBlocks: p.DataBlocks, HashBlocks: res.HashBlocks, HashOffset: p.HashOffset,
		HashStartBlock: res.HashStartBlock, HashDeviceSize: res.HashDeviceSize, Superblock: !p.NoSuperblock,
	}
	if !p.NoSuperblock {
		in.UUID = verity.FormatUUID(p.UUID)
	}
	if root != nil {
		in.RootHash = hex.EncodeToString(root)
	}
	return in, nil
}

func layoutOf(p verity.Params) (*verity.Result, error) { return verity.Layout(p) }

func (in *verityInfo) print(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(in)
	}
	salt := in.Salt
	if salt == "" {
		salt = "-"
	}
	fmt.Fprintf(w, "VERITY header information for %s\n", in.Device)
	fmt.Fprintf(w, "UUID:            \t%s\n", in.UUID)
	fmt.Fprintf(w, "Hash type:       \t%d\n", in.HashFormat)
	fmt.Fprintf(w, "Data blocks:     \t%d\n", in.DataBlocks)
	fmt.Fprintf(w, "Data block size: \t%d\n", in.DataBlockSize)
	fmt.Fprintf(w, "Hash blocks:     \t%d\n", in.HashBlocks)
	fmt.Fprintf(w, "Hash block size: \t%d\n", in.HashBlockSize)
	fmt.Fprintf(w, "Hash algorithm:  \t%s\n", in.HashAlgorithm)
	fmt.Fprintf(w, "Salt:            \t%s\n", salt)
	if in.RootHash != "" {
		fmt.Fprintf(w, "Root hash:      \t%s\n", in.RootHash)
	}
	fmt.Fprintf(w, "Hash device size: \t%d [bytes]\n", in.HashDeviceSize)
	return nil
}

func newVerityFormatCmd() *cobra.Command {
	var f verityFlags
	cmd := &cobra.Command{
		Use:   "format [flags] DATA HASH",
		Short: "Write DATA's hash tree to HASH, as veritysetup format does",
		Long: `format computes the dm-verity hash tree of DATA and writes it, after a v1
superblock unless --no-superblock, to HASH, byte for byte as veritysetup format
does. DATA and HASH may be the same file when --hash-offset places the tree
after the data. Without --salt and --uuid both are random, as with veritysetup;
give them for a reproducible tree.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.params(cmd, true)
			if err != nil {
				return err
			}
			res, err := verity.FormatFile(args[0], args[1], p)
			if err != nil {
				return err
			}
			in, err := infoOf(args[1], res.Params, res.RootHash)
			if err != nil {
				return err
			}
			return in.print(cmd.OutOrStdout(), f.asJSON)
		},
	}
	f.add(cmd, true)
	return cmd
}

func newVerityVerifyCmd() *cobra.Command {
	var f verityFlags
	cmd := &cobra.Command{
		Use:   "verify [flags] DATA HASH ROOTHASH",
		Short: "Check DATA and HASH against ROOTHASH; exit 1 on a bad block",
		Long: `verify recomputes the tree from the superblock's parameters (or from the flags
with --no-superblock) and checks every hash block from the root down, then every
data block. It exits 0 when all match; otherwise 1, naming the first bad block.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.params(cmd, false)
			if err != nil {
				return err
			}
			root, err := parseHexArg("ROOTHASH", args[2])
			if err != nil {
				return err
			}
			data, err := openInput("DATA", args[0])
			if err != nil {
				return err
			}
			defer data.Close()
			hash, err := openInput("HASH", args[1])
			if err != nil {
				return err
			}
			defer hash.Close()
			err = superblockHint(args[1], verity.Verify(data, hash, root, p))
			if f.asJSON {
				out := map[string]any{"ok": err == nil}
				var ce *verity.CorruptionError
				if errors.As(err, &ce) {
					out["area"], out["block"], out["offset"], out["level"] = ce.Area.String(), ce.Block, ce.Offset, ce.Level
				}
				if err != nil {
					out["error"] = err.Error()
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(out); jerr != nil {
					return jerr
				}
			}
			if err != nil {
				return failWith(1, err)
			}
			if !f.asJSON {
				fmt.Fprintln(cmd.OutOrStdout(), "Verification succeeded.")
			}
			return nil
		},
	}
	f.add(cmd, false)
	return cmd
}

func newVerityDumpCmd() *cobra.Command {
	var hashOffset uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "dump HASH",
		Short: "Print the superblock fields of a hash device",
		Long: `dump prints the fields of the verity superblock at --hash-offset of HASH,
as 'veritysetup dump' does. It exits 1 when there is no valid superblock.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hashOffset > math.MaxInt64 {
				return failWith(2, fmt.Errorf("--hash-offset %d is too large", hashOffset))
			}
			h, err := openInput("HASH", args[0])
			if err != nil {
				return err
			}
			defer h.Close()
			sb, err := verity.ReadSuperblock(h, int64(hashOffset))
			if err != nil {
				return failWith(1, superblockHint(args[0], err))
			}
			in, err := infoOf(args[0], sb.Params(hashOffset), nil)
			if err != nil {
				return failWith(1, err)
			}
			return in.print(cmd.OutOrStdout(), asJSON)
		},
	}
	cmd.Flags().Uint64Var(&hashOffset, "hash-offset", 0, "byte offset of the superblock")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	return cmd
}

// openInput opens a device or file argument, naming it on failure.
func openInput(what, path string) (*os.File, error) {
	name := path
	if what != "" {
		name = what + " " + path
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s: is a directory", name)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, pathErr(err))
	}
	return f, nil
}

// superblockHint names the hash device when its superblock is missing or
// bad, and says what to do about a tree written without one.
func superblockHint(hashPath string, err error) error {
	if errors.Is(err, verity.ErrBadSuperblock) {
		return fmt.Errorf("%s: %w (a tree written with --no-superblock needs --no-superblock and its parameters)", hashPath, err)
	}
	return err
}

func newVeritySignCmd() *cobra.Command {
	var keyPath, certPath, out string
	var sigJSON int
	cmd := &cobra.Command{
		Use:   "sign --key KEY.pem --cert CERT.pem -o SIG.p7s ROOTHASH",
		Short: "Sign a root hash (detached PKCS#7), as the kernel checks it",
		Long: `sign writes a detached PKCS#7 DER signature (sha256, no authenticated
attributes) over the lowercase hex ROOTHASH, the blob the kernel checks for
root_hash_sig_key_desc and veritysetup --root-hash-signature. With
--signature-json SIZE it writes instead the Discoverable Partitions
Specification verity-signature JSON, NUL-padded to SIZE bytes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := parseHexArg("ROOTHASH", args[0])
			if err != nil {
				return err
			}
			if sigJSON < 0 {
				return failWith(2, fmt.Errorf("--signature-json %d: want a size in bytes", sigJSON))
			}
			key, cert, err := keyfile.LoadPair(keyPath, certPath)
			if err != nil {
				return err
			}
			sig, err := verity.SignRootHash(root, key, cert)
			if err != nil {
				return err
			}
			if sigJSON > 0 {
				if sig, err = verity.NewSignatureJSON(root, sig, cert).MarshalPadded(sigJSON); err != nil {
					return err
				}
			}
			return atomicfile.WriteFile(out, sig, 0o644)
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "PEM private key")
	cmd.Flags().StringVar(&certPath, "cert", "", "PEM certificate of the key")
	cmd.Flags().StringVarP(&out, "output", "o", "", "signature file to write")
	cmd.Flags().IntVar(&sigJSON, "signature-json", 0, "write DPS signature JSON padded to this many bytes")
	for _, n := range []string{"key", "cert", "output"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func newVerityVerifySigCmd() *cobra.Command {
	var certPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify-signature --cert CERT.pem ROOTHASH SIG.p7s",
		Short: "Check a root hash signature (PKCS#7 DER or DPS JSON)",
		Long: `verify-signature checks that SIG.p7s, a detached PKCS#7 DER signature or
a Discoverable Partitions Specification verity-signature JSON (as written by
'osguard verity sign'), signs the lowercase hex ROOTHASH and was made by the
key of CERT.pem. It exits 0 when it does, 1 when it does not.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := parseHexArg("ROOTHASH", args[0])
			if err != nil {
				return err
			}
			cert, err := keyfile.LoadCert(certPath)
			if err != nil {
				return err
			}
			sig, err := readInput("", args[1])
			if err != nil {
				return err
			}
			format := "pkcs7"
			var verr error
			if len(sig) > 0 && sig[0] == '{' {
				format = "json"
				verr = verifySignatureJSON(args[1], root, sig, cert)
			} else if err := verity.VerifyRootHashSignature(root, sig, cert); err != nil {
				switch {
				case errors.Is(err, p7.ErrMalformed):
					format = ""
					verr = fmt.Errorf("%s: neither a PKCS#7 DER signature nor DPS signature JSON", args[1])
				case errors.Is(err, p7.ErrBadSignature):
					verr = fmt.Errorf("%s: not a signature of root hash %x (made for another root hash, or modified)", args[1], root)
				default:
					verr = fmt.Errorf("%s: %w", args[1], err)
				}
			}
			if asJSON {
				out := map[string]any{"ok": verr == nil, "rootHash": hex.EncodeToString(root), "signature": args[1], "format": format}
				if verr != nil {
					out["error"] = verr.Error()
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			}
			if verr != nil {
				return failWith(1, verr)
			}
			if !asJSON {
				fmt.Fprintln(cmd.OutOrStdout(), "Signature verified.")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	cmd.Flags().StringVar(&certPath, "cert", "", "PEM certificate that must have signed")
	_ = cmd.MarkFlagRequired("cert")
	return cmd
}

// verifySignatureJSON checks a DPS verity-signature JSON blob.
func verifySignatureJSON(name string, root, blob []byte, cert *x509.Certificate) error {
	sj, err := verity.ParseSignatureJSON(blob)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if sj.RootHash != hex.EncodeToString(root) {
		return fmt.Errorf("%s: signature JSON is for root hash %s, not %x", name, sj.RootHash, root)
	}
	if err := sj.Verify(cert); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
